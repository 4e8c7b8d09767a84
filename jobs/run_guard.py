"""The run guard: every run Nightkeeper launches goes through ``launch_run``, so a killed run cannot block the ones after it.

A run launched here carries the process id, its start time and the host of the process that executes it
(``nightkeeper/pid``, ``nightkeeper/process_start``, ``nightkeeper/host``). Before each launch, and while a run waits
for the warehouse pool, ``reap_dead_runs`` marks failed every unfinished run of this host whose process is gone (kill -9,
power loss, OOM) and frees the pool slots it held, so the next run proceeds without manual steps.

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
from dagster import DagsterInstance, DagsterRunStatus, ExecuteInProcessResult, JobDefinition, RunsFilter

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
    """Mark failed every unfinished run of this host whose process is gone, and free the pool slots of every finished
    run that still holds or waits for one (a run killed mid-step never frees its slot). Returns the reaped run ids."""
    if not instance.event_log_storage.supports_global_concurrency_limits:
        return []  # an ephemeral instance: its runs live and die with this process
    reaped = []
    host_runs = instance.get_run_records(RunsFilter(statuses=UNFINISHED, tags={HOST_TAG: socket.gethostname()}))
    for record in host_runs:
        run = record.dagster_run
        if process_gone(run.tags):
            instance.report_run_failed(
                run,
                message=f"Marked failed by nightkeeper: its process (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) is "
                "gone, it was killed or crashed. Its pool slots were freed; re-run it (re-running a night is safe).",
            )
            reaped.append(run.run_id)
    _free_slots_of_finished_runs(instance)
    return reaped


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
    from dagster._utils.interrupts import check_captured_interrupt

    return check_captured_interrupt()


def _sleep_while_waiting_for_a_slot() -> None:
    """Make Dagster's in-process executor sleep between its checks for a free pool slot instead of spinning.

    In dagster 1.13, ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns ``min(0, ...)``, never
    positive, so the executor re-polls in a tight loop and burns a core for as long as it waits (issue #10: ~60 % CPU).
    This returns the time to the next scheduled check instead, capped at 1 s. The class is private to Dagster; this is
    its one use here. Idempotent.
    """
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    def interval_to_next_pending_claim_check(self: InstanceConcurrencyContext) -> float:
        if not self._pending_claims or not self._pending_timeouts:
            return 0.0
        return min(1.0, max(0.0, min(self._pending_timeouts.values()) - time.time()))

    InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check


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
