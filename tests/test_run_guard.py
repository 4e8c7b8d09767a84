"""Runs the Dagster daemon launches (``nightkeeper serve``, ``dagster dev``) are reaped too: the instance config
Nightkeeper writes turns on Dagster's run monitoring, and the ``reap_dead_runs`` sensor marks failed a run whose worker
process died and frees its warehouse slot."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fault_injection_hook
import pytest
from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
    build_sensor_context,
)
from dagster._core.events import EngineEventData  # noqa: TID251 (the event Dagster's run launcher logs, forged here)
from pipeline_harness import REPO, bootstrap_example_champion, example_config, make_project

from jobs.definitions import NIGHTLY_JOB
from jobs.instance import prepare_dagster_home, write_workspace
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


def _start_daemon(workspace: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """``dagster-daemon run`` on ``workspace``, as the leader of its own process group."""
    command = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)]
    return subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True)


def _wait_for(what: str, probe, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.slow
def test_a_night_the_daemon_launched_and_lost_with_it_is_reaped_when_the_daemon_restarts(tmp_path):
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    project = make_project(
        tmp_path / "project",
        example_config(schedule={"cron": "* * * * *", "start_date": (yesterday - dt.timedelta(days=1)).isoformat()}),
    )
    bootstrap_example_champion(project)
    project.land_night(yesterday, rows=300)
    home = prepare_dagster_home(project.config.dagster_home)
    fault_injection_hook.install(home)
    workspace = write_workspace(project.config_path, home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    env.pop(fault_injection_hook.ENV_VAR, None)
    night = RunsFilter(job_name=NIGHTLY_JOB, tags={"dagster/partition": yesterday.isoformat()})

    # the scheduled night's worker kills its whole process group at outcomes: daemon, code server and worker at once
    first = _start_daemon(
        workspace, {**env, fault_injection_hook.ENV_VAR: "outcomes:ASSET_MATERIALIZATION:group"}, tmp_path
    )
    try:
        assert first.wait(timeout=300) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    with DagsterInstance.from_config(str(home)) as instance:
        [lost] = instance.get_runs(night)
        assert lost.status == DagsterRunStatus.STARTED and pool_holders(instance)  # what blocked later runs

        second = _start_daemon(workspace, env, tmp_path)
        try:
            _wait_for(
                "the reaper sensor to mark the lost run failed",
                lambda: instance.get_run_by_id(lost.run_id).status == DagsterRunStatus.FAILURE,
                timeout=180,
            )
        finally:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
        [failure] = [e for e in instance.all_logs(lost.run_id) if e.is_dagster_event and e.dagster_event.is_run_failure]
        assert "run worker pid" in failure.dagster_event.message and "is gone" in failure.dagster_event.message
        assert pool_holders(instance) == []

    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "nightkeeper.cli",
            "run",
            "--night",
            yesterday.isoformat(),
            "--config",
            str(project.config_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    raw = project.query("select count(*) as n from nightly.raw_batch")["n"][0]
    outcomes = project.query(
        "select count(*) as n, count(distinct (source_file, row_number)) as k from nightly.outcomes"
    )
    assert (raw, outcomes["n"][0], outcomes["k"][0]) == (300, 300, 300)
