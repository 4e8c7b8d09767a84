"""The reviewers' CSV round trip: the queue exported with empty label columns, the filled-in file read back row by row
(never raising on its content), and the rejected rows written next to it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from nightkeeper.config import label_values as _label_values
from nightkeeper.frames import conform

REQUIRED_COLUMNS = ("entity_id", "label", "reviewer")
EXPORT_COLUMNS = ("entity_id", "partition_date", "score", "decision", "queue_reason", "label", "reviewer", "note")
REJECTS_SUFFIX = ".rejects.csv"

LABEL_SCHEMA: dict[str, pl.DataType] = {
    "entity_id": pl.String(),
    "partition_date": pl.Date(),
    "label": pl.Int8(),
    "reviewer": pl.String(),
    "note": pl.String(),
    "reviewed_at": pl.Datetime("us", "UTC"),
    "source_file": pl.String(),
    "row_number": pl.Int64(),
}

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "entity_id": pl.String(),
    "label": pl.String(),
    "reviewer": pl.String(),
    "note": pl.String(),
    "reason": pl.String(),
    "rejected_at": pl.Datetime("us", "UTC"),
}


def export_review_csv(queue: pl.DataFrame, path: Path) -> Path:
    """Write ``queue`` (QUEUE_SCHEMA) as the reviewers' CSV at ``path`` and return ``path``.

    Columns: EXPORT_COLUMNS — entity_id, partition_date (YYYY-MM-DD), score, decision, queue_reason, then the empty
    ``label``, ``reviewer`` and ``note`` for the reviewer to fill. Rows are in (partition_date, priority) order.
    The parent folder is created if needed; an existing file is overwritten. Text cells a spreadsheet would run as a
    formula (starting with = + - @, tab or CR) are written with a leading ``'`` (``neutralise_formulas``); import
    takes it off the ids again, so a round trip matches the queue.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet = queue.sort("partition_date", "priority").select(
        "entity_id",
        "partition_date",
        "score",
        "decision",
        "queue_reason",
        *(pl.lit(None, dtype=pl.String).alias(name) for name in ("label", "reviewer", "note")),
    )
    neutralise_formulas(sheet).write_csv(path)
    return path


_FORMULA_START = r"^'*[=+\-@\t\r]"
_NEUTRALISED = r"^'+[=+\-@\t\r]"


def neutralise_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every text cell a spreadsheet would run as a formula prefixed with ``'``
    (see ``restore_formula``)."""
    texts = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(_FORMULA_START))
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name in texts
    )


def restore_formula(text: str | None) -> str | None:
    """Undo ``neutralise_formulas`` on one cell: drop the apostrophe it added, leave any other text as it is."""
    if text is not None and re.match(_NEUTRALISED, text):
        return text[1:]
    return text


@dataclass(frozen=True)
class ReviewImport:
    """What one review file gave.

    ``accepted``: new labels (LABEL_SCHEMA), one per entity_id, ready for ``store_review_labels``.
    ``rejected``: one row per rejected data row (REJECT_SCHEMA) with ``reason``; a file that cannot be read at all
    is one row with a null ``row_number``. ``skipped``: rows with an empty label (not reviewed yet).
    ``unchanged``: rows repeating exactly a label already stored for that entity (nothing new; not an error).
    ``file_problem``: why the file as a whole was rejected (then every row of ``rejected`` carries it), else None.
    """

    accepted: pl.DataFrame
    rejected: pl.DataFrame
    skipped: int = 0
    unchanged: int = 0
    file_problem: str | None = None


def import_review_file(
    path: Path,
    queue: pl.DataFrame,
    already: pl.DataFrame,
    allowed_labels: Sequence[str],
    now: dt.datetime,
) -> ReviewImport:
    """Read a filled-in review CSV; never raises because of what the file holds.

    ``queue``: the queue rows (QUEUE_SCHEMA, any nights) the file answers. ``already``: labels stored so far
    (LABEL_SCHEMA; needs entity_id, label, reviewer). ``allowed_labels``: the label texts a reviewer may write
    (raises ValueError only if one of them is not a small whole number — a config error, not a file error).
    ``now``: the import time, recorded as ``reviewed_at`` / ``rejected_at`` (a naive datetime is taken as UTC).

    The file: comma-separated (';' or tab also recognised from the header), UTF-8 (a BOM is fine), a header row
    naming at least ``entity_id``, ``label``, ``reviewer`` (case and surrounding spaces ignored; other columns,
    such as the exported ones, are ignored; an optional ``note`` is kept, an optional ``partition_date`` picks the
    night when an entity was queued on several, else its latest night is used). Values are stripped; empty means
    missing. ``row_number`` counts data records from 1 (the header is record 0).

    The whole file is rejected (one row with null row_number when it has no data rows, else every data row) when it
    cannot be read, is binary or not UTF-8, is not parseable CSV, is empty, or lacks a required column; the reason
    says which. Otherwise, row by row: a row with an empty label is skipped; a row whose field count differs from
    the header's is rejected; else every problem of the row is listed, '; '-joined, in ``reason``: missing
    entity_id; entity_id not in the review queue; duplicate entity_id in this file (the first labeled row is kept);
    label not in the allowed set (naming the value and the set); missing reviewer; conflict with a different label
    already stored for the entity. A row repeating a stored label exactly counts as ``unchanged``.
    """
    label_values = _label_values([str(label) for label in allowed_labels])
    stamp = _utc(now)
    source_file = path.name
    header, records, problem = _read_csv_records(path)
    if problem is not None:
        reason = f"file {problem}"
        return ReviewImport(_empty(LABEL_SCHEMA), _file_rejection(source_file, reason, stamp), file_problem=reason)

    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        reason = f"file lacks required column(s) {missing}; its columns are {header}"
        numbers = [number for number, record in records if any(cell.strip() for cell in record)]
        if not numbers:
            return ReviewImport(_empty(LABEL_SCHEMA), _file_rejection(source_file, reason, stamp), file_problem=reason)
        rejected = pl.DataFrame({"row_number": numbers}, schema={"row_number": pl.Int64}).with_columns(
            pl.lit(source_file).alias("source_file"),
            *(pl.lit(None, dtype=pl.String).alias(c) for c in ("entity_id", "label", "reviewer", "note")),
            pl.lit(reason).alias("reason"),
            pl.lit(stamp, dtype=REJECT_SCHEMA["rejected_at"]).alias("rejected_at"),
        )
        return ReviewImport(_empty(LABEL_SCHEMA), conform(rejected, REJECT_SCHEMA), file_problem=reason)

    rows = _rows_frame(header, records)
    ragged = rows.filter(pl.col("__fields") != len(header)).with_columns(
        pl.format(f"row has {{}} fields but the header has {len(header)}", "__fields").alias("reason")
    )
    rows = rows.filter(pl.col("__fields") == len(header))
    unlabeled = rows.filter(pl.col("label").is_null())
    labeled = rows.filter(pl.col("label").is_not_null())
    judged = _judge(labeled, queue, already, label_values)

    reasons = pl.col("reason").is_not_null()
    unchanged = judged.filter(~reasons & pl.col("__unchanged"))
    accepted = judged.filter(~reasons & ~pl.col("__unchanged")).with_columns(
        pl.col("label").replace_strict(label_values, return_dtype=pl.Int8).alias("label"),
        pl.lit(stamp, dtype=LABEL_SCHEMA["reviewed_at"]).alias("reviewed_at"),
        pl.lit(source_file).alias("source_file"),
    )
    rejected = pl.concat(
        [
            frame.select("row_number", "entity_id", "label", "reviewer", "note", "reason")
            for frame in (ragged, judged.filter(reasons))
        ]
    ).with_columns(
        pl.lit(source_file).alias("source_file"),
        pl.lit(stamp, dtype=REJECT_SCHEMA["rejected_at"]).alias("rejected_at"),
    )
    return ReviewImport(
        accepted=conform(accepted, LABEL_SCHEMA).sort("row_number"),
        rejected=conform(rejected, REJECT_SCHEMA).sort("row_number"),
        skipped=unlabeled.height,
        unchanged=unchanged.height,
    )


def _judge(
    labeled: pl.DataFrame, queue: pl.DataFrame, already: pl.DataFrame, label_values: dict[str, int]
) -> pl.DataFrame:
    """``labeled`` rows with the queue night they answer, ``reason`` (null when fine) and ``__unchanged``."""
    queued = queue.select("entity_id", pl.col("partition_date").cast(pl.Date)).unique()
    night = (
        labeled.select("row_number", "entity_id", "__partition_date")
        .join(queued, on="entity_id", how="inner")
        .with_columns(
            (pl.col("partition_date").cast(pl.String) == pl.col("__partition_date")).fill_null(False).alias("__match")
        )
        .sort(["row_number", "__match", "partition_date"], descending=[False, True, True])
        .unique("row_number", keep="first")
        .select("row_number", "partition_date")
    )
    stored = already.select(
        "entity_id",
        pl.col("label").cast(pl.Int64).alias("__stored_label"),
        pl.col("reviewer").cast(pl.String).alias("__stored_reviewer"),
    ).unique("entity_id", keep="last", maintain_order=True)
    value = pl.col("label").replace_strict(label_values, default=None, return_dtype=pl.Int64)
    frame = (
        labeled.join(night, on="row_number", how="left")
        .join(stored, on="entity_id", how="left")
        .with_columns(
            value.alias("__value"),
            pl.col("row_number").min().over("entity_id").alias("__kept_row"),
        )
    )
    has_id = pl.col("entity_id").is_not_null()
    label_ok = pl.col("__value").is_not_null()
    stored_differs = label_ok & pl.col("__stored_label").is_not_null() & (pl.col("__stored_label") != pl.col("__value"))
    problems = [
        pl.when(~has_id).then(pl.lit("missing entity_id")),
        pl.when(has_id & pl.col("partition_date").is_null()).then(
            pl.format("entity_id '{}' is not in the review queue", "entity_id")
        ),
        pl.when(has_id & (pl.col("row_number") != pl.col("__kept_row"))).then(
            pl.format("duplicate entity_id '{}' in this file; row {} was kept", "entity_id", "__kept_row")
        ),
        pl.when(~label_ok).then(
            pl.format(f"label '{{}}' is not one of the allowed labels {list(label_values)}", "label")
        ),
        pl.when(pl.col("reviewer").is_null()).then(pl.lit("missing reviewer")),
        pl.when(stored_differs).then(
            pl.format(
                "conflict: entity_id '{}' was already reviewed with label {} by {}; this row says {}",
                "entity_id",
                "__stored_label",
                pl.col("__stored_reviewer").fill_null("?"),
                "label",
            )
        ),
    ]
    joined = pl.concat_list(problems).list.drop_nulls().list.join("; ")
    return frame.with_columns(
        pl.when(joined == "").then(None).otherwise(joined).alias("reason"),
        (label_ok & (pl.col("__stored_label") == pl.col("__value"))).fill_null(False).alias("__unchanged"),
    )


def _read_csv_records(path: Path) -> tuple[list[str], list[tuple[int, list[str]]], str | None]:
    """(normalised header, [(row_number, fields)], None) or ([], [], what is wrong with the file)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [], f"cannot be read: {exc}"
    if b"\x00" in data:
        return [], [], "is not a CSV text file (it holds binary data)"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [], f"is not a UTF-8 text CSV file ({exc.reason} at byte {exc.start})"
    first_line = text.split("\n", 1)[0]
    delimiter = max([",", ";", "\t"], key=lambda d: (first_line.count(d), d == ","))
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return [], [], f"is not a valid CSV file ({exc})"
    if not records or not any(cell.strip() for cell in records[0]):
        return [], [], "is empty: no header row"
    header = [cell.strip().lower() for cell in records[0]]
    duplicated = sorted({name for name in header if name and header.count(name) > 1})
    if duplicated:
        return [], [], f"has repeated column(s) {duplicated} in its header"
    body = [(number, record) for number, record in enumerate(records[1:], start=1) if any(c.strip() for c in record)]
    return header, body, None


def _rows_frame(header: list[str], records: list[tuple[int, list[str]]]) -> pl.DataFrame:
    """One row per data record: row_number, __fields, and the stripped text (null when empty) of the used columns."""
    wanted = {
        "entity_id": "entity_id",
        "label": "label",
        "reviewer": "reviewer",
        "note": "note",
        "partition_date": "__partition_date",
    }
    position = {name: header.index(name) for name in wanted if name in header}

    def cell(record: list[str], name: str) -> str | None:
        index = position.get(name)
        if index is None or index >= len(record):
            return None
        text = record[index].strip() or None
        # ids went out neutralised (export, rejects file): take the apostrophe off so they match the queue again
        return restore_formula(text) if name == "entity_id" else text

    columns: dict[str, list[Any]] = {"row_number": [n for n, _ in records], "__fields": [len(r) for _, r in records]}
    for name, alias in wanted.items():
        columns[alias] = [cell(record, name) for _, record in records]
    schema = {"row_number": pl.Int64, "__fields": pl.Int64, **{alias: pl.String for alias in wanted.values()}}
    return pl.DataFrame(columns, schema=schema)


def _file_rejection(source_file: str, reason: str, stamp: dt.datetime) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "source_file": source_file,
                "row_number": None,
                "entity_id": None,
                "label": None,
                "reviewer": None,
                "note": None,
                "reason": reason,
                "rejected_at": stamp,
            }
        ],
        schema=REJECT_SCHEMA,
    )


def rejects_path(path: Path) -> Path:
    """Where the rejects of review file ``path`` go: ``<stem>.rejects.csv`` in the same folder."""
    return path.with_name(f"{path.stem}{REJECTS_SUFFIX}")


def is_rejects_file(path: Path) -> bool:
    """Whether ``path`` is a rejects file written by ``write_rejects`` (a folder watcher must not import it)."""
    return path.name.endswith(REJECTS_SUFFIX)


def write_rejects(rejected: pl.DataFrame, path: Path) -> Path:
    """Write ``rejected`` (REJECT_SCHEMA) to ``rejects_path(path)`` next to the review file ``path``; return it.

    Always writes (a header-only file when nothing was rejected), so a stale rejects file from an earlier import
    of the same file never survives. Columns: row_number, entity_id, label, reviewer, note, reason; text cells that
    would run as a spreadsheet formula (a reviewer's ``=HYPERLINK(...)``) are neutralised with a leading ``'``.
    """
    target = rejects_path(path)
    sheet = rejected.sort("row_number", nulls_last=False).select(
        "row_number", "entity_id", "label", "reviewer", "note", "reason"
    )
    neutralise_formulas(sheet).write_csv(target)
    return target


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)
