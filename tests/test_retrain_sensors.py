"""The retrain policy through the real sensors and schedule: evaluated against a real Dagster instance whose event
log holds the materializations the lifecycle assets report (the sensors read nothing else), deciding a run or a
skip whose reason says why."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetMaterialization, DagsterInstance, build_schedule_context, build_sensor_context
from pipeline_harness import Project, example_config, make_project

from jobs.instance import prepare_dagster_home

NIGHT = dt.date(2026, 1, 31)
PERFORMANCE_ALERT = {"alert_id": "a-perf", "category": "performance", "opened_night": "2026-01-20"}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    made = make_project(tmp_path / "project", example_config())
    # a stored instance, as in production: a schedule's context needs one it can reopen
    return Project(
        made.root, made.config_path, DagsterInstance.from_config(str(prepare_dagster_home(tmp_path / "dagster")))
    )


def report(instance: DagsterInstance, asset: str, metadata: dict[str, Any], night: dt.date | None = None) -> None:
    """A materialization as the asset's run would write it to the event log."""
    instance.report_runless_asset_event(
        AssetMaterialization(asset_key=asset, partition=night.isoformat() if night else None, metadata=metadata)
    )


def retrain_sensor_tick(project: Project):
    sensor = project.defs.resolve_sensor_def("retrain_on_alerts")
    with build_sensor_context(instance=project.instance, definitions=project.defs) as context:
        return sensor.evaluate_tick(context)


def test_retrain_resumes_after_an_approved_candidate_was_rolled_back_while_the_alert_stays_open(project):
    approved_on = NIGHT - dt.timedelta(days=10)
    report(
        project.instance, "candidate_model", {"status": "trained", "version": "v2", "as_of": approved_on.isoformat()}
    )
    report(
        project.instance,
        "candidate_evaluation",
        {"decision": "approved", "version": "v2", "as_of": approved_on.isoformat()},
    )
    # v2 shadowed and was rolled back: tonight's shadow_scores has no challenger
    report(project.instance, "shadow_scores", {"challenger_version": "none", "rollout_action": "none"}, NIGHT)
    report(project.instance, "alerts", {"open_alert_categories": [PERFORMANCE_ALERT]}, NIGHT)

    tick = retrain_sensor_tick(project)

    assert [request.run_key for request in tick.run_requests] == [f"retrain:{NIGHT}"], tick.skip_message
    assert tick.run_requests[0].tags["nightkeeper/as_of"] == NIGHT.isoformat()


def test_the_alert_sensor_skips_within_the_cooldown_saying_when_it_ends(project):
    report(
        project.instance,
        "candidate_model",
        {"status": "rejected", "version": "v2", "as_of": (NIGHT - dt.timedelta(days=2)).isoformat()},
    )
    report(project.instance, "alerts", {"open_alert_categories": [PERFORMANCE_ALERT]}, NIGHT)

    tick = retrain_sensor_tick(project)

    assert not tick.run_requests
    assert tick.skip_message.startswith("cooldown") and "2026-02-05" in tick.skip_message


def test_the_monthly_schedule_does_not_train_a_second_candidate_for_a_night_the_alert_sensor_retrained(project):
    report(project.instance, "alerts", {"open_alert_categories": [PERFORMANCE_ALERT]}, NIGHT)
    requested = retrain_sensor_tick(project).run_requests[0]
    project.instance.create_run_for_job(  # the requested run, as the daemon would launch it
        project.defs.resolve_job_def("retrain"), run_config=requested.run_config, tags=requested.tags
    )
    schedule = project.defs.resolve_schedule_def("monthly_retrain")

    with build_schedule_context(
        instance=project.instance, scheduled_execution_time=dt.datetime(2026, 2, 1, 4)
    ) as context:
        tick = schedule.evaluate_tick(context)

    assert not tick.run_requests
    assert "one candidate per night" in tick.skip_message


def test_the_monthly_schedule_retrains_when_nothing_else_did(project):
    schedule = project.defs.resolve_schedule_def("monthly_retrain")

    with build_schedule_context(
        instance=project.instance, scheduled_execution_time=dt.datetime(2026, 2, 1, 4)
    ) as context:
        tick = schedule.evaluate_tick(context)

    assert [request.run_key for request in tick.run_requests] == [f"retrain:{NIGHT}"]
