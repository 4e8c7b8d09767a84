"""The demo resets only storage it created itself, or storage named explicitly for reset."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pipeline_harness import example_config

from jobs.demo import OWNED_STORAGE_FILE, StorageNotOwned, demo_storage, prepare_demo_folder, reset_demo_storage
from nightkeeper.config import load_config


def _demo_with_storage_in(folder: Path, storage_root: Path):
    """A demo folder whose config keeps every storage path under ``storage_root``, each one existing with content."""
    folder.mkdir(parents=True)
    (folder / "nightkeeper.yaml").write_text(
        yaml.safe_dump(
            example_config(
                storage={
                    "warehouse": str(storage_root / "w.duckdb"),
                    "models": str(storage_root / "models"),
                    "dagster_home": str(storage_root / "dagster"),
                },
                source={
                    "landing": str(storage_root / "landing"),
                    "labels": str(storage_root / "labels"),
                    "pattern": "{date}/*.parquet",
                },
            ),
            sort_keys=False,
        )
    )
    config = load_config(folder / "nightkeeper.yaml")
    for path in demo_storage(config):
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("data")
        else:
            path.mkdir(parents=True)
            (path / "file").write_text("data")
    return config


def test_demo_folder_gets_a_copy_of_the_example_config(tmp_path):
    config_path = prepare_demo_folder(tmp_path / "demo")

    assert config_path == (tmp_path / "demo" / "nightkeeper.yaml").resolve()
    assert load_config(config_path).name == "credit-default"


def test_demo_folder_keeps_the_config_already_there(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "nightkeeper.yaml").write_text(yaml.safe_dump(example_config(name="mine"), sort_keys=False))

    assert load_config(prepare_demo_folder(tmp_path / "demo")).name == "mine"


def test_existing_storage_the_demo_did_not_create_is_refused_and_kept(tmp_path):
    config = _demo_with_storage_in(tmp_path / "demo", tmp_path / "project")

    with pytest.raises(StorageNotOwned, match="--reset .*w.duckdb"):
        reset_demo_storage(config, tmp_path / "demo")

    assert all(path.exists() for path in demo_storage(config))
    assert not (tmp_path / "demo" / OWNED_STORAGE_FILE).exists()


def test_storage_named_for_reset_is_deleted(tmp_path):
    config = _demo_with_storage_in(tmp_path / "demo", tmp_path / "project")

    removed = reset_demo_storage(config, tmp_path / "demo", reset=[tmp_path / "project"])

    assert sorted(removed) == sorted(demo_storage(config))
    assert not any(path.exists() for path in demo_storage(config))


def test_storage_the_demo_created_on_an_earlier_run_is_reset_without_asking(tmp_path):
    config = load_config(prepare_demo_folder(tmp_path / "demo"))
    reset_demo_storage(config, tmp_path / "demo")  # first run: nothing exists yet, all recorded as the demo's own
    config.warehouse_path.parent.mkdir(parents=True)
    config.warehouse_path.write_text("data")
    config.landing_path.mkdir(parents=True)

    removed = reset_demo_storage(config, tmp_path / "demo")

    assert sorted(removed) == sorted([config.warehouse_path, config.landing_path])
