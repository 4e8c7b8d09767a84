"""Acceptance of issue #8 part 1: a night run by Dagster and the same night replayed by the backtest leave identical
warehouse tables on the same input.

One side is the real ``nightly_batch`` job (tests/pipeline_harness.py) with the real sensors evaluated after each
night (jobs.demo.SensorDriver, as the demo and the daemon do); the other is ``nightkeeper.backtest.run_backtest``.
Both read the same landed files and the same staged label files (source_file paths are stored, so they must be the
very same files) and start from the same first champion. Every table of the ``nightly`` schema (the partitions) and
of the ``monitoring`` schema is compared row by row, ignoring only the columns that record the wall clock.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
from pipeline_harness import FIRST_NIGHT, example_config, make_project
from polars.testing import assert_frame_equal

from jobs.demo import SensorDriver
from nightkeeper import warehouse
from nightkeeper.backtest import BOOTSTRAP_ACTOR, run_backtest
from nightkeeper.config import parse_config
from nightkeeper.examples import simulator
from nightkeeper.models import train_first_champion
from nightkeeper.training_data import read_history_file

NIGHTS = 6
ROWS = 1200
LABEL_DELAY = 1
# the world changes from the first night, and the gates are sized for these small nights, so the realized-AUC alert
# opens, the retrain policy trains a candidate and the lifecycle acts within the few nights compared
PLAN = simulator.ScenarioPlan.combine(
    simulator.ScenarioPlan.bad_data_at(2), simulator.ScenarioPlan.concept_drift(0, shift=1.0)
)
SMALL_GATES = {
    "data_gate": {
        "min_rows": 1000,
        "max_volume_ratio": 1.5,
        "max_label_rate_shift": 0.5,
        "max_duplicate_share": 0.05,
        "max_excluded_share": 0.5,
    },
}

# Columns that measure or stamp the wall clock, so they differ between any two runs of the same night, whoever runs
# it; and where each project keeps its files. Everything else must be equal.
IGNORED_COLUMNS: dict[str, dict[str, str]] = {
    "nightly.scored_batch": {"latency_ms": "time the champion took to score the row's chunk"},
    "nightly.shadow_scores": {"latency_ms": "time the challenger took to score the row's chunk"},
    "nightly.outcomes": {"latency_ms": "copied from the scoring latency"},
    "monitoring.night_metrics": {"recorded_at": "when the metric row was written"},
    "monitoring.alert_events": {"recorded_at": "when the transition was written"},
    "monitoring.alert_outbox": {
        "enqueued_at": "when the message was queued",
        "next_attempt_at": "computed from the queueing time",
        "delivered_at": "when it was sent",
    },
    "lifecycle.candidates": {"recorded_at": "when the candidate was recorded"},
    "registry.model_aliases": {"set_at": "when the alias row was written"},
    "registry.model_versions": {
        "created_at": "when the model was trained (also in card_json, compared without it)",
        "registered_at": "when it was registered",
        "model_path": "each project keeps its artifacts in its own folder",
    },
    "review.labels": {"reviewed_at": "when a reviewer's file was imported"},
    "review.rejects": {"rejected_at": "when a reviewer's file was imported"},
}
# Night metrics whose value is a wall-clock measurement (a latency percentile of the night).
WALL_CLOCK_METRICS = ("scoring.latency_p95_ms",)
SCHEMAS = ("nightly", "monitoring", "review", "lifecycle", "registry")
TABLES = [
    "nightly.raw_batch",
    "nightly.validated_batch",
    "nightly.quarantine",
    "nightly.scored_batch",
    "nightly.shadow_scores",
    "nightly.outcomes",
    "nightly.reason_codes",
    "nightly.drift_metrics",
    "monitoring.night_metrics",
    "monitoring.labels",
    "monitoring.labels_rejected",
    "monitoring.performance_realized",
    "monitoring.alerts",
    "monitoring.alert_events",
    "monitoring.alert_outbox",
    "review.queue",
    "lifecycle.history",
    "lifecycle.candidates",
    "registry.model_aliases",
    "registry.model_versions",
]


def _comparable(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    frame = frame.drop(list(IGNORED_COLUMNS.get(name, {})))
    if name == "monitoring.night_metrics":
        frame = frame.filter(~pl.col("metric").is_in(WALL_CLOCK_METRICS))
    if name == "registry.model_versions":
        frame = frame.with_columns(pl.col("card_json").map_elements(_without_created_at, return_dtype=pl.String))
    sortable = [c for c, t in frame.schema.items() if not isinstance(t, (pl.List, pl.Struct))]
    return frame.sort(sortable, nulls_last=True)


def _without_created_at(card: str) -> str:
    return json.dumps({k: v for k, v in json.loads(card).items() if k != "created_at"}, sort_keys=True)


def _tables(path: Path) -> dict[str, pl.DataFrame]:
    """Every table of SCHEMAS, without its ignored columns, sorted on all its comparable columns."""
    with duckdb.connect(str(path), read_only=True) as connection:
        names = connection.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_schema in (select unnest(?::varchar[])) order by 1",
            [list(SCHEMAS)],
        ).fetchall()
        return {name: _comparable(name, connection.execute(f"select * from {name}").pl()) for (name,) in names}


@pytest.fixture(scope="module")
def both_warehouses(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    root = tmp_path_factory.mktemp("equivalence")
    batches, labels = root / "batches", root / "labels"
    # labels written to their scoring night's folder: the backtest delays them itself
    simulator.simulate_to_folders(FIRST_NIGHT, NIGHTS, ROWS, 11, PLAN, batches, labels, label_delay_days=0)
    history = simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), days=20, rows_per_day=500, seed=3)
    history_file = root / "history.parquet"
    history.write_parquet(history_file)
    raw = example_config()
    raw["lifecycle"]["data_gate"] = SMALL_GATES["data_gate"]
    raw["lifecycle"]["retrain"] = {"cooldown_nights": 2}
    # the alert must open within the few small nights compared: it judges the raw drop, not the drop beyond chance
    raw["monitoring"]["performance"]["drop_noise_z"] = 0.0
    # the gate's latency rule times two predictions of ~1 ms on the wall clock: on a loaded machine two runs of the same
    # night judge it differently (seen: 8.5x on two models of the same size), so it is left out of this comparison
    raw["lifecycle"]["promotion_gate"] = {
        **raw["lifecycle"]["promotion_gate"],
        "holdout_days": 1,
        "min_segment_rows": 50,
        "max_latency_ratio": 1000.0,
    }
    replay = run_backtest(
        parse_config(raw, root=root),
        history_file,
        batches,
        labels,
        LABEL_DELAY,
        "daily",
        root / "backtest",
        progress=False,
    )

    # the Dagster project reads the very files the backtest read: the batches and the labels as staged for arrival
    raw["source"] = {**raw["source"], "landing": str(batches), "labels": str(replay.out_dir / "labels")}
    raw["storage"] = {
        "warehouse": "warehouse.duckdb",
        "models": str(replay.out_dir / "models"),
        "dagster_home": "dagster",
    }
    project = make_project(root / "dagster", raw)
    # the first champion as `nightkeeper train --history` makes it, which is what the backtest does
    with warehouse.connect(project.config.warehouse_path) as connection:
        checked = read_history_file(history_file, project.config.contract, root=project.config.root)
        assert train_first_champion(project.config, connection, checked, actor=BOOTSTRAP_ACTOR).record is not None
    sensors = SensorDriver(project.defs, project.instance)
    for index in range(NIGHTS):
        assert project.run_night(FIRST_NIGHT + dt.timedelta(days=index)).success
        sensors.tick()
    return _tables(project.config.warehouse_path), _tables(replay.out_dir / "warehouse.duckdb")


@pytest.mark.slow
def test_dagster_and_backtest_store_the_same_tables(both_warehouses) -> None:
    dagster, backtest = both_warehouses
    assert sorted(dagster) == sorted(backtest)
    assert set(TABLES) <= set(dagster)


@pytest.mark.slow
def test_the_compared_nights_include_an_approved_retrain_a_shadow_and_a_canary_step(both_warehouses) -> None:
    dagster, _ = both_warehouses
    assert "approved" in set(dagster["lifecycle.candidates"]["status"])
    assert {"shadow", "canary:1"} <= set(dagster["registry.model_aliases"]["stage"].drop_nulls())
    assert dagster["nightly.shadow_scores"].height > 0


@pytest.mark.slow
@pytest.mark.parametrize("table", TABLES)
def test_dagster_night_and_backtest_night_store_identical_rows(both_warehouses, table: str) -> None:
    dagster, backtest = both_warehouses
    assert table in dagster and table in backtest
    assert dagster[table].height == backtest[table].height
    assert_frame_equal(dagster[table], backtest[table], check_exact=True)
