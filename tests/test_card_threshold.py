"""One threshold: realized and estimated performance, business value and the review queue judge each answer at the
threshold on the card of the model version that gave it — the one scoring decided at — even after the config's
decision threshold was edited (issue #9 item 7)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
import yaml
from conftest import CORE_CONFIG_PATH
from test_performance_incremental import store_partition

from nightkeeper import labels, performance, warehouse
from nightkeeper.artifacts import load_verified
from nightkeeper.config import DecisionConfig, ProjectConfig, parse_config
from nightkeeper.examples import simulator
from nightkeeper.ingest import read_raw_batch
from nightkeeper.models import bootstrap_champion
from nightkeeper.outcomes import Fallback, assemble_outcomes
from nightkeeper.pipeline import monitoring
from nightkeeper.review.storage import queue_for
from nightkeeper.scoring import score_batch
from nightkeeper.validation import QUARANTINE_SCHEMA, validate

NIGHT = dt.date(2026, 4, 1)
TRAINED_AT, EDITED_TO = 0.30, 0.10


def project_config(root, threshold: float) -> ProjectConfig:
    raw = yaml.safe_load(CORE_CONFIG_PATH.read_text())
    raw["model"]["num_boost_round"] = 20
    raw["model"]["params"]["num_threads"] = 1
    raw["model"]["decision"]["threshold"] = threshold
    raw["monitoring"]["performance"]["min_labeled_rows"] = 100
    return parse_config(raw, root=root)


@pytest.fixture(scope="module")
def answered(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectConfig, pl.DataFrame]:
    """A champion trained at threshold TRAINED_AT answers one night, whose labels land the same night; then the
    config is edited to EDITED_TO. Returns the edited config and the night's outcomes."""
    root = tmp_path_factory.mktemp("card_threshold")
    trained = project_config(root, TRAINED_AT)
    champion = bootstrap_champion(
        trained, simulator.simulate_history(NIGHT - dt.timedelta(days=1), 10, 400, seed=3), NIGHT
    )
    data = simulator.simulate_night(NIGHT, 1500, seed=11)
    path = simulator.write_landing(data, NIGHT, trained.landing_path)
    raw = read_raw_batch([path], NIGHT, trained.contract).frame
    checked = validate(raw, trained.contract)
    scored = score_batch(checked.valid, load_verified(champion), champion.card, 10_000, 300).frame
    outcomes = assemble_outcomes(
        raw,
        checked.quarantine,
        scored,
        Fallback(champion.card.fallback, champion.card.version),
        trained.model.decision,
        True,
    )
    simulator.write_labels(data.labels, NIGHT, trained.labels_path)
    with warehouse.connect(trained.warehouse_path) as connection:
        store_partition(connection, "outcomes", NIGHT, outcomes)
    return project_config(root, EDITED_TO), outcomes


def test_realized_and_estimated_performance_use_the_cards_threshold_not_the_edited_config(answered):
    config, outcomes = answered
    with warehouse.connect(config.warehouse_path) as connection:
        monitoring.labels_night(config, connection, NIGHT)
        monitoring.performance_night(config, connection, NIGHT, plots=False)
        stored = connection.execute("select * from monitoring.performance_realized where source = 'model'").pl()
        estimated = connection.execute("select * from monitoring.performance_estimated where source = 'model'").pl()
        known = labels.stored_labels(connection)
    settings = config.monitoring.performance
    at_card = performance.realized_performance(
        outcomes, known, DecisionConfig(threshold=TRAINED_AT), settings.business_value, 100
    )
    at_config = performance.realized_performance(outcomes, known, config.model.decision, settings.business_value, 100)
    model_scores = outcomes.filter(pl.col("source") == "model")["score"].to_numpy()

    counts = ["true_positives", "false_positives", "true_negatives", "false_negatives", "business_value"]
    assert stored.select(counts).rows() == at_card.filter(pl.col("source") == "model").select(counts).rows()
    assert stored.select(counts).rows() != at_config.filter(pl.col("source") == "model").select(counts).rows()
    assert (
        estimated["precision"][0]
        == performance.estimate_performance(model_scores, TRAINED_AT, settings.business_value)["precision"]
    )


def test_the_review_queue_is_near_the_threshold_the_answers_were_decided_at(answered):
    config, outcomes = answered
    with warehouse.connect(config.warehouse_path) as connection:
        monitoring.review_queue_night(config, connection, NIGHT, outcomes, pl.DataFrame(schema=QUARANTINE_SCHEMA))
        queue = queue_for(connection, NIGHT)

    uncertain = queue.filter(pl.col("queue_reason") == "low_confidence")
    assert uncertain.height > 0
    assert ((uncertain["score"] - TRAINED_AT).abs() - uncertain["distance"]).abs().max() < 1e-9
    assert (uncertain["distance"] <= config.review.band + 1e-9).all()
