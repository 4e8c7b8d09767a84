"""Score validated rows with a model in chunks, within a time budget; every row gets a score or the reason it has none.

A model that raises or overruns its budget answers no row of the night: the whole batch is marked with the error
and left to the fallback (a half-scored night would mix two regimes without saying so).
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import polars as pl

from nightkeeper.card import ModelCard
from nightkeeper.config import DecisionConfig
from nightkeeper.encoding import feature_matrix
from nightkeeper.fallback import decide
from nightkeeper.forest_scoring import ScoringForest, probabilities, scoring_forest
from nightkeeper.frames import conform, number
from nightkeeper.treeshap import UnsupportedModel
from nightkeeper.validation import KEY_COLUMNS

SCORED_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "entity_id": pl.String(),
    "score": pl.Float64(),
    "confidence": pl.Float64(),
    "decision": pl.String(),
    "model_version": pl.String(),
    "latency_ms": pl.Float64(),
    "model_error": pl.String(),
}
COMPILED_MIN_ROWS = 20_000
"""Batches from this many rows are scored by ``nightkeeper.forest_scoring`` (the same probabilities as
``Booster.predict``, bit for bit, faster); flattening the model costs ~0.3 s, what LightGBM needs for ~20k rows."""


@dataclass(frozen=True)
class ScoringResult:
    """One row per input row. ``error`` is None when the model answered every row, else why it answered none."""

    frame: pl.DataFrame
    error: str | None
    seconds: float


def confidence(score: pl.Expr, threshold: float) -> pl.Expr:
    """How far a score sits from the decision threshold, scaled to [0, 1]: 0 on the threshold, 1 at 0 or 1."""
    return (
        pl.when(score >= threshold)
        .then((score - threshold) / (1 - threshold))
        .otherwise((threshold - score) / threshold)
    )


def score_batch(
    valid: pl.DataFrame,
    booster: lgb.Booster,
    card: ModelCard,
    chunk_rows: int,
    time_budget_seconds: float,
    forest: ScoringForest | None = None,
) -> ScoringResult:
    """Score ``valid`` with ``booster`` ``chunk_rows`` at a time; give up on the whole batch past the time budget.
    ``forest``: ``booster`` flattened already (``compiled``), for a caller scoring several batches with it; when
    None, a batch of COMPILED_MIN_ROWS rows or more flattens it itself."""
    started = time.perf_counter()
    cancelled = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nightkeeper-score")
    future = pool.submit(_predict_chunks, valid, booster, card, chunk_rows, cancelled, forest)
    try:
        scores, latencies = future.result(timeout=time_budget_seconds)
        error = None
    except FutureTimeout:
        cancelled.set()
        error = f"model {card.version} exceeded its time budget of {time_budget_seconds:g} s"
    except Exception as exc:  # any failure of the model is an outcome to record, not a crash of the night
        error = f"model {card.version} raised {type(exc).__name__}: {exc}"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    seconds = time.perf_counter() - started
    if error is not None:
        return ScoringResult(unscored(valid, card.version, error), error, seconds)
    threshold = card.decision.threshold
    frame = (
        valid.select(KEY_COLUMNS)
        .with_columns(
            pl.Series("score", scores, dtype=pl.Float64),
            pl.Series("latency_ms", latencies, dtype=pl.Float64),
        )
        .with_columns(
            confidence(pl.col("score"), threshold).alias("confidence"),
            decide(pl.col("score"), card.decision).alias("decision"),
            pl.lit(card.version).alias("model_version"),
            pl.lit(None, dtype=pl.String).alias("model_error"),
        )
    )
    return ScoringResult(conform(frame, SCORED_SCHEMA), None, seconds)


def unscored(valid: pl.DataFrame, version: str | None, error: str) -> pl.DataFrame:
    """Every row of ``valid`` marked as not scored, with ``error`` as the reason."""
    return (
        valid.select(KEY_COLUMNS)
        .with_columns(
            pl.lit(None, dtype=pl.Float64).alias("score"),
            pl.lit(None, dtype=pl.Float64).alias("confidence"),
            pl.lit(None, dtype=pl.String).alias("decision"),
            pl.lit(version, dtype=pl.String).alias("model_version"),
            pl.lit(None, dtype=pl.Float64).alias("latency_ms"),
            pl.lit(error).alias("model_error"),
        )
        .pipe(conform, SCORED_SCHEMA)
    )


def compiled(booster: lgb.Booster) -> ScoringForest | None:
    """``booster`` flattened for ``forest_scoring.probabilities``; None for a model it does not score (e.g. a
    multiclass model: LightGBM's predict scores it)."""
    try:
        return scoring_forest(booster)
    except UnsupportedModel:
        return None


def _predict_chunks(
    valid: pl.DataFrame,
    booster: lgb.Booster,
    card: ModelCard,
    chunk_rows: int,
    cancelled: threading.Event,
    forest: ScoringForest | None,
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.empty(valid.height, dtype=np.float64)
    latencies = np.empty(valid.height, dtype=np.float64)
    if forest is None and valid.height >= COMPILED_MIN_ROWS:
        forest = compiled(booster)
    for start in range(0, valid.height, chunk_rows):
        if cancelled.is_set():
            raise TimeoutError("cancelled")
        chunk = valid.slice(start, chunk_rows)
        began = time.perf_counter()
        matrix = feature_matrix(chunk, card.features)
        scores[start : start + chunk.height] = (
            booster.predict(matrix) if forest is None else probabilities(forest, matrix)
        )
        latencies[start : start + chunk.height] = (time.perf_counter() - began) * 1000 / chunk.height
    return scores, latencies


def needs_reasons(decision: DecisionConfig, scope: str, band: float) -> pl.Expr:
    """Which of one model's answers get reason codes: every one ('all'), none ('none'), or ('scoped') the declined
    answers and those close enough to the model's threshold to be reviewed."""
    if scope == "all":
        return pl.lit(True)
    if scope == "none":
        return pl.lit(False)
    near = (pl.col("score") - decision.threshold).abs() <= band
    return (pl.col("decision") == decision.at_or_above_threshold) | near


LATENCY_QUANTILES = {"p50_ms": 0.5, "p95_ms": 0.95}
"""The per-row latency percentiles a night reports, by name."""


def latency_percentiles(frame: pl.DataFrame) -> dict[str, float | None]:
    """p50 and p95 of the per-row latency (ms, amortised over each chunk) of scored rows: polars' ``quantile``
    (nearest rank) of the column, None without a scored row."""
    return latency_percentiles_of_counts(frame.group_by("latency_ms").len("rows"))


def latency_percentiles_of_counts(counts: pl.DataFrame) -> dict[str, float | None]:
    """``latency_percentiles`` of the rows counted in ``counts`` (``latency_ms``: a distinct latency, ``rows``: how
    many rows have it; a null latency is ignored). A stored night's are read from a ``group by latency_ms``: a
    row's latency is its predict call's, so a night has about one distinct latency per call, not per row."""
    counts = counts.filter(pl.col("latency_ms").is_not_null()).sort("latency_ms")
    total = int(counts["rows"].sum())
    if total == 0:
        return dict.fromkeys(LATENCY_QUANTILES)
    rows_up_to = counts["rows"].cum_sum()
    percentiles: dict[str, float | None] = {}
    for name, quantile in LATENCY_QUANTILES.items():
        position = quantile * (total - 1)
        rank = math.floor(position) + (position - math.floor(position) >= 0.5)  # half away from zero, as polars
        percentiles[name] = number(counts["latency_ms"][int((rows_up_to <= rank).sum())])
    return percentiles
