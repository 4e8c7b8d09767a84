"""Reference profile and nightly drift: fitted once on a real model's training data, compared with simulated nights.

The reference is 20 clean simulated nights (20k rows) with a small real LightGBM model's scores on them; tonight is
a fresh night of the same simulated world (typed as the contract says), optionally altered by one known defect.
"""

from __future__ import annotations

import copy
import math
from datetime import date
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
import yaml

from nightkeeper.config import DriftConfig, ProjectConfig, parse_config
from nightkeeper.drift import FEATURE_SCHEMA, DriftResult, measure_drift, numeric_statistics
from nightkeeper.encoding import FeatureCard, feature_cards, feature_matrix
from nightkeeper.examples.simulator import simulate_history, simulate_night
from nightkeeper.profile import (
    ReferenceProfile,
    confidence_of,
    fit_profile,
    population_stability_index,
    reference_sample,
    with_threshold_overrides,
)
from nightkeeper.summaries import ValueCounts
from nightkeeper.training import train_model, training_frame

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
SEED = 7
HISTORY_END = date(2024, 4, 30)
NIGHT = date(2024, 5, 1)
NIGHT_ROWS = 5_000
ID_COLUMN = "application_id"  # the shipped contract's entity id (the domain sample is drawn by its hash)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    raw = copy.deepcopy(yaml.safe_load(CONFIG_PATH.read_text()))
    raw["model"]["num_boost_round"] = 20
    return parse_config(raw, root=tmp_path_factory.mktemp("drift_config"))


@pytest.fixture(scope="module")
def features(config: ProjectConfig) -> list[FeatureCard]:
    return feature_cards(config.contract)


@pytest.fixture(scope="module")
def reference(config: ProjectConfig) -> pl.DataFrame:
    """The typed training frame: 20 clean nights x 1000 rows."""
    return training_frame(simulate_history(HISTORY_END, days=20, rows_per_day=1_000, seed=SEED), config)


@pytest.fixture(scope="module")
def booster(reference: pl.DataFrame, config: ProjectConfig) -> lgb.Booster:
    return train_model(reference, config).booster


@pytest.fixture(scope="module")
def profile(
    reference: pl.DataFrame, booster: lgb.Booster, features: list[FeatureCard], config: ProjectConfig
) -> ReferenceProfile:
    scores = booster.predict(feature_matrix(reference, features))
    return fit_profile(reference, features, scores, config.model.decision.threshold, config.monitoring.drift, seed=SEED)


@pytest.fixture(scope="module")
def sample(reference: pl.DataFrame, features: list[FeatureCard]) -> pl.DataFrame:
    return reference_sample(reference, features, rows=5_000, seed=SEED)


@pytest.fixture(scope="module")
def night() -> pl.DataFrame:
    """A fresh clean night of the same world."""
    return simulate_night(NIGHT, NIGHT_ROWS, SEED).applications


def measure(
    profile: ReferenceProfile, frame: pl.DataFrame, booster: lgb.Booster, features: list[FeatureCard], **kwargs: Any
) -> DriftResult:
    return measure_drift(
        profile, frame, booster.predict(feature_matrix(frame, features)), features, id_column=ID_COLUMN, **kwargs
    )


def row(result: DriftResult, feature: str) -> dict[str, Any]:
    return result.features.filter(pl.col("feature") == feature).row(0, named=True)


def test_profile_round_trips_through_json_and_holds_no_rows(
    profile: ReferenceProfile, features: list[FeatureCard]
) -> None:
    text = profile.model_dump_json()
    assert ReferenceProfile.model_validate_json(text) == profile
    assert list(profile.features) == [f.name for f in features]
    assert profile.rows == 20_000 and profile.chunk_rows == 1_000
    assert len(text) < 150_000  # summaries only: 20k rows x 18 features would be megabytes


def test_profile_describes_numbers_and_categories(profile: ReferenceProfile, reference: pl.DataFrame) -> None:
    income = profile.features["income"]
    assert income.kind == "numeric" and not income.exact
    assert len(income.frequencies) == len(income.edges) + 1 == profile.settings.bins
    assert sum(income.frequencies) == pytest.approx(1.0)
    assert income.mean == pytest.approx(reference["income"].mean())
    assert income.quantiles[0] == reference["income"].min() and income.quantiles[-1] == reference["income"].max()
    assert len(income.quantiles) == 101
    defaults = profile.features["previous_defaults"]  # few distinct values: deduplicated edges, exact atoms
    assert defaults.exact and len(defaults.frequencies) < profile.settings.bins
    assert profile.features["dependents"].missing_rate == pytest.approx(
        reference["dependents"].null_count() / reference.height
    )
    channel = profile.features["channel"]
    assert channel.kind == "category" and channel.levels == ["branch", "web", "mobile", "broker"]
    shares = reference["channel"].value_counts(normalize=True)
    assert dict(zip(channel.levels, channel.frequencies, strict=True)) == pytest.approx(dict(shares.iter_rows()))
    assert profile.positive_rate is not None and 0 < profile.positive_rate < 1


def test_clean_night_shows_no_drift(
    profile: ReferenceProfile,
    night: pl.DataFrame,
    booster: lgb.Booster,
    features: list[FeatureCard],
    sample: pl.DataFrame,
) -> None:
    result = measure(profile, night, booster, features, reference_sample=sample)
    assert result.rows == NIGHT_ROWS
    assert result.drifted_features() == []
    assert (result.features["psi"] < result.features["threshold"]).all()
    assert result.drifted_share == 0.0
    assert result.prediction["score_drifted"] == 0.0 and result.prediction["confidence_drifted"] == 0.0
    assert result.multivariate_auc is not None and abs(result.multivariate_auc - 0.5) <= 0.05


def test_income_inflation_drifts_income_only(
    profile: ReferenceProfile, night: pl.DataFrame, booster: lgb.Booster, features: list[FeatureCard]
) -> None:
    result = measure(profile, night.with_columns(pl.col("income") * 1.3), booster, features)
    assert result.drifted_features() == ["income"]
    income = row(result, "income")
    assert income["psi"] > income["threshold"]
    assert income["wasserstein_norm"] > 0.2 and income["ks"] > 0.1
    assert result.drifted_share == pytest.approx(1 / len(features))


def test_category_mix_shift_drifts_that_feature_with_tiny_chi2_p(
    profile: ReferenceProfile, night: pl.DataFrame, booster: lgb.Booster, features: list[FeatureCard]
) -> None:
    moved = pl.Series(np.random.default_rng(1).random(night.height) < 0.3)
    shifted = night.with_columns(pl.when(moved).then(pl.lit("broker")).otherwise(pl.col("channel")).alias("channel"))
    result = measure(profile, shifted, booster, features)
    assert result.drifted_features() == ["channel"]
    channel = row(result, "channel")
    assert channel["chi2_p_value"] < 1e-12 and channel["chi2"] > 100
    assert channel["new_category_share"] == 0.0
    assert channel["wasserstein_norm"] is None and channel["ks"] is None  # numeric-only columns are null


def test_missing_rate_change_is_reported(
    profile: ReferenceProfile, night: pl.DataFrame, booster: lgb.Booster, features: list[FeatureCard]
) -> None:
    blank = pl.Series(np.random.default_rng(2).random(night.height) < 0.2)
    holed = night.with_columns(
        pl.when(blank).then(None).otherwise(pl.col("dependents")).alias("dependents"),
        pl.when(blank).then(None).otherwise(pl.col("purpose")).alias("purpose"),  # as unknown_category: missing does
    )
    result = measure(profile, holed, booster, features)
    dependents, purpose = row(result, "dependents"), row(result, "purpose")
    expected = holed["dependents"].null_count() / holed.height
    assert dependents["missing_rate_current"] == pytest.approx(expected)
    assert dependents["missing_rate_change"] == pytest.approx(expected - profile.features["dependents"].missing_rate)
    assert dependents["missing_rate_change"] > 0.15
    assert purpose["missing_rate_change"] == pytest.approx(blank.mean(), abs=1e-12)
    assert purpose["new_category_share"] == 0.0  # nulls are missing, not new levels
    assert not dependents["drifted"] and not purpose["drifted"]  # the values that remain are distributed as before


def test_values_outside_the_reference_levels_count_as_new_categories(
    profile: ReferenceProfile, night: pl.DataFrame, features: list[FeatureCard]
) -> None:
    crypto = pl.Series(np.random.default_rng(3).random(night.height) < 0.1)
    frame = night.with_columns(pl.when(crypto).then(pl.lit("crypto")).otherwise(pl.col("purpose")).alias("purpose"))
    purpose = row(measure_drift(profile, frame, None, features), "purpose")
    assert purpose["new_category_share"] == pytest.approx(crypto.mean())
    assert purpose["drifted"] and purpose["psi"] > 0.5


def test_score_drift_is_detected_when_scores_shift(
    profile: ReferenceProfile, night: pl.DataFrame, booster: lgb.Booster, features: list[FeatureCard]
) -> None:
    riskier = night.with_columns((pl.col("credit_score") - 120).clip(300, 850), pl.col("late_payments_12m") + 2)
    result = measure(profile, riskier, booster, features)
    prediction = result.prediction
    assert prediction["score_psi"] > prediction["score_threshold"] and prediction["score_drifted"] == 1.0
    assert prediction["score_mean_current"] > prediction["score_mean_reference"]
    assert prediction["positive_rate_current"] > prediction["positive_rate_reference"]
    assert result.metrics()["drift.prediction_psi"] == prediction["score_psi"]


@pytest.mark.parametrize("repeats", [1, 3])
def test_prediction_drift_read_from_the_score_counts_is_that_of_every_score(
    profile: ReferenceProfile, night: pl.DataFrame, booster: lgb.Booster, features: list[FeatureCard], repeats: int
) -> None:
    # scores each counted once (a continuous score) or three times (repeated values)
    scores = np.tile(booster.predict(feature_matrix(night, features)), repeats)
    prediction = measure_drift(profile, night.sample(len(scores), with_replacement=True, seed=SEED), scores, features)
    every = {
        "score": numeric_statistics(profile.score, ValueCounts.of(scores)),
        "confidence": numeric_statistics(
            profile.confidence, ValueCounts.of(confidence_of(scores, profile.decision_threshold))
        ),
    }

    for name, statistics in every.items():
        assert prediction.prediction[f"{name}_psi"] == statistics["psi"]
        assert prediction.prediction[f"{name}_js_distance"] == statistics["js_distance"]
    assert prediction.prediction["score_mean_current"] == pytest.approx(float(scores.mean()), rel=1e-12)


def test_fitted_thresholds_respect_the_floor_and_a_config_override_wins(
    reference: pl.DataFrame,
    profile: ReferenceProfile,
    night: pl.DataFrame,
    booster: lgb.Booster,
    features: list[FeatureCard],
) -> None:
    floor = profile.settings.psi_floor
    assert all(t.psi >= floor and t.fitted_psi >= floor and t.source == "fitted" for t in profile.thresholds.values())
    assert all(t.js_distance > 0 for t in profile.thresholds.values())
    assert profile.score_threshold.psi >= floor

    scores = booster.predict(feature_matrix(reference, features))
    overridden = fit_profile(reference, features, scores, 0.3, DriftConfig(thresholds={"income": 5.0}), seed=SEED)
    assert overridden.thresholds["income"].psi == 5.0 and overridden.thresholds["income"].source == "config"
    assert overridden.thresholds["income"].fitted_psi == profile.thresholds["income"].fitted_psi
    result = measure(overridden, night.with_columns(pl.col("income") * 1.3), booster, features)
    assert row(result, "income")["threshold"] == 5.0 and not row(result, "income")["drifted"]


def test_fitted_thresholds_follow_the_reference_chunks_without_a_floor(
    reference: pl.DataFrame, booster: lgb.Booster, features: list[FeatureCard]
) -> None:
    scores = booster.predict(feature_matrix(reference, features))
    loose = fit_profile(reference, features, scores, 0.3, DriftConfig(psi_floor=0.0, threshold_sigmas=1.0), seed=SEED)
    strict = fit_profile(reference, features, scores, 0.3, DriftConfig(psi_floor=0.0, threshold_sigmas=6.0), seed=SEED)
    for name in loose.thresholds:
        assert 0 < loose.thresholds[name].psi < strict.thresholds[name].psi < 0.1  # 1000-row chunks vary little


def test_a_smaller_night_gets_a_wider_fitted_threshold(profile: ReferenceProfile) -> None:
    for name, threshold in profile.thresholds.items():
        assert threshold.rows[-1] == profile.chunk_rows
        widths = [threshold.psi_for(rows) for rows in (10, 50, 150, 1_000, 100_000)]
        assert widths == sorted(widths, reverse=True), name
        assert widths[1] > widths[3], name  # 50 rows vary far more by chance than 1000
        assert threshold.psi_for(profile.chunk_rows) == threshold.psi


def test_overrides_can_be_applied_to_a_stored_profile_without_refitting(profile: ReferenceProfile) -> None:
    overridden = with_threshold_overrides(profile, {"age": 0.3})
    assert overridden.thresholds["age"].psi == 0.3 and overridden.thresholds["age"].source == "config"
    assert overridden.thresholds["income"] == profile.thresholds["income"]
    restored = with_threshold_overrides(overridden, {})
    assert restored.thresholds == profile.thresholds
    assert ReferenceProfile.model_validate_json(overridden.model_dump_json()) == overridden
    with pytest.raises(ValueError, match="agee"):
        with_threshold_overrides(profile, {"agee": 0.3})


def test_an_override_for_an_unknown_feature_is_refused(reference: pl.DataFrame, features: list[FeatureCard]) -> None:
    with pytest.raises(ValueError, match="incme"):
        fit_profile(reference, features, np.full(reference.height, 0.1), 0.3, DriftConfig(thresholds={"incme": 0.2}))


def test_metrics_have_flat_names_for_alert_rules(
    profile: ReferenceProfile,
    night: pl.DataFrame,
    booster: lgb.Booster,
    features: list[FeatureCard],
    sample: pl.DataFrame,
) -> None:
    metrics = measure(profile, night.head(1_000), booster, features, reference_sample=sample).metrics()
    for name in [
        "drift.rows",
        "drift.drifted_share",
        "drift.drifted_features",
        "drift.multivariate_auc",
        "drift.prediction_psi",
        "drift.prediction_js_distance",
        "drift.confidence_psi",
        "drift.feature.income.psi",
        "drift.feature.income.wasserstein_norm",
        "drift.feature.income.ks",
        "drift.feature.channel.chi2_p_value",
        "drift.feature.channel.new_category_share",
        "drift.feature.dependents.missing_rate_change",
        "drift.feature.dependents.drifted",
    ]:
        assert name in metrics and isinstance(metrics[name], float), name
    assert "drift.feature.income.chi2_p_value" not in metrics  # only the statistics of the feature's kind
    assert metrics["drift.rows"] == 1_000.0


def test_plot_writes_a_png(
    profile: ReferenceProfile, night: pl.DataFrame, booster: lgb.Booster, features: list[FeatureCard], tmp_path: Path
) -> None:
    result = measure(profile, night.with_columns(pl.col("income") * 1.3), booster, features)
    path = result.plot(tmp_path / "plots" / "drift.png")
    assert path == tmp_path / "plots" / "drift.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_an_empty_night_gives_nan_statistics_and_no_drift(
    profile: ReferenceProfile, night: pl.DataFrame, features: list[FeatureCard], sample: pl.DataFrame
) -> None:
    result = measure_drift(profile, night.head(0), np.array([]), features, reference_sample=sample, id_column=ID_COLUMN)
    assert result.rows == 0 and result.multivariate_auc is None
    assert result.features.height == len(features) and result.features.schema == pl.Schema(FEATURE_SCHEMA)
    assert result.drifted_features() == [] and math.isnan(result.drifted_share)
    assert result.features["psi"].is_nan().all()
    metrics = result.metrics()
    assert metrics["drift.rows"] == 0.0 and metrics["drift.drifted_features"] == 0.0
    assert math.isnan(metrics["drift.prediction_psi"]) and math.isnan(metrics["drift.multivariate_auc"])


def test_a_feature_that_does_not_match_the_profile_is_refused(
    profile: ReferenceProfile, night: pl.DataFrame, features: list[FeatureCard]
) -> None:
    relabelled = [
        f.model_copy(update={"categories": ["web", "branch", "mobile", "broker"]}) if f.name == "channel" else f
        for f in features
    ]
    with pytest.raises(ValueError, match="channel"):
        measure_drift(profile, night, None, relabelled)
    with pytest.raises(ValueError, match="one per row"):
        measure_drift(profile, night, np.zeros(3), features)


def test_reference_sample_is_bounded_seeded_and_holds_only_features(
    reference: pl.DataFrame, features: list[FeatureCard]
) -> None:
    first = reference_sample(reference, features, rows=300, seed=1)
    assert first.height == 300 and first.columns == [f.name for f in features]
    assert first.equals(reference_sample(reference, features, rows=300, seed=1))
    assert reference_sample(reference.head(50), features, rows=300, seed=1).height == 50


def test_psi_matches_its_definition() -> None:
    reference, current = np.array([0.5, 0.3, 0.2, 0.0]), np.array([0.4, 0.3, 0.1, 0.2])
    floored_r, floored_c = np.maximum(reference, 1e-4), current
    expected = np.sum((floored_c - floored_r) * np.log(floored_c / floored_r))
    assert population_stability_index(reference, current) == pytest.approx(expected)
    assert population_stability_index(reference, reference) == 0.0
