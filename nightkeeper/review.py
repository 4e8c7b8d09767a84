"""Humans in the loop: a nightly review queue of uncertain answers, a CSV round trip with reviewers, and the labels
they give, stored with provenance so they can join the training data.

The flow, one night at a time:

1. ``build_review_queue`` picks, from the night's outcomes, the model answers closest to the decision threshold
   (most uncertain first) and then the quarantined rows a person could decide, up to a nightly capacity.
   ``store_queue`` writes it to ``review.queue`` (re-running a night replaces its queue).
2. ``export_review_csv`` writes the queue as a CSV with empty ``label``, ``reviewer`` and ``note`` columns.
3. Reviewers fill it in; ``import_review_file`` reads it back **without ever raising on the file's content**:
   each good row is accepted, each bad row is rejected with the reason, rows with an empty label are skipped (not
   reviewed yet), and a malformed file (not a CSV, required columns missing) is rejected as a whole with the reason.
4. ``commit_import`` stores, in one transaction, the accepted labels in ``review.labels`` (idempotently by
   (entity_id, label), so importing the same file twice adds nothing) and the rejections in ``review.rejects``; only
   after the commit does it write the rejections next to the input file (``write_rejects``) for the reviewer to fix
   and send again.

Every function is a plain function of its arguments (the warehouse connection included); nothing here imports
Dagster. Its settings are ``ProjectConfig.review`` (``nightkeeper.config.ReviewConfig``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from nightkeeper.config import ReviewConfig
from nightkeeper.config import label_values as _label_values
from nightkeeper.frames import conform

SCHEMA = "review"
MODEL_SOURCES = ("model", "canary")
"""Outcome sources whose score is a model's own answer (and so may be low-confidence)."""
QUARANTINE_PREFIX = "quarantined:"
LOW_CONFIDENCE = "low_confidence"
REQUIRED_COLUMNS = ("entity_id", "label", "reviewer")
EXPORT_COLUMNS = ("entity_id", "partition_date", "score", "decision", "queue_reason", "label", "reviewer", "note")
REJECTS_SUFFIX = ".rejects.csv"
BAND_TOLERANCE = 1e-9
"""Added to ``band`` so that a score exactly ``band`` away from the threshold is inside despite float rounding."""

QUEUE_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "entity_id": pl.String(),
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "score": pl.Float64(),
    "decision": pl.String(),
    "distance": pl.Float64(),
    "queue_reason": pl.String(),
    "priority": pl.Int64(),
}

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

# ----------------------------------------------------------------------------------------------------------- queue


def build_review_queue(
    outcomes: pl.DataFrame, quarantine: pl.DataFrame, threshold: float | pl.Expr, config: ReviewConfig
) -> pl.DataFrame:
    """The review queue of the nights in ``outcomes`` (OUTCOME_SCHEMA), as a QUEUE_SCHEMA frame.

    ``threshold``: the decision threshold, or an expression over the outcome's columns giving each row's (the
    threshold on its model version's card, which is what it was decided at).

    Who enters, in priority order, per night (``partition_date``):

    1. Low-confidence model answers: ``source`` in MODEL_SOURCES ('model', 'canary') with
       ``distance = |score - threshold| <= band``; most uncertain first (smallest distance, ties by entity_id, then
       row key). ``queue_reason`` is 'low_confidence'.
    2. If ``include_quarantined``: quarantined rows a person could decide — ``source`` 'quarantine', or 'fallback'
       with a reason starting 'quarantined:' — in arrival order (source_file, row_number). ``queue_reason`` is
       'quarantined: ' followed by each broken rule with the value found and what was expected, from ``quarantine``
       (QUARANTINE_SCHEMA); the outcome's own reason when ``quarantine`` has no row for it. ``distance`` is null when
       the row has no score (nobody answered it).

    Rows without an entity_id cannot be labeled and never enter. An entity_id enters at most once per night (its
    highest-priority row). The first ``capacity`` rows of each night are kept — uncertain model answers fill the
    capacity before any quarantined row does. ``priority`` runs 1..n within each night; the frame is sorted by
    (partition_date, priority).
    """
    distance = (pl.col("score") - threshold).abs()
    answered = outcomes.filter(pl.col("entity_id").is_not_null()).with_columns(distance.alias("distance"))
    uncertain = answered.filter(
        pl.col("source").is_in(MODEL_SOURCES)
        & pl.col("score").is_not_null()
        & (pl.col("distance") <= config.band + BAND_TOLERANCE)
    ).with_columns(pl.lit(1).alias("__tier"), pl.lit(LOW_CONFIDENCE).alias("queue_reason"))
    tiers = [uncertain]
    if config.include_quarantined:
        quarantined = answered.filter(
            (pl.col("source") == "quarantine")
            | ((pl.col("source") == "fallback") & pl.col("reason").str.starts_with(QUARANTINE_PREFIX))
        )
        reasons = _quarantine_reasons(quarantine)
        tiers.append(
            quarantined.join(reasons, on=["source_file", "row_number"], how="left").with_columns(
                pl.lit(2).alias("__tier"),
                pl.coalesce("__broken", "reason").alias("queue_reason"),
            )
        )
    candidates = pl.concat(
        [frame.select(*(c for c in QUEUE_SCHEMA if c != "priority"), "__tier") for frame in tiers],
        how="vertical_relaxed",
    )
    tier_order = (
        pl.when(pl.col("__tier") == 1).then(pl.col("distance")).otherwise(None).alias("__distance_order"),
        pl.when(pl.col("__tier") == 1).then(pl.col("entity_id")).otherwise(None).alias("__id_order"),
    )
    ranked = (
        candidates.with_columns(*tier_order)
        .sort(
            ["partition_date", "__tier", "__distance_order", "__id_order", "source_file", "row_number"], nulls_last=True
        )
        .unique(["partition_date", "entity_id"], keep="first", maintain_order=True)
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("partition_date").alias("priority"))
        .filter(pl.col("priority") <= config.capacity)
    )
    return conform(ranked, QUEUE_SCHEMA).sort("partition_date", "priority")


def _quarantine_reasons(quarantine: pl.DataFrame) -> pl.DataFrame:
    """Per quarantined row: 'quarantined: <column> <rule> (found <value>, expected <expected>); ...'."""
    found = pl.when(pl.col("value").is_null()).then(pl.lit("nothing")).otherwise(pl.format("'{}'", pl.col("value")))
    broken = pl.format("{} {} (found {}, expected {})", "column", "rule", found, pl.col("expected").fill_null("?"))
    return (
        quarantine.sort("column", "rule")
        .group_by(["source_file", "row_number"], maintain_order=True)
        .agg(broken.str.join("; ").alias("__broken"))
        .select(
            pl.col("source_file").cast(pl.String),
            pl.col("row_number").cast(pl.Int64),
            pl.format(f"{QUARANTINE_PREFIX} {{}}", "__broken").alias("__broken"),
        )
    )


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


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection). Such a cell is written with a
# leading apostrophe, which spreadsheets show as text; a cell that already starts with apostrophes before one of
# these gets one more, so import can take exactly one off and every text comes back as it was.
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


# ---------------------------------------------------------------------------------------------------------- import


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


# --------------------------------------------------------------------------------------------------------- storage

_DDL = f"""
create schema if not exists {SCHEMA};
create table if not exists {SCHEMA}.queue (
    partition_date date not null,
    entity_id varchar not null,
    source_file varchar not null,
    row_number bigint not null,
    score double,
    decision varchar,
    distance double,
    queue_reason varchar not null,
    priority bigint not null
);
create table if not exists {SCHEMA}.labels (
    entity_id varchar not null,
    partition_date date,
    label tinyint not null,
    reviewer varchar not null,
    note varchar,
    reviewed_at timestamptz not null,
    source_file varchar not null,
    row_number bigint,
    primary key (entity_id, label)
);
create table if not exists {SCHEMA}.rejects (
    source_file varchar not null,
    row_number bigint,
    entity_id varchar,
    label varchar,
    reviewer varchar,
    note varchar,
    reason varchar not null,
    rejected_at timestamptz not null
);
"""


def ensure_review_tables(connection: duckdb.DuckDBPyConnection) -> None:
    """Create the ``review`` schema and its tables if absent."""
    connection.execute(_DDL)


def store_queue(connection: duckdb.DuckDBPyConnection, night: dt.date, queue: pl.DataFrame) -> int:
    """Replace ``night``'s rows of ``review.queue`` with ``queue`` in one transaction; return the rows stored.

    Raises ValueError if a row of ``queue`` belongs to another night (nothing is written then).
    """
    ensure_review_tables(connection)
    frame = conform(queue, QUEUE_SCHEMA)
    others = frame.filter(pl.col("partition_date") != night)["partition_date"].unique().sort().to_list()
    if others:
        raise ValueError(f"queue for night {night} holds rows of other night(s) {others}")
    connection.begin()
    try:
        connection.execute(f"delete from {SCHEMA}.queue where partition_date = ?", [night])
        _insert(connection, f"{SCHEMA}.queue", frame)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    return frame.height


def queue_for(connection: duckdb.DuckDBPyConnection, night: dt.date) -> pl.DataFrame:
    """``night``'s stored queue (QUEUE_SCHEMA) in priority order; empty if none was stored."""
    ensure_review_tables(connection)
    return _read(
        connection, f"select * from {SCHEMA}.queue where partition_date = ? order by priority", QUEUE_SCHEMA, [night]
    )


def stored_queue(connection: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every night's stored queue (QUEUE_SCHEMA), by (partition_date, priority)."""
    ensure_review_tables(connection)
    return _read(connection, f"select * from {SCHEMA}.queue order by partition_date, priority", QUEUE_SCHEMA)


def store_review_labels(connection: duckdb.DuckDBPyConnection, accepted: pl.DataFrame) -> int:
    """Append ``accepted`` (LABEL_SCHEMA) to ``review.labels``; return how many rows were new.

    Idempotent by (entity_id, label): a label already stored is not stored again (its first provenance stays).
    Raises ValueError, storing nothing, if an entity would get two different labels (within ``accepted`` or against
    the stored ones): ``import_review_file`` rejects such rows as conflicts, so this means it was bypassed.
    """
    ensure_review_tables(connection)
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
    _insert(connection, f"{SCHEMA}.labels", new)
    return new.height


def stored_review_labels(connection: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every stored review label (LABEL_SCHEMA), by (reviewed_at, entity_id)."""
    ensure_review_tables(connection)
    return _read(connection, f"select * from {SCHEMA}.labels order by reviewed_at, entity_id", LABEL_SCHEMA)


def store_rejects(connection: duckdb.DuckDBPyConnection, rejected: pl.DataFrame) -> int:
    """Append ``rejected`` (REJECT_SCHEMA) to ``review.rejects``; return how many rows were new.

    Idempotent: a rejection equal to a stored one in every column but ``rejected_at`` is not stored again, so
    importing the same bad file twice logs its rejections once.
    """
    ensure_review_tables(connection)
    frame = conform(rejected, REJECT_SCHEMA)
    key = [c for c in REJECT_SCHEMA if c != "rejected_at"]
    stored = stored_rejects(connection).select(key)
    new = frame.unique(key, keep="first", maintain_order=True).join(stored, on=key, how="anti", nulls_equal=True)
    _insert(connection, f"{SCHEMA}.rejects", new)
    return new.height


def commit_import(connection: duckdb.DuckDBPyConnection, result: ReviewImport, path: Path) -> tuple[int, Path]:
    """Store an import's accepted labels and its rejections in one transaction, then write its rejects file.

    Returns (new labels stored, the rejects file). All or nothing: if storing fails (a conflict, a warehouse error,
    a killed process) neither labels nor rejections are kept and no rejects file is written, so the reviewer never
    holds a rejects file for an import the warehouse does not know. The rejects file is written only after the
    commit; a crash between the two leaves the warehouse complete and the file to be written by a re-import.
    """
    connection.begin()
    try:
        added = store_review_labels(connection, result.accepted)
        store_rejects(connection, result.rejected)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    return added, write_rejects(result.rejected, path)


def stored_rejects(connection: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every stored rejection (REJECT_SCHEMA), by (rejected_at, source_file, row_number)."""
    ensure_review_tables(connection)
    return _read(
        connection, f"select * from {SCHEMA}.rejects order by rejected_at, source_file, row_number", REJECT_SCHEMA
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


# ----------------------------------------------------------------------------------------------- stats and training


def review_stats(
    queue_all: pl.DataFrame, labels: pl.DataFrame, outcomes: pl.DataFrame, positive_decision: str
) -> dict[str, Any]:
    """Review load, turnaround and human-vs-model agreement over the queued rows in ``queue_all``.

    A queued row (QUEUE_SCHEMA) counts as reviewed when ``labels`` (LABEL_SCHEMA) holds its (entity_id,
    partition_date). Keys:

    * ``queued``: queued rows; ``reviewed``: those with a label; ``pending``: the rest.
    * ``turnaround_hours_median``: median hours from the end of the row's night (the midnight, UTC, after
      ``partition_date``) to ``reviewed_at``; None when nothing was reviewed.
    * ``agreement``: among reviewed rows that the model answered (their outcome — matched on partition_date,
      source_file, row_number in ``outcomes`` — has source 'model' or 'canary'), the share whose label equals the
      model's decision as a label: 1 when ``decision == positive_decision`` (the config's
      ``at_or_above_threshold``), else 0. None when there is no such row. ``agreement_rows``: how many rows that is.
    """
    queued = queue_all.select("partition_date", "entity_id", "source_file", "row_number").unique()
    reviewed = queued.join(
        labels.select("entity_id", "partition_date", "label", "reviewed_at").unique(
            ["entity_id", "partition_date"], keep="last"
        ),
        on=["entity_id", "partition_date"],
        how="inner",
    )
    night_end = pl.col("partition_date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC") + pl.duration(days=1)
    hours = reviewed.select(
        ((pl.col("reviewed_at").dt.convert_time_zone("UTC") - night_end).dt.total_microseconds() / 3.6e9).alias("h")
    )["h"]
    compared = reviewed.join(
        outcomes.select("partition_date", "source_file", "row_number", "source", "decision"),
        on=["partition_date", "source_file", "row_number"],
        how="inner",
    ).filter(pl.col("source").is_in(MODEL_SOURCES) & pl.col("decision").is_not_null())
    model_label = (pl.col("decision") == positive_decision).cast(pl.Int64)
    agree = compared.select((pl.col("label").cast(pl.Int64) == model_label).mean())
    return {
        "queued": queued.height,
        "reviewed": reviewed.height,
        "pending": queued.height - reviewed.height,
        "turnaround_hours_median": float(hours.median()) if hours.len() else None,  # type: ignore[arg-type]
        "agreement": float(agree.item()) if compared.height else None,
        "agreement_rows": compared.height,
    }


# ---------------------------------------------------------------------------------------------------------- helpers


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)
