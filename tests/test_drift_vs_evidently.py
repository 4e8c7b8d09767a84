"""Our drift figures against evidently 0.7.23's on the same data, and evidently's HTML report.

Reference: 10 clean simulated nights x 2000 rows. Tonight: 20k rows of the next night with income x1.3 and 30% of
rows moved to channel "broker", so the compared figures cover both "no drift" (~0.005) and "drift" (0.1-0.5)
magnitudes. The scores passed to ``fit_profile`` are a fixed function of two features: the comparison concerns
feature statistics only.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from nightkeeper.config import DriftConfig, load_config
from nightkeeper.drift import DriftResult, measure_drift
from nightkeeper.drift_report import (
    JENSEN_SHANNON,
    WASSERSTEIN,
    compare_with_evidently,
    evidently_drift_scores,
    write_evidently_report,
)
from nightkeeper.encoding import FeatureCard, feature_cards
from nightkeeper.examples.simulator import simulate_history, simulate_night
from nightkeeper.profile import NumericProfile, ReferenceProfile, fit_profile, reference_sample

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
SEED = 7


@pytest.fixture(scope="module")
def features() -> list[FeatureCard]:
    return feature_cards(load_config(CONFIG_PATH).contract)


@pytest.fixture(scope="module")
def reference() -> pl.DataFrame:
    return simulate_history(date(2024, 4, 30), days=10, rows_per_day=2_000, seed=SEED)


@pytest.fixture(scope="module")
def tonight() -> pl.DataFrame:
    night = simulate_night(date(2024, 5, 1), 20_000, SEED).applications
    moved = pl.Series(np.random.default_rng(1).random(night.height) < 0.3)
    return night.with_columns(
        pl.col("income") * 1.3,
        pl.when(moved).then(pl.lit("broker")).otherwise(pl.col("channel")).alias("channel"),
    )


@pytest.fixture(scope="module")
def profile(reference: pl.DataFrame, features: list[FeatureCard]) -> ReferenceProfile:
    scores = 1 / (1 + np.exp((reference["credit_score"].to_numpy() - 600) / 50))
    return fit_profile(reference, features, scores, 0.3, DriftConfig(), seed=SEED)


@pytest.fixture(scope="module")
def result(profile: ReferenceProfile, tonight: pl.DataFrame, features: list[FeatureCard]) -> DriftResult:
    return measure_drift(profile, tonight, None, features)


@pytest.fixture(scope="module")
def comparison(
    result: DriftResult,
    profile: ReferenceProfile,
    reference: pl.DataFrame,
    tonight: pl.DataFrame,
    features: list[FeatureCard],
) -> pl.DataFrame:
    """evidently's automatic choice on >1000 rows: normed Wasserstein for numbers with > 5 distinct values,
    Jensen-Shannon for categories and the bool; run on the full reference and tonight, as our profile saw them."""
    return compare_with_evidently(result, profile, evidently_drift_scores(reference, tonight, features))


def test_jensen_shannon_of_categories_equals_evidentlys(comparison: pl.DataFrame, features: list[FeatureCard]) -> None:
    """Tolerance 1e-9: both sides compute scipy's Jensen-Shannon distance from the exact level counts of the same
    rows (ours from the profile's stored shares, base 2, converted to evidently's natural log by sqrt(ln 2)), so
    only floating-point rounding may differ."""
    js = comparison.filter(pl.col("method") == JENSEN_SHANNON)
    categories = {f.name for f in features if f.dtype == "category"}
    assert categories <= set(js["feature"]) and "has_cosigner" in js["feature"]
    assert js["abs_difference"].max() <= 1e-9
    assert js.filter(pl.col("feature") == "channel")["evidently"].item() > 0.1  # the drifted one is compared too


def test_normalised_wasserstein_of_numbers_agrees_with_evidentlys(
    comparison: pl.DataFrame, profile: ReferenceProfile
) -> None:
    """Same definition on both sides: W1(reference, tonight) / population std of the reference. Features with at
    most 101 distinct values are stored exactly in the profile, so they must agree to 1e-9. The others are read
    from a 101-point quantile sketch (PCHIP between tail-dense quantiles, rounded to the data's grid): measured
    errors on this simulator are <= 0.003 at 20k-1M rows, so the tolerance is 0.005 absolute plus 1% of the
    value: 20x below evidently's own default drift threshold (0.1), so a disagreement this small cannot turn a
    verdict, while a wrong definition (sample std, unnormalised, binned) would miss by far more."""
    wasserstein = comparison.filter(pl.col("method") == WASSERSTEIN)
    assert wasserstein.height >= 12
    for feature, _, evidently, ours, difference in wasserstein.iter_rows():
        numeric = profile.features[feature]
        assert isinstance(numeric, NumericProfile)
        tolerance = 1e-9 if numeric.exact else 0.005 + 0.01 * evidently
        assert difference <= tolerance, (feature, ours, evidently)
    income = wasserstein.filter(pl.col("feature") == "income").row(0, named=True)
    assert income["evidently"] > 0.3 and math.isclose(income["nightkeeper"], income["evidently"], rel_tol=0.01)


def test_evidently_report_is_written_with_every_feature(
    reference: pl.DataFrame, tonight: pl.DataFrame, features: list[FeatureCard], tmp_path: Path
) -> None:
    sample = reference_sample(reference, features, rows=2_000, seed=SEED)
    path = write_evidently_report(sample, tonight, features, tmp_path / "reports" / "drift.html", rows=1_000, seed=SEED)
    assert path == tmp_path / "reports" / "drift.html"
    html = path.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:1000].lower()
    for feature in features:
        assert feature.name in html, feature.name
    assert not list(path.parent.glob(".*.tmp"))


def test_evidently_report_refuses_an_empty_side(
    reference: pl.DataFrame, features: list[FeatureCard], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="rows on both sides"):
        write_evidently_report(reference.head(100), reference.head(0), features, tmp_path / "r.html", rows=100, seed=0)
