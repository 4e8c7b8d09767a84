"""DuckDB's memory for a warehouse file: ``WRITE_MEMORY_LIMIT`` while a transaction writes it, ``FILE_MEMORY_LIMIT``
otherwise, so the blocks a large write leaves cached do not stay in the process for the rest of the step."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pytest

from nightkeeper import warehouse

NIGHT = dt.date(2026, 1, 1)


def limit_as_shown(limit: str) -> str:
    """``limit`` as DuckDB's ``current_setting('memory_limit')`` prints it."""
    with duckdb.connect(config={"memory_limit": limit}) as database:
        return str(database.execute("select current_setting('memory_limit')").fetchone()[0])


def memory_limit(connection: duckdb.DuckDBPyConnection) -> str:
    return str(connection.execute("select current_setting('memory_limit')").fetchone()[0])


def cached_mib(connection: duckdb.DuckDBPyConnection) -> float:
    return float(connection.execute("select sum(memory_usage_bytes) / 2 ** 20 from duckdb_memory()").fetchone()[0])


def wide_night(rows: int) -> pl.DataFrame:
    """``rows`` rows of three columns of incompressible floats (24 bytes a row once stored)."""
    return pl.DataFrame({"partition_date": pl.repeat(NIGHT, rows, eager=True)}).with_columns(
        [pl.Series(name, pl.int_range(rows, eager=True).hash(seed).cast(pl.Float64)) for seed, name in enumerate("abc")]
    )


def test_a_write_to_a_file_runs_with_the_write_limit_and_leaves_the_file_limit_after(tmp_path: Path) -> None:
    with warehouse.connect(tmp_path / "warehouse.duckdb") as connection:
        assert memory_limit(connection) == limit_as_shown(warehouse.FILE_MEMORY_LIMIT)

        during = warehouse.run_transaction(connection, lambda: memory_limit(connection))

        assert during == limit_as_shown(warehouse.WRITE_MEMORY_LIMIT)
        assert memory_limit(connection) == limit_as_shown(warehouse.FILE_MEMORY_LIMIT)


def test_a_failed_write_leaves_the_file_limit_too(tmp_path: Path) -> None:
    def failing() -> None:
        raise RuntimeError("the write failed")

    with warehouse.connect(tmp_path / "warehouse.duckdb") as connection:
        with pytest.raises(RuntimeError, match="the write failed"):
            warehouse.run_transaction(connection, failing)

        assert memory_limit(connection) == limit_as_shown(warehouse.FILE_MEMORY_LIMIT)


def test_the_blocks_a_large_write_cached_beyond_the_file_limit_are_let_go_after_it(tmp_path: Path) -> None:
    rows = 8_000_000  # ~190 MB of incompressible floats: more than FILE_MEMORY_LIMIT, less than WRITE_MEMORY_LIMIT
    with warehouse.connect(tmp_path / "warehouse.duckdb") as connection:
        warehouse.store_partition(connection, "nightly", "wide", NIGHT, wide_night(rows))

        assert connection.execute('select count(*) from "nightly"."wide"').fetchone() == (rows,)
        assert cached_mib(connection) <= int(warehouse.FILE_MEMORY_LIMIT.removesuffix("MB")) * 1e6 / 2**20


def test_an_in_memory_database_keeps_its_own_limit_through_a_write() -> None:
    """A DuckLake is attached to an in-memory database (DuckDB's default limit, 80 % of the machine): not lowered."""
    with duckdb.connect() as database:
        before = memory_limit(database)

        warehouse.run_transaction(database, lambda: database.execute("create table t as select 1 as a"))

        assert memory_limit(database) == before
