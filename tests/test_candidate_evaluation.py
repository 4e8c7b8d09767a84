"""Candidate evaluation through the pipeline core: the never-worse gate judges business value at the decision the
champion actually serves (its card's threshold), not at whatever the config says today."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


import pytest

from nightkeeper import simulator, warehouse
from nightkeeper.artifacts import load_verified
from nightkeeper.encoding import feature_matrix
from nightkeeper.gates import business_value
from nightkeeper.models import train_first_champion
from nightkeeper.pipeline.lifecycle import evaluate_candidate, train_candidate
from nightkeeper.training_data import labeled_history, read_history_file, split_holdout
from pipeline_harness import FIRST_NIGHT, example_config, make_project

SERVED_THRESHOLD = 0.6  # the champion's card; the config says 0.30


def test_the_never_worse_gate_counts_business_value_at_the_champion_cards_threshold(tmp_path: Path):
    raw = example_config()
    raw["lifecycle"] = {**raw["lifecycle"], "data_gate": {**raw["lifecycle"]["data_gate"], "min_rows": 2000}}
    config = make_project(tmp_path / "project", raw).config
    served = config.model_copy(update={"model": config.model.model_copy(update={
        "decision": config.model.decision.model_copy(update={"threshold": SERVED_THRESHOLD})})})
    path = tmp_path / "history.parquet"
    simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), 12, 400, seed=5).write_parquet(path)
    as_of = FIRST_NIGHT + dt.timedelta(days=2)
    with warehouse.connect(config.warehouse_path) as connection:
        champion = train_first_champion(served, connection, read_history_file(path, config.contract)).record
        assert champion is not None and champion.card.decision.threshold == SERVED_THRESHOLD
        assert train_candidate(config, connection, as_of, "test").metadata["status"] == "trained"

        result = evaluate_candidate(config, connection, as_of)

        labeled = labeled_history(connection, config.contract, as_of - dt.timedelta(days=config.lifecycle.training_window_days), as_of, False)
    _, holdout = split_holdout(labeled, config.lifecycle.promotion_gate.holdout_days)
    champion_scores = load_verified(champion).predict(feature_matrix(holdout, champion.card.features))
    labels = holdout[config.contract.target].to_numpy()
    value = config.monitoring.performance.business_value
    assert result.metadata["decision_threshold"] == SERVED_THRESHOLD
    assert result.metadata["business_value_champion"] == pytest.approx(business_value(labels, champion_scores, SERVED_THRESHOLD, value))
    assert business_value(labels, champion_scores, SERVED_THRESHOLD, value) != business_value(
        labels, champion_scores, config.model.decision.threshold, value
    )  # the two thresholds do give different figures: the test can tell them apart
