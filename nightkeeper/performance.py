"""Model performance: realized once labels land, estimated from the scores before they do.

* **Realized** (``realized_performance``): per scoring night, source and model version, the metrics of the model's
  answers that have a label: AUC, precision, recall, Brier, the label positive rate and a business value in money.
  A pure function of the outcomes, the stored labels and the config, so it is recomputed from scratch whenever
  more labels arrive.
* **Estimated** (``estimate_performance``, ``estimated_performance``): confidence-based performance estimation
  (CBPE, as NannyML does it). If the scores are calibrated probabilities, each row is a positive with probability
  ``p``, so the confusion matrix, precision, recall, accuracy, the business value and the ROC AUC have expected
  values computable from the scores alone, on the night itself, without labels.
  **Assumptions**: the scores are calibrated (checked with ``calibration_check`` on the latest labeled window) and
  there is no concept drift (``P(label | features)`` is what it was when the model was fitted). CBPE follows
  covariate shift, but it cannot see concept drift: when the relationship between features and label changes, the
  scores still look as confident as before and the estimate stays put, while the realized metrics drop once the
  labels land. That is why both exist.
* ``performance_metrics`` flattens both into ``performance.*`` metrics for the alert rules.

A row's decision is 'positive' (the ``at_or_above_threshold`` decision) when ``score >= threshold``, the threshold
on the card of the model version that answered it (``card_thresholds``: what scoring decided at, not the config's);
business value = sum over rows of the money of its confusion cell (``BusinessValue``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from sklearn.calibration import calibration_curve

from nightkeeper import registry
from nightkeeper.config import BusinessValue, DecisionConfig, PerformanceConfig
from nightkeeper.frames import conform
from nightkeeper.labels import LABELS_TABLE
from nightkeeper.schema import PERFORMANCE_LABEL_STATE as LABEL_STATE_TABLE
from nightkeeper.summaries import EXACT_UP_TO, ValueCounts, rounded
from nightkeeper.warehouse import NIGHTLY_SCHEMA, create_table_if_missing, read_chunks, run_transaction, table_exists

DEFAULT_SOURCES: tuple[str, ...] = ("model", "canary")
GROUP_KEY = ["partition_date", "source", "model_version"]

# Outcome rows of the given sources with their label (null while it has not arrived).
SCORED_LABELS_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "source": pl.String(),
    "model_version": pl.String(),
    "entity_id": pl.String(),
    "score": pl.Float64(),
    "label": pl.Int8(),
}
_METRICS: dict[str, pl.DataType] = {
    "auc": pl.Float64(),
    "precision": pl.Float64(),
    "recall": pl.Float64(),
    "brier": pl.Float64(),
    "positive_rate": pl.Float64(),
    "business_value": pl.Float64(),
    "business_value_per_row": pl.Float64(),
}
REALIZED_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "source": pl.String(),
    "model_version": pl.String(),
    "rows": pl.Int64(),
    "labeled_rows": pl.Int64(),
    "label_coverage": pl.Float64(),
    "true_positives": pl.Int64(),
    "false_positives": pl.Int64(),
    "true_negatives": pl.Int64(),
    "false_negatives": pl.Int64(),
    **_METRICS,
}
ESTIMATED_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "source": pl.String(),
    "model_version": pl.String(),
    "rows": pl.Int64(),
    "auc": pl.Float64(),
    "precision": pl.Float64(),
    "recall": pl.Float64(),
    "accuracy": pl.Float64(),
    "brier": pl.Float64(),
    "positive_rate": pl.Float64(),
    "business_value": pl.Float64(),
    "business_value_per_row": pl.Float64(),
}
REALIZED_COUNTS_SCHEMA: dict[str, pl.DataType] = {
    **{k: SCORED_LABELS_SCHEMA[k] for k in (*GROUP_KEY, "score", "label")},
    "count": pl.Int64(),
}
ESTIMATED_COUNTS_SCHEMA: dict[str, pl.DataType] = {
    **{k: SCORED_LABELS_SCHEMA[k] for k in (*GROUP_KEY, "score")},
    "count": pl.Int64(),
}
CALIBRATION_BINS_SCHEMA: dict[str, pl.DataType] = {
    "bin": pl.Int64(),
    "rows": pl.Int64(),
    "min_score": pl.Float64(),
    "max_score": pl.Float64(),
    "mean_score": pl.Float64(),
    "positive_rate": pl.Float64(),
    "gap": pl.Float64(),
}


# ----------------------------------------------------------------------------------------------------- realized


def scored_with_labels(
    outcomes: pl.DataFrame, labels: pl.DataFrame, sources: Sequence[str] = DEFAULT_SOURCES
) -> pl.DataFrame:
    """The scored outcome rows of ``sources`` with their label (SCORED_LABELS_SCHEMA; label null if not arrived).

    ``outcomes`` has OUTCOME_SCHEMA's columns (at least partition_date, source_file, row_number, entity_id, source,
    score, model_version); ``labels`` at least (entity_id, partition_date, label), as stored by nightkeeper.labels.
    A label joins the outcome of its id on its scoring night. Rows without a score are left out; an id answered
    twice on one night by the same model version (impossible after validation, which quarantines repeated ids)
    counts once, its first row in file order.
    """
    rows = (
        outcomes.filter(pl.col("source").is_in(list(sources)) & pl.col("score").is_not_null())
        .sort("partition_date", "source_file", "row_number")
        .unique(["partition_date", "model_version", "entity_id"], keep="first", maintain_order=True)
    )
    known = labels.select("entity_id", pl.col("partition_date").cast(pl.Date), pl.col("label").cast(pl.Int8))
    return conform(
        rows.join(known, on=["entity_id", "partition_date"], how="left", maintain_order="left"), SCORED_LABELS_SCHEMA
    )


def realized_performance(
    outcomes: pl.DataFrame,
    labels: pl.DataFrame,
    decision: DecisionConfig,
    value: BusinessValue,
    min_labeled_rows: int,
    sources: Sequence[str] = DEFAULT_SOURCES,
    thresholds: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """Realized metrics per (partition_date, source, model_version) of the scored rows of ``sources`` (REALIZED_SCHEMA).

    ``rows``: scored rows; ``labeled_rows``: those with a label; ``label_coverage`` = labeled_rows / rows. The
    confusion counts and every metric are over the labeled rows; decision positive = ``score >= threshold``, where
    threshold is the row's model version's in ``thresholds`` (its card's: the threshold its answers were decided at,
    see ``card_thresholds``), ``decision.threshold`` for a version not listed.
    The metrics (auc, precision, recall, brier, positive_rate = share of label 1, business_value,
    business_value_per_row = business_value / labeled_rows) are null below ``min_labeled_rows`` labeled rows; auc is
    null too when the labels hold one class only, precision when no row was decided positive, recall when no label
    is 1. AUC is ``auc``'s. Pure: recomputable at any time.
    """
    return realized_from_counts(
        realized_counts(scored_with_labels(outcomes, labels, sources)), decision, value, min_labeled_rows, thresholds
    )


def realized_from_counts(
    counts: pl.DataFrame,
    decision: DecisionConfig,
    value: BusinessValue,
    min_labeled_rows: int,
    thresholds: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """``realized_performance`` from ``realized_counts`` of the scored rows (or ``merge_counts`` of the shards'
    counts: the same table, so the same metrics). Brier is the count-weighted mean squared error, AUC
    ``auc_from_counts`` per group."""
    n_rows = pl.col("count")
    rows = counts.group_by(GROUP_KEY).agg(n_rows.sum().cast(pl.Int64).alias("rows"))
    # a group whose scores were rounded (_rounded_groups) is compared with its threshold rounded alike
    predicted = pl.col("score") >= pl.when(_labeled_rows() > EXACT_UP_TO).then(
        _threshold_of_version(decision, thresholds, rounded_alike=True)
    ).otherwise(_threshold_of_version(decision, thresholds))
    actual = pl.col("label") == 1
    labeled = counts.filter(pl.col("label").is_not_null())
    aucs = pl.DataFrame(
        [(*key, _auc_of_counts(group)) for key, group in labeled.partition_by(GROUP_KEY, as_dict=True).items()],
        schema={**{k: SCORED_LABELS_SCHEMA[k] for k in GROUP_KEY}, "_auc": pl.Float64()},
        orient="row",
    )
    squared_error = (pl.col("score") - pl.col("label").cast(pl.Float64)) ** 2
    stats = labeled.group_by(GROUP_KEY).agg(
        n_rows.sum().cast(pl.Int64).alias("labeled_rows"),
        n_rows.filter(predicted & actual).sum().cast(pl.Int64).alias("true_positives"),
        n_rows.filter(predicted & ~actual).sum().cast(pl.Int64).alias("false_positives"),
        n_rows.filter(~predicted & ~actual).sum().cast(pl.Int64).alias("true_negatives"),
        n_rows.filter(~predicted & actual).sum().cast(pl.Int64).alias("false_negatives"),
        ((squared_error * n_rows).sum() / n_rows.sum()).alias("_brier"),
    )
    tp, fp, tn, fn = (
        pl.col(c).cast(pl.Float64) for c in ("true_positives", "false_positives", "true_negatives", "false_negatives")
    )
    positives, n = tp + fn, pl.col("labeled_rows").cast(pl.Float64)
    enough = pl.col("labeled_rows") >= min_labeled_rows
    money = value.money(tp, fp, tn, fn)

    def when_enough(expression: pl.Expr, defined: pl.Expr = pl.lit(True)) -> pl.Expr:
        return pl.when(enough & defined).then(expression).otherwise(None)

    table = (
        rows.join(stats, on=GROUP_KEY, how="left")
        .join(aucs, on=GROUP_KEY, how="left")
        .with_columns(
            pl.col(c).fill_null(0)
            for c in ("labeled_rows", "true_positives", "false_positives", "true_negatives", "false_negatives")
        )
        .with_columns(
            (pl.col("labeled_rows") / pl.col("rows")).alias("label_coverage"),
            when_enough(pl.col("_auc")).alias("auc"),
            when_enough(tp / (tp + fp), (tp + fp) > 0).alias("precision"),
            when_enough(tp / positives, positives > 0).alias("recall"),
            when_enough(pl.col("_brier")).alias("brier"),
            when_enough(positives / n).alias("positive_rate"),
            when_enough(money).alias("business_value"),
            when_enough(money / n).alias("business_value_per_row"),
        )
        .sort(GROUP_KEY)
    )
    return conform(table, REALIZED_SCHEMA)


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """The realized ROC AUC of ``scores`` against 0/1 ``labels`` (ties count half, as scikit-learn's): the
    ``auc_from_counts`` of the positives and negatives at each distinct score; None when the labels hold fewer than
    two classes (no rows, or one class only), where AUC is undefined."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.size == 0 or labels.min() == labels.max():
        return None
    distinct, index = np.unique(scores, return_inverse=True)
    positive = labels == 1
    return auc_from_counts(
        np.bincount(index[positive], minlength=len(distinct)), np.bincount(index[~positive], minlength=len(distinct))
    )


def auc_from_counts(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """ROC AUC from the count of positive and of negative rows at each distinct score, scores ascending: the
    Mann-Whitney statistic, sum over scores of positives x (negatives below + half the negatives tied) / (P x N).
    Every sum is of integers (exact below 2**53 rows squared), so the figure is the same however the counts were
    gathered. None when either class has no row."""
    positives = np.asarray(positives, dtype=np.float64)
    negatives = np.asarray(negatives, dtype=np.float64)
    total_positives, total_negatives = positives.sum(), negatives.sum()
    if total_positives == 0 or total_negatives == 0:
        return None
    below = np.cumsum(negatives) - negatives
    return float(np.sum(positives * (2 * below + negatives)) / (2 * total_positives * total_negatives))


def _auc_of_counts(labeled: pl.DataFrame) -> float | None:
    """``auc_from_counts`` of one group's labeled counts (columns score, label, count)."""
    distinct, index = np.unique(labeled["score"].to_numpy(), return_inverse=True)
    count = labeled["count"].to_numpy().astype(np.float64)
    positive = (labeled["label"] == 1).to_numpy()
    return auc_from_counts(
        np.bincount(index, weights=count * positive, minlength=len(distinct)),
        np.bincount(index, weights=count * ~positive, minlength=len(distinct)),
    )


def card_thresholds(connection: duckdb.DuckDBPyConnection, versions: Iterable[str | None]) -> dict[str, float]:
    """The decision threshold on the card of each registered version among ``versions``: the threshold its answers
    were decided at, whatever the config says now. Versions not in the registry are left out."""
    found: dict[str, float] = {}
    for version in {v for v in versions if v}:
        try:
            found[version] = registry.get_version(connection, version).card.decision.threshold
        except KeyError:
            continue  # answered by a version the registry does not know: the config's threshold is all there is
    return found


def _threshold_of_version(
    decision: DecisionConfig, thresholds: Mapping[str, float] | None, rounded_alike: bool = False
) -> pl.Expr:
    """Each row's model version's threshold (``decision.threshold`` for a version not in ``thresholds``), rounded as
    ``summaries.rounded`` rounds scores when ``rounded_alike``."""

    def compared(threshold: float) -> float:
        return float(rounded(np.array([threshold]))[0]) if rounded_alike else threshold

    return pl.col("model_version").replace_strict(
        {version: compared(value) for version, value in (thresholds or {}).items()},
        default=compared(decision.threshold),
        return_dtype=pl.Float64,
    )


# ---------------------------------------------------------------------------------------------------- estimated


def estimate_performance(scores: np.ndarray, threshold: float, value: BusinessValue) -> dict[str, float | None]:
    """CBPE: the expected performance of calibrated probabilities ``scores`` at decision ``threshold``.

    Each row is taken to be a positive with probability p: expected TP = Σ p·1[p≥t], FP = Σ (1−p)·1[p≥t],
    FN = Σ p·1[p<t], TN = Σ (1−p)·1[p<t]. Returns ``rows``, those four expectations (``true_positives`` ...),
    ``precision``, ``recall``, ``accuracy``, ``brier`` (expected: mean p(1−p)), ``positive_rate`` (mean p),
    ``business_value`` (expected money), ``business_value_per_row`` and ``auc``: NannyML's estimate, the area under
    the curve of expected TPR = cumulative Σp / Σp against expected FPR = cumulative Σ(1−p) / Σ(1−p), thresholds
    at every distinct score from the highest down. A metric is None where its denominator is zero (no rows, no
    positive decision, all p = 0 or all p = 1).
    Valid only if the scores are calibrated and there is no concept drift (see the module docstring).
    """
    return estimate_from_counts(ValueCounts.of(scores, bounded=True), threshold, value)


def estimate_from_counts(scores: ValueCounts, threshold: float, value: BusinessValue) -> dict[str, float | None]:
    """``estimate_performance`` from the counts of each distinct score (``summaries.ValueCounts``): every sum over
    rows is a sum over distinct scores weighted by their counts, so shards' merged counts give the night's figures.
    Rounded counts (a bounded ValueCounts of more than ``summaries.EXACT_UP_TO`` scores) are compared with the
    threshold rounded alike."""
    p, weight = scores.values, scores.counts.astype(np.float64)
    n = scores.total
    positive = p >= scores.comparable(np.array([threshold]))
    tp, fp = float((weight * p)[positive].sum()), float((weight * (1 - p))[positive].sum())
    fn, tn = float((weight * p)[~positive].sum()), float((weight * (1 - p))[~positive].sum())
    money = value.money(tp, fp, tn, fn)
    return {
        "rows": float(n),
        "true_positives": tp,
        "false_positives": fp,
        "true_negatives": tn,
        "false_negatives": fn,
        "precision": tp / (tp + fp) if tp + fp > 0 else None,
        "recall": tp / (tp + fn) if tp + fn > 0 else None,
        "accuracy": (tp + tn) / n if n else None,
        "brier": float(np.sum(weight * p * (1 - p)) / n) if n else None,
        "positive_rate": float(np.sum(weight * p) / n) if n else None,
        "business_value": money if n else None,
        "business_value_per_row": money / n if n else None,
        "auc": _expected_auc(scores),
    }


def _expected_auc(scores: ValueCounts) -> float | None:
    """NannyML's CBPE ROC AUC: integrate expected TPR over expected FPR, one threshold per distinct score."""
    if scores.total == 0:
        return None
    p, weight = scores.values[::-1], scores.counts[::-1].astype(np.float64)  # from the highest score down
    true_positives = np.cumsum(weight * p)
    false_positives = np.cumsum(weight * (1 - p))
    if true_positives[-1] <= 0 or false_positives[-1] <= 0:
        return None
    tpr = np.r_[0.0, true_positives] / true_positives[-1]
    fpr = np.r_[0.0, false_positives] / false_positives[-1]
    return float(np.trapezoid(tpr, fpr))


def estimated_performance(
    outcomes: pl.DataFrame,
    decision: DecisionConfig,
    value: BusinessValue,
    sources: Sequence[str] = DEFAULT_SOURCES,
    thresholds: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """``estimate_performance`` per (partition_date, source, model_version) over every scored row of ``sources``,
    labeled or not (ESTIMATED_SCHEMA), each version at its threshold in ``thresholds`` (``decision.threshold`` for
    one not listed). Needs only outcome columns partition_date, source, model_version, score."""
    return estimated_from_counts(estimated_counts(outcomes, sources), decision, value, thresholds)


def estimated_from_counts(
    counts: pl.DataFrame,
    decision: DecisionConfig,
    value: BusinessValue,
    thresholds: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """``estimated_performance`` from ``estimated_counts`` (or ``merge_counts`` of the shards' counts)."""
    groups = {
        tuple(key): ValueCounts.merge([ValueCounts(group["score"].to_numpy(), group["count"].to_numpy(), bounded=True)])
        for key, group in counts.sort(*GROUP_KEY, "score").group_by(GROUP_KEY, maintain_order=True)
    }
    return estimated_of_groups(groups, decision, value, thresholds)


def estimated_of_groups(
    groups: Mapping[tuple[object, ...], ValueCounts],
    decision: DecisionConfig,
    value: BusinessValue,
    thresholds: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """``estimated_from_counts`` of each group's score counts, by its key (values of GROUP_KEY): the same table."""
    rows = []
    for key, scores in groups.items():
        named = dict(zip(GROUP_KEY, key, strict=True))
        threshold = (thresholds or {}).get(str(named["model_version"]), decision.threshold)
        estimate = estimate_from_counts(scores, threshold, value)
        metrics = {name: estimate[name] for name in ESTIMATED_SCHEMA if name not in (*GROUP_KEY, "rows")}
        rows.append({**named, "rows": scores.total, **metrics})
    frame = pl.DataFrame(rows, schema=ESTIMATED_SCHEMA) if rows else pl.DataFrame(schema=ESTIMATED_SCHEMA)
    return frame.sort(GROUP_KEY)


# ----------------------------------------------------------------------------------------------- mergeable counts


def realized_counts(scored_labels: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``scored_with_labels`` counted per (partition_date, source, model_version, score, label)
    (REALIZED_COUNTS_SCHEMA, label null = not arrived): all ``realized_from_counts`` needs. A night split into shards
    by entity id (``nightkeeper.sharding``) keeps each id, its repeats and its label in one shard, so the shards'
    counts merge (``merge_counts``) into the night's. Bounded as a group's labeled rows are: see ``_rounded_groups``."""
    return _rounded_groups(_counted(scored_labels, REALIZED_COUNTS_SCHEMA, bounded=False))


def estimated_counts(outcomes: pl.DataFrame, sources: Sequence[str] = DEFAULT_SOURCES) -> pl.DataFrame:
    """The scored outcome rows of ``sources`` counted per (partition_date, source, model_version, score)
    (ESTIMATED_COUNTS_SCHEMA; bounded, see ``summaries.ValueCounts``): all ``estimated_from_counts`` needs."""
    scored = outcomes.filter(pl.col("source").is_in(list(sources)) & pl.col("score").is_not_null())
    return _counted(scored, ESTIMATED_COUNTS_SCHEMA, bounded=True)


def merge_counts(parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """The counts of the union of the parts' rows (``realized_counts`` or ``estimated_counts`` of each shard):
    equal keys add their counts, in the same canonical order as the counts of the whole."""
    if not parts:
        raise ValueError("merge_counts needs at least one table of counts")
    frame = pl.concat(parts)
    keys = [c for c in frame.columns if c not in ("score", "count")]
    # estimated counts are bounded ValueCounts; realized ones are rounded per group of both labels (_rounded_groups)
    realized = "label" in keys
    groups = frame.partition_by(keys, as_dict=True, maintain_order=True)
    counts = {
        key: ValueCounts.merge([ValueCounts(group["score"].to_numpy(), group["count"].to_numpy(), not realized)])
        for key, group in groups.items()
    }
    merged = _score_counts(counts, keys, dict(frame.schema))
    return _rounded_groups(merged) if realized else merged


def _rounded_groups(counts: pl.DataFrame) -> pl.DataFrame:
    """Realized ``counts`` with the scores of every group (GROUP_KEY) of more than ``summaries.EXACT_UP_TO`` labeled
    rows rounded (``summaries.rounded``; rows of equal rounded score and label then count together), so their size
    does not follow the rows. A group's positives and negatives are rounded together, as the AUC ranks one against
    the other; whether a group is rounded depends only on its labeled rows, so the counts of any split merge into
    the whole's. The threshold is rounded alike for the confusion counts (``realized_from_counts``)."""
    large = _labeled_rows() > EXACT_UP_TO
    if not counts.select(large.any()).item():
        return counts
    scores = counts["score"].to_numpy()
    rounded_scores = pl.Series("score", rounded(scores), dtype=pl.Float64).fill_nan(None)
    return (
        counts.with_columns(pl.when(large).then(rounded_scores).otherwise(pl.col("score")).alias("score"))
        .group_by([c for c in counts.columns if c != "count"])
        .agg(pl.col("count").sum())
        .sort([*GROUP_KEY, "label", "score"], nulls_last=True)
        .select(counts.columns)
    )


def _labeled_rows() -> pl.Expr:
    """Per row of realized counts, its group's labeled rows."""
    return pl.col("count").filter(pl.col("label").is_not_null()).sum().over(GROUP_KEY)


def _counted(rows: pl.DataFrame, schema: dict[str, pl.DataType], bounded: bool) -> pl.DataFrame:
    """``rows`` counted per key of ``schema`` and score."""
    keys = [c for c in schema if c not in ("score", "count")]
    return _score_counts(_scores_by_group(rows, keys, bounded), keys, schema)


def _scores_by_group(rows: pl.DataFrame, keys: list[str], bounded: bool) -> dict[tuple[object, ...], ValueCounts]:
    """The counts of ``rows``' scores per group of ``keys`` (numpy per group: a polars group-by over every distinct
    score and a sort of the result cost several times more)."""
    groups = rows.partition_by(keys, as_dict=True, maintain_order=True)
    return {key: ValueCounts.of_sorted(np.sort(group["score"].to_numpy()), bounded) for key, group in groups.items()}


def _score_counts(
    counts: Mapping[tuple[object, ...], ValueCounts], keys: list[str], schema: Mapping[str, pl.DataType]
) -> pl.DataFrame:
    """One table of every group's score counts, groups ordered by key (nulls last), scores ascending within one."""
    ordered = sorted(counts.items(), key=lambda item: tuple((value is None, value) for value in item[0]))
    frames = [
        pl.DataFrame({"score": c.values, "count": c.counts}).with_columns(
            pl.lit(value).alias(name) for name, value in zip(keys, key, strict=True)
        )
        for key, c in ordered
    ]
    return pl.concat([pl.DataFrame(schema=schema), *(conform(f, schema) for f in frames)])


# -------------------------------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationResult:
    """How well scores match label frequencies on a labeled window.

    ``ece``: expected calibration error, Σ_bins (rows_b / rows) · |mean score_b − positive rate_b|, over the score
    bins of scikit-learn's ``calibration_curve(strategy="quantile")`` (edges at the score deciles; tied scores share a
    bin, empty bins are dropped). The one ECE of the project: the monitoring metric ``performance.calibration_error``
    and the model card both show this figure. ``max_gap``: the largest |gap| of a bin. ``bins``:
    CALIBRATION_BINS_SCHEMA (gap = mean score − positive rate). ``trustworthy``: ``ece <= max_calibration_error``,
    i.e. CBPE's estimates can be used.
    """

    ece: float
    max_gap: float
    rows: int
    bins: pl.DataFrame
    max_calibration_error: float
    trustworthy: bool


def calibration_check(
    scores: np.ndarray, labels: np.ndarray, bins: int = 10, max_calibration_error: float = 0.05
) -> CalibrationResult:
    """Compare scores with label frequencies in ``bins`` quantile bins of the scores (``calibration_curve``'s).

    Use it on the most recent labeled window (enough rows that a bin's positive rate is not noise: with n rows per
    bin the noise of a gap is about sqrt(p(1−p)/n)). Raises ValueError on no rows, on a length mismatch, on labels
    other than 0/1 or on scores outside [0, 1].
    """
    p = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"scores and labels must be 1-d and of equal length, got shapes {p.shape} and {y.shape}")
    if p.size == 0:
        raise ValueError("calibration_check needs at least one labeled row")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0 or 1, found {sorted(set(np.unique(y).tolist()) - {0.0, 1.0})[:5]}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    positive_rate, mean_score = calibration_curve(y, p, n_bins=bins, strategy="quantile", pos_label=1.0)
    # calibration_curve gives each non-empty bin's rates, not its rows (the ECE's weights) nor its score range: the
    # same edges (its quantile edges, searchsorted on the inner ones) assign each row to its bin for those
    edges = np.percentile(p, np.linspace(0, 1, bins + 1) * 100)
    bin_of = np.searchsorted(edges[1:-1], p)
    table = (
        pl.DataFrame({"bin": bin_of, "score": p})
        .group_by("bin")
        .agg(
            pl.len().cast(pl.Int64).alias("rows"),
            pl.col("score").min().alias("min_score"),
            pl.col("score").max().alias("max_score"),
        )
        .sort("bin")
        .with_columns(
            pl.Series("mean_score", mean_score),
            pl.Series("positive_rate", positive_rate),
            pl.Series("gap", mean_score - positive_rate),
        )
    )
    gaps = table["gap"].abs().to_numpy()
    ece = float((table["rows"].to_numpy() / p.size * gaps).sum())
    return CalibrationResult(
        ece=ece,
        max_gap=float(gaps.max()),
        rows=int(p.size),
        bins=conform(table, CALIBRATION_BINS_SCHEMA),
        max_calibration_error=max_calibration_error,
        trustworthy=ece <= max_calibration_error,
    )


# ------------------------------------------------------------------------------------------------ estimate trust


@dataclass(frozen=True)
class EstimateTrust:
    """Whether tonight's CBPE estimate may drive health checks and alerts, and why (``reason``, for people).

    ``evidence``: 'labels' (the serving model's latest labeled rows), 'holdout' (its card's holdout, before any
    label of its own has landed) or 'none'. ``auc_gap``: estimated minus realized AUC on the same rows;
    ``positive_rate_gap``: estimated positive rate (mean score) minus the realized base rate (labels only).
    """

    trusted: bool
    reason: str
    evidence: str
    auc_gap: float | None = None
    positive_rate_gap: float | None = None


def auc_standard_error(auc: float, positives: float, negatives: float) -> float:
    """Hanley & McNeil's standard error of an AUC measured on ``positives`` and ``negatives`` rows: how far one
    night's realized AUC wanders around the truth by chance alone (inf with no row of a class)."""
    if positives < 1 or negatives < 1:
        return float("inf")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    return float(np.sqrt(max(variance, 0.0)))


def estimate_trust(
    labeled: pl.DataFrame,
    calibration: CalibrationResult | None,
    holdout: Mapping[str, float] | None,
    tonight: Mapping[str, object] | None,
    settings: PerformanceConfig,
) -> EstimateTrust:
    """Judge CBPE against what is known: the estimate is trusted only where it matched reality.

    ``labeled``: the serving model's labeled rows of its latest labeled nights (``scored_with_labels`` columns; only
    ``score`` and ``label`` are read). With at least ``settings.min_labeled_rows`` of them and both classes, CBPE is
    re-run on exactly those rows and compared with what their labels say: untrusted when the AUC it estimates is
    off by more than ``settings.max_estimate_auc_gap``, when the positive rate it implies (mean score) is off the
    realized base rate by more than ``settings.max_positive_rate_gap`` (a base-rate shift), or when ``calibration``
    fails. Before such labels, the card's ``holdout`` (its ``auc`` and ``estimated_auc``) is the evidence; without
    either, the estimate is not trusted (nothing shows it can be).

    Tonight's own realized AUC will differ from any estimate by chance: ``tonight`` (tonight's estimate: ``rows``,
    ``auc``, ``positive_rate``) gives its standard error (``auc_standard_error`` at the base rate the labels show),
    and the estimate is trusted only if |bias| + ``settings.estimate_noise_z`` × that error stays within
    ``settings.max_estimate_auc_gap`` — on small nights no estimate can promise ±0.03, and the reason says so.
    """
    noise = _night_noise(tonight, labeled)
    margin = settings.estimate_noise_z * noise
    if labeled.height >= settings.min_labeled_rows and labeled["label"].n_unique() == 2:
        scores, truth = labeled["score"].to_numpy(), labeled["label"].to_numpy()
        estimated = estimate_performance(scores, 0.5, BusinessValue())
        auc_gap = float(estimated["auc"] or 0.0) - float(auc(truth, scores) or 0.0)  # two classes: defined
        rate_gap = float(scores.mean() - truth.mean())
        problems = []
        if abs(auc_gap) + margin > settings.max_estimate_auc_gap:
            problems.append(_auc_problem(auc_gap, noise, settings))
        if abs(rate_gap) > settings.max_positive_rate_gap:
            problems.append(
                f"estimated positive rate {scores.mean():.3f} vs realized base rate {truth.mean():.3f} "
                f"(gap {rate_gap:+.3f}, limit ±{settings.max_positive_rate_gap}): the base rate moved"
            )
        if calibration is not None and not calibration.trustworthy:
            problems.append(f"calibration error {calibration.ece:.3f} above {calibration.max_calibration_error}")
        where = f"on the serving model's {labeled.height} latest labeled rows"
        reason = (
            ("; ".join(problems) + f" {where}")
            if problems
            else f"estimate matched the labels {where} (AUC gap {auc_gap:+.3f}, base-rate gap {rate_gap:+.3f})"
        )
        return EstimateTrust(not problems, reason, "labels", auc_gap, rate_gap)
    if holdout and holdout.get("estimated_auc") is not None and holdout.get("auc") is not None:
        auc_gap = float(holdout["estimated_auc"]) - float(holdout["auc"])
        trusted = abs(auc_gap) + margin <= settings.max_estimate_auc_gap
        reason = "no labels of the serving model yet; on its holdout " + _auc_problem(auc_gap, noise, settings)
        return EstimateTrust(trusted, reason, "holdout", auc_gap, None)
    return EstimateTrust(False, "no labels and no holdout estimate: nothing shows the estimate can be trusted", "none")


def _night_noise(tonight: Mapping[str, object] | None, labeled: pl.DataFrame) -> float:
    """The standard error of tonight's realized AUC, at the base rate the labels show (else the estimated one)."""
    if not tonight or tonight.get("auc") is None or not tonight.get("rows"):
        return 0.0
    rows = float(tonight["rows"])  # type: ignore[arg-type]
    rate = float(labeled["label"].mean()) if labeled.height else float(tonight.get("positive_rate") or 0.0)  # type: ignore[arg-type]
    return auc_standard_error(float(tonight["auc"]), rows * rate, rows * (1 - rate))  # type: ignore[arg-type]


def _auc_problem(auc_gap: float, noise: float, settings: PerformanceConfig) -> str:
    return (
        f"the estimated AUC was off the realized by {auc_gap:+.3f}, and one night's realized AUC wanders by "
        f"±{noise:.3f} (standard error) by chance: {abs(auc_gap):.3f} + {settings.estimate_noise_z} × {noise:.3f} "
        f"against a limit of {settings.max_estimate_auc_gap}"
    )


# ------------------------------------------------------------------------------------------- metrics and plots


def pooled_realized_auc(
    scored_labels: pl.DataFrame, nights: int, min_labeled_rows: int, source: str = "model"
) -> dict[str, float] | None:
    """Realized AUC over the labeled rows of the latest ``nights`` scoring nights that have any label, pooled.

    One night's AUC on a few thousand rows wanders by ±0.02 by chance alone; pooling a week of nights is what an
    alert rule can rely on without crying wolf. ``scored_labels`` is ``scored_with_labels``'s output. Returns
    ``auc``, ``labeled_rows``, ``positives`` and ``nights``, or None with fewer than ``min_labeled_rows`` labeled
    rows or one class.
    """
    labeled = scored_labels.filter((pl.col("source") == source) & pl.col("label").is_not_null())
    recent_nights = labeled["partition_date"].unique().sort(descending=True).head(nights)
    window = labeled.filter(pl.col("partition_date").is_in(recent_nights.implode()))
    if window.height < min_labeled_rows or window["label"].n_unique() < 2:
        return None
    return {
        "auc": float(auc(window["label"].to_numpy(), window["score"].to_numpy()) or 0.0),  # two classes: defined
        "labeled_rows": float(window.height),
        "positives": float(window["label"].sum()),
        "nights": float(recent_nights.len()),
    }


def auc_drop_beyond_noise(holdout: Mapping[str, float], pooled: Mapping[str, float], z: float) -> float:
    """The drop of the pooled realized AUC below the champion's holdout AUC (holdout ``auc`` minus pooled ``auc``),
    counted only when chance cannot explain it: the drop if it exceeds ``z`` standard errors of that difference,
    else 0. An alert rule ``> 0.03`` on it thus fires on a drop above both 0.03 and ``z`` standard errors.

    Both AUCs are measured on finite rows and wander by chance: the pooled one (``pooled_realized_auc``: ``auc``,
    ``labeled_rows``, ``positives``) by its Hanley–McNeil standard error, the holdout's (the card's ``auc``,
    ``rows``, ``positive_rate``) by its own, which stays the same for the champion's whole life (a lucky holdout
    makes every later night look worse). The error of the difference is the root of their summed squares: about
    0.02 for a week of 150-row nights against a 2,000-row holdout, so such a week must fall some 0.055 (at z = 2.5)
    before it counts, while on large nights the 0.03 of the rule decides. A card without ``rows`` (made before they
    were recorded) counts its holdout as exact.
    """
    positives = pooled["positives"]
    pooled_error = auc_standard_error(pooled["auc"], positives, pooled["labeled_rows"] - positives)
    holdout_rows = holdout.get("rows")
    holdout_error = 0.0
    if holdout_rows:
        holdout_positives = holdout_rows * holdout.get("positive_rate", 0.0)
        holdout_error = auc_standard_error(holdout["auc"], holdout_positives, holdout_rows - holdout_positives)
    drop = float(holdout["auc"] - pooled["auc"])
    return drop if drop > z * math.hypot(pooled_error, holdout_error) else 0.0


def latest_realized(realized: pl.DataFrame, source: str = "model") -> dict[str, object] | None:
    """The row (as a dict) of ``realized_performance`` for ``source`` with the latest scoring night whose metrics
    exist (``labeled_rows >= min_labeled_rows``); None when no night has enough labels yet. Labels arrive days after
    a night, so on run night D this is typically night D - delay; its ``label_coverage`` may still be below 1."""
    rows = realized.filter((pl.col("source") == source) & pl.col("brier").is_not_null()).sort(GROUP_KEY)
    return rows.row(-1, named=True) if rows.height else None


def performance_metrics(
    realized: Mapping[str, object] | None,
    estimated: Mapping[str, object] | None,
    calibration: CalibrationResult | None,
    include_missing: bool = False,
) -> dict[str, float | None]:
    """Flat ``performance.*`` metrics for the alert rules. A metric that is None (or whose input is None) is left
    out, so a rule never fires on a number that does not exist; with ``include_missing`` it is kept as None instead
    (``metrics_store.record_metrics`` stores it as NULL, replacing an earlier value of a re-run night).

    ``realized``: one row of ``realized_performance`` (as a dict); ``estimated``: ``estimate_performance``'s dict or
    one row of ``estimated_performance``; ``calibration``: ``calibration_check`` on the latest labeled window.
    Names: performance.realized_{auc,precision,recall,brier,positive_rate,business_value,business_value_per_row},
    performance.labeled_rows, performance.label_coverage,
    performance.estimated_{auc,precision,recall,accuracy,positive_rate,business_value,business_value_per_row},
    performance.calibration_error, performance.calibration_max_gap, performance.estimate_trustworthy (1.0 / 0.0).
    """
    realized = realized or {}
    estimated = estimated or {}
    metrics: dict[str, object] = {f"performance.realized_{name}": realized.get(name) for name in _METRICS}
    metrics |= {f"performance.{name}": realized.get(name) for name in ("labeled_rows", "label_coverage")}
    metrics |= {f"performance.estimated_{name}": estimated.get(name) for name in _ESTIMATED_METRICS}
    metrics |= {
        "performance.calibration_error": calibration.ece if calibration else None,
        "performance.calibration_max_gap": calibration.max_gap if calibration else None,
        "performance.estimate_trustworthy": (1.0 if calibration.trustworthy else 0.0) if calibration else None,
    }
    flat = {name: None if number is None else float(number) for name, number in metrics.items()}  # type: ignore[arg-type]
    return flat if include_missing else {name: number for name, number in flat.items() if number is not None}


_ESTIMATED_METRICS = (
    "auc",
    "precision",
    "recall",
    "accuracy",
    "positive_rate",
    "business_value",
    "business_value_per_row",
)


def performance_table(realized: pl.DataFrame, estimated: pl.DataFrame) -> pl.DataFrame:
    """Realized and estimated metrics side by side per (partition_date, source, model_version): ``rows``,
    ``labeled_rows``, ``label_coverage``, ``realized_<metric>`` and ``estimated_<metric>`` (outer join: a night
    without labels yet has null realized metrics and zero labeled rows)."""
    left = conform(realized, REALIZED_SCHEMA).rename({name: f"realized_{name}" for name in _METRICS})
    right = (
        conform(estimated, ESTIMATED_SCHEMA)
        .rename({name: f"estimated_{name}" for name in ESTIMATED_SCHEMA if name not in (*GROUP_KEY, "rows")})
        .rename({"rows": "estimated_rows"})
    )
    table = left.join(right, on=GROUP_KEY, how="full", coalesce=True)
    return (
        table.with_columns(
            pl.coalesce("rows", "estimated_rows").alias("rows"),
            pl.col("labeled_rows").fill_null(0),
            pl.col("label_coverage").fill_null(0.0),
        )
        .drop("estimated_rows")
        .sort(GROUP_KEY)
    )


def plot_performance(table: pl.DataFrame, path: Path) -> Path:
    """Write a PNG of realized (solid) vs estimated (dashed) AUC over scoring nights, one colour per
    (source, model_version), and return ``path``. ``table`` is ``performance_table``'s output (at least
    partition_date, source, model_version, realized_auc, estimated_auc). Uses matplotlib's Agg canvas directly
    (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    groups = table.sort("partition_date").partition_by(["source", "model_version"], as_dict=True, maintain_order=True)
    for index, ((source, version), group) in enumerate(
        sorted(groups.items(), key=lambda item: tuple(map(str, item[0])))
    ):
        colour = f"C{index % 10}"
        nights = group["partition_date"].to_list()
        axes.plot(
            nights,
            group["estimated_auc"].to_list(),
            linestyle="--",
            color=colour,
            label=f"estimated {source} {version}",
        )
        axes.plot(
            nights,
            group["realized_auc"].to_list(),
            linestyle="-",
            marker="o",
            markersize=3,
            color=colour,
            label=f"realized {source} {version}",
        )
    axes.set_xlabel("scoring night")
    axes.set_ylabel("ROC AUC")
    axes.set_title("Realized (labels) vs estimated (CBPE) AUC")
    axes.grid(alpha=0.3)
    if groups:
        axes.legend(loc="lower left", fontsize=8)
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


# ------------------------------------------------------------------------------------------ incremental storage

REALIZED_TABLE = "monitoring.performance_realized"  # realized_performance over every outcome and label, kept current
ESTIMATED_TABLE = "monitoring.performance_estimated"  # estimated_performance of every night
OUTCOMES_TABLE = f"{NIGHTLY_SCHEMA}.outcomes"
_OUTCOME_COLUMNS = ("partition_date", "source_file", "row_number", "entity_id", "source", "score", "model_version")


def refresh_performance(
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    decision: DecisionConfig,
    settings: PerformanceConfig,
    chunk_rows: int = 200_000,
) -> list[dt.date]:
    """Bring REALIZED_TABLE and ESTIMATED_TABLE up to date after ``night``'s outcomes were stored and its labels
    read; returns the nights recomputed, in order.

    Recomputed: ``night`` itself (its partition was just written: a re-run replaces its rows), and every scoring
    night whose stored labels differ from those its rows were computed with (labels landed; labels are only ever
    added, so their count and positives per night tell). The first call on a warehouse computes every night. So a
    night costs the rows of the nights that changed plus one count of labels per night, not a pass over every
    outcome so far, and the tables equal ``realized_performance`` / ``estimated_performance`` over all stored
    outcomes and labels as long as each night's performance step runs after its outcomes are (re)written, which
    the pipeline's dependencies guarantee. Written in one transaction.

    A night's scored rows are read ``chunk_rows`` at a time and only their counts are kept (``realized_counts`` of
    the labeled rows and a count per group of the others; each group's score counts for the estimate), merged: the
    counts of the whole night, as an id is scored at most once a night by a model version, validation quarantining
    its later rows. The counts are bounded (rounded beyond ``summaries.EXACT_UP_TO`` rows of a group), so memory does
    not follow the rows.
    """
    first_time = _ensure_tables(connection)
    counts = connection.execute(
        "select partition_date, count(*) as label_rows, sum(label)::bigint as positives "
        f"from {LABELS_TABLE} group by all"
    ).pl()
    seen = connection.execute(f"select * from {LABEL_STATE_TABLE}").pl()
    landed = counts.join(seen, on=["partition_date", "label_rows", "positives"], how="anti")["partition_date"].to_list()
    if first_time:
        estimate_nights = (
            connection.execute(f"select distinct partition_date from {OUTCOMES_TABLE} order by 1")
            .pl()["partition_date"]
            .to_list()
        )
    else:
        estimate_nights = [night]
    nights = sorted({*estimate_nights, *landed})
    # the realized counts keep the scores of labeled rows only (an unlabeled row counts in ``rows`` alone, the one
    # figure realized_from_counts reads of it): a night without labels yet costs one count per group
    labeled_counts = realized_counts(pl.DataFrame(schema=SCORED_LABELS_SCHEMA))
    unlabeled: dict[tuple[object, ...], int] = {}
    # tonight's scores counted per group, each chunk's counts merged into the group's bounded running counts
    score_counts: dict[tuple[object, ...], ValueCounts] = {}
    versions: set[str | None] = set()
    for scoring_night in nights:
        labels = _labels_of(connection, [scoring_night], arrived_by=None)
        for rows in _scored_chunks(connection, scoring_night, chunk_rows):
            versions |= set(rows["model_version"].unique())
            scored = scored_with_labels(rows, labels)
            labeled = scored["label"].is_not_null()
            labeled_counts = merge_counts([labeled_counts, realized_counts(scored.filter(labeled))])
            for *group, count in scored.filter(~labeled).group_by(GROUP_KEY).len().iter_rows():
                unlabeled[tuple(group)] = unlabeled.get(tuple(group), 0) + count
            if scoring_night in estimate_nights:
                for key, scores in _scores_by_group(rows, GROUP_KEY, bounded=True).items():
                    running = score_counts.get(key)
                    score_counts[key] = scores if running is None else ValueCounts.merge([running, scores])
    thresholds = card_thresholds(connection, versions)
    unlabeled_counts = pl.DataFrame(
        [(*key, None, None, count) for key, count in unlabeled.items()], schema=REALIZED_COUNTS_SCHEMA, orient="row"
    )
    realized = realized_from_counts(
        pl.concat([labeled_counts, unlabeled_counts]),
        decision,
        settings.business_value,
        settings.min_labeled_rows,
        thresholds,
    ).to_arrow()
    estimated = estimated_of_groups(
        score_counts,
        decision,
        settings.business_value,
        thresholds,
    ).to_arrow()
    state = counts.to_arrow()

    def replace_performance() -> None:
        for table, recomputed, rows in (
            (REALIZED_TABLE, nights, realized),
            (ESTIMATED_TABLE, estimate_nights, estimated),
            (LABEL_STATE_TABLE, None, state),
        ):
            if recomputed is None:
                connection.execute(f"delete from {table}")
            else:
                connection.execute(
                    f"delete from {table} where partition_date in (select unnest($nights))", {"nights": recomputed}
                )
            connection.register("__nightkeeper_rows", rows)
            try:
                connection.execute(f"insert into {table} by name select * from __nightkeeper_rows")
            finally:
                connection.unregister("__nightkeeper_rows")

    run_transaction(connection, replace_performance)
    return nights


def realized_as_of(
    connection: duckdb.DuckDBPyConnection, night: dt.date, decision: DecisionConfig, settings: PerformanceConfig
) -> pl.DataFrame:
    """``realized_performance`` of the nights up to ``night`` with the labels that had arrived by ``night``
    (REALIZED_SCHEMA, sorted by GROUP_KEY), from REALIZED_TABLE (call ``refresh_performance`` first).

    Stored rows serve every night none of whose labels arrived after ``night``; the others (only when an old night
    is re-run) are recomputed from their rows and the labels known by then.
    """
    late = (
        connection.execute(
            f"select distinct partition_date from {LABELS_TABLE} "
            "where arrived_on > $night and partition_date <= $night order by 1",
            {"night": night},
        )
        .pl()["partition_date"]
        .to_list()
    )
    stored = connection.execute(
        f"select * from {REALIZED_TABLE} "
        "where partition_date <= $night and partition_date not in (select unnest($late))",
        {"night": night, "late": late},
    ).pl()
    rows = _scored_rows(connection, late)
    recomputed = realized_performance(
        rows,
        _labels_of(connection, late, arrived_by=night),
        decision,
        settings.business_value,
        settings.min_labeled_rows,
        thresholds=card_thresholds(connection, rows["model_version"].unique()),
    )
    return pl.concat([conform(stored, REALIZED_SCHEMA), recomputed]).sort(GROUP_KEY)


def estimated_as_of(connection: duckdb.DuckDBPyConnection, night: dt.date) -> pl.DataFrame:
    """``estimated_performance`` of every night up to ``night`` (ESTIMATED_SCHEMA, sorted by GROUP_KEY), from
    ESTIMATED_TABLE (call ``refresh_performance`` first)."""
    stored = connection.execute(
        f"select * from {ESTIMATED_TABLE} where partition_date <= $night", {"night": night}
    ).pl()
    return conform(stored, ESTIMATED_SCHEMA).sort(GROUP_KEY)


def scored_with_labels_of(
    connection: duckdb.DuckDBPyConnection, nights: Sequence[dt.date], arrived_by: dt.date
) -> pl.DataFrame:
    """``scored_with_labels`` of the stored outcomes of ``nights`` with the labels arrived by ``arrived_by``."""
    return scored_with_labels(_scored_rows(connection, nights), _labels_of(connection, nights, arrived_by))


def _scored_rows(connection: duckdb.DuckDBPyConnection, nights: Sequence[dt.date]) -> pl.DataFrame:
    """The scored outcome rows of ``nights`` (the columns ``scored_with_labels`` reads), in stored order."""
    return connection.execute(
        f"select {', '.join(_OUTCOME_COLUMNS)} from {OUTCOMES_TABLE} where partition_date in (select unnest($nights)) "
        "and source in (select unnest($sources)) and score is not null",
        {"nights": list(nights), "sources": list(DEFAULT_SOURCES)},
    ).pl()


def _scored_chunks(connection: duckdb.DuckDBPyConnection, night: dt.date, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """``_scored_rows`` of ``night``, streamed ``chunk_rows`` rows at a time (in stored order)."""
    return read_chunks(
        connection,
        f"select {', '.join(_OUTCOME_COLUMNS)} from {OUTCOMES_TABLE} where partition_date = $night "
        "and source in (select unnest($sources)) and score is not null",
        {"night": night, "sources": list(DEFAULT_SOURCES)},
        chunk_rows,
    )


def _labels_of(
    connection: duckdb.DuckDBPyConnection, nights: Sequence[dt.date], arrived_by: dt.date | None
) -> pl.DataFrame:
    """The stored labels of ``nights`` (those arrived by ``arrived_by``; all with None)."""
    arrived = "" if arrived_by is None else "and arrived_on <= $arrived_by"
    return connection.execute(
        f"select entity_id, partition_date, label from {LABELS_TABLE} "
        f"where partition_date in (select unnest($nights)) {arrived}",
        {"nights": list(nights)} | ({} if arrived_by is None else {"arrived_by": arrived_by}),
    ).pl()


def _ensure_tables(connection: duckdb.DuckDBPyConnection) -> bool:
    """Create the performance tables that are missing (built from their polars schemas, so not in
    ``nightkeeper.schema``); True when the estimates table is new (nothing computed yet)."""
    first_time = not table_exists(connection, *ESTIMATED_TABLE.split("."))
    for table, schema in ((REALIZED_TABLE, REALIZED_SCHEMA), (ESTIMATED_TABLE, ESTIMATED_SCHEMA)):
        create_table_if_missing(connection, table, pl.DataFrame(schema=schema))
    return first_time
