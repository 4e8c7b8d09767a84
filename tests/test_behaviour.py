"""Behaviour tests of a candidate on real LightGBM models: directions a person expects (higher income never raises
risk), features that must not matter, scores in range, and edge rows at every bound and category level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from nightkeeper.behaviour import behaviour_tests, edge_rows
from nightkeeper.config import BehaviourConfig, ProjectConfig, parse_config
from nightkeeper.training import TrainedModel, train_model, training_params

INCOME_DECREASING = BehaviourConfig(directions={"income": "decreasing"})
CHECKS = [
    "directions_hold",
    "invariant_features_do_not_matter",
    "scores_and_confidence_in_range",
    "edge_rows_are_scored",
]


def run(trained: TrainedModel, sample: pl.DataFrame, config: ProjectConfig, behaviour: BehaviourConfig) -> dict:
    return behaviour_tests(trained.booster, trained.card, sample, config.contract, behaviour)


@pytest.fixture(scope="module")
def income_raises_risk(core_history: pl.DataFrame) -> pl.DataFrame:
    """core_history relabeled so that default gets MORE likely as income grows (the wrong way for a lender)."""
    log_income = np.log(core_history["income"].to_numpy())
    probability = 1 / (1 + np.exp(-3.0 * (log_income - np.median(log_income))))
    drawn = np.random.default_rng(11).random(core_history.height) < probability
    return core_history.with_columns(pl.Series("defaulted", drawn.astype(np.int8)))


def with_behaviour(config: ProjectConfig, behaviour: BehaviourConfig, root: Path) -> ProjectConfig:
    """``config`` (small, one-thread core config) with another ``lifecycle.behaviour``, validated again."""
    raw = config.model_dump()
    raw["lifecycle"]["behaviour"] = behaviour.model_dump()
    return parse_config(raw, root=root)


@pytest.fixture(scope="module")
def unconstrained(
    income_raises_risk: pl.DataFrame, core_config: ProjectConfig, tmp_path_factory: Any
) -> tuple[TrainedModel, ProjectConfig]:
    """A real model trained WITHOUT monotone constraints on data where income raises risk."""
    config = with_behaviour(
        core_config,
        BehaviourConfig(directions={"income": "decreasing"}, enforce_directions=False),
        tmp_path_factory.mktemp("free"),
    )
    assert "monotone_constraints" not in training_params(config)
    return train_model(income_raises_risk, config), config


@pytest.fixture(scope="module")
def constrained_on_same_data(
    income_raises_risk: pl.DataFrame, core_config: ProjectConfig, tmp_path_factory: Any
) -> TrainedModel:
    """The same wrong-way data, but income: decreasing enforced as a LightGBM monotone constraint."""
    config = with_behaviour(core_config, INCOME_DECREASING, tmp_path_factory.mktemp("constrained"))
    assert training_params(config)["monotone_constraints"][config.contract.feature_names.index("income")] == -1
    return train_model(income_raises_risk, config)


def test_behaviour_tests_return_one_outcome_per_check(core_trained, core_history, core_config):
    results = run(core_trained, core_history, core_config, core_config.lifecycle.behaviour)

    assert list(results) == CHECKS
    assert all(outcome.passed for outcome in results.values()), {n: o.description for n, o in results.items()}


def test_a_model_trained_with_monotone_constraints_passes_directions_hold(core_trained, core_history, core_config):
    outcome = run(core_trained, core_history, core_config, INCOME_DECREASING)["directions_hold"]

    assert outcome.passed, outcome.description
    assert outcome.description == "1 direction(s) hold on 2000 rows"
    assert outcome.severity == "ERROR"


def test_every_shipped_direction_holds_for_the_constrained_core_model(core_trained, core_history, core_config):
    shipped = core_config.lifecycle.behaviour
    assert shipped.enforce_directions and len(shipped.directions) == 4

    outcome = run(core_trained, core_history, core_config, shipped)["directions_hold"]

    assert outcome.passed, outcome.description


def test_an_unconstrained_model_on_wrong_way_data_fails_directions_hold_naming_the_feature(
    unconstrained, income_raises_risk
):
    trained, config = unconstrained

    outcome = run(trained, income_raises_risk, config, INCOME_DECREASING)["directions_hold"]

    assert not outcome.passed
    assert outcome.description.startswith("income: ")
    assert "of rows move the wrong way" in outcome.description
    assert outcome.metadata == {"broken": 1}


def test_the_same_wrong_way_data_passes_when_the_direction_is_enforced(
    constrained_on_same_data, income_raises_risk, core_config
):
    outcome = run(constrained_on_same_data, income_raises_risk, core_config, INCOME_DECREASING)["directions_hold"]

    assert outcome.passed, outcome.description


def test_the_direction_the_data_really_has_holds_for_the_unconstrained_model(unconstrained, income_raises_risk):
    trained, config = unconstrained

    outcome = run(trained, income_raises_risk, config, BehaviourConfig(directions={"income": "increasing"}))[
        "directions_hold"
    ]

    assert outcome.passed, outcome.description


def test_no_directions_configured_passes_with_a_warning(core_trained, core_history, core_config):
    outcome = run(core_trained, core_history, core_config, BehaviourConfig())["directions_hold"]

    assert outcome.passed
    assert (outcome.description, outcome.severity) == ("no directions configured", "WARN")


def test_invariance_fails_for_a_feature_that_matters_under_a_tiny_limit(core_trained, core_history, core_config):
    outcome = run(core_trained, core_history, core_config, BehaviourConfig(invariant={"credit_score": 1e-4}))[
        "invariant_features_do_not_matter"
    ]

    assert not outcome.passed
    assert outcome.description.startswith("credit_score: mean |score change| ")
    assert "(limit 0.0001)" in outcome.description
    assert outcome.metadata == {"broken": 1}


def test_invariance_passes_for_the_same_feature_under_a_generous_limit(core_trained, core_history, core_config):
    outcome = run(core_trained, core_history, core_config, BehaviourConfig(invariant={"credit_score": 1.0}))[
        "invariant_features_do_not_matter"
    ]

    assert outcome.passed, outcome.description
    assert "credit_score: mean |score change|" in outcome.description


def test_invariance_measures_a_real_change_for_an_important_feature(core_trained, core_history, core_config):
    results = run(
        core_trained, core_history, core_config, BehaviourConfig(invariant={"credit_score": 1.0, "dependents": 1.0})
    )
    text = results["invariant_features_do_not_matter"].description
    changes = dict((part.split(":")[0], float(part.split("change| ")[1].split(" ")[0])) for part in text.split("; "))

    assert changes["credit_score"] > 0.01
    assert changes["credit_score"] > changes["dependents"]


def test_scores_and_confidence_in_range_passes_for_a_real_model(core_trained, core_history, core_config):
    outcome = run(core_trained, core_history, core_config, BehaviourConfig())["scores_and_confidence_in_range"]

    assert outcome.passed
    assert outcome.description == "0 score(s) outside [0, 1], 0 confidence(s) outside [0, 1] on 2000 rows"


def test_sample_rows_bound_the_rows_checked(core_trained, core_history, core_config):
    outcome = run(core_trained, core_history, core_config, BehaviourConfig(sample_rows=100))[
        "scores_and_confidence_in_range"
    ]

    assert outcome.description.endswith("on 100 rows")


def test_an_empty_sample_warns_instead_of_failing(core_trained, core_history, core_config):
    results = run(core_trained, core_history.head(0), core_config, INCOME_DECREASING)

    assert results["directions_hold"].passed and results["directions_hold"].severity == "WARN"
    assert (
        results["scores_and_confidence_in_range"].passed
        and results["scores_and_confidence_in_range"].severity == "WARN"
    )
    assert results["edge_rows_are_scored"].passed  # edge rows come from the contract, not the sample


def test_edge_rows_cover_every_category_level_and_numeric_bound(core_config):
    contract = core_config.contract
    frame = edge_rows(contract)

    assert frame.columns == contract.feature_names
    for name, spec in contract.features.items():
        values = set(frame[name].drop_nulls().to_list())
        if spec.dtype == "category":
            assert values == set(spec.categories), name
        elif spec.dtype == "bool":
            assert values == {True, False}, name
        else:
            assert values == {v for v in (spec.min, spec.max) if v is not None}, name
    expected_rows = 1 + sum(
        len(s.categories)
        if s.dtype == "category"
        else 2
        if s.dtype == "bool"
        else (s.min is not None) + (s.max is not None)
        for s in contract.features.values()
    )
    assert frame.height == expected_rows


def test_each_edge_row_sets_one_feature_and_one_row_sets_none(core_config):
    frame = edge_rows(core_config.contract)
    set_per_row = frame.select(pl.sum_horizontal(pl.all().is_not_null())).to_series().to_list()

    assert set_per_row[:-1] == [1] * (frame.height - 1)
    assert set_per_row[-1] == 0


def test_edge_rows_carry_the_contract_types(core_config):
    schema = edge_rows(core_config.contract).schema

    assert schema["income"] == pl.Float64
    assert schema["age"] == pl.Int64
    assert schema["employment_type"] == pl.String
    assert schema["has_cosigner"] == pl.Boolean


def test_edge_rows_are_scored_in_range_by_a_real_model(core_trained, core_history, core_config):
    outcome = run(core_trained, core_history, core_config, BehaviourConfig())["edge_rows_are_scored"]
    height = edge_rows(core_config.contract).height

    assert outcome.passed
    assert outcome.description == f"{height} of {height} edge rows scored in [0, 1]"
