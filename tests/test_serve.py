"""A deployment runs by itself: schedules and sensors start switched on, and ``nightkeeper serve`` runs Dagster's
webserver and daemon for the project."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, DefaultScheduleStatus, DefaultSensorStatus, RunsFilter
from pipeline_harness import REPO, bootstrap_example_champion, example_config, make_project

from jobs.definitions import NIGHTLY_JOB, NIGHTLY_SCHEDULE
from jobs.instance import prepare_dagster_home


def test_every_schedule_and_sensor_starts_running_without_a_toggle(tmp_path):
    defs = make_project(tmp_path / "project").defs

    schedules = {schedule.name: schedule.default_status for schedule in defs.schedules}
    sensors = {sensor.name: sensor.default_status for sensor in defs.sensors}

    assert schedules and set(schedules.values()) == {DefaultScheduleStatus.RUNNING}, schedules
    assert sensors and set(sensors.values()) == {DefaultSensorStatus.RUNNING}, sensors


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cmdlines_mentioning(text: str) -> dict[int, str]:
    """Live processes whose command line mentions ``text`` (the test's temp folder), by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and int(entry.name) != os.getpid():
                found[int(entry.name)] = cmdline
    return found


def _wait_for(what: str, probe, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.slow
def test_serve_daemon_runs_the_night_at_its_scheduled_tick_and_the_sensors_react(tmp_path):
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    project = make_project(
        tmp_path / "project",
        example_config(schedule={"cron": "* * * * *", "start_date": (yesterday - dt.timedelta(days=1)).isoformat()}),
    )
    bootstrap_example_champion(project)
    project.land_night(yesterday, rows=600)
    home = project.config.dagster_home
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nightkeeper.cli",
            "serve",
            "--config",
            str(project.config_path),
            "--port",
            str(_free_port()),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )
    try:
        instance = DagsterInstance.from_config(str(prepare_dagster_home(home)))

        def night_run():
            runs = instance.get_runs(RunsFilter(job_name=NIGHTLY_JOB, tags={"dagster/schedule_name": NIGHTLY_SCHEDULE}))
            failed = [run for run in runs if run.status == DagsterRunStatus.FAILURE]
            assert not failed, f"the scheduled night failed: {failed[0].run_id}"
            return [run for run in runs if run.status == DagsterRunStatus.SUCCESS]

        runs = _wait_for("the daemon to launch and finish the scheduled night", night_run, timeout=240)
        assert [run.tags["dagster/partition"] for run in runs] == [yesterday.isoformat()]
        finished = instance.get_run_record_by_id(runs[0].run_id).end_time

        def ticks_after_the_night(name: str):
            states = [state for state in instance.all_instigator_state() if state.name == name]
            ticks = [
                tick for state in states for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id)
            ]
            # A STARTED tick is still being evaluated (seen in CI under load): only finished ticks have an outcome.
            return [tick for tick in ticks if tick.timestamp > finished and tick.status.value != "STARTED"]

        sensor_ticks = _wait_for(
            "the retrain sensor to finish evaluating the night's alerts",
            lambda: ticks_after_the_night("retrain_on_alerts"),
            timeout=90,
        )
        assert all(tick.status.value in ("SKIPPED", "SUCCESS") for tick in sensor_ticks), sensor_ticks
        _wait_for("a later schedule tick", lambda: ticks_after_the_night(NIGHTLY_SCHEDULE), timeout=90)
        assert len(instance.get_runs(RunsFilter(job_name=NIGHTLY_JOB))) == 1, "a later tick ran the same night again"
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            stopped_cleanly = serve.wait(timeout=60) == 0
        except subprocess.TimeoutExpired:
            stopped_cleanly = False
        leftovers = _cmdlines_mentioning(str(tmp_path))
        for pid in leftovers:  # processes this test started, so a failure here leaves nothing behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)
    assert stopped_cleanly, "nightkeeper serve did not stop on SIGTERM"
    assert not leftovers, f"processes outlived nightkeeper serve: {leftovers}"
