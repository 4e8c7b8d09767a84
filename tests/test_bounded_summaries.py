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

from nightkeeper.config import BusinessValue, ProjectConfig
from nightkeeper.drift import DriftResult, drift_of_summary
from nightkeeper.encoding import feature_matrix
from nightkeeper.examples.simulator import simulate_night
from nightkeeper.ingest import read_raw_batch
from nightkeeper.performance import estimate_from_counts
from nightkeeper.profile import ReferenceProfile, fit_profile
from nightkeeper.summaries import EXACT_UP_TO, SIGNIFICANT_BITS, DriftSummary, ValueCounts, summarise_drift
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
