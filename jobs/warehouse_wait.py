"""The warehouse for a command that is not a run (``alerts list``, ``models list``, ``review export``, ``alerts ack``,
``check-config`` …): it waits while another process holds the DuckDB file, as runs wait for the warehouse pool.

DuckDB lets one process open the file at a time, and a night's steps open it many times for a few seconds each, so a
command started while a night runs usually gets in between two statements at once. When it does not, the command
says once who holds the file (the Nightkeeper run of that process — run id, job, step, since when — or else the
process itself), keeps trying, and after ``storage.lock_wait_seconds`` raises ``WarehouseBusy`` with a clear message
instead of a DuckDB lock traceback. Ctrl-C / SIGTERM end the wait at once (Python's default handling: nothing is held).

Dagster is imported only when the file is busy, so the common case costs a command nothing.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from nightkeeper import warehouse
from nightkeeper.config import ProjectConfig
from nightkeeper.schema import migrate
from nightkeeper.warehouse import Lake

ANNOUNCE_AFTER_SECONDS = 1.0  # shorter waits are the normal gaps between a night's statements: say nothing
RETRY_SECONDS = 0.25
_HOLDER_PID = re.compile(r"\(PID (\d+)\)")


class WarehouseBusy(RuntimeError):
    """Another process held the warehouse for longer than ``storage.lock_wait_seconds``; the message names it."""


@contextmanager
def command_connection(config: ProjectConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the project's warehouse, waiting up to ``storage.lock_wait_seconds`` while another process
    holds it (see the module doc), its side tables migrated (``nightkeeper.schema.migrate``); closed on exit.
    Raises WarehouseBusy when the wait is over. A DuckLake (``storage.kind: ducklake``) has no lock to wait for: it is
    opened at once (``nightkeeper.warehouse.connect``)."""
    if isinstance(config.warehouse, Lake):
        with warehouse.connect(config.warehouse, config.storage.lock_wait_seconds) as lake:
            yield lake
        return
    path = config.warehouse_path
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    announced = False
    while True:
        try:
            connection = duckdb.connect(str(path), config=warehouse.FILE_CONFIG)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            waited = time.monotonic() - started
            if waited < ANNOUNCE_AFTER_SECONDS:
                time.sleep(RETRY_SECONDS)
                continue
            if waited > config.storage.lock_wait_seconds:
                raise WarehouseBusy(
                    f"gave up after waiting {waited:.0f} s for the warehouse {path}, held by "
                    f"{describe_holder(config, exc)} (limit storage.lock_wait_seconds = "
                    f"{config.storage.lock_wait_seconds:g}). If that process is alive it is still working: try again "
                    "later; see docs/runbook.md#after-a-crash"
                ) from None
            if not announced:
                print(
                    f"nightkeeper: waiting for the warehouse {path}, held by {describe_holder(config, exc)}; giving up "
                    f"after {config.storage.lock_wait_seconds:g} s (storage.lock_wait_seconds)",
                    file=sys.stderr,
                    flush=True,
                )
                announced = True
            time.sleep(RETRY_SECONDS)
    try:
        migrate(connection)
        yield connection
    finally:
        connection.close()


def describe_holder(config: ProjectConfig, lock_error: duckdb.IOException) -> str:
    """Who holds the warehouse, from DuckDB's lock error (it names the process id): the unfinished Nightkeeper run of
    that process when there is one (run id, job, step holding the warehouse pool, since when), else the process."""
    found = _HOLDER_PID.search(str(lock_error))
    if found is None:
        return "another process"
    pid = int(found.group(1))
    run = _run_of_process(config.dagster_home, pid) if config.dagster_home.joinpath("dagster.yaml").exists() else None
    return f"{run}, process {pid}" if run else f"process {pid} ({_command_line(pid)})"


def _run_of_process(dagster_home: Path, pid: int) -> str | None:
    """The unfinished run, on this host, that the process ``pid`` executes (as the run guard tags it), described."""
    from dagster import DagsterInstance, RunsFilter

    from jobs.run_guard import HOST_TAG, PID_TAG, UNFINISHED, pool_holders

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.get_run_records(
            RunsFilter(statuses=UNFINISHED, tags={PID_TAG: str(pid), HOST_TAG: socket.gethostname()}), limit=1
        )
        if not records:
            return None
        run = records[0].dagster_run
        holding = [holder for holder in pool_holders(instance) if holder.run_id == run.run_id]
        return holding[0].describe() if holding else f"run {run.run_id} ({run.job_name})"


def _command_line(pid: int) -> str:
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline())[:200] or "?"
    except psutil.Error:
        return "no longer running"
