"""The Kubernetes deployment profile (docs/deploy.md): the code location ``jobs/kubernetes.py`` loads the project's
same definitions with dagster-k8s's executor and the DuckLake the config names (no cluster, no server needed: loading
definitions connects to nothing)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import yaml
from dagster import in_process_executor
from pipeline_harness import example_config
from upath import UPath

from assets.shards import SHARD_REPORTS_IO_MANAGER
from jobs.definitions import MONTHLY_REVIEW_JOB, NIGHTLY_JOB, SHARD_REPORTS_FOLDER, build_definitions
from nightkeeper.config import CONFIG_ENV_VAR, ConfigError
from nightkeeper.warehouse import OBJECT_STORE_EXTENSIONS, extension_file

CATALOG = "dbname=nightkeeper host=postgres.nightkeeper.svc port=5432 user=nightkeeper"
DATA_PATH = "s3://nightkeeper-lake/credit-default/"


def write_config(folder: Path, storage: dict) -> Path:
    path = folder / "nightkeeper.yaml"
    path.write_text(yaml.safe_dump(example_config(storage=storage), sort_keys=False))
    return path


def load_kubernetes_location(config_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Import ``jobs.kubernetes`` afresh, as a Dagster code server does, with ``$NIGHTKEEPER_CONFIG`` set."""
    monkeypatch.setenv(CONFIG_ENV_VAR, str(config_path))
    sys.modules.pop("jobs.kubernetes", None)
    return importlib.import_module("jobs.kubernetes").defs


@pytest.fixture
def lake_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path,
        {"kind": "ducklake", "lake": {"catalog": CATALOG, "data_path": DATA_PATH}, "models": "/mnt/models"},
    )


def test_the_kubernetes_location_runs_every_job_with_the_k8s_executor(
    lake_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_k8s import k8s_job_executor  # here, not at the top: every xdist worker collects this module

    defs = load_kubernetes_location(lake_config, monkeypatch)
    for job in (NIGHTLY_JOB, MONTHLY_REVIEW_JOB):
        assert defs.resolve_job_def(job).executor_def is k8s_job_executor


def test_the_kubernetes_location_stores_in_the_configured_lake_on_object_storage(
    lake_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = load_kubernetes_location(lake_config, monkeypatch)
    for resource in ("warehouse", "io_manager"):
        assert defs.resources[resource].lake_catalog == CATALOG
        assert defs.resources[resource].lake_data_path == DATA_PATH


def test_the_kubernetes_location_leaves_shard_reports_on_the_lakes_object_storage(
    lake_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s3fs import S3FileSystem  # here, not at the top: every xdist worker collects this module

    defs = load_kubernetes_location(lake_config, monkeypatch)
    base_dir = defs.resources[SHARD_REPORTS_IO_MANAGER].base_dir
    assert base_dir == f"{DATA_PATH}{SHARD_REPORTS_FOLDER}"
    assert isinstance(UPath(base_dir).fs, S3FileSystem)  # the profile installs what writes there (no request made)


def test_the_kubernetes_location_refuses_the_single_file_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = write_config(tmp_path, {"warehouse": "warehouse.duckdb"})
    with pytest.raises(ConfigError, match="storage.kind is 'duckdb_file'.*set storage.kind: ducklake"):
        load_kubernetes_location(config_path, monkeypatch)


def test_the_laptop_definitions_keep_the_in_process_executor_and_the_duckdb_file(lake_config: Path) -> None:
    config_path = write_config(lake_config.parent, {"warehouse": "w.duckdb"})
    defs = build_definitions(config_path)
    assert defs.resolve_job_def(NIGHTLY_JOB).executor_def is in_process_executor
    assert defs.resources["io_manager"].lake_catalog is None
    assert defs.resources["io_manager"].database == str(config_path.parent / "w.duckdb")


def test_the_object_storage_extensions_ship_for_the_installed_duckdb() -> None:
    for package, name in OBJECT_STORE_EXTENSIONS:
        assert extension_file(package, name).is_file()
