"""The labeled history a retrain learns from: validated rows of past nights joined with the labels that landed,
plus the labels reviewers gave, each row saying where its label came from."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from nightkeeper.config import Contract
from nightkeeper.validation import valid_schema

NIGHTLY = "nightly"


def labeled_history(
    connection: duckdb.DuckDBPyConnection, contract: Contract, first: dt.date, last: dt.date, include_review: bool
) -> pl.DataFrame:
    """Validated rows scored on nights ``first``..``last`` that carry a label, with the contract's target column and
    ``label_source`` ('delivered' from the label feed, or 'review:<reviewer>@<time>' from a person).

    A delivered label wins over a reviewer's for the same row. Empty (with the right columns) before any label exists.
    The id and event-time columns carry the contract's names, so the frame trains as it is.
    """
    columns = valid_schema(contract)
    schema = {**columns, contract.target: pl.Int8(), "label_source": pl.String()}
    renames = {"entity_id": contract.entity_id, **({"event_time": contract.event_time} if contract.event_time else {})}
    if not _exists(connection, NIGHTLY, "validated_batch"):
        return pl.DataFrame(schema=schema).rename(renames)
    sources = []
    if _exists(connection, "monitoring", "labels"):
        sources.append("select entity_id, partition_date, label, 'delivered' as label_source, 1 as rank from monitoring.labels")
    if include_review and _exists(connection, "review", "labels"):
        sources.append(
            "select entity_id, partition_date, label,"
            " 'review:' || reviewer || '@' || strftime(timezone('UTC', reviewed_at), '%Y-%m-%dT%H:%M:%SZ') as label_source,"
            " 2 as rank from review.labels"
        )
    if not sources:
        return pl.DataFrame(schema=schema).rename(renames)
    frame = connection.execute(
        f"""with labels as ({' union all '.join(sources)}),
                 best as (select * from labels qualify row_number() over (partition by entity_id, partition_date order by rank) = 1)
            select v.*, best.label as "{contract.target}", best.label_source
            from {NIGHTLY}.validated_batch v join best using (entity_id, partition_date)
            where v.partition_date between $first and $last
            order by v.partition_date, v.source_file, v.row_number""",
        {"first": first, "last": last},
    ).pl()
    return frame.select(list(schema)).cast(schema).rename(renames)


def _exists(connection: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        connection.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, table]
        ).fetchone()[0]
    )


def split_holdout(labeled: pl.DataFrame, holdout_nights: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training, holdout): the holdout is the latest ``holdout_nights`` nights that carry labels, training is every
    labeled night before them — so a candidate is never judged on rows it learned from."""
    nights = labeled["partition_date"].unique().sort()
    if nights.len() <= holdout_nights:
        return labeled.head(0), labeled
    first_holdout = nights[-holdout_nights]
    return labeled.filter(pl.col("partition_date") < first_holdout), labeled.filter(pl.col("partition_date") >= first_holdout)
