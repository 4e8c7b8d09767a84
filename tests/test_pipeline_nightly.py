"""The nightly pipeline core without Dagster: partitions stored by ``store_partition`` and steps that give the same
tables as the Dagster run of the same night."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest
from pipeline_harness import FIRST_NIGHT, REPO, Project, bootstrap_example_champion, champion_of, make_project

from nightkeeper import warehouse
from nightkeeper.config import load_config
from nightkeeper.examples import simulator
from nightkeeper.ingest import read_raw_batch
from nightkeeper.pipeline import nightly
from nightkeeper.scoring import unscored
from nightkeeper.validation import validate
from nightkeeper.warehouse import NIGHTLY_SCHEMA, store_partition

NIGHT = FIRST_NIGHT + dt.timedelta(days=2)
NO_LABELS = nightly.RealizedAuc(rows=0, challenger=None, champion=None)
# wall-clock figures: the only columns two runs of the same night may differ in
WALL_CLOCK = {"latency_ms"}


def _frame(night: dt.date, ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"partition_date": [night] * len(ids), "entity_id": ids, "score": [0.5] * len(ids)},
        schema={"partition_date": pl.Date(), "entity_id": pl.String(), "score": pl.Float64()},
    )


@pytest.fixture
def connection(tmp_path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        yield connection


def test_storing_a_night_again_replaces_only_that_nights_rows(connection):
    store_partition(connection, "nightly", "t", NIGHT, _frame(NIGHT, ["a", "b", "c"]))
    store_partition(
        connection, "nightly", "t", NIGHT + dt.timedelta(days=1), _frame(NIGHT + dt.timedelta(days=1), ["d"])
    )

    store_partition(connection, "nightly", "t", NIGHT, _frame(NIGHT, ["x"]))

    stored = connection.execute("select partition_date, entity_id from nightly.t order by all").fetchall()
    assert stored == [(NIGHT, "x"), (NIGHT + dt.timedelta(days=1), "d")]


def test_an_empty_night_creates_the_table_with_the_frames_columns(connection):
    store_partition(connection, "nightly", "t", NIGHT, _frame(NIGHT, []))

    columns = connection.execute(
        "select column_name, data_type from information_schema.columns where table_name = 't'"
    ).fetchall()
    assert columns == [("partition_date", "DATE"), ("entity_id", "VARCHAR"), ("score", "DOUBLE")]
    assert connection.execute("select count(*) from nightly.t").fetchone() == (0,)


def test_columns_are_stored_by_name_not_position(connection):
    store_partition(connection, "nightly", "t", NIGHT, _frame(NIGHT, ["a"]))

    store_partition(
        connection, "nightly", "t", NIGHT, _frame(NIGHT, ["b"]).select("score", "entity_id", "partition_date")
    )

    assert connection.execute("select entity_id, score from nightly.t").fetchall() == [("b", 0.5)]


def test_a_column_new_tonight_is_added_and_earlier_nights_read_it_as_null(connection):
    store_partition(
        connection, "nightly", "t", NIGHT - dt.timedelta(days=1), _frame(NIGHT - dt.timedelta(days=1), ["a"])
    )

    store_partition(connection, "nightly", "t", NIGHT, _frame(NIGHT, ["b"]).with_columns(pl.lit(3).alias("tenure")))

    assert connection.execute("select entity_id, tenure from nightly.t order by entity_id").fetchall() == [
        ("a", None),
        ("b", 3),
    ]


def test_rows_of_another_night_are_refused_and_the_stored_partition_is_kept(connection):
    store_partition(connection, "nightly", "t", NIGHT, _frame(NIGHT, ["a"]))

    with pytest.raises(
        ValueError, match=r"rows for night\(s\) \[datetime.date\(2026, 1, 4\)\] in the partition of 2026-01-03"
    ):
        store_partition(connection, "nightly", "t", NIGHT, _frame(NIGHT + dt.timedelta(days=1), ["z"]))

    assert connection.execute("select entity_id from nightly.t").fetchall() == [("a",)]


def test_a_failed_insert_leaves_the_old_partition_in_place(connection):
    store_partition(connection, "nightly", "t", NIGHT, _frame(NIGHT, ["a"]))
    retyped = _frame(NIGHT, ["b"]).with_columns(pl.lit("not a number").alias("score"))

    with pytest.raises(duckdb.ConversionException):
        store_partition(connection, "nightly", "t", NIGHT, retyped)

    assert connection.execute("select entity_id from nightly.t").fetchall() == [("a",)]


@dataclass(frozen=True)
class DagsterNight:
    """A night of 600 rows run through the Dagster job, and a copy of the project's warehouse from before it ran (the
    same registry and champion), shared by the tests that only read them."""

    project: Project
    before: Path


@pytest.fixture(scope="module")
def dagster_night(tmp_path_factory) -> DagsterNight:
    project = make_project(tmp_path_factory.mktemp("dagster_night") / "project")
    bootstrap_example_champion(project)
    project.land_night(NIGHT, rows=600)
    before = project.config.warehouse_path.with_name("before.duckdb")  # beside it: the registry's paths are relative
    shutil.copy(project.config.warehouse_path, before)
    assert project.run_night(NIGHT).success
    return DagsterNight(project, before)


def test_the_steps_store_the_same_tables_as_the_dagster_run_of_the_night(dagster_night):
    config = dagster_night.project.config
    replay = config.warehouse_path.with_name("replay.duckdb")
    shutil.copy(dagster_night.before, replay)

    with warehouse.connect(replay) as connection:
        raw = _stored(connection, nightly.ingest_night(config, connection, NIGHT))
        valid = _stored(connection, nightly.validate_night(config, connection, NIGHT, raw["raw_batch"]))
        scored = _stored(connection, nightly.score_night(config, connection, NIGHT, valid["validated_batch"]))
        shadow = _stored(
            connection,
            nightly.shadow_night(config, connection, NIGHT, valid["validated_batch"], scored["scored_batch"]),
        )
        _stored(
            connection,
            nightly.answer_night(
                config,
                connection,
                NIGHT,
                raw["raw_batch"],
                valid["quarantine"],
                scored["scored_batch"],
                shadow["shadow_scores"],
            ),
        )

    tables = ["raw_batch", "validated_batch", "quarantine", "scored_batch", "shadow_scores", "outcomes"]
    assert raw["raw_batch"].height == 600
    with (
        duckdb.connect(str(config.warehouse_path), read_only=True) as dagster_run,
        duckdb.connect(str(replay), read_only=True) as steps,
    ):
        for table in tables:
            expected, found = _table(dagster_run, table), _table(steps, table)
            assert found.schema == expected.schema, table
            assert found.height == expected.height, table
            assert _comparable(found).equals(_comparable(expected)), table


def _stored(connection: duckdb.DuckDBPyConnection, result) -> dict[str, pl.DataFrame]:
    for name, frame in result.tables.items():
        store_partition(connection, NIGHTLY_SCHEMA, name, NIGHT, frame)
    return result.tables


def _table(connection: duckdb.DuckDBPyConnection, table: str) -> pl.DataFrame:
    return connection.execute(f"select * from {NIGHTLY_SCHEMA}.{table} where partition_date = ?", [NIGHT]).pl()


def _comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` without wall-clock columns, in a row order that does not depend on how it was written."""
    kept = frame.drop(WALL_CLOCK & set(frame.columns))
    return kept.sort([name for name, dtype in kept.schema.items() if not isinstance(dtype, pl.List)], nulls_last=True)


def test_the_stored_nights_reasons_are_the_dagster_runs_and_a_lost_model_leaves_its_answers_unexplained(
    dagster_night, tmp_path
):
    project = dagster_night.project
    champion = champion_of(project)
    config, outcomes, stored = project.config, project.table("outcomes", NIGHT), project.table("reason_codes", NIGHT)
    assert stored.height > 0
    # the model is lost from a copy of the project (the registry's model paths are relative to the warehouse)
    copy = load_config(shutil.copytree(project.root, tmp_path / "copy") / project.config_path.name)
    (copy.root / champion.model_path.relative_to(project.root)).unlink()

    with warehouse.connect(config.warehouse_path) as connection:
        explained = nightly.explain_stored_night(config, connection, NIGHT, outcomes)
    with warehouse.connect(copy.warehouse_path) as connection:
        lost = nightly.explain_stored_night(copy, connection, NIGHT, outcomes)

    assert _comparable(explained.tables["reason_codes"]).equals(_comparable(stored))
    assert lost.tables["reason_codes"].height == 0
    assert list(lost.metadata["unexplained_versions"]) == [champion.version]
    assert (
        lost.metadata["answers"] == explained.metadata["answers"] == outcomes.filter(pl.col("source") == "model").height
    )


def test_a_challenger_on_an_unregistered_version_fails_every_row_and_is_rolled_back(tmp_path):
    project = make_project(tmp_path / "project")
    bootstrap_example_champion(project)
    project.land_night(NIGHT, rows=300)
    config = project.config
    with warehouse.connect(config.warehouse_path) as connection:
        connection.execute(
            """insert into registry.model_aliases
                      select max(seq) + 1, 'challenger', 'ghost0000001', ?, now(), 'someone', 'typed by hand',
                             'canary:5'
                      from registry.model_aliases""",
            [FIRST_NIGHT],
        )
        raw = nightly.ingest_night(config, connection, NIGHT).tables["raw_batch"]
        valid = nightly.validate_night(config, connection, NIGHT, raw).tables["validated_batch"]
        scored = nightly.score_night(config, connection, NIGHT, valid).tables["scored_batch"]

        shadow = nightly.shadow_night(config, connection, NIGHT, valid, scored)

    frame = shadow.tables["shadow_scores"]
    assert frame.height == valid.height and frame["model_error"].str.contains("'ghost0000001' is not registered").all()
    assert shadow.metadata["rollout_action"] == "rollback"
    assert not shadow.checks["challenger_healthy"].passed


def _validated_night(tmp_path, rows: int = 200) -> pl.DataFrame:
    config = load_config(REPO / "nightkeeper.yaml")
    path = simulator.write_landing(simulator.simulate_night(NIGHT, rows, seed=5), NIGHT, tmp_path / "landing")
    return validate(read_raw_batch([path], NIGHT, config.contract).frame, config.contract).valid


def test_a_challenger_failing_only_where_the_champion_also_fails_raises_no_fallback_rate_increase(tmp_path):
    valid = _validated_night(tmp_path)
    champion = unscored(valid, "champion0001", "model champion0001 exceeded its time budget of 1 s")
    challenger = unscored(valid, "challenger01", "model challenger01 exceeded its time budget of 1 s").with_columns(
        pl.lit(False).alias("in_canary")
    )

    health = nightly.rollout_health(NIGHT, challenger, champion, 0.5, NO_LABELS, trusted=False)

    assert health.error_rate == 1.0
    assert health.fallback_rate_increase == 0.0


def test_a_challenger_answering_rows_the_champion_could_not_lowers_the_fallback_rate(tmp_path):
    valid = _validated_night(tmp_path)
    champion = unscored(valid, "champion0001", "model champion0001: artifact is missing")
    challenger = unscored(valid, "challenger01", "").with_columns(
        pl.lit(0.2).alias("score"),
        pl.lit("approve").alias("decision"),
        pl.lit(None, dtype=pl.String).alias("model_error"),
        pl.lit(False).alias("in_canary"),
    )

    health = nightly.rollout_health(NIGHT, challenger, champion, 0.5, NO_LABELS, trusted=False)

    assert health.error_rate == 0.0
    assert health.fallback_rate_increase == -1.0
