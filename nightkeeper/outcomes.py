"""Assemble the night's outcomes: exactly one answer per raw row, from the model, the fallback or quarantine.

``source`` says who answered: ``model`` (the champion scored it), ``canary`` (the challenger, for the stable share
of entities routed to it), ``fallback`` (the fitted fallback rule answered
because the model could not, or because the row was quarantined but its segment is known), ``quarantine`` (nobody
could decide — quarantined and undecidable, or not scored and no fallback rule exists; the decision is the
``undecided`` label). ``reason`` says why a row is not a model answer. The decision passed in is the serving
champion's (``nightkeeper.serving.serving_decision``), so fallback answers are decided like the model's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from nightkeeper.config import DecisionConfig
from nightkeeper.fallback import FallbackRule, decide
from nightkeeper.frames import conform
from nightkeeper.validation import KEY_COLUMNS, ROW_KEY, UNREADABLE_FILE

OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "entity_id": pl.String(),
    "source": pl.String(),
    "decision": pl.String(),
    "score": pl.Float64(),
    "confidence": pl.Float64(),
    "model_version": pl.String(),
    "latency_ms": pl.Float64(),
    "reason": pl.String(),
}


class RowConservationError(AssertionError):
    """Outcomes do not hold exactly one row per raw row: a bug, never a data problem."""


@dataclass(frozen=True)
class Fallback:
    """The fitted rule that answers for the model, and the model version it was fitted with (None: no rule)."""

    rule: FallbackRule | None
    version: str | None


def segment_values(raw: pl.DataFrame, segment_by: list[str]) -> pl.DataFrame:
    """The row keys and the typed segment columns of raw rows (typed at ingest: null where empty or not typable)."""
    return raw.select(*KEY_COLUMNS, *segment_by)


def assemble_outcomes(
    raw: pl.DataFrame,
    quarantine: pl.DataFrame,
    scored: pl.DataFrame,
    fallback: Fallback,
    decision: DecisionConfig,
    answer_quarantined: bool,
    canary: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One outcome per raw row; raises RowConservationError if that cannot be shown.

    ``canary``: the challenger's answers (SCORED_SCHEMA) for the rows routed to it; each replaces the champion's
    answer for its row with ``source = canary``. Rows the challenger failed to score are not in it and stay with
    the champion.
    """
    segment_by = fallback.rule.segment_by if fallback.rule else []

    model_rows = scored.filter(pl.col("model_error").is_null()).with_columns(
        pl.lit("model").alias("source"), pl.lit(None, dtype=pl.String).alias("reason")
    )
    if canary is not None and canary.height:
        routed = (
            canary.filter(pl.col("model_error").is_null())
            .join(model_rows.select(ROW_KEY), on=ROW_KEY)
            .with_columns(pl.lit("canary").alias("source"), pl.lit(None, dtype=pl.String).alias("reason"))
        )
        model_rows = pl.concat(
            [model_rows.join(routed.select(ROW_KEY), on=ROW_KEY, how="anti"), routed.select(model_rows.columns)]
        )
    unscored = scored.filter(pl.col("model_error").is_not_null()).select(
        *ROW_KEY, pl.col("model_error").alias("reason")
    )

    reasons = quarantine.group_by(ROW_KEY).agg(
        pl.format("quarantined: {}", pl.concat_str("column", pl.lit(" "), "rule").sort().str.join("; ")).alias(
            "reason"
        ),
        # an unreadable file's row has no values at all: nobody can decide it
        (pl.col("column").is_in(segment_by) | (pl.col("rule") == UNREADABLE_FILE)).any().alias("segment_broken"),
    )
    decidable = answer_quarantined & ~pl.col("segment_broken")
    to_fallback = pl.concat([unscored, reasons.filter(decidable).select(*ROW_KEY, "reason")])
    undecided = reasons.filter(~decidable).select(*ROW_KEY, "reason")
    # only rows the model did not answer need their segment parsed (none on a clean night)
    needing = pl.concat([to_fallback.select(ROW_KEY), undecided.select(ROW_KEY)])
    segments = segment_values(raw.join(needing, on=ROW_KEY, how="semi"), segment_by)

    fallback_rows = _fallback_answers(segments.join(to_fallback, on=ROW_KEY), fallback, decision)
    quarantine_rows = (
        segments.select(KEY_COLUMNS)
        .join(undecided, on=ROW_KEY)
        .with_columns(pl.lit("quarantine").alias("source"), pl.lit(decision.undecided).alias("decision"))
    )
    outcomes = (
        pl.concat(
            [
                frame.select(c for c in OUTCOME_SCHEMA if c in frame.columns)
                for frame in (model_rows, fallback_rows, quarantine_rows)
            ],
            how="diagonal_relaxed",
        )
        .pipe(conform, OUTCOME_SCHEMA)
        .sort(ROW_KEY)
    )
    assert_conserved(raw, outcomes)
    return outcomes


def _fallback_answers(rows: pl.DataFrame, fallback: Fallback, decision: DecisionConfig) -> pl.DataFrame:
    if fallback.rule is None:  # nobody can decide these rows
        return rows.with_columns(
            pl.lit("quarantine").alias("source"),
            pl.lit(decision.undecided).alias("decision"),
            pl.format("{}; no fitted fallback rule", "reason").alias("reason"),
        )
    score = fallback.rule.scores(rows)
    return rows.with_columns(
        score.alias("score"),
        pl.lit("fallback").alias("source"),
        pl.lit(fallback.version).alias("model_version"),
    ).with_columns(decide(pl.col("score"), decision).alias("decision"))


def assert_conserved(raw: pl.DataFrame, outcomes: pl.DataFrame) -> None:
    """Raise RowConservationError unless every raw row has exactly one outcome and no outcome lacks a raw row."""
    duplicated = outcomes.select(ROW_KEY).filter(pl.struct(ROW_KEY).is_duplicated()).height
    missing = raw.select(ROW_KEY).join(outcomes.select(ROW_KEY), on=ROW_KEY, how="anti").height
    extra = outcomes.select(ROW_KEY).join(raw.select(ROW_KEY), on=ROW_KEY, how="anti").height
    if duplicated or missing or extra or raw.height != outcomes.height:
        raise RowConservationError(
            f"row conservation broken: {raw.height} raw rows, {outcomes.height} outcomes; {missing} raw rows without "
            f"an outcome, {duplicated} duplicated outcomes, {extra} outcomes without a raw row"
        )


def outcome_summary(outcomes: pl.DataFrame) -> dict[str, int]:
    """Row counts by source (model, canary, fallback, quarantine)."""
    counts = dict(outcomes.group_by("source").len().iter_rows())
    return {source: int(counts.get(source, 0)) for source in ("model", "canary", "fallback", "quarantine")}


@dataclass(frozen=True)
class AnswerSummary:
    """What the night's judgement reads of its outcomes, whatever their number: row counts by source (model, canary,
    fallback, quarantine), the answers not from the model by source and reason (the reason's first rule, without its
    detail; column ``len``, most frequent first), row counts by decision, and the first ``preview`` rows by row key."""

    by_source: dict[str, int]
    not_model_by_reason: pl.DataFrame
    decisions: dict[str, int]
    preview: pl.DataFrame

    @property
    def rows(self) -> int:
        return sum(self.by_source.values())


def summarise_answers(chunks: Iterable[pl.DataFrame], preview_rows: int) -> AnswerSummary:
    """The ``AnswerSummary`` of the union of ``chunks`` (outcome rows in any split and order): counts add, the
    preview keeps the smallest row keys, so a night summarised in chunks equals the night summarised whole."""
    sources: dict[str, int] = dict.fromkeys(("model", "canary", "fallback", "quarantine"), 0)
    decisions: dict[str, int] = {}
    reasons = pl.DataFrame(schema={"source": pl.String, "reason": pl.String, "len": pl.UInt32})
    preview = pl.DataFrame(schema=OUTCOME_SCHEMA)
    for chunk in chunks:
        for source, count in outcome_summary(chunk).items():
            sources[source] += count
        for decision, count in chunk.group_by("decision").len().iter_rows():
            decisions[str(decision)] = decisions.get(str(decision), 0) + int(count)
        found = (
            chunk.filter(~pl.col("source").is_in(["model", "canary"]))
            .with_columns(pl.col("reason").str.split(";").list.first().str.replace(r":.*$", ""))
            .group_by("source", "reason")
            .len()
        )
        reasons = pl.concat([reasons, found]).group_by("source", "reason").agg(pl.col("len").sum())
        preview = pl.concat([preview, conform(chunk, OUTCOME_SCHEMA).sort(ROW_KEY).head(preview_rows)])
        preview = preview.sort(ROW_KEY).head(preview_rows)
    return AnswerSummary(
        sources,
        reasons.sort(["len", "source", "reason"], descending=[True, False, False], nulls_last=True),
        dict(sorted(decisions.items())),
        preview,
    )
