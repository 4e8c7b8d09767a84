"""A night in shards through real Dagster: the nightly job of a project with ``scale.shards: 3``, run by the
multiprocess executor (each shard op in a process of its own) on a real DuckDB file, stores the tables, night
metrics, alerts and checks of the same night run whole.

Two copies of one project (the same bootstrapped LightGBM champion and a challenger in a 20 % canary), the same
landed night (the simulator's bad-data night, so quarantined, fallback and canary answers all occur): one runs the
night whole, in process; the other in three shards.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fault_injection_hook
import polars as pl
import pytest
from dagster import (
    DagsterInstance,
    ExecuteInProcessResult,
    JobExecutionResult,
)
from pipeline_harness import (
    FIRST_NIGHT,
    Project,
    bootstrap_example_champion,
    check_results,
    example_config,
    make_project,
    run_in_processes,
    shard_processes_alive_at_once,
)
from polars.testing import assert_frame_equal

from nightkeeper import registry, warehouse
from nightkeeper.artifacts import save_artifact
from nightkeeper.examples import simulator
from nightkeeper.pipeline import metadata_keys as keys
from nightkeeper.training import train_model
from nightkeeper.validation import ROW_KEY

NIGHT = FIRST_NIGHT + dt.timedelta(days=1)
SHARDS = 3
ROWS = 1500
ROW_TABLES = ["raw_batch", "validated_batch", "quarantine", "scored_batch", "shadow_scores", "outcomes"]
WALL_CLOCK = ["latency_ms"]  # measured per chunk: the one stored column that differs between any two runs
WALL_CLOCK_METRICS = ["scoring.latency_p95_ms"]
ORDER = {"quarantine": [*ROW_KEY, "column", "rule"], "drift_metrics": ["feature"]}

pytestmark = pytest.mark.slow


@dataclass
class Nights:
    whole: Project
    sharded: Project
    landed: simulator.NightData
    whole_run: ExecuteInProcessResult
    sharded_run: JobExecutionResult
    instance: DagsterInstance


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nights]:
    base = tmp_path_factory.mktemp("sharded_dagster")
    whole = make_project(base / "whole")
    champion = bootstrap_example_champion(whole)
    add_canary_challenger(whole)
    shutil.copytree(whole.root, base / "sharded")
    sharded = make_project(base / "sharded", example_config(scale={"shards": SHARDS}))
    landed = simulator.simulate_night(NIGHT, ROWS, seed=11, scenario=simulator.Scenario(bad_data=True))
    for project in (whole, sharded):
        project.land(landed)
    assert champion.version
    (base / "dagster").mkdir()
    with DagsterInstance.local_temp(str(base / "dagster")) as instance:
        yield Nights(
            whole, sharded, landed, whole.run_night(NIGHT), run_in_processes(sharded, NIGHT, instance), instance
        )


def add_canary_challenger(project: Project) -> None:
    """A model trained on other nights, serving a 20 % canary from NIGHT on."""
    config = project.config
    history = simulator.simulate_history(NIGHT - dt.timedelta(days=1), days=10, rows_per_day=500, seed=5)
    model = train_model(history, config)
    with warehouse.connect(config.warehouse_path) as connection:
        record = registry.register(connection, model.card, save_artifact(model, config.path(config.storage.models)))
        registry.set_alias(connection, registry.CHALLENGER, record.version, NIGHT, "test", "set up", "canary:20")


def stored(project: Project, table: str) -> pl.DataFrame:
    frame = project.table(table, NIGHT).drop("shard", *WALL_CLOCK, strict=False)
    return frame.sort(ORDER.get(table, ROW_KEY))


def test_the_sharded_run_succeeds_with_its_shard_ops_in_processes_alive_at_once(nights: Nights) -> None:
    assert nights.whole_run.success and nights.sharded_run.success
    assert shard_processes_alive_at_once(nights.instance, nights.sharded_run.run_id) >= 2


@pytest.mark.parametrize("table", [*ROW_TABLES, "reason_codes", "drift_metrics"])
def test_a_night_in_shards_stores_the_tables_of_the_night_run_whole(nights: Nights, table: str) -> None:
    assert_frame_equal(stored(nights.sharded, table), stored(nights.whole, table), abs_tol=1e-12, rel_tol=0)


def test_the_night_has_every_kind_of_answer_and_every_shard_stored_rows(nights: Nights) -> None:
    outcomes = nights.sharded.table("outcomes", NIGHT)
    assert {"model", "canary", "fallback"} <= set(outcomes["source"])
    assert nights.sharded.table("quarantine", NIGHT).height > 0
    assert set(outcomes["shard"]) == set(range(SHARDS))


def test_a_night_in_shards_records_the_night_metrics_of_the_night_run_whole(nights: Nights) -> None:
    def metrics(project: Project) -> pl.DataFrame:
        return project.query(
            "select metric, value, model_version from monitoring.night_metrics where night = ? order by metric",
            [NIGHT],
        ).filter(~pl.col("metric").is_in(WALL_CLOCK_METRICS))

    assert_frame_equal(metrics(nights.sharded), metrics(nights.whole), abs_tol=1e-12, rel_tol=0)
    assert metrics(nights.whole)["metric"].str.starts_with("drift.").any()


def test_a_night_in_shards_raises_the_alerts_of_the_night_run_whole(nights: Nights) -> None:
    def alerts(project: Project) -> pl.DataFrame:
        return project.query(
            "select rule, category, severity, metric, opened_night, status, value, message from monitoring.alerts "
            "order by rule"
        )

    assert_frame_equal(alerts(nights.sharded), alerts(nights.whole))


def test_a_night_in_shards_reports_the_checks_and_rollout_decision_of_the_night_run_whole(nights: Nights) -> None:
    def verdicts(result: JobExecutionResult | ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
        return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}

    def rollout(result: JobExecutionResult | ExecuteInProcessResult) -> str:
        (shadow,) = [
            m.materialization
            for m in result.get_asset_materialization_events()
            if m.asset_key.to_user_string() == "shadow_scores"
        ]
        return shadow.metadata[keys.SHADOW_ROLLOUT_ACTION].value

    assert verdicts(nights.sharded_run) == verdicts(nights.whole_run)
    assert len(check_results(nights.whole_run)) > 10
    assert rollout(nights.sharded_run) == rollout(nights.whole_run) != keys.NONE


def test_running_a_sharded_night_again_leaves_each_row_once(nights: Nights) -> None:
    again = run_in_processes(nights.sharded, NIGHT, nights.instance)

    assert again.success
    assert nights.sharded.table("raw_batch", NIGHT).height == nights.landed.applications.height
    for table in ROW_TABLES:
        rows = nights.sharded.table(table, NIGHT)
        assert not rows.select(ORDER.get(table, ROW_KEY)).is_duplicated().any(), f"{table}: a row stored twice"
    assert_frame_equal(stored(nights.sharded, "outcomes"), stored(nights.whole, "outcomes"))


def test_a_killed_shard_op_fails_the_run_and_the_rerun_answers_every_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "project", example_config(scale={"shards": SHARDS}))
    bootstrap_example_champion(project)
    landed = project.land_night(NIGHT, rows=600)
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("{}\n")
    fault_injection_hook.install(home)
    with DagsterInstance.local_temp(str(home)) as instance:
        monkeypatch.setenv(fault_injection_hook.ENV_VAR, "night_shards.answer_shard_1:STEP_START")
        killed = run_in_processes(project, NIGHT, instance)
        monkeypatch.delenv(fault_injection_hook.ENV_VAR)
        materialized = {e.asset_key.to_user_string() for e in killed.get_asset_materialization_events()}
        steps = {s.step_key: s.status.value for s in instance.get_run_step_stats(killed.run_id)}
        again = run_in_processes(project, NIGHT, instance)

    assert not killed.success and steps["night_shards.answer_shard_1"] == "FAILURE"
    assert not materialized & {"raw_batch", "outcomes", "drift_metrics"}, "a night missing a shard was materialized"
    assert again.success
    outcomes = project.table("outcomes", NIGHT)
    assert outcomes.height == project.table("raw_batch", NIGHT).height == landed.applications.height
    assert not outcomes.select(ROW_KEY).is_duplicated().any()
