"""Scoring: chunked, within a time budget; every validated row gets the model's score and decision, or (when the
model raises or overruns) every row carries the reason it has none."""

from __future__ import annotations

from datetime import date

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from nightkeeper.config import ProjectConfig
from nightkeeper.encoding import feature_matrix
from nightkeeper.examples.simulator import simulate_night
from nightkeeper.ingest import read_raw_batch
from nightkeeper.scoring import SCORED_SCHEMA, ScoringResult, confidence, latency_percentiles, score_batch, unscored
from nightkeeper.training import TrainedModel
from nightkeeper.validation import KEY_COLUMNS, validate

NIGHT = date(2024, 5, 1)
BIG_CHUNK = 1_000_000
BUDGET = 300.0


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory, core_config: ProjectConfig) -> pl.DataFrame:
    """The validated rows of a clean simulated night, read from a parquet landing file."""
    path = tmp_path_factory.mktemp("scoring") / "applications.parquet"
    simulate_night(NIGHT, 2_000, 7).applications.write_parquet(path)
    raw = read_raw_batch([path], NIGHT, core_config.contract).frame
    result = validate(raw, core_config.contract)
    assert result.quarantine.is_empty()
    return result.valid


@pytest.fixture(scope="module")
def scored(valid: pl.DataFrame, core_trained: TrainedModel) -> ScoringResult:
    return score_batch(valid, core_trained.booster, core_trained.card, BIG_CHUNK, BUDGET)


def test_scores_match_booster_predict_exactly(
    scored: ScoringResult, valid: pl.DataFrame, core_trained: TrainedModel
) -> None:
    expected = core_trained.booster.predict(feature_matrix(valid, core_trained.card.features))
    assert np.array_equal(scored.frame["score"].to_numpy(), expected)


def test_every_valid_row_is_scored_once_in_order(
    scored: ScoringResult, valid: pl.DataFrame, core_trained: TrainedModel
) -> None:
    assert scored.error is None
    assert dict(scored.frame.schema) == SCORED_SCHEMA
    assert scored.frame.select(KEY_COLUMNS).equals(valid.select(KEY_COLUMNS))
    assert scored.frame["score"].null_count() == 0
    assert scored.frame["model_error"].null_count() == valid.height
    assert set(scored.frame["model_version"]) == {core_trained.card.version}


def test_chunking_does_not_change_scores(
    scored: ScoringResult, valid: pl.DataFrame, core_trained: TrainedModel
) -> None:
    chunked = score_batch(valid, core_trained.booster, core_trained.card, 7, BUDGET)
    assert chunked.error is None
    assert np.array_equal(chunked.frame["score"].to_numpy(), scored.frame["score"].to_numpy())
    assert chunked.frame["decision"].equals(scored.frame["decision"])


def test_decision_is_the_label_for_the_side_of_the_threshold(scored: ScoringResult, core_trained: TrainedModel) -> None:
    decision = core_trained.card.decision
    frame = scored.frame
    above = frame.filter(pl.col("score") >= decision.threshold)
    below = frame.filter(pl.col("score") < decision.threshold)
    assert above.height > 0 and below.height > 0
    assert set(above["decision"]) == {decision.at_or_above_threshold}
    assert set(below["decision"]) == {decision.below_threshold}


def test_confidence_is_the_scaled_distance_from_the_threshold(
    scored: ScoringResult, core_trained: TrainedModel
) -> None:
    threshold = core_trained.card.decision.threshold
    score, conf = scored.frame["score"].to_numpy(), scored.frame["confidence"].to_numpy()
    expected = np.where(score >= threshold, (score - threshold) / (1 - threshold), (threshold - score) / threshold)
    assert np.allclose(conf, expected)
    assert ((conf >= 0) & (conf <= 1)).all()


@pytest.mark.parametrize(("score", "expected"), [(0.3, 0.0), (0.0, 1.0), (1.0, 1.0), (0.15, 0.5), (0.65, 0.5)])
def test_confidence_is_zero_at_the_threshold_and_one_at_the_extremes(score: float, expected: float) -> None:
    frame = pl.DataFrame({"score": [score]})
    assert frame.select(confidence(pl.col("score"), 0.3))["score"][0] == pytest.approx(expected)


def test_latency_is_recorded_for_every_scored_row(scored: ScoringResult) -> None:
    latency = scored.frame["latency_ms"]
    assert latency.null_count() == 0
    assert (latency >= 0).all()
    percentiles = latency_percentiles(scored.frame)
    assert percentiles["p50_ms"] is not None and percentiles["p95_ms"] is not None
    assert 0 <= percentiles["p50_ms"] <= percentiles["p95_ms"]
    assert scored.seconds > 0


def test_exceeding_the_time_budget_leaves_every_row_unscored(valid: pl.DataFrame, core_trained: TrainedModel) -> None:
    result = score_batch(valid, core_trained.booster, core_trained.card, 1, 1e-9)
    assert result.error is not None
    assert "time budget" in result.error
    assert core_trained.card.version in result.error
    frame = result.frame
    assert dict(frame.schema) == SCORED_SCHEMA
    assert frame.select(KEY_COLUMNS).equals(valid.select(KEY_COLUMNS))
    assert frame["model_error"].to_list() == [result.error] * valid.height
    assert frame["score"].null_count() == frame["decision"].null_count() == valid.height
    assert latency_percentiles(frame) == {"p50_ms": None, "p95_ms": None}


def test_model_that_raises_leaves_every_row_unscored_with_the_exception_text(
    valid: pl.DataFrame, core_trained: TrainedModel, core_history: pl.DataFrame
) -> None:
    features = core_trained.card.features[:-1]  # a booster trained on one feature fewer than the card lists
    matrix = feature_matrix(core_history, features)
    short = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lgb.Dataset(matrix, label=core_history["defaulted"].to_numpy()),
        num_boost_round=3,
    )
    result = score_batch(valid, short, core_trained.card, BIG_CHUNK, BUDGET)
    assert result.error is not None
    assert "raised LightGBMError" in result.error
    assert "number of features" in result.error
    assert result.frame["model_error"].to_list() == [result.error] * valid.height
    assert result.frame["score"].null_count() == valid.height
    assert result.frame.height == valid.height


def test_empty_batch_scores_to_an_empty_frame(valid: pl.DataFrame, core_trained: TrainedModel) -> None:
    result = score_batch(valid.clear(), core_trained.booster, core_trained.card, BIG_CHUNK, BUDGET)
    assert result.error is None
    assert result.frame.is_empty()
    assert dict(result.frame.schema) == SCORED_SCHEMA


def test_unscored_marks_every_row_with_the_reason(valid: pl.DataFrame) -> None:
    frame = unscored(valid, None, "no champion model is registered for this night")
    assert dict(frame.schema) == SCORED_SCHEMA
    assert frame.height == valid.height
    assert set(frame["model_error"]) == {"no champion model is registered for this night"}
    assert frame["model_version"].null_count() == valid.height


@pytest.mark.parametrize("rows", [1, 2, 3, 10, 11, 20, 101, 1000])
def test_latency_percentiles_are_the_nearest_rank_quantiles_of_the_rows(rows: int) -> None:
    # few distinct latencies, as in a night (one a predict call), so ranks fall inside runs of equal values
    latencies = np.random.default_rng(rows).choice([0.5, 1.25, 2.0, 7.5, None], size=rows)
    frame = pl.DataFrame({"latency_ms": latencies.tolist()}, schema={"latency_ms": pl.Float64})
    scored = frame["latency_ms"].drop_nulls()

    expected = {"p50_ms": scored.quantile(0.5, "nearest"), "p95_ms": scored.quantile(0.95, "nearest")}
    assert latency_percentiles(frame) == expected
