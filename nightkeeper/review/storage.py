"""The ``review`` schema: the nightly queues, the reviewers' labels and the rejected rows, and the one transaction that
commits an import."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from nightkeeper.frames import conform
from nightkeeper.review.files import LABEL_SCHEMA, REJECT_SCHEMA, ReviewImport, write_rejects
from nightkeeper.review.queue import QUEUE_SCHEMA
from nightkeeper.schema import REVIEW_LABELS, REVIEW_QUEUE, REVIEW_REJECTS
from nightkeeper.warehouse import run_transaction


def store_queue(connection: duckdb.DuckDBPyConnection, night: dt.date, queue: pl.DataFrame) -> int:
    """Replace ``night``'s rows of ``review.queue`` with ``queue`` in one transaction; return the rows stored.

    Raises ValueError if a row of ``queue`` belongs to another night (nothing is written then).
    """
    frame = conform(queue, QUEUE_SCHEMA)
    others = frame.filter(pl.col("partition_date") != night)["partition_date"].unique().sort().to_list()
    if others:
        raise ValueError(f"queue for night {night} holds rows of other night(s) {others}")

    def replace_queue() -> None:
        connection.execute(f"delete from {REVIEW_QUEUE} where partition_date = ?", [night])
        _insert(connection, f"{REVIEW_QUEUE}", frame)

    run_transaction(connection, replace_queue)
    return frame.height


def queue_for(connection: duckdb.DuckDBPyConnection, night: dt.date) -> pl.DataFrame:
    """``night``'s stored queue (QUEUE_SCHEMA) in priority order; empty if none was stored."""
    return _read(
        connection, f"select * from {REVIEW_QUEUE} where partition_date = ? order by priority", QUEUE_SCHEMA, [night]
    )


def stored_queue(connection: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every night's stored queue (QUEUE_SCHEMA), by (partition_date, priority)."""
    return _read(connection, f"select * from {REVIEW_QUEUE} order by partition_date, priority", QUEUE_SCHEMA)


def store_review_labels(connection: duckdb.DuckDBPyConnection, accepted: pl.DataFrame) -> int:
    """Append ``accepted`` (LABEL_SCHEMA) to ``review.labels``; return how many rows were new.

    Idempotent by (entity_id, label): a label already stored is not stored again (its first provenance stays).
    Raises ValueError, storing nothing, if an entity would get two different labels (within ``accepted`` or against
    the stored ones): ``import_review_file`` rejects such rows as conflicts, so this means it was bypassed.
    """
    frame = conform(accepted, LABEL_SCHEMA)
    stored = stored_review_labels(connection)
    both = pl.concat([stored.select("entity_id", "label"), frame.select("entity_id", "label")]).unique()
    clashing = both.filter(pl.col("entity_id").is_duplicated())["entity_id"].unique().sort().to_list()
    if clashing:
        raise ValueError(
            f"entity_id(s) {clashing[:10]} would get two different review labels; resolve the conflict first"
        )
    new = frame.unique(["entity_id", "label"], keep="first", maintain_order=True).join(
        stored.select("entity_id", "label"), on=["entity_id", "label"], how="anti"
    )
    _insert(connection, f"{REVIEW_LABELS}", new)
    return new.height


def stored_review_labels(connection: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every stored review label (LABEL_SCHEMA), by (reviewed_at, entity_id)."""
    return _read(connection, f"select * from {REVIEW_LABELS} order by reviewed_at, entity_id", LABEL_SCHEMA)


def store_rejects(connection: duckdb.DuckDBPyConnection, rejected: pl.DataFrame) -> int:
    """Append ``rejected`` (REJECT_SCHEMA) to ``review.rejects``; return how many rows were new.

    Idempotent: a rejection equal to a stored one in every column but ``rejected_at`` is not stored again, so
    importing the same bad file twice logs its rejections once.
    """
    frame = conform(rejected, REJECT_SCHEMA)
    key = [c for c in REJECT_SCHEMA if c != "rejected_at"]
    stored = stored_rejects(connection).select(key)
    new = frame.unique(key, keep="first", maintain_order=True).join(stored, on=key, how="anti", nulls_equal=True)
    _insert(connection, f"{REVIEW_REJECTS}", new)
    return new.height


def commit_import(connection: duckdb.DuckDBPyConnection, result: ReviewImport, path: Path) -> tuple[int, Path]:
    """Store an import's accepted labels and its rejections in one transaction, then write its rejects file.

    Returns (new labels stored, the rejects file). All or nothing: if storing fails (a conflict, a warehouse error,
    a killed process) neither labels nor rejections are kept and no rejects file is written, so the reviewer never
    holds a rejects file for an import the warehouse does not know. The rejects file is written only after the
    commit; a crash between the two leaves the warehouse complete and the file to be written by a re-import.
    """

    def store_both() -> int:
        added = store_review_labels(connection, result.accepted)
        store_rejects(connection, result.rejected)
        return added

    added = run_transaction(connection, store_both)
    return added, write_rejects(result.rejected, path)


def stored_rejects(connection: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every stored rejection (REJECT_SCHEMA), by (rejected_at, source_file, row_number)."""
    return _read(
        connection, f"select * from {REVIEW_REJECTS} order by rejected_at, source_file, row_number", REJECT_SCHEMA
    )


def _insert(connection: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    if frame.height == 0:
        return
    connection.register("__review_frame", frame.to_arrow())
    try:
        connection.execute(f"insert into {table} by name select * from __review_frame")
    finally:
        connection.unregister("__review_frame")


def _read(
    connection: duckdb.DuckDBPyConnection, sql: str, schema: dict[str, pl.DataType], params: list[Any] | None = None
) -> pl.DataFrame:
    frame = connection.execute(sql, params or []).pl()
    zoned = [name for name, dtype in schema.items() if isinstance(dtype, pl.Datetime) and dtype.time_zone]
    frame = frame.with_columns(
        pl.col(name).dt.convert_time_zone("UTC")
        if isinstance(found := frame.schema[name], pl.Datetime) and found.time_zone
        else pl.col(name).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        for name in zoned
    )
    return conform(frame, schema)
