"""The TreeSHAP engine behind reason codes gives LightGBM's own ``pred_contrib`` values, categorical splits included."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import yaml

from nightkeeper.config import parse_config
from nightkeeper.encoding import FeatureCard, feature_matrix
from nightkeeper.examples.simulator import simulate_history, simulate_night
from nightkeeper.reasons import ENGINE_MIN_ROWS, reason_codes
from nightkeeper.training import train_model
from nightkeeper.treeshap import UnsupportedModel, compile_forest, contributions_of

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
SEED = 11
TOLERANCE = 1e-6  # the contract: equal to LightGBM's values to 1e-6 (measured differences are ~1e-14)


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> tuple[lgb.Booster, list[FeatureCard]]:
    """A small model trained as the product trains one (categorical features from the shipped contract)."""
    raw = copy.deepcopy(yaml.safe_load(CONFIG_PATH.read_text()))
    raw["model"]["num_boost_round"] = 30
    raw["model"]["params"]["num_threads"] = 1
    config = parse_config(raw, root=tmp_path_factory.mktemp("treeshap"))
    model = train_model(simulate_history(date(2024, 4, 30), days=4, rows_per_day=1500, seed=SEED), config)
    return model.booster, model.card.features


@pytest.fixture(scope="module")
def trained(product: tuple[lgb.Booster, list[FeatureCard]]) -> tuple[lgb.Booster, np.ndarray]:
    """The model and encoded simulator rows."""
    booster, features = product
    rows = simulate_night(date(2024, 5, 1), rows=400, seed=SEED).applications
    return booster, feature_matrix(rows, features)


def _max_difference(booster: lgb.Booster, matrix: np.ndarray) -> float:
    ours = contributions_of(compile_forest(booster), matrix, num_threads=1)
    theirs = booster.predict(matrix, pred_contrib=True, num_threads=1)
    return float(np.abs(ours - theirs).max())


def test_contributions_equal_lightgbm_pred_contrib_on_a_model_with_categorical_splits(
    trained: tuple[lgb.Booster, np.ndarray],
) -> None:
    booster, matrix = trained
    decisions = {node.get("decision_type") for tree in booster.dump_model()["tree_info"] for node in _nodes(tree)}
    assert "==" in decisions, "the model must have categorical splits for this test to mean anything"
    assert _max_difference(booster, matrix) <= TOLERANCE


def test_missing_unknown_negative_and_tiny_values_follow_lightgbm_split_rules(
    trained: tuple[lgb.Booster, np.ndarray],
) -> None:
    booster, matrix = trained
    hostile = np.tile(matrix, (2, 1))
    rng = np.random.default_rng(SEED)
    for value, share in ((np.nan, 0.2), (0.0, 0.05), (-2.5, 0.05), (-0.5, 0.03), (1e-40, 0.03), (1e9, 0.02)):
        hostile[rng.random(hostile.shape) < share] = value
    unknown_category = rng.random(hostile.shape) < 0.05
    hostile[unknown_category] = rng.integers(0, 300, unknown_category.sum()) + 0.25
    assert _max_difference(booster, hostile) <= TOLERANCE


def test_reason_codes_of_a_batch_large_enough_for_the_engine_carry_lightgbm_contributions(
    product: tuple[lgb.Booster, list[FeatureCard]],
) -> None:
    booster, features = product
    rows = simulate_night(date(2024, 5, 2), rows=ENGINE_MIN_ROWS, seed=SEED).applications
    explained = reason_codes(rows, booster, features, top_k=len(features), num_threads=1)
    theirs = booster.predict(feature_matrix(rows, features), pred_contrib=True, num_threads=1)
    names = [feature.name for feature in features]
    ours = np.zeros_like(theirs)
    for row, (codes, base) in enumerate(explained.select("reason_codes", "shap_base_value").iter_rows()):
        for code in codes:
            ours[row, names.index(code["feature"])] = code["contribution"]
        ours[row, -1] = base
    assert float(np.abs(ours - theirs).max()) <= TOLERANCE


def test_trees_with_a_single_leaf_only_shift_the_base_value() -> None:
    rng = np.random.default_rng(SEED)
    matrix = rng.normal(size=(60, 3))
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 50, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(matrix, (matrix[:, 0] > 0).astype(float)), num_boost_round=3)
    assert _max_difference(booster, matrix) <= TOLERANCE


def test_single_leaf_trees_before_trees_with_splits_leave_the_later_trees_explained_exactly() -> None:
    rng = np.random.default_rng(SEED)
    matrix = rng.normal(size=(60, 3))
    labels = (matrix[:, 0] > 0).astype(float)
    params = {"objective": "binary", "num_leaves": 4, "verbose": -1, "num_threads": 1}
    stumps = lgb.train({**params, "min_data_in_leaf": 50}, lgb.Dataset(matrix, labels), num_boost_round=2)
    booster = lgb.train({**params, "min_data_in_leaf": 5}, lgb.Dataset(matrix, labels), 3, init_model=stumps)
    single_leaf = ["split_index" not in tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]
    assert single_leaf[0] and not any(single_leaf[-2:])

    assert _max_difference(booster, matrix) <= TOLERANCE


def test_models_whose_leaves_are_not_constants_are_refused() -> None:
    rng = np.random.default_rng(SEED)
    matrix = rng.normal(size=(200, 3))
    params = {"objective": "binary", "linear_tree": True, "num_leaves": 4, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(matrix, (matrix[:, 0] > 0).astype(float)), num_boost_round=2)
    with pytest.raises(UnsupportedModel, match="linear trees"):
        compile_forest(booster)


def _nodes(tree: dict) -> list[dict]:
    stack, found = [tree["tree_structure"]], []
    while stack:
        node = stack.pop()
        found.append(node)
        stack += [node[side] for side in ("left_child", "right_child") if side in node]
    return found
