"""The compiled scorer gives LightGBM's own ``Booster.predict`` probabilities bit for bit, categorical splits and
hostile values included, and refuses the models it does not reproduce."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from nightkeeper.config import load_config
from nightkeeper.encoding import feature_matrix
from nightkeeper.examples.simulator import simulate_night
from nightkeeper.forest_scoring import probabilities, scoring_forest
from nightkeeper.ingest import read_raw_batch
from nightkeeper.scoring import COMPILED_MIN_ROWS, score_batch
from nightkeeper.training import TrainedModel
from nightkeeper.treeshap import UnsupportedModel
from nightkeeper.validation import validate

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
SEED = 12


def test_probabilities_equal_lightgbm_predict_bit_for_bit_on_a_model_with_categorical_splits(
    core_trained: TrainedModel,
) -> None:
    rows = simulate_night(date(2024, 5, 1), rows=3000, seed=SEED).applications
    matrix = feature_matrix(rows, core_trained.card.features)
    assert _has_categorical_splits(core_trained.booster), (
        "the model must have categorical splits for this to mean anything"
    )
    ours = probabilities(scoring_forest(core_trained.booster), matrix, num_threads=2)
    assert np.array_equal(ours, core_trained.booster.predict(matrix))


def test_missing_unknown_negative_and_tiny_values_follow_lightgbm_split_rules(core_trained: TrainedModel) -> None:
    rows = simulate_night(date(2024, 5, 2), rows=2000, seed=SEED).applications
    hostile = feature_matrix(rows, core_trained.card.features)
    rng = np.random.default_rng(SEED)
    for value, share in ((np.nan, 0.2), (0.0, 0.05), (-2.5, 0.05), (-0.5, 0.03), (1e-40, 0.03), (1e9, 0.02)):
        hostile[rng.random(hostile.shape) < share] = value
    unknown_category = rng.random(hostile.shape) < 0.05
    hostile[unknown_category] = rng.integers(0, 300, unknown_category.sum()) + 0.25
    ours = probabilities(scoring_forest(core_trained.booster), hostile, num_threads=1)
    assert np.array_equal(ours, core_trained.booster.predict(hostile))


def test_trees_with_a_single_leaf_add_their_value_to_every_row() -> None:
    rng = np.random.default_rng(SEED)
    matrix = rng.normal(size=(60, 3))
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 50, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(matrix, (matrix[:, 0] > 0).astype(float)), num_boost_round=3)
    assert np.array_equal(probabilities(scoring_forest(booster), matrix), booster.predict(matrix))


@pytest.mark.parametrize(
    ("params", "refusal"),
    [
        ({"objective": "regression"}, "only binary models"),
        ({"objective": "binary", "linear_tree": True}, "linear trees"),
        (
            {"objective": "binary", "boosting": "rf", "bagging_fraction": 0.5, "bagging_freq": 1},
            "average their trees",
        ),
    ],
)
def test_models_it_does_not_reproduce_are_refused(params: dict, refusal: str) -> None:
    rng = np.random.default_rng(SEED)
    matrix = rng.normal(size=(200, 3))
    params = {**params, "num_leaves": 4, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(matrix, (matrix[:, 0] > 0).astype(float)), num_boost_round=2)
    with pytest.raises(UnsupportedModel, match=refusal):
        scoring_forest(booster)


def test_a_batch_large_enough_for_the_compiled_scorer_gets_lightgbm_scores(
    core_trained: TrainedModel, tmp_path: Path
) -> None:
    path = tmp_path / "applications.parquet"
    simulate_night(date(2024, 5, 3), rows=COMPILED_MIN_ROWS, seed=SEED).applications.write_parquet(path)
    contract = load_config(CONFIG_PATH).contract
    valid = validate(read_raw_batch([path], date(2024, 5, 3), contract).frame, contract).valid
    assert valid.height >= COMPILED_MIN_ROWS
    scored = score_batch(valid, core_trained.booster, core_trained.card, chunk_rows=7000, time_budget_seconds=300)
    assert scored.error is None
    expected = core_trained.booster.predict(feature_matrix(valid, core_trained.card.features))
    assert np.array_equal(scored.frame["score"].to_numpy(), expected)


def _has_categorical_splits(booster: lgb.Booster) -> bool:
    stack = [tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if node.get("decision_type") == "==":
            return True
        stack += [node[side] for side in ("left_child", "right_child") if side in node]
    return False
