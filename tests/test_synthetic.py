"""Synthetic rows: valid under any contract (the credit example and an unrelated churn contract), deterministic,
with a learnable target, and with cross-field rules enforced or a clear error when they cannot be."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy.stats import rankdata

import nightkeeper.testing.synthetic as synthetic
from nightkeeper.config import Contract, load_config, parse_config
from nightkeeper.testing.synthetic import feature_bounds, synthesize

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
DTYPES = {"float": pl.Float64(), "int": pl.Int64(), "category": pl.String(), "bool": pl.Boolean()}

CHURN: dict[str, Any] = {
    "entity_id": "customer_id",
    "target": "churned",
    "features": {
        "tenure_months": {"dtype": "int", "min": 0, "max": 120},
        "monthly_charges": {"dtype": "float", "min": 10, "max": 200},
        "total_charges": {"dtype": "float", "min": 0},
        "plan": {"dtype": "category", "categories": ["basic", "plus", "premium"]},
        "is_senior": {"dtype": "bool"},
        "support_calls": {"dtype": "int"},
        "discount_pct": {"dtype": "float", "min": 0, "max": 0.5, "required": False},
        "fractional_bounds": {"dtype": "int", "min": 0.5, "max": 3.5},
    },
    "rules": [
        {"name": "total_covers_monthly", "expression": "total_charges >= monthly_charges"},
        {"name": "expensive_means_premium", "expression": "monthly_charges <= 150 OR plan = 'premium'"},
    ],
}


def make_contract(raw: dict[str, Any], tmp_path: Path) -> Contract:
    return parse_config({"name": "test", "contract": raw}, root=tmp_path).contract


@pytest.fixture(scope="module")
def credit() -> Contract:
    return load_config(CONFIG_PATH).contract


@pytest.fixture
def churn(tmp_path: Path) -> Contract:
    return make_contract(CHURN, tmp_path)


@pytest.fixture
def churn_rows(churn: Contract) -> pl.DataFrame:
    return synthesize(churn, 10_000, seed=11, id_prefix="C")


def assert_valid(frame: pl.DataFrame, contract: Contract) -> None:
    """Every row satisfies every rule of the contract."""
    assert frame[contract.entity_id].is_unique().all()
    for name, spec in contract.features.items():
        column = frame[name]
        if spec.required:
            assert column.null_count() == 0, name
        if spec.dtype in ("float", "int"):
            low, high = feature_bounds(spec)
            assert column.drop_nulls().min() >= low and column.drop_nulls().max() <= high, name
        if spec.dtype == "category":
            assert set(column.drop_nulls()) <= set(spec.categories or []), name
    for rule in contract.rules:
        assert frame.select(pl.sql_expr(rule.expression)).to_series().all(), rule.name


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    ranks = rankdata(scores)
    positives = labels.sum()
    return (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * (len(labels) - positives))


def test_same_seed_gives_identical_rows(credit: Contract) -> None:
    assert_frame_equal(synthesize(credit, 2_000, seed=1), synthesize(credit, 2_000, seed=1))


def test_different_seed_gives_different_rows(credit: Contract) -> None:
    assert not synthesize(credit, 2_000, seed=1).equals(synthesize(credit, 2_000, seed=2))


def test_columns_and_dtypes_follow_the_contract(credit: Contract) -> None:
    frame = synthesize(credit, 500, seed=1)
    assert dict(frame.schema) == {
        credit.entity_id: pl.String(),
        credit.event_time: pl.Datetime("us"),
        **{name: DTYPES[spec.dtype] for name, spec in credit.features.items()},
        credit.target: pl.Int8(),
    }


def test_credit_rows_are_valid_under_the_credit_contract(credit: Contract) -> None:
    assert_valid(synthesize(credit, 20_000, seed=1), credit)


def test_ids_are_unique_and_carry_the_prefix(credit: Contract) -> None:
    ids = synthesize(credit, 1_000, seed=1, id_prefix="X")[credit.entity_id]
    assert ids.is_unique().all()
    assert ids.str.starts_with("X").all()


def test_optional_features_are_occasionally_null(credit: Contract) -> None:
    null_share = synthesize(credit, 20_000, seed=1)["dependents"].null_count() / 20_000
    assert 0.01 <= null_share <= 0.06


def test_numeric_values_reach_both_bounds(credit: Contract) -> None:
    frame = synthesize(credit, 5_000, seed=1)
    assert frame["age"].min() == 18 and frame["age"].max() == 100


def test_every_category_level_occurs(credit: Contract) -> None:
    frame = synthesize(credit, 5_000, seed=1)
    for name, spec in credit.features.items():
        if spec.dtype == "category":
            assert set(frame[name]) == set(spec.categories or []), name


def test_target_is_binary_int8_with_a_base_rate_near_twenty_percent(credit: Contract) -> None:
    target = synthesize(credit, 20_000, seed=1)[credit.target]
    assert target.dtype == pl.Int8
    assert set(target.unique()) == {0, 1}
    assert 0.15 <= target.mean() <= 0.25


def test_target_is_learnable_from_the_features(churn: Contract) -> None:
    frame = synthesize(churn, 8_000, seed=5)
    features = frame.select(churn.feature_names).with_columns(pl.col(pl.String).cast(pl.Categorical)).to_pandas()
    labels = frame[churn.target].to_numpy()
    model = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1},
        lgb.Dataset(features[:6_000], labels[:6_000]),
        num_boost_round=50,
    )
    assert auc(labels[6_000:], model.predict(features[6_000:])) > 0.7


def test_churn_rows_are_valid_under_a_non_credit_contract(churn: Contract, churn_rows: pl.DataFrame) -> None:
    assert_valid(churn_rows, churn)


def test_churn_rows_have_the_churn_columns_and_no_event_time(churn: Contract, churn_rows: pl.DataFrame) -> None:
    assert churn_rows.columns == ["customer_id", *churn.feature_names, "churned"]
    assert churn_rows.schema["tenure_months"] == pl.Int64
    assert churn_rows.schema["is_senior"] == pl.Boolean
    assert churn_rows["customer_id"].str.starts_with("C").all()


def test_cross_field_rules_hold_even_when_many_draws_break_them(churn: Contract, churn_rows: pl.DataFrame) -> None:
    # monthly_charges in [10, 200] and total_charges in [0, 1000]: a plain draw would break a rule now and then.
    assert churn_rows.filter(pl.col("monthly_charges") > 150)["plan"].unique().to_list() == ["premium"]
    assert (churn_rows["total_charges"] >= churn_rows["monthly_charges"]).all()


def test_open_bounds_get_sensible_defaults(churn: Contract, churn_rows: pl.DataFrame) -> None:
    assert feature_bounds(churn.features["total_charges"]) == (0.0, 1000.0)
    assert feature_bounds(churn.features["support_calls"]) == (0.0, 100.0)
    assert churn_rows["support_calls"].is_between(0, 100).all()


def test_int_features_stay_inside_fractional_bounds(churn_rows: pl.DataFrame) -> None:
    assert set(churn_rows["fractional_bounds"].unique()) == {1, 2, 3}


def test_unsatisfiable_rules_raise_a_clear_error(tmp_path: Path) -> None:
    raw = {**CHURN, "rules": [{"name": "impossible", "expression": "tenure_months > 1000"}]}
    with pytest.raises(ValueError, match="impossible"):
        synthesize(make_contract(raw, tmp_path), 100, seed=1)


def test_int_feature_without_a_whole_number_in_range_is_rejected(tmp_path: Path) -> None:
    raw = {**CHURN, "features": {**CHURN["features"], "fractional_bounds": {"dtype": "int", "min": 0.2, "max": 0.8}}}
    with pytest.raises(ValueError, match="no whole number"):
        synthesize(make_contract(raw, tmp_path), 100, seed=1)


def test_synthetic_knows_nothing_of_the_credit_example(credit: Contract) -> None:
    source = inspect.getsource(synthetic)
    assert "simulator" not in source
    for name in [credit.entity_id, credit.target, *credit.feature_names]:
        assert not re.search(rf"\b{name}\b", source), name
