"""The performance step is incremental: it recomputes only the nights whose outcomes or labels changed, and yet its
tables and metrics equal a full recomputation from every outcome and label, night after night, on a simulated project
with a canary, late labels, a re-delivered label file and a re-run of an old night."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import polars as pl
import pytest
import yaml
from conftest import CORE_CONFIG_PATH

from nightkeeper import labels, metrics_store, performance, registry, warehouse
from nightkeeper.artifacts import load_verified
from nightkeeper.config import ProjectConfig, parse_config
from nightkeeper.examples import simulator
from nightkeeper.ingest import read_raw_batch
from nightkeeper.models import bootstrap_champion, publish
from nightkeeper.outcomes import Fallback, assemble_outcomes
from nightkeeper.pipeline import monitoring
from nightkeeper.registry import ModelRecord
from nightkeeper.schema import PERFORMANCE_LABEL_STATE
from nightkeeper.scoring import score_batch
from nightkeeper.training import train_model
from nightkeeper.validation import validate

FIRST_NIGHT = dt.date(2026, 3, 1)
NIGHTS = 12
ROWS = 400
LABEL_DELAY = 3

# twelve nights, each checked against a full recomputation (~25 s on 2 quiet cores); in the default suite the
# performance step's rules are tested one by one in test_performance
pytestmark = pytest.mark.slow
CANARY_FROM = 5  # nights from this index on route a third of their rows to a second model
CANARY_SHARE = 0.35


@dataclass
class Project:
    config: ProjectConfig
    champion: ModelRecord
    challenger: ModelRecord

    def connect(self):
        return warehouse.connect(self.config.warehouse_path)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    raw = yaml.safe_load(CORE_CONFIG_PATH.read_text())
    raw["model"]["num_boost_round"] = 20
    raw["model"]["params"]["num_threads"] = 1
    raw["monitoring"]["performance"]["min_labeled_rows"] = 100
    config = parse_config(raw, root=tmp_path_factory.mktemp("incremental"))
    champion = bootstrap_champion(
        config, simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), 15, 400, seed=3), FIRST_NIGHT
    )
    challenger = publish(
        train_model(simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), 15, 400, seed=4), config), config
    )
    return Project(config, champion, challenger)


def land_and_answer(project: Project, index: int) -> None:
    """Simulate night ``index``, answer it with the champion (and the challenger on a canary share from CANARY_FROM),
    store its outcomes as the nightly partition and write its labels to arrive LABEL_DELAY nights later."""
    config, night = project.config, FIRST_NIGHT + dt.timedelta(days=index)
    data = simulator.simulate_night(night, ROWS, seed=11, scenario=simulator.Scenario(income_factor=1.0 + 0.03 * index))
    path = simulator.write_landing(data, night, config.landing_path)
    raw = read_raw_batch([path], night, config.contract).frame
    validation = validate(raw, config.contract)
    card = project.champion.card
    scored = score_batch(validation.valid, load_verified(project.champion), card, 1_000, 300).frame
    canary = None
    if index >= CANARY_FROM:
        routed = validation.valid.head(int(validation.valid.height * CANARY_SHARE))
        canary = score_batch(routed, load_verified(project.challenger), project.challenger.card, 1_000, 300).frame
    outcomes = assemble_outcomes(
        raw,
        validation.quarantine,
        scored,
        Fallback(card.fallback, card.version),
        config.model.decision,
        True,
        canary,
    )
    with project.connect() as connection:
        store_partition(connection, "outcomes", night, outcomes)
    simulator.write_labels(data.labels, night + dt.timedelta(days=LABEL_DELAY), config.labels_path)


def store_partition(connection: duckdb.DuckDBPyConnection, table: str, night: dt.date, frame: pl.DataFrame) -> None:
    """What the warehouse IO manager does with a night's partition: replace it."""
    frame_arrow = frame.to_arrow()  # noqa: F841
    connection.execute("create schema if not exists nightly")
    connection.execute(f"create table if not exists nightly.{table} as select * from frame_arrow limit 0")
    connection.execute(f"delete from nightly.{table} where partition_date = ?", [night])
    connection.execute(f"insert into nightly.{table} by name select * from frame_arrow")


def full_recomputation(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date
) -> tuple[pl.DataFrame, dict[str, float | None]]:
    """The performance step as it was before it became incremental: every outcome and label, every night. Returns
    the realized table over all nights and the night's ``performance.*`` metrics."""
    settings, decision = config.monitoring.performance, config.model.decision
    every_night = connection.execute("select * from nightly.outcomes").pl()
    stored = labels.stored_labels(connection)
    champion = registry.alias_record(connection, registry.CHAMPION, night)
    realized_all = performance.realized_performance(
        every_night, stored, decision, settings.business_value, settings.min_labeled_rows
    )
    outcomes = every_night.filter(pl.col("partition_date") <= night)
    stored = stored.filter(pl.col("arrived_on") <= night)
    realized = performance.realized_performance(
        outcomes, stored, decision, settings.business_value, settings.min_labeled_rows
    )
    estimated = performance.estimated_performance(outcomes, decision, settings.business_value)
    joined = performance.scored_with_labels(outcomes, stored).filter(
        (pl.col("source") == "model") & pl.col("label").is_not_null()
    )
    calibration = None
    if joined.height:
        recent = joined.filter(pl.col("partition_date") > joined["partition_date"].max() - dt.timedelta(days=14))
        calibration = performance.calibration_check(
            recent["score"].to_numpy(), recent["label"].to_numpy(), max_calibration_error=settings.max_calibration_error
        )
    tonight = estimated.filter((pl.col("partition_date") == night) & (pl.col("source") == "model"))
    metrics = performance.performance_metrics(
        performance.latest_realized(realized),
        tonight.row(0, named=True) if tonight.height else None,
        calibration,
        include_missing=True,
    )
    pooled = performance.pooled_realized_auc(
        performance.scored_with_labels(outcomes, stored), 7, settings.min_labeled_rows
    )
    reference, expected = champion.card.holdout_metrics["auc"], champion.card.holdout_metrics.get("estimated_auc")
    metrics["performance.realized_auc_window"] = pooled["auc"] if pooled else None
    estimated_auc = metrics.get("performance.estimated_auc")
    metrics["performance.estimated_auc_drop"] = (
        None if expected is None or estimated_auc is None else expected - estimated_auc
    )
    metrics["performance.realized_auc_drop"] = reference - pooled["auc"] if pooled else None
    return realized_all, metrics


def stored_state(connection: duckdb.DuckDBPyConnection, night: dt.date) -> tuple[pl.DataFrame, dict[str, float | None]]:
    table = connection.execute("select * from monitoring.performance_realized").pl()
    recorded = metrics_store.metrics_on(connection, night)
    return table, {name: value for name, value in recorded.items() if name.startswith("performance.")}


def run_step(project: Project, night: dt.date) -> None:
    with project.connect() as connection:
        monitoring.labels_night(project.config, connection, night)
        monitoring.performance_night(project.config, connection, night)


def assert_same_as_full(project: Project, night: dt.date) -> None:
    with project.connect() as connection:
        expected_table, expected_metrics = full_recomputation(project.config, connection, night)
        table, metrics = stored_state(connection, night)
    key = performance.GROUP_KEY
    assert table.sort(key).equals(expected_table.sort(key)), f"realized table differs on {night}"
    if (
        metrics.get("performance.estimate_trusted") == 0.0
    ):  # an untrusted estimate's drop is not recorded (test_estimate_trust)
        expected_metrics["performance.estimated_auc_drop"] = None
    known = {name: value for name, value in expected_metrics.items() if value is not None}
    assert {
        name: value for name, value in metrics.items() if name in expected_metrics and value is not None
    } == known, night


def test_every_night_equals_the_full_recomputation(project: Project):
    for index in range(NIGHTS):
        land_and_answer(project, index)
        night = FIRST_NIGHT + dt.timedelta(days=index)
        run_step(project, night)
        assert_same_as_full(project, night)

    with project.connect() as connection:
        realized = connection.execute("select * from monitoring.performance_realized where auc is not null").pl()
    assert set(realized["source"]) == {"model", "canary"}  # the comparison covered labeled nights of both sources


def test_a_rerun_of_an_old_night_sees_only_what_was_known_by_then_and_keeps_later_nights(project: Project):
    old = FIRST_NIGHT + dt.timedelta(days=CANARY_FROM + 1)  # its labels arrived after it, within the run
    run_step(project, old)

    assert_same_as_full(project, old)


def test_an_old_night_answered_again_replaces_its_rows(project: Project):
    old = FIRST_NIGHT + dt.timedelta(days=2)
    land_and_answer(project, 2)
    with project.connect() as connection:  # answered differently this time
        connection.execute(
            "update nightly.outcomes set score = 1 - score where partition_date = ? and source = 'model'", [old]
        )
    run_step(project, old)

    assert_same_as_full(project, old)


def test_a_night_recomputes_only_itself_and_the_nights_whose_labels_landed(project: Project):
    config, latest = project.config, FIRST_NIGHT + dt.timedelta(days=NIGHTS - 1)
    run_step(project, latest)  # settled: every label known so far was seen
    later = latest + dt.timedelta(days=1)
    simulator.write_labels(  # a late file for two old nights arrives tonight
        pl.concat(
            [
                simulator.simulate_night(FIRST_NIGHT + dt.timedelta(days=d), ROWS, seed=11).labels
                for d in (NIGHTS - 2, NIGHTS - 1)
            ]
        ),
        later,
        config.labels_path,
    )

    with project.connect() as connection:
        unchanged = performance.refresh_performance(
            connection, latest, config.model.decision, config.monitoring.performance
        )
        monitoring.labels_night(config, connection, later)
        landed = performance.refresh_performance(
            connection, later, config.model.decision, config.monitoring.performance
        )

    assert unchanged == [latest]
    assert landed == [FIRST_NIGHT + dt.timedelta(days=d) for d in (NIGHTS - 2, NIGHTS - 1)] + [later]


def test_nights_counted_a_few_rows_at_a_time_give_the_tables_counted_whole(project: Project):
    config, latest = project.config, FIRST_NIGHT + dt.timedelta(days=NIGHTS - 1)

    def recomputed(chunk_rows: int) -> list[pl.DataFrame]:
        with project.connect() as connection:
            connection.execute(f"delete from {PERFORMANCE_LABEL_STATE}")  # every labeled night is recomputed
            nights = performance.refresh_performance(
                connection, latest, config.model.decision, config.monitoring.performance, chunk_rows
            )
            assert len(nights) > 1
            return [
                connection.execute(f"select * from {table}").pl().sort(performance.GROUP_KEY)
                for table in (performance.REALIZED_TABLE, performance.ESTIMATED_TABLE)
            ]

    whole, chunked = recomputed(10**9), recomputed(7)

    assert whole[0].filter(pl.col("labeled_rows") > 0).height > 0
    for expected, found in zip(whole, chunked, strict=True):
        assert found.equals(expected)
