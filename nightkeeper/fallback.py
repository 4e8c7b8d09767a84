"""The fallback rule: a positive rate per segment, fitted with each model, that answers when the model cannot."""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict

from nightkeeper.config import DecisionConfig
from nightkeeper.frames import number


class SegmentRate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    segment: list[str | bool | None]
    rate: float
    rows: int


class FallbackRule(BaseModel):
    """Positive rate per segment (shrunk toward the global rate), decided with the model's own threshold.

    Rows whose segment was not seen in training, or whose segment columns are empty, get the global rate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    segment_by: list[str]
    rates: list[SegmentRate]
    global_rate: float

    def scores(self, frame: pl.DataFrame) -> pl.Series:
        """The fallback score of every row of ``frame`` (which must hold the ``segment_by`` columns), in order."""
        if not self.segment_by or not self.rates:
            return pl.Series("score", [self.global_rate] * frame.height, dtype=pl.Float64)
        table = pl.DataFrame(
            [dict(zip(self.segment_by, rate.segment, strict=True), __rate=rate.rate) for rate in self.rates],
            schema={**{name: frame.schema[name] for name in self.segment_by}, "__rate": pl.Float64},
        )
        joined = frame.select(self.segment_by).with_row_index("__order").join(table, on=self.segment_by, how="left")
        return joined.sort("__order")["__rate"].fill_null(self.global_rate).alias("score")

    def answer(self, frame: pl.DataFrame, decision: DecisionConfig) -> pl.DataFrame:
        """``score`` and ``decision`` columns for every row of ``frame``."""
        score = self.scores(frame)
        return pl.DataFrame({"score": score}).with_columns(decide(pl.col("score"), decision).alias("decision"))


def decide(score: pl.Expr, decision: DecisionConfig) -> pl.Expr:
    """The decision label for a score: at or above the threshold, below it, or undecided when there is no score."""
    return (
        pl.when(score.is_null())
        .then(pl.lit(decision.undecided))
        .when(score >= decision.threshold)
        .then(pl.lit(decision.at_or_above_threshold))
        .otherwise(pl.lit(decision.below_threshold))
    )


def fit_fallback(frame: pl.DataFrame, target: str, segment_by: list[str], min_rows: int) -> FallbackRule:
    """Fit the per-segment rate on labeled rows; segments with fewer than ``min_rows`` rows are left to the global rate.

    Each kept segment's rate is shrunk toward the global rate with ``min_rows`` pseudo-rows, so a small segment
    cannot swing to 0 or 1 by chance.
    """
    if frame.height == 0:
        raise ValueError("cannot fit the fallback on zero labeled rows")
    global_rate = number(frame[target].cast(pl.Float64).mean())
    if not segment_by:
        return FallbackRule(segment_by=[], rates=[], global_rate=global_rate)
    grouped = (
        frame.group_by(segment_by)
        .agg(pl.len().alias("rows"), pl.col(target).cast(pl.Float64).sum().alias("positives"))
        .filter(pl.col("rows") >= min_rows)
        .sort(segment_by, nulls_last=True)
    )
    rates = [
        SegmentRate(
            segment=[row[name] for name in segment_by],
            rate=(row["positives"] + min_rows * global_rate) / (row["rows"] + min_rows),
            rows=row["rows"],
        )
        for row in grouped.iter_rows(named=True)
    ]
    return FallbackRule(segment_by=segment_by, rates=rates, global_rate=global_rate)
