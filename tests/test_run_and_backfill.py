"""`nightkeeper run` and `backfill`: real runs of the nightly job on the config's persistent Dagster instance; weekly
cadence; a night with no landed file is an empty night with one warning."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import AssetKey, DagsterInstance, RunsFilter
from dagster._core.execution.asset_backfill import AssetBackfillStatus  # noqa: TID251 (the backfill record's own types)
from dagster._core.execution.backfill import BulkActionStatus  # noqa: TID251
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG  # noqa: TID251
from pipeline_harness import FIRST_NIGHT, bootstrap_example_champion, example_config, make_project
from typer.testing import CliRunner

from jobs.definitions import NIGHTLY_SCHEDULE, build_definitions
from jobs.nights import partition_for, partitions_between, run_night
from nightkeeper.cli import app


def _instance(project) -> DagsterInstance:
    return DagsterInstance.from_config(str(project.config.dagster_home))


def test_run_night_is_a_run_of_the_nightly_job_stored_in_the_persistent_instance(tmp_path):
    project = make_project(tmp_path)
    bootstrap_example_champion(project)
    project.land_night(FIRST_NIGHT, rows=300)

    result = run_night(project.config_path, FIRST_NIGHT)

    assert result.success and result.partition == FIRST_NIGHT.isoformat()
    with _instance(project) as instance:
        [stored] = instance.get_run_records(RunsFilter(run_ids=[result.run_id]))
    assert stored.dagster_run.job_name == "nightly_batch"
    assert stored.dagster_run.tags[PARTITION_NAME_TAG] == FIRST_NIGHT.isoformat()
    assert project.table("outcomes", FIRST_NIGHT).height == 300


@pytest.mark.slow  # three Dagster runs in a backfill (~17 s on 2 quiet cores)
def test_backfill_runs_each_night_in_order_as_one_dagster_backfill(tmp_path):
    project = make_project(tmp_path)
    bootstrap_example_champion(project)
    nights = [FIRST_NIGHT + dt.timedelta(days=i) for i in range(2)]
    for night in nights:
        project.land_night(night, rows=300)

    done = CliRunner().invoke(
        app,
        [
            "backfill",
            "--from",
            nights[0].isoformat(),
            "--to",
            nights[-1].isoformat(),
            "--config",
            str(project.config_path),
        ],
        terminal_width=200,
    )

    assert done.exit_code == 0, done.output
    backfill_id = done.output.split("backfill ", 1)[1].split(":", 1)[0]
    with _instance(project) as instance:
        backfill = instance.get_backfill(backfill_id)
        runs = instance.get_run_records(RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}), ascending=True)
    assert backfill is not None and backfill.status == BulkActionStatus.COMPLETED_SUCCESS
    assert [r.dagster_run.tags[PARTITION_NAME_TAG] for r in runs] == [n.isoformat() for n in nights]
    assert all(project.table("outcomes", night).height == 300 for night in nights)
    graph = build_definitions(project.config_path).resolve_asset_graph()
    statuses = backfill.get_asset_backfill_data(graph).get_backfill_status_per_asset_key(graph)  # what the UI shows
    outcomes = next(s for s in statuses if s.asset_key == AssetKey("outcomes"))
    assert outcomes.num_targeted_partitions == 2
    assert outcomes.partitions_counts_by_status[AssetBackfillStatus.MATERIALIZED] == 2


def test_a_night_with_no_landed_file_is_an_empty_night_with_one_warning_not_a_schema_break(tmp_path):
    project = make_project(tmp_path)
    bootstrap_example_champion(project)

    result = project.run_night(FIRST_NIGHT)

    assert result.success
    failed = {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}
    # estimate trust is a verdict about the score-based estimate (none tonight), not about the night
    assert set(failed) - {"estimate_trustworthy"} == {"schema_matches_contract"}
    assert failed["schema_matches_contract"].severity.value == "WARN"
    assert "empty night" in failed["schema_matches_contract"].description
    assert "no input file landed" in failed["schema_matches_contract"].description
    alerts = project.query("select rule from monitoring.alerts")
    assert "schema-break" not in alerts["rule"].to_list()
    assert project.table("outcomes", FIRST_NIGHT).height == 0


def test_weekly_cadence_has_one_partition_per_week_keyed_by_its_first_day(tmp_path):
    project = make_project(
        tmp_path, example_config(schedule={"start_date": FIRST_NIGHT.isoformat(), "cadence": "weekly"})
    )
    config = project.config

    assert partitions_between(config, FIRST_NIGHT, FIRST_NIGHT + dt.timedelta(days=13)) == [
        FIRST_NIGHT.isoformat(),
        (FIRST_NIGHT + dt.timedelta(days=7)).isoformat(),
    ]
    assert partition_for(config, FIRST_NIGHT + dt.timedelta(days=3)) == FIRST_NIGHT.isoformat()
    schedule = build_definitions(project.config_path).resolve_schedule_def(NIGHTLY_SCHEDULE)
    assert schedule.cron_schedule == f"0 2 * * {FIRST_NIGHT.isoweekday() % 7}"


def test_a_weekly_run_answers_the_rows_landed_under_its_first_day(tmp_path):
    project = make_project(
        tmp_path, example_config(schedule={"start_date": FIRST_NIGHT.isoformat(), "cadence": "weekly"})
    )
    bootstrap_example_champion(project)
    project.land_night(FIRST_NIGHT, rows=300)

    result = run_night(project.config_path, FIRST_NIGHT + dt.timedelta(days=4))

    assert result.success and result.partition == FIRST_NIGHT.isoformat()
    assert project.table("outcomes", FIRST_NIGHT).height == 300


def test_a_night_before_the_first_partition_is_refused_naming_the_start_date(tmp_path):
    project = make_project(tmp_path)

    with pytest.raises(ValueError, match=f"schedule.start_date {FIRST_NIGHT}"):
        partition_for(project.config, FIRST_NIGHT - dt.timedelta(days=1))
