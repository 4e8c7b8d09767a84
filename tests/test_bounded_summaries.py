"""Nights of more than ``summaries.EXACT_UP_TO`` values: drift and the performance estimate are read from bounded
counts (values rounded to ``SIGNIFICANT_BITS`` significant bits), so their memory does not grow with the night.
Their figures stay within the rounding's error of the exact ones, and a weak model's few distinct scores (atoms on
the reference's bin edges and at the decision threshold) are binned exactly as if unrounded."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import roc_auc_score

from nightkeeper.config import BusinessValue, DecisionConfig, ProjectConfig
from nightkeeper.drift import DriftResult, drift_of_summary
from nightkeeper.encoding import feature_matrix
from nightkeeper.examples.simulator import ENTITY_ID, TARGET, simulate_night
from nightkeeper.ingest import read_raw_batch
from nightkeeper.performance import (
    SCORED_LABELS_SCHEMA,
    estimate_from_counts,
    merge_counts,
    realized_counts,
    realized_from_counts,
)
from nightkeeper.profile import ReferenceProfile, fit_profile
from nightkeeper.summaries import (
    EXACT_UP_TO,
    SIGNIFICANT_BITS,
    DriftSummary,
    ValueCounts,
    rounded,
    summarise_drift,
)
from nightkeeper.training import TrainedModel, training_frame
from nightkeeper.validation import validate

NIGHT = date(2024, 5, 1)
ROWS = EXACT_UP_TO + 50_000
SEED = 11
VALUE = BusinessValue(true_positive=0.0, false_positive=-100.0, true_negative=40.0, false_negative=-500.0)
# a weak model's scores: two decimals, so at most 101 distinct values, many of them on the reference's bin edges
WEAK_DECIMALS = 2


@pytest.fixture(scope="module")
def large_night(
    tmp_path_factory: pytest.TempPathFactory, core_config: ProjectConfig, core_trained: TrainedModel
) -> tuple[pl.DataFrame, np.ndarray]:
    """A clean night of ROWS rows, validated, with the champion's scores."""
    path = tmp_path_factory.mktemp("bounded") / "night.parquet"
    simulate_night(NIGHT, ROWS, SEED).applications.write_parquet(path)
    valid = validate(read_raw_batch([Path(path)], NIGHT, core_config.contract).frame, core_config.contract).valid
    return valid, core_trained.booster.predict(feature_matrix(valid, core_trained.card.features))


def exact(summary: DriftSummary, rows: pl.DataFrame, scores: np.ndarray, trained: TrainedModel) -> DriftSummary:
    """``summary`` with unbounded counts of every value: the figures as they would be without rounding."""
    numbers = {
        name: ValueCounts.of(rows[name].cast(pl.Float64).fill_null(np.nan).to_numpy()) for name in summary.numbers
    }
    return replace(summary, numbers=numbers, scores=ValueCounts.of(scores))


def test_a_large_nights_counts_are_rounded_to_a_bounded_number_of_values(
    large_night: tuple[pl.DataFrame, np.ndarray], core_trained: TrainedModel
) -> None:
    rows, scores = large_night
    summary = summarise_drift(rows, scores, core_trained.card.features, 0)

    assert summary.scores is not None and summary.scores.is_rounded
    assert len(summary.scores.values) < len(np.unique(scores)) / 2
    assert summary.scores.total == len(scores)


def test_drift_of_a_large_night_is_within_the_rounding_error_of_the_exact_figures(
    large_night: tuple[pl.DataFrame, np.ndarray], core_trained: TrainedModel
) -> None:
    rows, scores = large_night
    card = core_trained.card
    summary = summarise_drift(rows, scores, card.features, 0)

    bounded = drift_of_summary(card.profile, summary, card.features)
    unrounded = drift_of_summary(card.profile, exact(summary, rows, scores, core_trained), card.features)

    columns = ["psi", "js_distance", "ks", "wasserstein_norm"]
    assert_frame_equal(
        bounded.features.select("feature", *columns), unrounded.features.select("feature", *columns), abs_tol=1e-4
    )
    assert bounded.features["drifted"].to_list() == unrounded.features["drifted"].to_list()
    for name, value in unrounded.prediction.items():
        assert bounded.prediction[name] == pytest.approx(value, rel=1e-4, abs=1e-4), name


@pytest.fixture(scope="module")
def weak_profile(
    core_history: pl.DataFrame, core_config: ProjectConfig, core_trained: TrainedModel
) -> ReferenceProfile:
    """The reference profile of a weak model: the champion's scores on the training rows, to WEAK_DECIMALS."""
    reference = training_frame(core_history, core_config)
    features = core_trained.card.features
    scores = np.round(core_trained.booster.predict(feature_matrix(reference, features)), WEAK_DECIMALS)
    return fit_profile(reference, features, scores, core_config.model.decision.threshold, core_config.monitoring.drift)


def weak_prediction_drift(
    profile: ReferenceProfile, rows: pl.DataFrame, scores: np.ndarray, trained: TrainedModel, rounded: bool
) -> DriftResult:
    summary = summarise_drift(rows, scores, trained.card.features, 0)
    if not rounded:
        summary = exact(summary, rows, scores, trained)
    return drift_of_summary(profile, summary, trained.card.features)


def test_a_weak_models_few_scores_are_binned_as_if_unrounded(
    large_night: tuple[pl.DataFrame, np.ndarray], weak_profile: ReferenceProfile, core_trained: TrainedModel
) -> None:
    rows, scores = large_night
    weak = np.round(scores, WEAK_DECIMALS)
    assert np.isin(weak_profile.score.edges, weak).sum() >= 3  # atoms sit on the edges the scores are binned by

    bounded = weak_prediction_drift(weak_profile, rows, weak, core_trained, rounded=True).prediction
    unrounded = weak_prediction_drift(weak_profile, rows, weak, core_trained, rounded=False).prediction

    for name in ("score_psi", "score_js_distance", "confidence_psi", "confidence_js_distance"):
        assert bounded[name] == unrounded[name], name
    assert bounded["positive_rate_current"] == unrounded["positive_rate_current"]


def test_the_estimate_of_a_large_night_is_within_the_rounding_error_of_the_exact_one(
    large_night: tuple[pl.DataFrame, np.ndarray],
) -> None:
    _, scores = large_night
    threshold = 0.2
    bounded = estimate_from_counts(ValueCounts.of(scores, bounded=True), threshold, VALUE)
    unrounded = estimate_from_counts(ValueCounts.of(scores), threshold, VALUE)

    for name in ("auc", "brier", "positive_rate", "accuracy"):
        assert bounded[name] == pytest.approx(unrounded[name], rel=1e-4), name
    # only scores within the rounding of the threshold can be decided on its other side
    near = int((np.abs(scores - threshold) <= threshold * 2.0**-SIGNIFICANT_BITS).sum())
    decided = {
        side: estimate["true_positives"] + estimate["false_positives"]  # type: ignore[operator]
        for side, estimate in (("bounded", bounded), ("unrounded", unrounded))
    }
    assert abs(decided["bounded"] - decided["unrounded"]) <= near


def test_the_estimate_counts_a_weak_models_scores_at_the_threshold_as_decided(
    large_night: tuple[pl.DataFrame, np.ndarray],
) -> None:
    weak = np.round(large_night[1], WEAK_DECIMALS)
    threshold = float(np.median(weak))  # an atom of the scores: its rows are decided positive
    assert (weak == threshold).sum() > 100

    bounded = estimate_from_counts(ValueCounts.of(weak, bounded=True), threshold, VALUE)
    unrounded = estimate_from_counts(ValueCounts.of(weak), threshold, VALUE)

    for name in ("true_positives", "false_positives", "precision", "recall", "business_value"):
        assert bounded[name] == pytest.approx(unrounded[name], rel=1e-4), name
    decided = (weak >= threshold).sum()
    assert bounded["true_positives"] + bounded["false_positives"] == pytest.approx(decided, rel=1e-9)


@pytest.fixture(scope="module")
def labeled_night(large_night: tuple[pl.DataFrame, np.ndarray]) -> pl.DataFrame:
    """The large night's scored rows with their labels (SCORED_LABELS_SCHEMA), every label arrived."""
    rows, scores = large_night
    labels = simulate_night(NIGHT, ROWS, SEED).labels.select(pl.col(ENTITY_ID).cast(pl.String), pl.col(TARGET))
    frame = rows.select(pl.col("entity_id").cast(pl.String).alias(ENTITY_ID)).with_columns(score=pl.Series(scores))
    return (
        frame.join(labels, on=ENTITY_ID)
        .select(
            pl.lit(NIGHT).alias("partition_date"),
            pl.lit("model").alias("source"),
            pl.lit("v1").alias("model_version"),
            pl.col(ENTITY_ID).alias("entity_id"),
            "score",
            pl.col(TARGET).alias("label"),
        )
        .cast(SCORED_LABELS_SCHEMA)
    )  # type: ignore[arg-type]


def realized(frame: pl.DataFrame, threshold: float) -> dict[str, object]:
    return realized_from_counts(realized_counts(frame), DecisionConfig(threshold=threshold), VALUE, 100).row(
        0, named=True
    )


def test_realized_counts_of_a_large_labeled_night_are_rounded_and_merge_from_any_split(
    labeled_night: pl.DataFrame,
) -> None:
    whole = realized_counts(labeled_night)
    parts = [labeled_night.slice(0, 60_000), labeled_night.slice(60_000, 60_000), labeled_night.slice(120_000)]

    merged = merge_counts([realized_counts(part) for part in parts])

    assert whole.height < labeled_night["score"].n_unique()
    assert np.array_equal(rounded(whole["score"].to_numpy()), whole["score"].to_numpy())
    assert merged.equals(whole)


def test_realized_performance_of_a_large_night_is_within_the_rounding_error_of_the_exact_one(
    labeled_night: pl.DataFrame,
) -> None:
    threshold = 0.2
    labels, scores = labeled_night["label"].to_numpy(), labeled_night["score"].to_numpy()

    bounded = realized(labeled_night, threshold)

    assert bounded["labeled_rows"] == labeled_night.height
    assert bounded["auc"] == pytest.approx(roc_auc_score(labels, scores), rel=1e-4)
    assert bounded["brier"] == pytest.approx(float(np.mean((scores - labels) ** 2)), rel=1e-4)
    near = int((np.abs(scores - threshold) <= threshold * 2.0**-SIGNIFICANT_BITS).sum())
    decided = bounded["true_positives"] + bounded["false_positives"]  # type: ignore[operator]
    assert abs(decided - int((scores >= threshold).sum())) <= near


def test_realized_confusion_counts_of_a_weak_models_scores_at_the_threshold_are_exact(
    labeled_night: pl.DataFrame,
) -> None:
    weak = labeled_night.with_columns(pl.col("score").round(WEAK_DECIMALS))
    scores, labels = weak["score"].to_numpy(), weak["label"].to_numpy()
    threshold = float(np.median(scores))  # an atom of the scores
    assert (scores == threshold).sum() > 100

    bounded = realized(weak, threshold)

    assert bounded["true_positives"] == int(((scores >= threshold) & (labels == 1)).sum())
    assert bounded["false_positives"] == int(((scores >= threshold) & (labels == 0)).sum())
    assert bounded["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
