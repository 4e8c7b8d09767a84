"""Candidate evaluation through the pipeline core: the never-worse gate judges business value at the decision the
champion actually serves (its card's threshold), not at whatever the config says today."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pipeline_harness import FIRST_NIGHT, example_config, make_project

from nightkeeper import metrics_store, warehouse
from nightkeeper.artifacts import load_verified
from nightkeeper.encoding import feature_matrix
from nightkeeper.examples import simulator
from nightkeeper.gates import business_value
from nightkeeper.models import train_first_champion
from nightkeeper.pipeline.lifecycle import CANDIDATE_REJECTED, SCHEDULED_TRIGGER, evaluate_candidate, train_candidate
from nightkeeper.training_data import labeled_history, read_history_file, split_holdout

SERVED_THRESHOLD = 0.6  # the champion's card; the config says 0.30


def gated_config() -> dict:
    """The example config for 12 nights of 400 rows of history. The gate's AUC confidence interval takes 50 bootstrap
    samples, not the shipped 200: no verdict here is close (its statistics are test_gates'), and each sample costs two
    AUCs."""
    raw = example_config()
    lifecycle = raw["lifecycle"]
    raw["lifecycle"] = {
        **lifecycle,
        "data_gate": {**lifecycle["data_gate"], "min_rows": 2000},
        "promotion_gate": {**lifecycle["promotion_gate"], "bootstrap_samples": 50},
    }
    return raw


def test_the_never_worse_gate_counts_business_value_at_the_champion_cards_threshold(tmp_path: Path):
    raw = gated_config()
    config = make_project(tmp_path / "project", raw).config
    served = config.model_copy(
        update={
            "model": config.model.model_copy(
                update={"decision": config.model.decision.model_copy(update={"threshold": SERVED_THRESHOLD})}
            )
        }
    )
    path = tmp_path / "history.parquet"
    simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), 12, 400, seed=5).write_parquet(path)
    as_of = FIRST_NIGHT + dt.timedelta(days=2)
    with warehouse.connect(config.warehouse_path) as connection:
        champion = train_first_champion(served, connection, read_history_file(path, config.contract)).record
        assert champion is not None and champion.card.decision.threshold == SERVED_THRESHOLD
        assert train_candidate(config, connection, as_of, "test").metadata["status"] == "trained"

        result = evaluate_candidate(config, connection, as_of)

        labeled = labeled_history(
            connection, config.contract, as_of - dt.timedelta(days=config.lifecycle.training_window_days), as_of, False
        )
    _, holdout = split_holdout(labeled, config.lifecycle.promotion_gate.holdout_days)
    champion_scores = load_verified(champion).predict(feature_matrix(holdout, champion.card.features))
    labels = holdout[config.contract.target].to_numpy()
    value = config.monitoring.performance.business_value
    assert result.metadata["decision_threshold"] == SERVED_THRESHOLD
    assert result.metadata["business_value_champion"] == pytest.approx(
        business_value(labels, champion_scores, SERVED_THRESHOLD, value)
    )
    assert business_value(labels, champion_scores, SERVED_THRESHOLD, value) != business_value(
        labels, champion_scores, config.model.decision.threshold, value
    )  # the two thresholds do give different figures: the test can tell them apart


def weaker_candidate_evaluated(tmp_path: Path, trigger: str) -> tuple[dict, float]:
    """A one-stump candidate trained with ``trigger`` and judged against a full first champion: the evaluation's
    metadata and the candidate-rejected events counted on its night."""
    raw = gated_config()
    config = make_project(tmp_path / "project", raw).config
    stump = config.model_copy(
        update={
            "model": config.model.model_copy(
                update={"num_boost_round": 1, "params": {**config.model.params, "num_leaves": 2}}
            )
        }
    )
    path = tmp_path / "history.parquet"
    simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), 12, 400, seed=5).write_parquet(path)
    as_of = FIRST_NIGHT + dt.timedelta(days=2)
    with warehouse.connect(config.warehouse_path) as connection:
        train_first_champion(config, connection, read_history_file(path, config.contract))
        assert train_candidate(stump, connection, as_of, trigger).metadata["status"] == "trained"
        result = evaluate_candidate(config, connection, as_of)
        events = metrics_store.metrics_on(connection, as_of).get(CANDIDATE_REJECTED, 0.0)
    return result.metadata, events


def test_a_scheduled_candidate_that_loses_to_the_champion_is_rejected_without_paging(tmp_path: Path):
    # the monthly retrain of a healthy model often finds nothing better: the champion serves on, nobody is woken
    metadata, events = weaker_candidate_evaluated(tmp_path, SCHEDULED_TRIGGER)
    assert metadata["decision"] == "rejected" and metadata["trigger"] == SCHEDULED_TRIGGER
    assert events == 0


def test_a_candidate_asked_for_by_an_alert_that_loses_to_the_champion_pages(tmp_path: Path):
    # the retrain was the system's answer to an open problem, and it found no better model: a person must look
    metadata, events = weaker_candidate_evaluated(tmp_path, "performance alert realized-auc-drop@2026-01-03")
    assert metadata["decision"] == "rejected"
    assert events == 1
