"""Short-lived connections to the DuckDB warehouse file.

DuckDB lets one process open a file at a time, reads included, so every caller holds a connection only for the
statements it needs and waits (bounded) for another process's lock to go.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from nightkeeper.schema import migrate

NIGHTLY_SCHEMA = "nightly"
PARTITION_COLUMN = "partition_date"


@contextmanager
def connect(path: Path, wait_seconds: float = 100.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, retrying while another process holds its lock, with its side tables migrated to the latest
    version (``nightkeeper.schema.migrate``); always closed on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    delay = 0.1
    while True:
        try:
            connection = duckdb.connect(str(path))
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    try:
        migrate(connection)
        yield connection
    finally:
        connection.close()


def table_exists(connection: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists in the warehouse."""
    row = connection.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, table]
    ).fetchone()
    return row is not None and row[0] > 0


def store_partition(
    connection: duckdb.DuckDBPyConnection, schema: str, table: str, night: dt.date, frame: pl.DataFrame
) -> None:
    """Replace ``night``'s partition of ``schema.table`` with ``frame``, in one transaction (all of it or nothing).

    Idempotent: storing a night again leaves exactly ``frame``'s rows for that night; other nights are untouched.
    The table (and schema) is created from ``frame``'s columns when missing, even when ``frame`` is empty, so an empty
    night is a real, empty partition. Columns are inserted by name. ``frame`` must have a ``partition_date`` column
    whose every value is ``night`` (ValueError otherwise). The caller must not hold an open transaction. Both the
    Dagster IO manager and the backtest store through this function, so both produce identical tables.
    """
    if PARTITION_COLUMN not in frame.columns:
        raise ValueError(f"{schema}.{table}: the frame has no {PARTITION_COLUMN!r} column; found {frame.columns}")
    others = frame.filter(pl.col(PARTITION_COLUMN).ne_missing(night))[PARTITION_COLUMN].unique().to_list()
    if others:
        raise ValueError(
            f"{schema}.{table}: rows for night(s) {others} in the partition of {night}; expected only {night}"
        )
    name = f'"{schema}"."{table}"'
    view = "__nightkeeper_partition"
    connection.register(view, frame.to_arrow())
    try:
        connection.begin()
        try:
            connection.execute(f'create schema if not exists "{schema}"')
            connection.execute(f"create table if not exists {name} as select * from {view} limit 0")
            connection.execute(f"delete from {name} where {PARTITION_COLUMN} = ?", [night])
            connection.execute(f"insert into {name} by name select * from {view}")
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
    finally:
        connection.unregister(view)
