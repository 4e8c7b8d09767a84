"""Late labels: read the label files that arrive days after a night, reconcile them with the answers we gave, store
them.

A label file lands in ``labels_dir/YYYY-MM-DD/`` (the folder's date is the day it arrived) as ``*.parquet`` or
``*.csv`` with at least the contract's ``entity_id`` and ``target`` columns. Every row of every file ends in exactly
one of three places:

* **accepted**: a new label for an id we answered; stored in ``monitoring.labels`` with the scoring night it
  belongs to.
* **duplicate_known**: the id already has this very label (a file delivered again); counted, not stored again.
* **rejected**: stored in ``monitoring.labels_rejected`` with the file, row, raw value and a reason that starts
  with a code (``missing_id``, ``duplicate_in_batch``, ``invalid_label``, ``conflict``, ``unknown_id``) followed by
  ``": "`` and the details.

One label per id: ``monitoring.labels`` is keyed by ``entity_id``. Reconciling is a pure function of the incoming
rows, the answered ids and the stored labels, so ingesting the same file twice adds nothing the second time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from nightkeeper.config import Contract
from nightkeeper.frames import conform
from nightkeeper.schema import LABELS as LABELS_TABLE
from nightkeeper.schema import LABELS_REJECTED as REJECTED_TABLE
from nightkeeper.warehouse import run_transaction

LABEL_SUFFIXES = (".parquet", ".csv")

# What read_label_file returns: the raw text of id and label, the parsed label (null when not a valid 0/1 text).
LABEL_FILE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "entity_id": pl.String(),
    "value": pl.String(),
    "label": pl.Int8(),
}
# The stored labels: one row per entity id, attached to the scoring night it was answered on.
LABELS_SCHEMA: dict[str, pl.DataType] = {
    "entity_id": pl.String(),
    "partition_date": pl.Date(),
    "label": pl.Int8(),
    "arrived_on": pl.Date(),
    "source_file": pl.String(),
    "row_number": pl.Int64(),
}
# The rejected label rows: one per (source_file, row_number).
REJECTED_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "entity_id": pl.String(),
    "value": pl.String(),
    "reason": pl.String(),
    "arrived_on": pl.Date(),
}
# (entity_id, partition_date) of outcome rows: the ids we answered and on which night.
ANSWERED_SCHEMA: dict[str, pl.DataType] = {"entity_id": pl.String(), "partition_date": pl.Date()}

# Label texts accepted as 0 and 1 (compared after trimming and lower-casing). Everything else, including an empty
# value, is rejected as ``invalid_label``: a label file says yes or no, nothing in between.
POSITIVE_TEXTS = ("1", "1.0", "true")
NEGATIVE_TEXTS = ("0", "0.0", "false")


@dataclass(frozen=True)
class LabelBatch:
    """The outcome of reconciling one arrival of labels.

    ``accepted`` (LABELS_SCHEMA): new labels to store. ``rejected`` (REJECTED_SCHEMA): rows refused, with the reason.
    ``duplicate_known``: rows whose id already carries the same label (a re-delivery); neither stored nor rejected.
    ``received`` = accepted + duplicate_known + rejected rows.
    """

    accepted: pl.DataFrame
    rejected: pl.DataFrame
    duplicate_known: int
    received: int

    def summary(self) -> dict[str, int]:
        """Row counts: ``labels.received``, ``labels.accepted``, ``labels.duplicate_known``, ``labels.rejected``
        and ``labels.rejected.<code>`` for each rejection code present."""
        codes = self.rejected.select(pl.col("reason").str.extract(r"^([a-z_]+):", 1).alias("code"))
        by_code = {
            f"labels.rejected.{code}": int(n) for code, n in codes.group_by("code").len().sort("code").iter_rows()
        }
        return {
            "labels.received": self.received,
            "labels.accepted": self.accepted.height,
            "labels.duplicate_known": self.duplicate_known,
            "labels.rejected": self.rejected.height,
            **by_code,
        }


# ------------------------------------------------------------------------------------------------------ reading


def arrival_date(path: Path) -> dt.date:
    """The day a label file arrived: the date of its folder (``labels_dir/YYYY-MM-DD/file``)."""
    try:
        return dt.date.fromisoformat(path.parent.name)
    except ValueError:
        raise ValueError(f"label file {path} is not in a YYYY-MM-DD folder") from None


def label_files(labels_dir: Path, up_to: dt.date) -> list[Path]:
    """The label files (``*.parquet``, ``*.csv``) in the ``YYYY-MM-DD`` folders of ``labels_dir`` dated ``<= up_to``,
    ordered by folder date, then name. Folders whose name is not a date, and files of other types, are ignored;
    a missing ``labels_dir`` holds no files."""
    if not labels_dir.is_dir():
        return []
    found: list[tuple[dt.date, str, Path]] = []
    for folder in labels_dir.iterdir():
        try:
            day = dt.date.fromisoformat(folder.name)
        except ValueError:
            continue
        if not folder.is_dir() or day > up_to:
            continue
        found.extend(
            (day, path.name, path) for path in folder.iterdir() if path.is_file() and path.suffix in LABEL_SUFFIXES
        )
    return [path for _, _, path in sorted(found)]


def read_label_file(path: Path, contract: Contract) -> pl.DataFrame:
    """Read one label file into LABEL_FILE_SCHEMA; ``row_number`` counts from 1 within the file.

    ``entity_id`` and ``value`` are the raw texts of the contract's id and target columns (nothing dropped, nothing
    trimmed); ``label`` is ``value`` parsed as 0/1 (see POSITIVE_TEXTS / NEGATIVE_TEXTS), null when it is not one.
    Raises ValueError naming the file when it cannot be read or lacks the id or target column.
    """
    try:
        table = pl.read_csv(path, infer_schema=False) if path.suffix == ".csv" else pl.read_parquet(path)
    except Exception as exc:  # polars raises format-specific errors; the operator needs the file name
        raise ValueError(f"cannot read label file {path}: {exc}") from exc
    missing = [column for column in (contract.entity_id, contract.target) if column not in table.columns]
    if missing:
        raise ValueError(f"label file {path} lacks column(s) {missing}; it has {table.columns}")
    return conform(
        table.select(
            pl.lit(str(path)).alias("source_file"),
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row_number"),
            pl.col(contract.entity_id).cast(pl.String).alias("entity_id"),
            pl.col(contract.target).cast(pl.String).alias("value"),
        ).with_columns(parse_label(pl.col("value")).alias("label")),
        LABEL_FILE_SCHEMA,
    )


def parse_label(value: pl.Expr) -> pl.Expr:
    """A label text as Int8 0/1, null when it is not one of POSITIVE_TEXTS / NEGATIVE_TEXTS."""
    text = value.str.strip_chars().str.to_lowercase()
    return (
        pl.when(text.is_in(POSITIVE_TEXTS))
        .then(pl.lit(1, pl.Int8))
        .when(text.is_in(NEGATIVE_TEXTS))
        .then(pl.lit(0, pl.Int8))
        .otherwise(pl.lit(None, pl.Int8))
    )


# ------------------------------------------------------------------------------------------------- reconciling


def reconcile_labels(
    incoming: pl.DataFrame, answered: pl.DataFrame, already: pl.DataFrame, arrived_on: dt.date
) -> LabelBatch:
    """Decide, for every incoming label row, whether it is accepted, a known duplicate or rejected.

    ``incoming``: rows of LABEL_FILE_SCHEMA (one or several files that arrived on ``arrived_on``).
    ``answered``: (entity_id, partition_date) of the outcome rows that exist, on any night.
    ``already``: the stored labels (LABELS_SCHEMA).

    Rows are taken in (source_file, row_number) order and the first rule that applies decides:

    1. ``missing_id``: the id is empty.
    2. ``duplicate_in_batch``: the id already appeared on an earlier row of this arrival; the first row is kept.
    3. ``invalid_label``: the value is not a 0/1 text.
    4. the id already has a stored label: the same value is ``duplicate_known`` (not an error, not re-added), a
       different value is rejected as ``conflict`` naming both values; a stored label is never overwritten.
    5. ``unknown_id``: we never answered the id on a night ``<= arrived_on``.
    6. accepted, attached to the scoring night: if the id was answered on several nights, the latest night
       ``<= arrived_on`` (a label describes the most recent application it can have followed).
    """
    rows = conform(incoming, LABEL_FILE_SCHEMA).sort("source_file", "row_number")
    nights = (
        conform(answered, ANSWERED_SCHEMA)
        .filter(pl.col("entity_id").is_not_null() & (pl.col("partition_date") <= arrived_on))
        .group_by("entity_id")
        .agg(pl.col("partition_date").max())
    )
    stored = conform(already, LABELS_SCHEMA).select(
        "entity_id",
        pl.col("label").alias("stored_label"),
        pl.col("arrived_on").alias("stored_arrived_on"),
        pl.col("source_file").alias("stored_file"),
    )
    first = pl.struct("source_file", "row_number").first().over("entity_id")
    checked = (
        rows.with_columns(
            first.struct.field("source_file").alias("first_file"),
            first.struct.field("row_number").alias("first_row"),
        )
        .join(stored, on="entity_id", how="left", maintain_order="left")
        .join(nights, on="entity_id", how="left", maintain_order="left")
    )
    is_first = (pl.col("first_file") == pl.col("source_file")) & (pl.col("first_row") == pl.col("row_number"))
    known = pl.col("stored_label").is_not_null()
    reason = (
        pl.when(pl.col("entity_id").is_null() | (pl.col("entity_id").str.strip_chars() == ""))
        .then(pl.lit("missing_id: the row has no id"))
        .when(~is_first)
        .then(
            pl.format("duplicate_in_batch: id already on row {} of {}; the first row counts", "first_row", "first_file")
        )
        .when(pl.col("label").is_null())
        .then(
            pl.format("invalid_label: value {} is not a label; expected one of {}", _quoted("value"), pl.lit(_ALLOWED))
        )
        .when(known & (pl.col("stored_label") != pl.col("label")))
        .then(
            pl.format(
                "conflict: already labeled {} (arrived {} in {}); this row says {}",
                "stored_label",
                "stored_arrived_on",
                "stored_file",
                "label",
            )
        )
        .when(known)
        .then(pl.lit(None, pl.String))
        .when(pl.col("partition_date").is_null())
        .then(pl.lit(f"unknown_id: never answered on a night up to {arrived_on.isoformat()}"))
        .otherwise(pl.lit(None, pl.String))
        .alias("reason")
    )
    checked = checked.with_columns(reason)
    accepted = checked.filter(pl.col("reason").is_null() & ~known).with_columns(pl.lit(arrived_on).alias("arrived_on"))
    rejected = checked.filter(pl.col("reason").is_not_null()).with_columns(pl.lit(arrived_on).alias("arrived_on"))
    duplicate_known = checked.filter(pl.col("reason").is_null() & known).height
    return LabelBatch(
        accepted=conform(accepted, LABELS_SCHEMA),
        rejected=conform(rejected, REJECTED_SCHEMA),
        duplicate_known=duplicate_known,
        received=rows.height,
    )


_ALLOWED = ", ".join(sorted((*NEGATIVE_TEXTS, *POSITIVE_TEXTS)))


def _quoted(column: str) -> pl.Expr:
    return pl.when(pl.col(column).is_null()).then(pl.lit("<empty>")).otherwise(pl.format("'{}'", column))


# ---------------------------------------------------------------------------------------------------- storage


def store_labels(connection: duckdb.DuckDBPyConnection, accepted: pl.DataFrame) -> int:
    """Append accepted labels; an id that already has a stored label is left as it is (idempotent by entity_id).
    A stored rejection of the same (source_file, row_number) is removed: the row is now a label.
    Returns the number of labels added."""
    frame = conform(accepted, LABELS_SCHEMA).unique("entity_id", keep="first", maintain_order=True)  # noqa: F841
    before = _count(connection, LABELS_TABLE)
    # MERGEs rather than inserts on the keys: a DuckLake warehouse has no keys
    connection.execute(
        f"merge into {LABELS_TABLE} as stored using frame as new on stored.entity_id = new.entity_id "
        "when not matched then insert by name"
    )
    connection.execute(
        f"delete from {REJECTED_TABLE} r using frame f "
        "where r.source_file = f.source_file and r.row_number = f.row_number"
    )
    return _count(connection, LABELS_TABLE) - before


def store_rejected(connection: duckdb.DuckDBPyConnection, rejected: pl.DataFrame) -> int:
    """Record rejected label rows, one per (source_file, row_number): a row rejected again keeps its latest reason
    and arrival. Returns the number of rows new to the table."""
    frame = conform(rejected, REJECTED_SCHEMA).unique(["source_file", "row_number"], keep="last", maintain_order=True)  # noqa: F841
    before = _count(connection, REJECTED_TABLE)
    connection.execute(
        f"merge into {REJECTED_TABLE} as stored using frame as new "
        "on stored.source_file = new.source_file and stored.row_number = new.row_number "
        "when matched then update when not matched then insert by name"
    )
    return _count(connection, REJECTED_TABLE) - before


def store_label_batch(connection: duckdb.DuckDBPyConnection, batch: LabelBatch) -> int:
    """Store a reconciled batch (its accepted labels and its rejections) in one transaction; returns the number of
    labels added. The caller must not hold an open transaction."""

    def store_both() -> int:
        added = store_labels(connection, batch.accepted)
        store_rejected(connection, batch.rejected)
        return added

    return run_transaction(connection, store_both)


def stored_labels(connection: duckdb.DuckDBPyConnection, ids: list[str] | None = None) -> pl.DataFrame:
    """Every stored label (LABELS_SCHEMA), ordered by scoring night and id; only those of ``ids`` when given (what
    ``reconcile_labels`` needs for one file, without reading every label ever stored)."""
    if ids is None:
        return _read(connection, f"select * from {LABELS_TABLE} order by partition_date, entity_id", LABELS_SCHEMA)
    frame = connection.execute(
        f"select * from {LABELS_TABLE} where entity_id in (select unnest($ids)) order by partition_date, entity_id",
        {"ids": ids},
    ).pl()
    return conform(frame, LABELS_SCHEMA) if frame.height else pl.DataFrame(schema=LABELS_SCHEMA)


def stored_rejections(connection: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every stored rejected label row (REJECTED_SCHEMA), ordered by arrival, file and row."""
    return _read(
        connection, f"select * from {REJECTED_TABLE} order by arrived_on, source_file, row_number", REJECTED_SCHEMA
    )


def stored_counts(connection: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """How many labels and how many rejected label rows are stored."""
    return _count(connection, LABELS_TABLE), _count(connection, REJECTED_TABLE)


def latest_rejections(connection: duckdb.DuckDBPyConnection, rows: int) -> pl.DataFrame:
    """The ``rows`` most recently arrived rejected label rows (REJECTED_SCHEMA), latest first."""
    return _read(
        connection,
        f"select * from {REJECTED_TABLE} order by arrived_on desc, source_file, row_number limit {int(rows)}",
        REJECTED_SCHEMA,
    )


def _count(connection: duckdb.DuckDBPyConnection, table: str) -> int:
    row = connection.execute(f"select count(*) from {table}").fetchone()
    return int(row[0]) if row else 0


def _read(connection: duckdb.DuckDBPyConnection, query: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    frame = connection.execute(query).pl()
    return conform(frame, schema) if frame.height else pl.DataFrame(schema=schema)
