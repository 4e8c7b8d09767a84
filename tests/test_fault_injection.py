"""Crash safety: a run killed with SIGKILL at any step does not block the runs after it, and re-running it loses or
duplicates nothing; a command waiting for the pool says who holds it, gives up after `storage.lock_wait_seconds`, and
ends promptly on SIGTERM/SIGINT.

Every command here is a real `nightkeeper` subprocess on a real project folder with a persistent Dagster instance. The
kills are deterministic: the fault-injection hook (tests/fault_injection_hook.py, a logging handler in the instance's
dagster.yaml) makes the run's process SIGKILL itself at a named event of a named step."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fault_injection_hook
import polars as pl
import psutil
import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from pipeline_harness import FIRST_NIGHT, REPO, Project, bootstrap_example_champion, example_config, make_project

from jobs.instance import prepare_dagster_home
from jobs.nights import run_night
from jobs.resources import WAREHOUSE_POOL
from jobs.run_guard import HOST_TAG, PID_TAG, launch_run, pool_holders, process_tags, reap_dead_runs
from nightkeeper import registry, warehouse
from nightkeeper.examples import simulator
from nightkeeper.models import publish
from nightkeeper.review.files import export_review_csv
from nightkeeper.review.storage import queue_for
from nightkeeper.training import train_model

ROWS = 300


def _project(tmp_path: Path) -> Project:
    """A project with the fault-injection hook in its dagster.yaml (it does nothing until a command arms it)."""
    project = make_project(tmp_path / "project", example_config())
    fault_injection_hook.install(prepare_dagster_home(project.config.dagster_home))
    return project


def _instance(project: Project) -> DagsterInstance:
    """The project's persistent instance (its dagster.yaml limits the warehouse pool to one slot)."""
    return DagsterInstance.from_config(str(prepare_dagster_home(project.config.dagster_home)))


def _cli(project: Project, *args: str, kill_at: str | None = None) -> subprocess.Popen:
    """A `nightkeeper` command on the project, as a subprocess the test can signal; ``kill_at`` arms the
    fault-injection hook (``<step key>:<EVENT_TYPE>``: the command SIGKILLs itself there)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "NIGHTKEEPER_CONFIG": str(project.config_path),
    }
    env.pop(fault_injection_hook.ENV_VAR, None)
    if kill_at:
        env[fault_injection_hook.ENV_VAR] = kill_at
    return subprocess.Popen(
        [sys.executable, "-m", "nightkeeper.cli", *args],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _hold_the_pool(instance: DagsterInstance, tags: dict[str, str] | None = None) -> DagsterRun:
    """A STARTED run holding the warehouse slot, as a step of a run in progress does; by default a run of this (live)
    test process."""
    run = DagsterRun(
        job_name="nightly_batch", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED, tags=tags or process_tags()
    )
    instance.add_run(run)
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)
    assert storage.claim_concurrency_slot(WAREHOUSE_POOL, run.run_id, "score_batch").is_claimed
    return run


def _status(instance: DagsterInstance, run_id: str) -> DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


# ------------------------------------------------------------------------------------------------ the reaper


def test_a_run_of_a_dead_process_is_marked_failed_and_its_slot_freed(tmp_path):
    project = _project(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with _instance(project) as instance:
        dead_run = _hold_the_pool(instance, {**process_tags(), PID_TAG: str(dead.pid)})

        reaped = reap_dead_runs(instance)

        assert reaped == [dead_run.run_id]
        assert _status(instance, dead_run.run_id) == DagsterRunStatus.FAILURE
        assert pool_holders(instance) == []
        [failure] = [
            e for e in instance.all_logs(dead_run.run_id) if e.is_dagster_event and e.dagster_event.is_run_failure
        ]
        assert f"pid {dead.pid}" in failure.dagster_event.message and "gone" in failure.dagster_event.message


def test_a_run_of_a_live_process_or_another_host_is_left_alone(tmp_path):
    project = _project(tmp_path)
    with _instance(project) as instance:
        alive = _hold_the_pool(instance)
        elsewhere = DagsterRun(
            job_name="nightly_batch",
            run_id=str(uuid.uuid4()),
            status=DagsterRunStatus.STARTED,
            tags={**process_tags(), PID_TAG: "999999999", HOST_TAG: "another-host"},
        )
        instance.add_run(elsewhere)

        assert reap_dead_runs(instance) == []
        assert _status(instance, alive.run_id) == DagsterRunStatus.STARTED
        assert _status(instance, elsewhere.run_id) == DagsterRunStatus.STARTED
        assert [holder.run_id for holder in pool_holders(instance)] == [alive.run_id]


@pytest.mark.slow
def test_a_launched_run_is_tagged_with_its_process_and_host(tmp_path, landed_project):
    from jobs.definitions import NIGHTLY_JOB

    project = _copy(landed_project[0], tmp_path)
    with _instance(project) as instance:
        result = launch_run(
            project.defs.resolve_job_def(NIGHTLY_JOB), instance, 60, partition_key=FIRST_NIGHT.isoformat()
        )
        tags = instance.get_run_by_id(result.run_id).tags
    assert result.success
    assert tags[PID_TAG] == str(os.getpid()) and tags[HOST_TAG] == process_tags()[HOST_TAG]


# ------------------------------------------------------------------------------------------------ waiting for the pool


@pytest.mark.slow
def test_a_command_waiting_for_the_warehouse_names_the_holder_and_gives_up_after_lock_wait_seconds(
    tmp_path, landed_project
):
    project = _with_lock_wait(_copy(landed_project[0], tmp_path), 3)
    with _instance(project) as instance:
        holder = _hold_the_pool(instance)
        command = _cli(project, "run", "--night", FIRST_NIGHT.isoformat())
        try:
            _, stderr = command.communicate(timeout=240)
        finally:
            command.kill()
        assert command.returncode == 75, stderr
        assert f"held by run {holder.run_id} (nightly_batch, step score_batch) since" in stderr
        assert "gave up after waiting" in stderr and "storage.lock_wait_seconds = 3" in stderr
        [waiter] = instance.get_run_records(RunsFilter(tags={PID_TAG: str(command.pid)}))
        assert waiter.dagster_run.status == DagsterRunStatus.FAILURE
        assert [h.run_id for h in pool_holders(instance)] == [holder.run_id]  # the waiter left no claim behind


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_command_waiting_for_the_warehouse_within_seconds(tmp_path, landed_project, signum):
    project = _with_lock_wait(_copy(landed_project[0], tmp_path), 600)
    with _instance(project) as instance:
        _hold_the_pool(instance)
        command = _cli(project, "run", "--night", FIRST_NIGHT.isoformat())
        try:
            stderr_lines = []
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                line = command.stderr.readline()
                stderr_lines.append(line)
                if "is waiting for the 'warehouse' pool" in line or not line:
                    break
            assert "is waiting for the 'warehouse' pool" in stderr_lines[-1], "".join(stderr_lines)
            waiting = psutil.Process(command.pid)
            cpu_before = sum(waiting.cpu_times()[:2])
            time.sleep(4)
            cpu_seconds = sum(waiting.cpu_times()[:2]) - cpu_before
            sent = time.monotonic()
            command.send_signal(signum)
            command.wait(timeout=10)
            took = time.monotonic() - sent
        finally:
            command.kill()
        assert command.returncode == 130 and took < 5
        assert (
            cpu_seconds < 0.5
        )  # it sleeps while it waits (Dagster alone spins: 0.9 s of these 4 s on a busy 2-core box, 0.2 s fixed)
        [waiter] = instance.get_run_records(RunsFilter(tags={PID_TAG: str(command.pid)}))
        assert waiter.dagster_run.status == DagsterRunStatus.FAILURE


# ------------------------------------------------------------------------------------------------ kill -9, then re-run

# Every step of the nightly job, with the event at which the fault-injection hook kills the run: the step's first
# result stored and reported (an asset's first materialization, the check step's evaluation), so the step dies holding
# the warehouse slot with its work written and its run unfinished. raw_batch is also killed at its start (slot
# claimed, nothing written). A step added to the job fails test_the_fault_injection_suite_kills_every_nightly_step
# until it is listed here.
NIGHTLY_KILL_POINTS = [
    "raw_batch:STEP_START",
    "raw_batch:ASSET_MATERIALIZATION",
    "validate_batch:ASSET_MATERIALIZATION",  # between its outputs: validated stored, quarantine not yet
    "scored_batch:ASSET_MATERIALIZATION",
    "drift_metrics:ASSET_MATERIALIZATION",
    "shadow_scores:ASSET_MATERIALIZATION",
    "outcomes:ASSET_MATERIALIZATION",
    "labels:ASSET_MATERIALIZATION",
    "outcomes_outcomes_conserve_rows:ASSET_CHECK_EVALUATION",
    "reason_codes:ASSET_MATERIALIZATION",
    "review_queue:ASSET_MATERIALIZATION",
    "performance:ASSET_MATERIALIZATION",
    "alerts:ASSET_MATERIALIZATION",
]


def test_the_fault_injection_suite_kills_every_nightly_step(tmp_path):
    from jobs.definitions import NIGHTLY_JOB

    job = make_project(tmp_path / "project").defs.resolve_job_def(NIGHTLY_JOB)

    steps = {node.name for node in job.graph.nodes}  # one step per node: nothing in the job is dynamic

    assert {point.split(":")[0] for point in NIGHTLY_KILL_POINTS} == steps


def _run_killed_at(project: Project, kill_point: str, *args: str) -> int:
    """Run the `nightkeeper` command ``args`` with the hook armed at ``kill_point``; assert that it died there by
    SIGKILL and return its pid."""
    command = _cli(project, *args, kill_at=kill_point)
    stdout, stderr = command.communicate(timeout=300)
    assert command.returncode == -signal.SIGKILL, f"not killed at {kill_point}: {stdout}{stderr}"
    return command.pid


def _killed_run(project: Project, pid: int) -> DagsterRun:
    """The one run the killed command ``pid`` launched, as it left it: still unfinished, what blocked every later run
    before the run guard."""
    with _instance(project) as instance:
        [record] = instance.get_run_records(RunsFilter(tags={PID_TAG: str(pid)}))
    assert record.dagster_run.status == DagsterRunStatus.STARTED
    return record.dagster_run


def _completes(project: Project, *args: str) -> None:
    command = _cli(project, *args)
    stdout, stderr = command.communicate(timeout=300)
    assert command.returncode == 0, stdout + stderr


def _outcome_conservation(project: Project, night: dt.date) -> tuple[int, int, int]:
    """(raw rows, outcome rows, distinct outcome keys) of the night."""
    raw = project.query("select count(*) as n from nightly.raw_batch where partition_date = ?", [night])["n"][0]
    outcomes = project.query(
        "select count(*) as n, count(distinct (source_file, row_number)) as keys "
        "from nightly.outcomes where partition_date = ?",
        [night],
    )
    return raw, outcomes["n"][0], outcomes["keys"][0]


def _row_counts(project: Project) -> dict[str, int]:
    """Rows of every table in the warehouse, by schema.table."""
    tables = project.query("select table_schema, table_name from information_schema.tables order by all")
    return {
        f"{schema}.{table}": project.query(f'select count(*) as n from "{schema}"."{table}"')["n"][0]
        for schema, table in tables.iter_rows()
    }


def _copy(root: Path, into: Path) -> Project:
    """A copy of the project folder at ``root`` (its config and registry store paths relative to it)."""
    copied = into / "project"
    shutil.copytree(root, copied)
    return Project(root=copied, config_path=copied / "nightkeeper.yaml", instance=DagsterInstance.ephemeral())


@pytest.fixture(scope="module")
def landed_project(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """One project for the module's kill tests (each works on a copy): champion bootstrapped, first night landed; and
    the warehouse's row counts once that night ran uninterrupted."""
    project = _project(tmp_path_factory.mktemp("landed"))
    bootstrap_example_champion(project)
    project.land_night(FIRST_NIGHT, rows=ROWS)
    reference = _copy(project.root, tmp_path_factory.mktemp("reference"))
    _completes(reference, "run", "--night", FIRST_NIGHT.isoformat())
    return project.root, _row_counts(reference)


@pytest.mark.slow
@pytest.mark.parametrize("kill_point", NIGHTLY_KILL_POINTS)
def test_a_night_killed_at_any_step_completes_when_run_again_with_nothing_lost_or_duplicated(
    tmp_path, landed_project, kill_point, monkeypatch
):
    landed, uninterrupted_counts = landed_project
    project = _copy(landed, tmp_path)
    killed = _killed_run(project, _run_killed_at(project, kill_point, "run", "--night", FIRST_NIGHT.isoformat()))

    # what `nightkeeper run --night` runs, in this process: one process start less per case (the CLI itself re-runs
    # a killed night in tests/test_run_guard.py, and a killed import or promote below)
    monkeypatch.setenv("DAGSTER_HOME", str(project.config.dagster_home))
    assert run_night(project.config_path, FIRST_NIGHT).success

    with _instance(project) as instance:
        assert _status(instance, killed.run_id) == DagsterRunStatus.FAILURE
        assert pool_holders(instance) == []
    assert _outcome_conservation(project, FIRST_NIGHT) == (ROWS, ROWS, ROWS)
    assert _row_counts(project) == uninterrupted_counts  # every table as if the night had run once


def _filled_review_file(project: Project, night: dt.date, path: Path) -> int:
    """The night's review queue exported and labeled by a reviewer; returns its row count."""
    with warehouse.connect(project.config.warehouse_path) as connection:
        queue = queue_for(connection, night)
    export_review_csv(queue, path)
    filled = pl.read_csv(path, infer_schema=False).with_columns(
        label=pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("0")).otherwise(pl.lit("1")),
        reviewer=pl.lit("alice"),
    )
    filled.write_csv(path)
    return filled.height


@pytest.mark.slow
def test_a_review_import_killed_while_it_holds_the_warehouse_completes_when_run_again(tmp_path, landed_project):
    project = _copy(landed_project[0], tmp_path)
    assert project.run_night(FIRST_NIGHT).success
    reviewed = _filled_review_file(project, FIRST_NIGHT, tmp_path / "review.csv")
    assert reviewed > 0

    review_import = ("review", "import", str(tmp_path / "review.csv"))
    killed = _killed_run(project, _run_killed_at(project, "review_labels:ASSET_MATERIALIZATION", *review_import))

    _completes(project, *review_import)

    with _instance(project) as instance:
        assert _status(instance, killed.run_id) == DagsterRunStatus.FAILURE
    labels = project.query("select entity_id from review.labels")
    assert labels.height == reviewed and labels["entity_id"].n_unique() == reviewed


@pytest.mark.slow
def test_a_promote_killed_while_it_holds_the_warehouse_completes_when_run_again(tmp_path, landed_project):
    project = _copy(landed_project[0], tmp_path)
    history = simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), days=20, rows_per_day=500, seed=5)
    candidate = publish(train_model(history, project.config), project.config)
    effective = FIRST_NIGHT + dt.timedelta(days=3)

    promote = ("models", "promote", candidate.card.version, "--effective", effective.isoformat())
    killed = _killed_run(project, _run_killed_at(project, "model_registry:ASSET_MATERIALIZATION", *promote))

    _completes(project, *promote)

    with _instance(project) as instance:
        assert _status(instance, killed.run_id) == DagsterRunStatus.FAILURE
    with warehouse.connect(project.config.warehouse_path) as connection:
        assert registry.alias_state(connection, registry.CHAMPION, effective).version == candidate.card.version
        log = registry.alias_log(connection)
    promotions = log.filter((pl.col("alias") == registry.CHAMPION) & (pl.col("version") == candidate.card.version))
    assert promotions.height == 1  # promoted once: neither lost nor logged twice


@pytest.mark.slow
def test_two_nights_launched_at_once_both_complete_with_every_row_answered_once(tmp_path, landed_project):
    project = _copy(landed_project[0], tmp_path)
    nights = [FIRST_NIGHT, FIRST_NIGHT + dt.timedelta(days=1)]
    project.land_night(nights[1], rows=ROWS)

    commands = [_cli(project, "run", "--night", night.isoformat()) for night in nights]
    outputs = [command.communicate(timeout=400) for command in commands]

    assert [command.returncode for command in commands] == [0, 0], outputs
    assert [_outcome_conservation(project, night) for night in nights] == [(ROWS, ROWS, ROWS)] * 2


# ------------------------------------------------------------------------------------------------ a CLI read meanwhile


def _with_lock_wait(project: Project, seconds: float) -> Project:
    raw = yaml.safe_load(project.config_path.read_text())
    raw["storage"]["lock_wait_seconds"] = seconds
    project.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return project


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [("alerts", "list"), ("bootstrap", "--history-days", "3", "--rows-per-day", "400")],
    ids=["a read", "bootstrap"],
)
def test_a_cli_command_while_a_run_holds_the_warehouse_names_it_and_gives_up_after_lock_wait_seconds(
    tmp_path, landed_project, command
):
    project = _with_lock_wait(_copy(landed_project[0], tmp_path), 3)
    holder = subprocess.Popen(  # a process holding the warehouse file, as a night's step does while it writes
        [sys.executable, "-c", HOLD_THE_WAREHOUSE, str(project.config.warehouse_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with _instance(project) as instance:
            run = _hold_the_pool(instance, {**process_tags(), PID_TAG: str(holder.pid)})
        read = _cli(project, *command)
        stdout, stderr = read.communicate(timeout=240)
    finally:
        holder.kill()
        holder.wait()

    output = stdout + stderr
    assert read.returncode == 75, output
    assert f"waiting for the warehouse {project.config.warehouse_path}, held by run {run.run_id}" in stderr
    assert "(nightly_batch, step score_batch) since" in stderr and f"process {holder.pid}" in stderr
    assert "gave up after waiting" in output and "storage.lock_wait_seconds = 3" in output
    assert "Traceback" not in output and "IOException" not in output


HOLD_THE_WAREHOUSE = """
import sys, time, duckdb
connection = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_cli_reads_while_a_night_runs_answer_without_a_lock_error(tmp_path, landed_project):
    project = _copy(landed_project[0], tmp_path)
    reads = [
        ("alerts", "list", "--all"),
        ("models", "list"),
        ("review", "export", "--date", FIRST_NIGHT.isoformat(), "--out", str(tmp_path / "review.csv")),
    ]
    night = _cli(project, "run", "--night", FIRST_NIGHT.isoformat())
    answered_during_the_night, outputs = 0, []
    while night.poll() is None or not outputs:
        read = _cli(project, *reads[len(outputs) % len(reads)])
        stdout, stderr = read.communicate(timeout=300)
        outputs.append((read.args[3:], read.returncode, stdout + stderr))
        answered_during_the_night += night.poll() is None
    night_out, night_err = night.communicate(timeout=300)

    assert night.returncode == 0, night_out + night_err
    assert answered_during_the_night >= 1
    assert [(args, code) for args, code, _ in outputs] == [(args, 0) for args, _, _ in outputs], outputs
    assert not [output for _, _, output in outputs if "Traceback" in output or "IOException" in output]
