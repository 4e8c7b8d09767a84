"""The labeled history a retrain learns from: validated rows of past nights joined with the labels that landed,
plus the labels reviewers gave, each row saying where its label came from."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from nightkeeper import ingest
from nightkeeper.config import Contract
from nightkeeper.contract_types import parse_event_time, text_column, valid_schema
from nightkeeper.frames import conform
from nightkeeper.labels import NEGATIVE_TEXTS, POSITIVE_TEXTS, parse_label
from nightkeeper.validation import QUARANTINE_SCHEMA, ROW_KEY, validate
from nightkeeper.warehouse import NIGHTLY_SCHEMA, table_exists


def labeled_history(
    connection: duckdb.DuckDBPyConnection, contract: Contract, first: dt.date, last: dt.date, include_review: bool
) -> pl.DataFrame:
    """Labeled rows a retrain looking back from ``last`` may learn from, with the contract's target column and
    ``label_source``: validated rows scored on nights ``first``..``last`` that carry a label — 'delivered' from the
    label feed, or 'review:<reviewer>@<time>' from a person — and the rows of the project's labeled history dated
    ``first``..``last`` ('history', stored by ``nightkeeper train --history``). The history is held to the same
    window as nightly labels: it carries the first retrains (no nightly labels yet), then rolls off, so a retrain
    under drift learns the recent world instead of staying close to the first champion.

    A delivered label wins over a reviewer's for the same row. Empty (with the right columns) before any label exists.
    The id and event-time columns carry the contract's names, so the frame trains as it is.
    """
    columns = valid_schema(contract)
    schema = {**columns, contract.target: pl.Int8(), "label_source": pl.String()}
    renames = {"entity_id": contract.entity_id, **({"event_time": contract.event_time} if contract.event_time else {})}
    selected = ", ".join(f'"{name}"' for name in columns)
    parts = []
    if table_exists(connection, "lifecycle", "history"):
        parts.append(f"""select {selected}, label as "{contract.target}", '{HISTORY_SOURCE}' as label_source, 0 as part
                         from {HISTORY} where partition_date between $first and $last""")
    sources = []
    if table_exists(connection, "monitoring", "labels"):
        sources.append(
            "select entity_id, partition_date, label, 'delivered' as label_source, 1 as rank from monitoring.labels"
        )
    if include_review and table_exists(connection, "review", "labels"):
        sources.append(
            "select entity_id, partition_date, label, 'review:' || reviewer || '@' || strftime(timezone('UTC', "
            "reviewed_at), '%Y-%m-%dT%H:%M:%SZ') as label_source, 2 as rank from review.labels"
        )
    if sources and table_exists(connection, NIGHTLY_SCHEMA, "validated_batch"):
        best = f"""(select * from ({" union all ".join(sources)})
                    qualify row_number() over (partition by entity_id, partition_date order by rank) = 1)"""
        selected = ", ".join(f'v."{name}"' for name in columns)
        parts.append(f"""select {selected}, best.label as "{contract.target}", best.label_source, 1 as part
                         from {NIGHTLY_SCHEMA}.validated_batch v join {best} best using (entity_id, partition_date)
                         where v.partition_date between $first and $last""")
    if not parts:
        return pl.DataFrame(schema=schema).rename(renames)
    query = f"select * from ({' union all '.join(parts)}) order by part, partition_date, source_file, row_number"
    frame = connection.execute(
        query, {name: value for name, value in (("first", first), ("last", last)) if f"${name}" in query}
    ).pl()
    return conform(frame, schema).rename(renames)


def split_holdout(labeled: pl.DataFrame, holdout_nights: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training, holdout): the holdout is the latest ``holdout_nights`` nights that carry labels, training is every
    labeled night before them — so a candidate is never judged on rows it learned from."""
    nights = labeled["partition_date"].unique().sort()
    if nights.len() <= holdout_nights:
        return labeled.head(0), labeled
    first_holdout = nights[-holdout_nights]
    return labeled.filter(pl.col("partition_date") < first_holdout), labeled.filter(
        pl.col("partition_date") >= first_holdout
    )


# --------------------------------------------------------------------------------------- the user's labeled history

HISTORY = "lifecycle.history"  # the labeled history a project started from: in each retrain window its dates fall in
HISTORY_SOURCE = "history"  # its ``label_source``


class HistoryFileError(ValueError):
    """A labeled history file that cannot be used at all (unreadable, or lacking a column); the message names it."""


@dataclass(frozen=True)
class LabeledHistoryFile:
    """A labeled history file checked against the contract.

    ``rows``: the usable rows, in the validated-batch layout (``valid_schema``) with ``partition_date`` the row's date
    and a ``label`` column (Int8 0/1). ``rejected``: one row per broken rule of every row left out (QUARANTINE_SCHEMA:
    row_number counts the file's data rows from 1, column, rule, value, expected), so nothing is silently dropped.
    """

    rows: pl.DataFrame
    rejected: pl.DataFrame
    file_rows: int

    def rejected_summary(self) -> pl.DataFrame:
        """How many rows broke each (column, rule), most first, with one example value and what was expected."""
        return (
            self.rejected.group_by("column", "rule")
            .agg(
                pl.col("row_number").n_unique().alias("rows"),
                pl.col("value").first().alias("example"),
                pl.col("expected").first(),
            )
            .sort("rows", "column", descending=[True, False])
        )


def read_history_file(
    path: Path, contract: Contract, date_column: str | None = None, root: Path | None = None
) -> LabeledHistoryFile:
    """Read a labeled history (Parquet or CSV) and validate it as nightly batches are: each date's rows by the
    contract's rules, plus a date in ``date_column`` (default: the contract's event time) and a 0/1 target.

    Raises HistoryFileError when the file cannot be read, is neither Parquet nor CSV, names no date column, or lacks
    the id, the target, the date or a required feature column (naming it). Rows breaking a rule are ``rejected``.
    """
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise HistoryFileError(
            f"{path}: a labeled history must be a .parquet or .csv file, not {suffix or 'a file without suffix'!r}"
        )
    date_column = date_column or contract.event_time
    if not date_column:
        raise HistoryFileError(
            f"{path}: which column holds each row's date? The contract has no event_time; pass --date-column NAME"
        )
    batch = ingest.read_raw_batch([path], dt.date.min, contract, root, text_columns=(date_column, contract.target))
    found = batch.files[0]
    if found.error:
        raise HistoryFileError(f"{path} {found.error}")
    roles = {
        contract.entity_id: "the contract's entity_id",
        contract.target: "the contract's target",
        date_column: "the date column",
    }
    roles.update({name: "a required feature" for name, spec in contract.features.items() if spec.required})
    missing = [f"{name!r} ({role})" for name, role in roles.items() if name not in found.columns]
    if missing:
        raise HistoryFileError(f"{path} lacks column(s) {', '.join(missing)}; it has {sorted(found.columns)}")
    raw = batch.frame.with_columns(
        parse_event_time(date_column).dt.date().alias("__date"),
        pl.col(text_column(date_column)).alias("__date_text"),
        parse_label(pl.col(text_column(contract.target))).alias("label"),
        pl.col(text_column(contract.target)).alias("__target_text"),
    ).with_columns(pl.col("__date").fill_null(dt.date.min).alias("partition_date"))
    own = [
        _rejections(
            raw,
            pl.col("__date").is_null(),
            date_column,
            "type",
            "__date_text",
            "a date such as 2025-06-30 (a date-time also does)",
        ),
        _rejections(
            raw,
            pl.col("label").is_null(),
            contract.target,
            "label",
            "__target_text",
            f"a label: one of {list(POSITIVE_TEXTS + NEGATIVE_TEXTS)}",
        ),
    ]
    dated = raw.filter(pl.col("__date").is_not_null())
    results = [
        validate(night.drop("__date", "__date_text", "label", "__target_text"), contract)
        for night in dated.partition_by("partition_date")
    ]
    rejected = pl.concat([*own, *(r.quarantine for r in results)]).sort([*ROW_KEY, "column", "rule"])
    valid = pl.concat([r.valid for r in results]) if results else pl.DataFrame(schema=valid_schema(contract))
    rows = valid.join(raw.select(*ROW_KEY, "label"), on=ROW_KEY).join(
        rejected.select(ROW_KEY).unique(), on=ROW_KEY, how="anti"
    )
    schema = {**valid_schema(contract), "label": pl.Int8()}
    return LabeledHistoryFile(conform(rows.sort(ROW_KEY), schema), rejected, batch.frame.height)


def store_history(connection: duckdb.DuckDBPyConnection, rows: pl.DataFrame) -> None:
    """Keep ``rows`` (``LabeledHistoryFile.rows``) as the project's labeled history, replacing an earlier one."""
    connection.execute("create schema if not exists lifecycle")
    connection.register("__history", rows)
    try:
        connection.execute(f"create or replace table {HISTORY} as select * from __history")
    finally:
        connection.unregister("__history")


def _rejections(
    raw: pl.DataFrame, condition: pl.Expr, column: str, rule: str, text: str, expected: str
) -> pl.DataFrame:
    return (
        raw.filter(condition)
        .select(
            pl.col("__date").alias("partition_date"),
            *ROW_KEY,
            "entity_id",
            pl.lit(column).alias("column"),
            pl.lit(rule).alias("rule"),
            pl.col(text).alias("value"),
            pl.lit(expected).alias("expected"),
        )
        .cast(QUARANTINE_SCHEMA)
    )
