"""Short-lived connections to the DuckDB warehouse file.

DuckDB lets one process open a file at a time, reads included, so every caller holds a connection only for the
statements it needs and waits (bounded) for another process's lock to go.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

NIGHTLY_SCHEMA = "nightly"  # schema of the partitioned tables of a night (raw_batch ... outcomes), as the IO manager stores them


@contextmanager
def connect(path: Path, wait_seconds: float = 100.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, retrying while another process holds its lock; always closed on exit."""
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
        yield connection
    finally:
        connection.close()
