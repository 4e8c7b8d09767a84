"""The nightly review queue: which answers people should look at, and how the review load went."""

from __future__ import annotations

from typing import Any

import polars as pl

from nightkeeper.config import ReviewConfig
from nightkeeper.frames import conform

MODEL_SOURCES = ("model", "canary")
"""Outcome sources whose score is a model's own answer (and so may be low-confidence)."""
QUARANTINE_PREFIX = "quarantined:"
LOW_CONFIDENCE = "low_confidence"
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
