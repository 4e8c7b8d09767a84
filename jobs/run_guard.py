"""The run guard: every run Nightkeeper launches goes through ``launch_run``, so a killed run cannot block later ones.

A run launched here carries the process id, its start time and the host of the process that executes it
(``nightkeeper/pid``, ``nightkeeper/process_start``, ``nightkeeper/host``). Before each launch, while a run waits for
the warehouse pool, and every minute from the ``reap_dead_runs`` sensor (so under ``nightkeeper serve`` and
``dagster dev`` too), ``reap_dead_runs`` marks failed every unfinished run whose process is gone (kill -9, power loss,
OOM) and frees the pool slots it held, so the next run proceeds without manual steps. Runs the Dagster daemon launched
carry no such tags: their process is the run worker whose pid Dagster's "Started process for run" event records (the
default run launcher starts workers on the daemon's host, which is this one: Nightkeeper's instance is a local folder).

While a run waits for the pool, a watchdog thread says once who holds it (run id, step, since when), gives up after
``storage.lock_wait_seconds`` with a clear error, and ends the wait promptly on SIGTERM/SIGINT. Giving up ends the
process (after marking its run failed and freeing its claims): Dagster's in-process executor waits for a slot in a loop
that neither times out nor lets an interrupt through, so there is nothing to return to. A run only waits between steps,
when none of its steps runs and it holds no warehouse connection, so ending the process there loses nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    ExecuteInProcessResult,
    JobDefinition,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from jobs.resources import WAREHOUSE_POOL

PID_TAG = "nightkeeper/pid"
PROCESS_START_TAG = "nightkeeper/process_start"
HOST_TAG = "nightkeeper/host"

# Unfinished states a run of a dead process can be stuck in (it never reaches a terminal state by itself).
UNFINISHED = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]

WAIT_TIMEOUT_EXIT = 75  # EX_TEMPFAIL: the warehouse stayed busy; try again later
POLL_SECONDS = 0.5
REAP_EVERY_SECONDS = 5.0
REAPER_SENSOR = "reap_dead_runs"
REAPER_INTERVAL_SECONDS = 60


def process_tags() -> dict[str, str]:
    """The tags naming this process: pid, its start time (so a recycled pid is not taken for it) and the host."""
    return {
        PID_TAG: str(os.getpid()),
        PROCESS_START_TAG: f"{psutil.Process().create_time():.3f}",
        HOST_TAG: socket.gethostname(),
    }


def process_gone(tags: Mapping[str, str]) -> bool:
    """True when the process the tags name (on this host) no longer runs: no such pid, or a pid reused by a process
    started at another time. False for tags of another host or without a pid (nothing can be known about those)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    try:
        started = psutil.Process(int(tags[PID_TAG])).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    recorded = tags.get(PROCESS_START_TAG)
    return recorded is not None and abs(started - float(recorded)) > 1.0


def reap_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark failed every unfinished run whose process is gone — a run of this host tagged by ``launch_run``, or a run
    the daemon launched whose worker died — and free the pool slots of every finished run that still holds or waits
    for one (a run killed mid-step never frees its slot). Returns the reaped run ids."""
    if not instance.event_log_storage.supports_global_concurrency_limits:
        return []  # an ephemeral instance: its runs live and die with this process
    reaped = []
    for record in instance.get_run_records(RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        process = _dead_process(instance, run)
        if process:
            instance.report_run_failed(
                run,
                message=f"Marked failed by nightkeeper: its process ({process}) is gone, it was killed or crashed. Its "
                "pool slots were freed; re-run it (re-running a night is safe).",
            )
            reaped.append(run.run_id)
    _free_slots_of_finished_runs(instance)
    return reaped


def _dead_process(instance: DagsterInstance, run: DagsterRun) -> str | None:
    """The process of ``run`` ("pid N on HOST") when it is known to be gone, else None (alive, of another host, or
    unknown: a queued or starting run has no process yet, and Dagster's own run monitoring times those out)."""
    if PID_TAG in run.tags:
        return f"pid {run.tags[PID_TAG]} on {run.tags.get(HOST_TAG)}" if process_gone(run.tags) else None
    if run.status not in (DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING):
        return None
    worker = _run_worker(instance, run.run_id)
    if worker is None:
        return None
    pid, started_at = worker
    try:
        alive = psutil.Process(pid).create_time() <= started_at + 1.0  # a later process reuses the pid
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        alive = False
    return None if alive else f"run worker pid {pid} on {socket.gethostname()}"


def _run_worker(instance: DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the run worker the daemon started for ``run_id`` and when (its "Started process for run" event)."""
    workers = [
        (int(str(event.dagster_event.engine_event_data.metadata["pid"].value)), event.timestamp)
        for event in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
        if event.dagster_event is not None
        and event.dagster_event.engine_event_data is not None
        and "pid" in event.dagster_event.engine_event_data.metadata
        and "Started process for run" in (event.dagster_event.message or "")
    ]
    return workers[-1] if workers else None


def build_reaper_sensor() -> SensorDefinition:
    """The sensor that reaps dead runs every minute while the daemon runs (``nightkeeper serve``, ``dagster dev``):
    there, runs are launched by the daemon, not through ``launch_run``, so nothing else would notice a killed worker
    (Dagster's run monitoring cannot: the default run launcher does not report its workers' health)."""

    @sensor(
        name=REAPER_SENSOR,
        minimum_interval_seconds=REAPER_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Marks failed the runs whose process died (kill -9, OOM) and frees the warehouse pool slots they "
        "held, so later runs are not blocked. See docs/runbook.md#after-a-crash.",
    )
    def reap_dead_runs_sensor(context: SensorEvaluationContext) -> SkipReason:
        reaped = reap_dead_runs(context.instance)
        return SkipReason(f"marked failed (process gone): {', '.join(reaped)}" if reaped else "no dead runs")

    return reap_dead_runs_sensor


def _free_slots_of_finished_runs(instance: DagsterInstance) -> None:
    """Free the concurrency slots (claimed or pending) of finished runs.

    Dagster has no public API for this: the daemon's run monitoring does it only when ``dagster dev`` runs with
    ``free_slots_after_run_end_seconds`` set, and the UI's "free slots" button calls this same event-log storage method.
    """
    storage = instance.event_log_storage
    holding = storage.get_concurrency_run_ids()
    if not holding:
        return
    for record in instance.get_run_records(RunsFilter(run_ids=list(holding), statuses=FINISHED)):
        storage.free_concurrency_slots_for_run(record.dagster_run.run_id)


@dataclass(frozen=True)
class PoolHolder:
    """Who holds the warehouse pool: the run, its job and step, and since when (UTC)."""

    run_id: str
    job_name: str
    step_key: str
    since: dt.datetime | None

    def describe(self) -> str:
        since = f" since {self.since:%Y-%m-%d %H:%M:%S} UTC" if self.since else ""
        return f"run {self.run_id} ({self.job_name}, step {self.step_key}){since}"


def pool_holders(instance: DagsterInstance, pool: str = WAREHOUSE_POOL) -> list[PoolHolder]:
    """The runs holding a slot of ``pool`` now, with the time their step was given it."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    assigned = {(step.run_id, step.step_key): step.assigned_timestamp for step in info.pending_steps}
    holders = []
    for slot in info.claimed_slots:
        run = instance.get_run_by_id(slot.run_id)
        since = assigned.get((slot.run_id, slot.step_key))
        holders.append(
            PoolHolder(
                slot.run_id,
                run.job_name if run else "?",
                slot.step_key,
                since.astimezone(dt.UTC) if since else None,
            )
        )
    return holders


def waiting_since(instance: DagsterInstance, run_id: str, pool: str = WAREHOUSE_POOL) -> dt.datetime | None:
    """When ``run_id`` started waiting for a slot of ``pool``; None when it is not waiting."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    waits = [
        step.enqueued_timestamp
        for step in info.pending_steps
        if step.run_id == run_id and step.assigned_timestamp is None
    ]
    return min(waits) if waits else None


def _interrupt_received() -> bool:
    """Whether SIGTERM/SIGINT arrived while Dagster executes a run in this process.

    Dagster replaces both signal handlers during in-process execution with one that only records the signal (raised
    later, at the next step), so the record is the only place to see it; it is private to Dagster.
    """
    from dagster._utils.interrupts import check_captured_interrupt  # noqa: TID251 (no public equivalent)

    return check_captured_interrupt()


def _sleep_while_waiting_for_a_slot() -> None:
    """Make Dagster's in-process executor sleep between its checks for a free pool slot instead of spinning.

    In dagster 1.13, ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns ``min(0, ...)``, never
    positive, so the executor re-polls in a tight loop and burns a core for as long as it waits (issue #10: ~60 % CPU).
    This returns the time to the next scheduled check instead, capped at 1 s. The class is private to Dagster; this is
    its one use here. Idempotent.
    """
    from dagster._core.execution.plan.instance_concurrency_context import (  # noqa: TID251 (patches Dagster's own bug)
        InstanceConcurrencyContext,
    )

    def interval_to_next_pending_claim_check(self: InstanceConcurrencyContext) -> float:
        if not self._pending_claims or not self._pending_timeouts:
            return 0.0
        return min(1.0, max(0.0, min(self._pending_timeouts.values()) - time.time()))

    # the patch is the point (see above): mypy forbids assigning to a method
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check  # type: ignore[method-assign]


class _PoolWatchdog(threading.Thread):
    """Watches one run while it executes: reports and bounds its waits for the warehouse pool (see the module doc)."""

    def __init__(self, instance: DagsterInstance, run_id: str, lock_wait_seconds: float) -> None:
        super().__init__(name=f"nightkeeper-pool-watchdog-{run_id[:8]}", daemon=True)
        self.instance, self.run_id, self.lock_wait_seconds = instance, run_id, lock_wait_seconds
        self.finished = threading.Event()

    def run(self) -> None:
        announced = False
        last_reap = 0.0
        while not self.finished.wait(POLL_SECONDS):
            since = waiting_since(self.instance, self.run_id)
            if since is None:
                announced = False
                continue
            if time.monotonic() - last_reap >= REAP_EVERY_SECONDS:
                reap_dead_runs(self.instance)  # the holder may have died while we wait
                last_reap = time.monotonic()
            waited = (dt.datetime.now(dt.UTC) - since.astimezone(dt.UTC)).total_seconds()
            interrupted, too_long = _interrupt_received(), waited > self.lock_wait_seconds
            if announced and not interrupted and not too_long:
                continue
            holders = (
                "; ".join(holder.describe() for holder in pool_holders(self.instance))
                or "no run (a slot is being handed over)"
            )
            if not announced:
                _say(
                    f"run {self.run_id} is waiting for the '{WAREHOUSE_POOL}' pool, held by {holders}; giving up after "
                    f"{self.lock_wait_seconds:g} s (storage.lock_wait_seconds)"
                )
                announced = True
            if interrupted:
                self._give_up(f"interrupted while waiting for the '{WAREHOUSE_POOL}' pool (held by {holders})", 130)
            if too_long:
                self._give_up(
                    f"gave up after waiting {waited:.0f} s for the '{WAREHOUSE_POOL}' pool, held by {holders} "
                    f"(limit storage.lock_wait_seconds = {self.lock_wait_seconds:g}). If that run's process is "
                    "alive it is still working: try again later; see docs/runbook.md#after-a-crash",
                    WAIT_TIMEOUT_EXIT,
                )

    def _give_up(self, reason: str, exit_code: int) -> None:
        run = self.instance.get_run_by_id(self.run_id)
        if run is not None:
            self.instance.report_run_failed(run, message=f"Nightkeeper {reason}.")
        self.instance.event_log_storage.free_concurrency_slots_for_run(self.run_id)
        _say(f"error: {reason}")
        os._exit(exit_code)


def _say(line: str) -> None:
    print(f"nightkeeper: {line}", file=sys.stderr, flush=True)


def launch_run(
    job: JobDefinition,
    instance: DagsterInstance,
    lock_wait_seconds: float,
    *,
    run_config: Mapping[str, Any] | None = None,
    partition_key: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> ExecuteInProcessResult:
    """Execute ``job`` in this process on ``instance`` — the one way Nightkeeper launches a run.

    Reaps dead runs first, tags the run with this process, and watches its waits for the warehouse pool (reporting the
    holder, giving up after ``lock_wait_seconds``, ending on SIGTERM/SIGINT). A failed run is returned, not raised.
    """
    run_id = str(uuid.uuid4())
    execute = lambda: job.execute_in_process(  # noqa: E731
        run_config=run_config,
        instance=instance,
        partition_key=partition_key,
        run_id=run_id,
        tags={**(tags or {}), **process_tags()},
        raise_on_error=False,
    )
    if not instance.event_log_storage.supports_global_concurrency_limits:
        return execute()  # an ephemeral instance (tests): no pools, nothing outlives the process
    reap_dead_runs(instance)
    _sleep_while_waiting_for_a_slot()
    watchdog = _PoolWatchdog(instance, run_id, lock_wait_seconds)
    watchdog.start()
    try:
        return execute()
    finally:
        watchdog.finished.set()
        watchdog.join()
