"""The DuckLake warehouse (``storage.kind: ducklake``): a real PostgreSQL server holds the catalog, Parquet files in a
temp folder hold the data; several processes write nights at once and nothing is lost or duplicated.

The server is started by the ``postgres`` fixture in a temp folder and stopped at the end of the module; the tests
skip, saying why, only where PostgreSQL's ``pg_ctl`` is not installed.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from dagster import DagsterInstance
from pipeline_harness import (
    FIRST_NIGHT,
    Project,
    bootstrap_example_champion,
    example_config,
    make_project,
    run_in_processes,
    shard_processes_alive_at_once,
)

from jobs.definitions import SHARD_REPORTS_FOLDER
from nightkeeper import warehouse
from nightkeeper.config import ConfigError, load_config, parse_config
from nightkeeper.examples import simulator
from nightkeeper.pipeline import monitoring as monitoring_steps
from nightkeeper.pipeline import nightly as nightly_steps
from nightkeeper.schema import MIGRATIONS, MIGRATIONS_TABLE, is_lake, migrate
from nightkeeper.warehouse import NIGHTLY_SCHEMA, Lake, store_partition

ROWS = 1200
PORT = 5432  # the server listens on a Unix socket in its own folder only, so the port just names the socket


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[Path]:
    """A real PostgreSQL server for this module, in a temp folder (data directory and Unix socket); yields the
    folder of its socket. PostgreSQL refuses to run as root, so as root the server runs as the unprivileged
    ``postgres`` (or ``nobody``) user, which owns the folder. Stopped and removed at the end."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no pg_ctl; Debian: apt-get install postgresql): the lake needs one")
    # in /tmp, not the session's temp folder: that one is private to the test's user, and the server's user must
    # reach its own folder (a short path also keeps the socket's path within the Unix limit of 107 bytes)
    folder = Path(tempfile.mkdtemp(prefix="nk-pg-", dir="/tmp"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = next(name for name in ("postgres", "nobody") if _user_exists(name))
        shutil.chown(folder, user)
        run_as = ["runuser", "-u", user, "--"]
    data = folder / "data"
    subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "nightkeeper", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-k {folder} -p {PORT} -c listen_addresses='' -c fsync=off -c max_connections=200"
    subprocess.run(
        [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield folder
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def new_catalog(postgres: Path, name: str) -> str:
    """A new, empty PostgreSQL database on the test server; its libpq connection string."""
    bin_dir = _pg_bin()
    assert bin_dir is not None
    subprocess.run(
        [str(bin_dir / "createdb"), "-h", str(postgres), "-p", str(PORT), "-U", "nightkeeper", name], check=True
    )
    return f"dbname={name} host={postgres} port={PORT} user=nightkeeper"


def lake_project(root: Path, catalog: str) -> Project:
    """The example project with its warehouse on a DuckLake (catalog ``catalog``, data files under ``root/lake``)."""
    raw = example_config(
        storage={
            "kind": "ducklake",
            "lake": {"catalog": catalog, "data_path": "lake/"},
            "warehouse": "unused.duckdb",
            "models": str(root / "models"),
            "dagster_home": "dagster",
        }
    )
    return make_project(root, raw)


def query(project: Project, sql: str, params: list | None = None) -> pl.DataFrame:
    with warehouse.connect(project.config.warehouse) as connection:
        return connection.execute(sql, params or []).pl()


@pytest.fixture(scope="module")
def project(postgres: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A lake project whose champion is trained and registered on the lake."""
    made = lake_project(tmp_path_factory.mktemp("lake-project"), new_catalog(postgres, "project"))
    bootstrap_example_champion(made)
    return made


# ------------------------------------------------------------------------------------------------------- config


def _raw_with_storage(storage: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(example_config())
    raw["storage"] = storage
    return raw


def test_the_default_storage_is_the_duckdb_file() -> None:
    config = parse_config(example_config(), root=Path("/tmp/project"))
    assert config.storage.kind == "duckdb_file"
    assert config.warehouse == Path("/tmp/project/data/warehouse.duckdb")


def test_a_ducklake_config_resolves_a_local_data_folder_against_the_config_folder() -> None:
    raw = _raw_with_storage({"kind": "ducklake", "lake": {"catalog": "dbname=nk host=pg", "data_path": "lake"}})
    config = parse_config(raw, root=Path("/tmp/project"))
    assert config.warehouse == Lake(catalog="dbname=nk host=pg", data_path="/tmp/project/lake/")


def test_a_ducklake_on_object_storage_keeps_its_url() -> None:
    raw = _raw_with_storage({"kind": "ducklake", "lake": {"catalog": "", "data_path": "s3://bucket/nk/"}})
    assert parse_config(raw, root=Path("/tmp/project")).warehouse == Lake(catalog="", data_path="s3://bucket/nk/")


def test_kind_ducklake_without_a_lake_section_names_the_missing_section() -> None:
    with pytest.raises(ConfigError, match=r"storage.*kind 'ducklake' needs a `lake:` section"):
        parse_config(_raw_with_storage({"kind": "ducklake"}), root=Path("/tmp"))


def test_a_lake_section_with_the_file_kind_is_refused() -> None:
    raw = _raw_with_storage({"lake": {"catalog": "dbname=nk", "data_path": "lake/"}})
    with pytest.raises(ConfigError, match=r"`lake:` is set but kind is 'duckdb_file'"):
        parse_config(raw, root=Path("/tmp"))


def test_a_password_in_the_catalog_string_is_refused_at_load() -> None:
    raw = _raw_with_storage(
        {"kind": "ducklake", "lake": {"catalog": "dbname=nk password=hunter2", "data_path": "lake/"}}
    )
    with pytest.raises(ConfigError, match=r"storage\.lake\.catalog.*PGPASSWORD"):
        parse_config(raw, root=Path("/tmp"))


def test_an_unknown_storage_kind_names_the_allowed_kinds() -> None:
    with pytest.raises(ConfigError, match=r"storage\.kind.*duckdb_file.*ducklake"):
        parse_config(_raw_with_storage({"kind": "postgres"}), root=Path("/tmp"))


# ------------------------------------------------------------------------------------------------- the lake itself


def test_side_tables_on_the_lake_have_the_file_columns_types_and_not_nulls(postgres: Path, tmp_path: Path) -> None:
    columns = (
        "select table_schema, table_name, column_name, data_type, is_nullable from information_schema.columns "
        "where table_catalog = current_database() order by all"
    )
    with warehouse.connect(tmp_path / "file.duckdb") as connection:
        on_file = connection.execute(columns).fetchall()
    lake = Lake(catalog=new_catalog(postgres, "columns"), data_path=str(tmp_path / "lake") + "/")
    with warehouse.connect(lake) as connection:
        on_lake = connection.execute(columns).fetchall()
        assert is_lake(connection)
    assert on_lake == on_file
    assert {row[1] for row in on_lake} >= {MIGRATIONS_TABLE, "alerts", "night_metrics", "model_versions"}


def test_migrating_an_up_to_date_lake_applies_nothing(postgres: Path, tmp_path: Path) -> None:
    lake = Lake(catalog=new_catalog(postgres, "uptodate"), data_path=str(tmp_path / "lake") + "/")
    with warehouse.connect(lake) as connection:
        assert migrate(connection) == []


def test_storing_a_night_again_on_the_lake_replaces_its_partition(postgres: Path, tmp_path: Path) -> None:
    lake = Lake(catalog=new_catalog(postgres, "replace"), data_path=str(tmp_path / "lake") + "/")
    night = dt.date(2026, 1, 3)
    first = pl.DataFrame({"partition_date": [night] * 3, "row_number": [1, 2, 3]})
    with warehouse.connect(lake) as connection:
        store_partition(connection, NIGHTLY_SCHEMA, "t", night, first)
        store_partition(connection, NIGHTLY_SCHEMA, "t", night, first.head(2))
        stored = connection.execute(f"select row_number from {NIGHTLY_SCHEMA}.t order by 1").fetchall()
    assert stored == [(1,), (2,)]


def _open_and_list_migrations(catalog: str, data_path: str) -> list[int]:
    with warehouse.connect(Lake(catalog=catalog, data_path=data_path)) as connection:
        return [row[0] for row in connection.execute(f"select version from {MIGRATIONS_TABLE}").fetchall()]


@pytest.mark.slow
def test_four_processes_opening_a_new_lake_at_once_migrate_it_once(postgres: Path, tmp_path: Path) -> None:
    catalog, data_path = new_catalog(postgres, "fresh"), str(tmp_path / "lake") + "/"
    with ProcessPoolExecutor(max_workers=4, mp_context=get_context("spawn")) as pool:
        seen = list(pool.map(_open_and_list_migrations, [catalog] * 4, [data_path] * 4))
    latest = [migration.version for migration in MIGRATIONS]
    assert seen == [latest] * 4, "a process saw the lake half-migrated or twice-migrated"


def _write_night(config_path: str, night: dt.date) -> tuple[float, float]:
    """One night through the pipeline core, every step of ``nightly_batch`` but the reason codes, in the order the
    backtest runs them, into the project's lake: partitions stored as the IO manager stores them, side tables
    (metrics, labels, review queue, performance, alerts) written by the steps. Run in a process of its own; returns
    its start and end times."""
    config = load_config(config_path)
    started = time.time()
    with warehouse.connect(config.warehouse) as connection:

        def step(function: Any, *inputs: pl.DataFrame, **options: Any) -> dict[str, pl.DataFrame]:
            result = function(config, connection, night, *inputs, **options)
            for table, frame in result.tables.items():
                store_partition(connection, NIGHTLY_SCHEMA, table, night, frame)
            return result.tables

        raw = step(nightly_steps.ingest_night)["raw_batch"]
        validated = step(nightly_steps.validate_night, raw)
        rows, quarantine = validated["validated_batch"], validated["quarantine"]
        scored = step(nightly_steps.score_night, rows)["scored_batch"]
        step(monitoring_steps.drift_night, rows, scored, plots=False)
        shadow = step(nightly_steps.shadow_night, rows, scored)["shadow_scores"]
        outcomes = step(nightly_steps.answer_night, raw, quarantine, scored, shadow)["outcomes"]
        step(monitoring_steps.labels_night)
        step(monitoring_steps.review_queue_night, outcomes, quarantine)
        step(monitoring_steps.performance_night, plots=False)
        step(monitoring_steps.alerts_night)
    return started, time.time()


@pytest.mark.slow
def test_four_processes_writing_nights_at_once_lose_and_duplicate_no_row(project: Project) -> None:
    nights = [FIRST_NIGHT + dt.timedelta(days=offset) for offset in range(4)]
    landed = {night: project.land_night(night, rows=ROWS, scenario=simulator.CLEAN) for night in nights}
    with ProcessPoolExecutor(max_workers=4, mp_context=get_context("spawn")) as pool:
        spans = list(pool.map(_write_night, [str(project.config_path)] * 4, nights))
    assert max(start for start, _ in spans) < min(end for _, end in spans), "the four writers never ran at once"
    for table in ("raw_batch", "outcomes"):
        stored = query(
            project,
            f"select partition_date, source_file, row_number from {NIGHTLY_SCHEMA}.{table} where partition_date in "
            "(select unnest(?::date[]))",
            [nights],
        )
        assert stored.height == sum(data.applications.height for data in landed.values()), table
        assert not stored.is_duplicated().any(), f"{table}: a row stored twice"
        for night in nights:
            assert stored.filter(pl.col("partition_date") == night).height == landed[night].applications.height
    outcomes = query(project, f"select source from {NIGHTLY_SCHEMA}.outcomes where partition_date >= ?", [nights[0]])
    assert set(outcomes["source"].unique()) <= {"model", "canary", "fallback", "quarantine"}
    metrics = query(project, "select night, metric, count(*) as n from monitoring.night_metrics group by all")
    assert set(metrics.filter(pl.col("metric") == "validation.rows")["night"]) >= set(nights)
    assert metrics["n"].max() == 1, "a night's metric recorded twice"
    queued = query(project, "select partition_date, entity_id from review.queue")
    assert not queued.is_duplicated().any(), "a row queued for review twice"
    assert set(queued["partition_date"]) >= set(nights), "a night's review queue is missing"


@pytest.mark.slow
def test_a_night_through_the_dagster_job_on_the_lake_answers_every_row(project: Project) -> None:
    night = FIRST_NIGHT + dt.timedelta(days=10)
    landed = project.land_night(night, rows=ROWS)
    result = project.run_night(night)
    assert result.success
    checks = {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}
    assert checks["outcomes_conserve_rows"].passed
    outcomes = query(project, f"select * from {NIGHTLY_SCHEMA}.outcomes where partition_date = ?", [night])
    assert outcomes.height == landed.applications.height
    assert not outcomes.select("source_file", "row_number").is_duplicated().any()
    assert not project.config.warehouse_path.exists(), "the run opened the DuckDB file instead of the lake"
    parquet = list((project.root / "lake").rglob("*.parquet"))
    assert parquet, "no Parquet data file was written under the lake's data path"
    assert yaml.safe_load(project.config_path.read_text())["storage"]["kind"] == "ducklake"


@pytest.mark.slow
def test_a_night_in_four_shards_through_dagster_on_the_lake_stores_each_row_once(
    postgres: Path, tmp_path: Path
) -> None:
    sharded = lake_project(tmp_path / "sharded", new_catalog(postgres, "sharded"))
    raw = yaml.safe_load(sharded.config_path.read_text())
    sharded.config_path.write_text(yaml.safe_dump({**raw, "scale": {"shards": 4}}, sort_keys=False))
    bootstrap_example_champion(sharded)
    night = FIRST_NIGHT + dt.timedelta(days=10)
    landed = sharded.land_night(night, rows=ROWS)
    (tmp_path / "dagster").mkdir()

    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        result = run_in_processes(sharded, night, instance)
        alive_at_once = shard_processes_alive_at_once(instance, result.run_id)

    assert result.success
    assert alive_at_once >= 2
    # the shard ops' reports went where every step reaches them, beside the lake's data files
    reports = sharded.root / "lake" / SHARD_REPORTS_FOLDER / result.run_id
    assert sorted(path.name for path in reports.iterdir()) == [f"night_shards.answer_shard_{k}" for k in range(4)]
    for table in ("raw_batch", "outcomes"):
        rows = query(sharded, f"select * from {NIGHTLY_SCHEMA}.{table} where partition_date = ?", [night])
        assert rows.height == landed.applications.height, table
        assert not rows.select("source_file", "row_number").is_duplicated().any(), table
        assert set(rows["shard"]) == {0, 1, 2, 3}, table
    assert not sharded.config.warehouse_path.exists(), "the run opened the DuckDB file instead of the lake"
