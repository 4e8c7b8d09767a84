"""The two gates of a retrain, on simulator nights and real LightGBM models: the training-data gate judges each night
of a labeled window against the window's own medians, and the never-worse gate compares a candidate with the
champion on the same labeled holdout."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from nightkeeper import registry, warehouse
from nightkeeper.artifacts import save_artifact
from nightkeeper.config import (
    BusinessValue,
    Contract,
    FeatureSpec,
    ProjectConfig,
    PromotionGateConfig,
    TrainingDataGateConfig,
)
from nightkeeper.encoding import feature_cards, feature_matrix
from nightkeeper.examples.simulator import ScenarioPlan, simulate_history, simulate_night
from nightkeeper.examples.worlds import duplicate_codes_world
from nightkeeper.gates import (
    LATENCY_NOISE_FLOOR_SECONDS_PER_ROW,
    business_value,
    latency_ratio,
    never_worse_gate,
    training_window_gate,
)
from nightkeeper.pipeline.lifecycle import _timed_scores
from nightkeeper.testing.synthetic import synthesize
from nightkeeper.training import TrainedModel, train_model

TARGET = "defaulted"
WINDOW_START = date(2024, 5, 1)
HOLDOUT_END = date(2024, 5, 10)  # after core_history (which ends 2024-04-30): rows the models never saw
VALUE = BusinessValue(true_positive=0, false_positive=-300, true_negative=250, false_negative=-2500)
THRESHOLD = 0.30


def labeled_window(plan: ScenarioPlan, nights: int, rows: int, seed: int = 7) -> pl.DataFrame:
    """Simulate ``nights`` nights from WINDOW_START under ``plan``, label them from NightData.labels and tag each row
    with its night (``partition_date``), as labeled_history would."""
    frames = []
    for index in range(nights):
        night = WINDOW_START + timedelta(days=index)
        data = simulate_night(night, rows, seed, plan.scenario_for_night(index))
        labeled = data.applications.join(data.labels, on="application_id", how="inner", maintain_order="left")
        frames.append(labeled.with_columns(pl.lit(night).alias("partition_date")))
    return pl.concat(frames)


def night(index: int) -> str:
    return (WINDOW_START + timedelta(days=index)).isoformat()


@pytest.fixture(scope="module")
def features(core_config: Any) -> list:
    return feature_cards(core_config.contract)


# ------------------------------------------------------------------------------------------- training-window gate


def test_clean_window_passes_with_no_exclusions(features):
    window = labeled_window(ScenarioPlan.clean(), nights=10, rows=500)

    verdict = training_window_gate(window, TARGET, features, TrainingDataGateConfig())

    assert verdict.gate.passed, verdict.gate.reasons
    assert verdict.gate.reasons == []
    assert verdict.excluded_nights == {}
    assert verdict.gate.metrics == {"rows": 5000.0, "excluded_rows": 0.0, "excluded_nights": 0.0}
    assert verdict.per_night.height == 10
    assert verdict.per_night["rows"].to_list() == [500] * 10


def test_bot_attack_nights_are_excluded_exactly_with_volume_and_label_rate_reasons(features):
    window = labeled_window(ScenarioPlan.bot_attack(6, nights=2, share=0.6), nights=10, rows=500)

    verdict = training_window_gate(window, TARGET, features, TrainingDataGateConfig())

    assert set(verdict.excluded_nights) == {night(6), night(7)}
    for why in verdict.excluded_nights.values():
        assert "800 rows is 1.6× the median 500" in why
        assert "label rate" in why and "vs median" in why
    assert verdict.gate.passed, verdict.gate.reasons  # 1600 of 5600 rows (29%) is under the 30% limit
    assert verdict.gate.metrics["excluded_rows"] == 1600.0
    assert verdict.gate.metrics["excluded_nights"] == 2.0


def test_a_night_of_repeated_feature_vectors_is_excluded_naming_duplicates(features):
    window = labeled_window(ScenarioPlan.clean(), nights=8, rows=500)
    copied_night = date.fromisoformat(night(3))
    template = window.filter(pl.col("partition_date") == copied_night).head(1)
    jittered = pl.concat([template] * 50).with_columns(  # income jitter below the 2-significant-digit rounding
        (pl.col("income") + pl.int_range(pl.len()) * 0.01).alias("income")
    )
    others = window.filter(pl.col("partition_date") == copied_night).slice(50)
    window = pl.concat([window.filter(pl.col("partition_date") != copied_night), others, jittered])

    verdict = training_window_gate(window, TARGET, features, TrainingDataGateConfig())

    assert list(verdict.excluded_nights) == [night(3)]
    assert "repeat a near-identical feature vector" in verdict.excluded_nights[night(3)]
    assert "rows is" not in verdict.excluded_nights[night(3)]  # same volume as every other night


def test_too_many_suspect_rows_refuses_the_retrain_naming_the_nights(features):
    window = labeled_window(ScenarioPlan.bot_attack(5, nights=4, share=0.6), nights=10, rows=500)

    verdict = training_window_gate(window, TARGET, features, TrainingDataGateConfig())

    assert not verdict.gate.passed
    assert set(verdict.excluded_nights) == {night(5), night(6), night(7), night(8)}
    [reason] = verdict.gate.reasons
    assert "suspect nights hold 52% of the window's rows (limit 30%)" in reason
    for index in (5, 6, 7, 8):
        assert night(index) in reason


def test_too_few_labeled_rows_refuses_the_retrain(features):
    window = labeled_window(ScenarioPlan.clean(), nights=10, rows=150)

    verdict = training_window_gate(window, TARGET, features, TrainingDataGateConfig(min_rows=2000))

    assert not verdict.gate.passed
    assert verdict.excluded_nights == {}
    assert verdict.gate.reasons == ["only 1500 labeled rows remain after exclusions; at least 2000 are needed"]


def test_excluded_rows_do_not_count_toward_min_rows(features):
    window = labeled_window(ScenarioPlan.bot_attack(6, nights=2, share=0.6), nights=10, rows=500)

    verdict = training_window_gate(window, TARGET, features, TrainingDataGateConfig(min_rows=4500))

    assert not verdict.gate.passed  # 5600 rows, but only 4000 remain once the two attack nights are excluded
    assert verdict.gate.reasons == ["only 4000 labeled rows remain after exclusions; at least 4500 are needed"]


def test_fewer_nights_than_min_nights_to_judge_excludes_nothing(features):
    window = labeled_window(ScenarioPlan.bot_attack(3, nights=1, share=0.6), nights=4, rows=600)

    verdict = training_window_gate(window, TARGET, features, TrainingDataGateConfig(min_nights_to_judge=5))

    assert verdict.excluded_nights == {}
    assert verdict.gate.passed, verdict.gate.reasons
    assert verdict.per_night.height == 4  # the per-night figures are still reported


def test_empty_window_is_refused(features):
    window = labeled_window(ScenarioPlan.clean(), nights=1, rows=10).head(0)

    verdict = training_window_gate(window, TARGET, features, TrainingDataGateConfig())

    assert not verdict.gate.passed
    assert verdict.gate.reasons == ["the training window holds no labeled rows"]


CODES = Contract(
    entity_id="id", target="y", features={f"code_{i}": FeatureSpec(dtype="int", min=0, max=12) for i in range(4)}
)


def codes_window(nights: int = 10, rows: int = 500) -> pl.DataFrame:
    """Nights of four low-cardinality integer codes (synthesized from a contract): ~7% of each night's rows repeat
    another row's feature vector, naturally, every night."""
    return pl.concat(
        [
            synthesize(CODES, rows, seed=index, id_prefix=f"N{index}-").with_columns(
                pl.lit(date.fromisoformat(night(index))).alias("partition_date")
            )
            for index in range(nights)
        ]
    )


def test_natural_duplicates_of_low_cardinality_codes_exclude_no_night_and_do_not_refuse_the_retrain():
    window = codes_window()

    verdict = training_window_gate(window, "y", feature_cards(CODES), TrainingDataGateConfig(min_rows=2000))

    assert verdict.per_night["duplicate_share"].min() > 0.05  # above the old fixed 5 % every night
    assert verdict.excluded_nights == {}
    assert verdict.gate.passed, verdict.gate.reasons


def test_a_bot_burst_of_exact_copies_is_still_excluded_against_the_datasets_own_duplicate_rate():
    window = codes_window()
    burst_night = date.fromisoformat(night(4))
    copies = pl.concat([window.filter(pl.col("partition_date") == burst_night).head(1)] * 60).with_columns(
        pl.format("bot-{}", pl.int_range(pl.len())).alias("id")
    )

    verdict = training_window_gate(
        pl.concat([window, copies]), "y", feature_cards(CODES), TrainingDataGateConfig(min_rows=2000)
    )

    assert list(verdict.excluded_nights) == [night(4)]
    assert "repeat a near-identical feature vector (the window's nights: median" in verdict.excluded_nights[night(4)]
    assert verdict.gate.passed, verdict.gate.reasons


def test_thirty_nights_of_the_duplicate_codes_world_pass_the_gate_with_its_own_config():
    world = duplicate_codes_world(nights=30)
    config = ProjectConfig.model_validate(world.config())
    window = pl.concat(
        [world.labeled_night(n).with_columns(pl.lit(n).alias("partition_date")) for n in world.batch_nights()]
    )

    verdict = training_window_gate(window, world.target, feature_cards(config.contract), config.lifecycle.data_gate)

    assert (
        verdict.per_night["duplicate_share"].median() > 0.05
    )  # the world's natural repeats, above the old fixed limit
    assert verdict.excluded_nights == {}
    assert verdict.gate.passed, verdict.gate.reasons


# ----------------------------------------------------------------------------------------------- never-worse gate


@pytest.fixture(scope="module")
def holdout() -> pl.DataFrame:
    """Three labeled nights after the training history, 1000 rows each."""
    return simulate_history(HOLDOUT_END, days=3, rows_per_day=1000, seed=7)


@pytest.fixture(scope="module")
def champion_scores(core_trained: TrainedModel, holdout: pl.DataFrame) -> np.ndarray:
    return core_trained.booster.predict(feature_matrix(holdout, core_trained.card.features))


@pytest.fixture(scope="module")
def gate_config() -> PromotionGateConfig:
    return PromotionGateConfig(
        segments=["region", "channel"], min_segment_rows=100, bootstrap_samples=100, max_latency_ratio=2.0
    )


def judge(
    holdout: pl.DataFrame,
    champion: np.ndarray,
    candidate: np.ndarray,
    config: PromotionGateConfig,
    latency: float = 1.0,
):
    return never_worse_gate(holdout, TARGET, champion, candidate, THRESHOLD, VALUE, latency, config)


def test_identical_scores_pass_the_never_worse_gate(holdout, champion_scores, gate_config):
    result = judge(holdout, champion_scores, champion_scores.copy(), gate_config)

    assert result.passed, result.reasons
    assert result.reasons == []
    assert result.metrics["auc_candidate"] == result.metrics["auc_champion"]
    assert result.metrics["auc_difference_ci_low"] == 0.0 == result.metrics["auc_difference_ci_high"]
    assert result.metrics["rows"] == 3000.0


def test_a_one_tree_candidate_fails_with_an_auc_reason(
    core_make_config, core_history, tmp_path, holdout, champion_scores, gate_config
):
    def one_tree(raw: dict) -> None:
        raw["model"]["num_boost_round"] = 1

    weak = train_model(core_history, core_make_config(tmp_path, one_tree))
    candidate = weak.booster.predict(feature_matrix(holdout, weak.card.features))

    result = judge(holdout, champion_scores, candidate, gate_config)

    assert not result.passed
    assert result.metrics["auc_candidate"] < result.metrics["auc_champion"] - 0.01
    auc_reasons = [r for r in result.reasons if r.startswith("AUC ")]
    assert len(auc_reasons) == 1
    assert f"reaches below −{gate_config.auc_tolerance}" in auc_reasons[0]


def test_noisy_candidate_scores_fail_with_an_auc_reason(holdout, champion_scores, gate_config):
    noise = np.random.default_rng(0).normal(0, 0.15, len(champion_scores))
    candidate = np.clip(champion_scores + noise, 0, 1)

    result = judge(holdout, champion_scores, candidate, gate_config)

    assert not result.passed
    assert any(r.startswith("AUC ") for r in result.reasons), result.reasons
    assert result.metrics["auc_difference_ci_high"] < 0


def scores_of_a_known_model(rows: int = 3000) -> tuple[pl.DataFrame, np.ndarray]:
    """A holdout whose labels are drawn from the scores themselves: those scores are the best ranking there is."""
    rng = np.random.default_rng(3)
    truth = 1 / (1 + np.exp(-(rng.normal(0, 1, rows) - 1)))
    return pl.DataFrame({TARGET: (rng.random(rows) < truth).astype(np.int8)}), truth


def test_by_default_a_candidate_slightly_worse_within_noise_is_not_promoted():
    # the champion keeps the benefit of the doubt: a candidate needs evidence it is better, not just no proof it is
    # worse (a 2,000–3,000-row holdout cannot tell −0.001 AUC from 0, and promoting noise costs AUC for good)
    holdout, champion = scores_of_a_known_model()
    candidate = np.clip(champion + np.random.default_rng(1).normal(0, 0.02, len(champion)), 0, 1)

    result = judge(holdout, champion, candidate, PromotionGateConfig())

    assert -0.005 < result.metrics["auc_difference_ci_low"] < 0
    assert not result.passed and result.reasons[0].startswith("AUC ")


def test_by_default_a_candidate_better_beyond_noise_is_promoted():
    holdout, truth = scores_of_a_known_model()
    champion = np.clip(truth + np.random.default_rng(1).normal(0, 0.15, len(truth)), 0, 1)

    result = judge(holdout, champion, truth, PromotionGateConfig(brier_tolerance=1.0))

    assert result.metrics["auc_difference_ci_low"] > 0
    assert result.passed, result.reasons


def test_a_segment_worse_beyond_tolerance_fails_naming_the_segment_level(holdout, champion_scores, gate_config):
    north = (holdout["region"] == "north").to_numpy()
    candidate = champion_scores.copy()
    candidate[north] = np.random.default_rng(1).permutation(champion_scores[north])  # random ranking inside north only

    result = judge(holdout, champion_scores, candidate, gate_config.model_copy(update={"segments": ["region"]}))

    assert not result.passed
    segment_reasons = [r for r in result.reasons if r.startswith("segment ")]
    assert len(segment_reasons) == 1, segment_reasons  # the other regions keep the champion's scores
    assert segment_reasons[0].startswith("segment region=north: AUC lower by")
    assert "(tolerance 0.03)" in segment_reasons[0]


def test_segments_smaller_than_min_segment_rows_are_not_judged(holdout, champion_scores, gate_config):
    north = (holdout["region"] == "north").to_numpy()
    candidate = champion_scores.copy()
    candidate[north] = np.random.default_rng(1).permutation(champion_scores[north])
    config = gate_config.model_copy(
        update={
            "min_segment_rows": int(north.sum()) + 1,
            "auc_tolerance": 1.0,
            "brier_tolerance": 1.0,
            "business_value_tolerance": 1.0,
        }
    )

    result = judge(holdout, champion_scores, candidate, config)

    assert not any(r.startswith("segment region=") for r in result.reasons), result.reasons


def test_latency_ratio_above_the_limit_fails(holdout, champion_scores, gate_config):
    result = judge(holdout, champion_scores, champion_scores.copy(), gate_config, latency=2.5)

    assert not result.passed
    assert result.reasons == ["scoring takes 2.5× the champion's time (limit 2.0×)"]
    assert result.metrics["latency_ratio"] == 2.5


def test_latency_ratio_at_the_limit_passes(holdout, champion_scores, gate_config):
    result = judge(holdout, champion_scores, champion_scores.copy(), gate_config, latency=2.0)

    assert result.passed, result.reasons


def test_a_worse_calibrated_candidate_with_the_same_ranking_fails_on_brier(holdout, champion_scores, gate_config):
    candidate = 0.5 + 0.5 * (champion_scores - 0.5)  # same order (same AUC everywhere), squeezed toward 0.5
    config = gate_config.model_copy(update={"business_value_tolerance": 10.0})

    result = judge(holdout, champion_scores, candidate, config)

    assert not result.passed
    assert len(result.reasons) == 1 and result.reasons[0].startswith("Brier "), result.reasons


def test_a_candidate_losing_business_value_fails_naming_it(holdout, champion_scores, gate_config):
    candidate = np.clip(champion_scores + 0.25, 0, 1)  # same ranking, but declines far too many good customers
    config = gate_config.model_copy(update={"brier_tolerance": 1.0, "auc_tolerance": 1.0})

    result = judge(holdout, champion_scores, candidate, config)

    assert not result.passed
    assert any(r.startswith("business value ") for r in result.reasons), result.reasons
    assert result.metrics["business_value_candidate"] < result.metrics["business_value_champion"]


def test_single_class_holdout_fails_with_a_clear_reason(holdout, champion_scores, gate_config):
    all_good = holdout.with_columns(pl.lit(0, pl.Int8).alias(TARGET))

    result = judge(all_good, champion_scores, champion_scores.copy(), gate_config)

    assert not result.passed
    assert result.reasons == ["the holdout has a single class; the models cannot be compared"]
    assert result.metrics == {"rows": 3000.0}


def test_business_value_counts_each_outcome_by_hand():
    labels = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.2, 0.6, 0.1, 0.5])  # at threshold 0.5: TP, FN, FP, TN, FP (0.5 >= 0.5 is positive)
    value = BusinessValue(true_positive=10, false_positive=-3, true_negative=2, false_negative=-20)

    assert business_value(labels, scores, 0.5, value) == 10 - 20 - 3 + 2 - 3


def test_business_value_with_every_row_declined_counts_only_positives():
    labels = np.array([1, 0, 0, 1])
    scores = np.array([0.8, 0.7, 0.99, 0.6])
    value = BusinessValue(true_positive=5, false_positive=-1, true_negative=100, false_negative=-100)

    assert business_value(labels, scores, 0.5, value) == 2 * 5 + 2 * -1


def test_latency_ratio_is_neutral_when_both_models_score_below_the_noise_floor():
    floor = LATENCY_NOISE_FLOOR_SECONDS_PER_ROW
    assert latency_ratio(floor / 10 * 8.5, floor / 10) == 1.0  # an 8.5× flake between two cheap timings


def test_latency_ratio_compares_the_models_when_one_is_above_the_noise_floor():
    floor = LATENCY_NOISE_FLOOR_SECONDS_PER_ROW
    assert latency_ratio(floor * 3, floor) == pytest.approx(3.0)


def test_a_candidate_identical_to_the_champion_never_fails_the_latency_rule(
    core_trained: TrainedModel,
    holdout: pl.DataFrame,
    champion_scores: np.ndarray,
    gate_config: PromotionGateConfig,
    tmp_path,
):
    with warehouse.connect(tmp_path / "warehouse.duckdb") as connection:
        record = registry.register(connection, core_trained.card, save_artifact(core_trained, tmp_path / "models"))
    latency_only = gate_config.model_copy(update={"bootstrap_samples": 20})  # the AUC interval is not read here
    for _ in range(3):
        _, champion_seconds = _timed_scores(record, holdout)
        _, candidate_seconds = _timed_scores(record, holdout)
        result = judge(
            holdout,
            champion_scores,
            champion_scores.copy(),
            latency_only,
            latency_ratio(candidate_seconds, champion_seconds),
        )
        assert not any("scoring takes" in reason for reason in result.reasons), result.metrics["latency_ratio"]
