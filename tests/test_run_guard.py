"""Runs the Dagster daemon launches (``nightkeeper serve``, ``dagster dev``) are reaped too: the instance config
Nightkeeper writes turns on Dagster's run monitoring, and the ``reap_dead_runs`` sensor marks failed a run whose worker
process died and frees its warehouse slot."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    build_sensor_context,
)
from dagster._core.events import EngineEventData  # noqa: TID251 (the event Dagster's run launcher logs, forged here)

from jobs.instance import prepare_dagster_home
from jobs.resources import WAREHOUSE_POOL
from jobs.run_guard import REAPER_SENSOR, build_reaper_sensor, pool_holders


def _instance(tmp_path) -> DagsterInstance:
    return DagsterInstance.from_config(str(prepare_dagster_home(tmp_path / "dagster")))


def _daemon_run(instance: DagsterInstance, worker_pid: int) -> DagsterRun:
    """A STARTED run as the daemon's default run launcher leaves it: no nightkeeper tags, its worker's pid in the
    "Started process for run" engine event, holding the warehouse slot."""
    run = DagsterRun(job_name="nightly_batch", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED)
    instance.add_run(run)
    instance.report_engine_event(
        f"Started process for run (pid: {worker_pid}).", run, EngineEventData.in_process(worker_pid)
    )
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)
    assert storage.claim_concurrency_slot(WAREHOUSE_POOL, run.run_id, "outcomes").is_claimed
    return run


def _tick(instance: DagsterInstance) -> str:
    """One evaluation of the reaper sensor on ``instance``, as the daemon runs it; its skip message."""
    sensor = build_reaper_sensor()
    with build_sensor_context(instance=instance, sensor_name=REAPER_SENSOR) as context:
        return sensor.evaluate_tick(context).skip_message


def test_the_instance_nightkeeper_writes_turns_on_run_monitoring(tmp_path):
    with _instance(tmp_path) as instance:
        settings = instance.run_monitoring_settings

        assert instance.run_monitoring_enabled and "MONITORING" in instance.get_required_daemon_types()
    assert settings["free_slots_after_run_end_seconds"] > 0 and settings["start_timeout_seconds"] > 0
    assert "max_runtime_seconds" not in settings  # a long night is not a dead one


def test_a_daemon_launched_run_whose_worker_died_is_marked_failed_by_the_reaper_sensor(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with _instance(tmp_path) as instance:
        run = _daemon_run(instance, dead.pid)

        tick = _tick(instance)

        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
        assert pool_holders(instance) == []
        assert run.run_id in tick
        [failure] = [e for e in instance.all_logs(run.run_id) if e.is_dagster_event and e.dagster_event.is_run_failure]
        assert f"run worker pid {dead.pid}" in failure.dagster_event.message


def test_a_daemon_launched_run_whose_worker_lives_is_left_alone(tmp_path):
    with _instance(tmp_path) as instance:
        run = _daemon_run(instance, os.getpid())

        tick = _tick(instance)

        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
        assert [holder.run_id for holder in pool_holders(instance)] == [run.run_id]
        assert tick == "no dead runs"
