"""Performance: realized metrics once labels land (checked against sklearn and hand counts, on outcomes of the real
pipeline with a real LightGBM model), CBPE estimates from calibrated scores before they land, the calibration check
that says whether to trust the estimate, and the concept-drift blind spot that is why both exist."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import brier_score_loss, precision_score, recall_score, roc_auc_score

from nightkeeper.config import BusinessValue, DecisionConfig, ProjectConfig
from nightkeeper.examples.simulator import ENTITY_ID, TARGET, Scenario, simulate_night
from nightkeeper.ingest import read_raw_batch
from nightkeeper.outcomes import OUTCOME_SCHEMA, Fallback, assemble_outcomes
from nightkeeper.performance import (
    ESTIMATED_SCHEMA,
    REALIZED_SCHEMA,
    calibration_check,
    estimate_performance,
    estimated_performance,
    latest_realized,
    performance_metrics,
    performance_table,
    plot_performance,
    realized_performance,
)
from nightkeeper.scoring import score_batch
from nightkeeper.training import TrainedModel
from nightkeeper.validation import validate

NIGHTS = [date(2024, 5, 1), date(2024, 5, 2)]
ROWS = 800
SEED = 7
NO_VALUE = BusinessValue()
HALF = DecisionConfig(threshold=0.5)


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, core_config: ProjectConfig, core_trained: TrainedModel
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Outcomes of two nights through the real pipeline (the second a bad-data night, so fallback and quarantine
    rows exist) scored by a real LightGBM model, and the simulator's true labels as stored labels."""
    folder = tmp_path_factory.mktemp("performance")
    outcomes, labels = [], []
    for night, scenario in zip(NIGHTS, (Scenario(), Scenario(bad_data=True)), strict=True):
        data = simulate_night(night, ROWS, SEED, scenario)
        path = folder / f"{night}.parquet"
        data.applications.write_parquet(path)
        raw = read_raw_batch([path], night, core_config.contract).frame
        validation = validate(raw, core_config.contract)
        scored = score_batch(validation.valid, core_trained.booster, core_trained.card, 1_000, 300).frame
        fallback = Fallback(core_trained.card.fallback, core_trained.card.version)
        outcomes.append(
            assemble_outcomes(raw, validation.quarantine, scored, fallback, core_config.model.decision, True)
        )
        labels.append(
            data.labels.select(
                pl.col(ENTITY_ID).alias("entity_id"),
                pl.lit(night).alias("partition_date"),
                pl.col(TARGET).alias("label"),
            )
        )
    return pl.concat(outcomes), pl.concat(labels)


def synthetic_night(
    night: date, scores: np.ndarray, labels: np.ndarray | None, version: str = "v1"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Model outcomes of one night with the given scores, and their labels (None: no labels yet)."""
    ids = [f"{night:%Y%m%d}-{i}" for i in range(len(scores))]
    outcomes = pl.DataFrame(
        {
            "partition_date": [night] * len(scores),
            "source_file": ["f.parquet"] * len(scores),
            "row_number": range(1, len(scores) + 1),
            "entity_id": ids,
            "source": ["model"] * len(scores),
            "decision": ["n/a"] * len(scores),
            "score": scores,
            "confidence": [None] * len(scores),
            "model_version": [version] * len(scores),
            "latency_ms": [None] * len(scores),
            "reason": [None] * len(scores),
        },
        schema=OUTCOME_SCHEMA,
    )
    frame = pl.DataFrame(
        {"entity_id": ids, "partition_date": [night] * len(scores), "label": labels},
        schema={"entity_id": pl.String, "partition_date": pl.Date, "label": pl.Int8},
    )
    return outcomes, frame if labels is not None else frame.clear()


def calibrated(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores p and labels drawn as Bernoulli(p): perfectly calibrated by construction."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(-1.5, 1.5, rows)))
    return p, (rng.random(rows) < p).astype(np.int8)


def test_realized_metrics_equal_sklearn_on_the_same_rows(
    pipeline: tuple[pl.DataFrame, pl.DataFrame], core_config: ProjectConfig
) -> None:
    outcomes, labels = pipeline
    decision = core_config.model.decision

    table = realized_performance(outcomes, labels, decision, NO_VALUE, min_labeled_rows=100, sources=("model",))

    assert dict(table.schema) == REALIZED_SCHEMA
    assert table["partition_date"].to_list() == NIGHTS
    for row in table.iter_rows(named=True):
        rows = outcomes.filter((pl.col("partition_date") == row["partition_date"]) & (pl.col("source") == "model"))
        joined = rows.join(labels, on=["entity_id", "partition_date"])
        y, s = joined["label"].to_numpy(), joined["score"].to_numpy()
        assert row["rows"] == row["labeled_rows"] == rows.height == joined.height
        assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert row["precision"] == pytest.approx(precision_score(y, s >= decision.threshold), abs=1e-12)
        assert row["recall"] == pytest.approx(recall_score(y, s >= decision.threshold), abs=1e-12)
        assert row["brier"] == pytest.approx(brier_score_loss(y, s), abs=1e-12)
        assert row["positive_rate"] == pytest.approx(y.mean(), abs=1e-12)


def test_fallback_and_quarantine_rows_are_left_out_of_realized_metrics(
    pipeline: tuple[pl.DataFrame, pl.DataFrame], core_config: ProjectConfig
) -> None:
    outcomes, labels = pipeline
    bad_night = outcomes.filter(pl.col("partition_date") == NIGHTS[1])
    assert bad_night.filter(pl.col("source") != "model").height > 0

    table = realized_performance(outcomes, labels, core_config.model.decision, NO_VALUE, min_labeled_rows=100)

    assert table.filter(pl.col("partition_date") == NIGHTS[1])["rows"].to_list() == [
        bad_night.filter(pl.col("source") == "model").height
    ]
    assert set(table["source"]) == {"model"}


def test_business_value_equals_a_hand_count(tmp_path: Path) -> None:
    scores = np.array([0.9, 0.8, 0.2, 0.1, 0.6, 0.4])
    labels = np.array([1, 0, 1, 0, 1, 0])  # at 0.5: TP 0.9, 0.6; FP 0.8; FN 0.2; TN 0.1, 0.4
    value = BusinessValue(true_positive=100, false_positive=-50, true_negative=2, false_negative=-300)
    outcomes, stored = synthetic_night(NIGHTS[0], scores, labels)

    row = realized_performance(outcomes, stored, HALF, value, min_labeled_rows=1).row(0, named=True)

    assert (row["true_positives"], row["false_positives"], row["true_negatives"], row["false_negatives"]) == (
        2,
        1,
        2,
        1,
    )
    assert row["business_value"] == 2 * 100 - 50 + 2 * 2 - 300
    assert row["business_value_per_row"] == pytest.approx(-146 / 6)


def test_nights_below_min_labeled_rows_give_no_auc() -> None:
    scores, labels = calibrated(1_000, seed=1)
    outcomes, stored = synthetic_night(NIGHTS[0], scores, labels)
    partial = stored[:200]

    too_few = realized_performance(outcomes, partial, HALF, NO_VALUE, min_labeled_rows=201).row(0, named=True)
    enough = realized_performance(outcomes, partial, HALF, NO_VALUE, min_labeled_rows=200).row(0, named=True)

    assert (too_few["rows"], too_few["labeled_rows"], too_few["label_coverage"]) == (1_000, 200, 0.2)
    assert too_few["auc"] is None and too_few["precision"] is None and too_few["business_value"] is None
    assert enough["auc"] is not None


def test_night_without_labels_has_zero_coverage_and_no_metrics() -> None:
    scores, _ = calibrated(500, seed=2)
    outcomes, no_labels = synthetic_night(NIGHTS[0], scores, None)

    row = realized_performance(outcomes, no_labels, HALF, NO_VALUE, min_labeled_rows=1).row(0, named=True)

    assert (row["rows"], row["labeled_rows"], row["label_coverage"], row["auc"]) == (500, 0, 0.0, None)


def test_one_class_night_gives_no_auc() -> None:
    scores, _ = calibrated(300, seed=3)
    outcomes, stored = synthetic_night(NIGHTS[0], scores, np.zeros(300, dtype=np.int8))

    row = realized_performance(outcomes, stored, HALF, NO_VALUE, min_labeled_rows=1).row(0, named=True)

    assert row["auc"] is None and row["recall"] is None
    assert row["brier"] == pytest.approx(float(np.mean(scores**2)))


def test_realized_metrics_are_per_model_version() -> None:
    champion = synthetic_night(NIGHTS[0], *calibrated(400, seed=4), version="champion-v")
    canary = synthetic_night(NIGHTS[0], *calibrated(100, seed=5), version="canary-v")
    outcomes = pl.concat(
        [champion[0], canary[0].with_columns(pl.lit("canary").alias("source"), pl.col("entity_id") + "-c")]
    )
    labels = pl.concat([champion[1], canary[1].with_columns(pl.col("entity_id") + "-c")])

    table = realized_performance(outcomes, labels, HALF, NO_VALUE, min_labeled_rows=1)

    assert table.select("source", "model_version", "rows").rows() == [
        ("canary", "canary-v", 100),
        ("model", "champion-v", 400),
    ]


def test_cbpe_estimate_on_a_tiny_example_matches_the_formulas() -> None:
    estimate = estimate_performance(
        np.array([0.9, 0.2]), threshold=0.5, value=BusinessValue(true_positive=10, false_negative=-1)
    )

    assert (estimate["true_positives"], estimate["false_positives"]) == pytest.approx((0.9, 0.1))
    assert (estimate["false_negatives"], estimate["true_negatives"]) == pytest.approx((0.2, 0.8))
    assert estimate["precision"] == pytest.approx(0.9)
    assert estimate["recall"] == pytest.approx(0.9 / 1.1)
    assert estimate["accuracy"] == pytest.approx(1.7 / 2)
    assert estimate["business_value"] == pytest.approx(0.9 * 10 - 0.2)


def test_cbpe_auc_of_identical_scores_is_one_half() -> None:
    assert estimate_performance(np.full(100, 0.3), 0.5, NO_VALUE)["auc"] == pytest.approx(0.5)


def test_cbpe_on_calibrated_scores_estimates_within_two_points_of_realized() -> None:
    scores, labels = calibrated(50_000, seed=11)
    outcomes, stored = synthetic_night(NIGHTS[0], scores, labels)
    decision = DecisionConfig(threshold=0.3)

    estimated = estimated_performance(outcomes, decision, NO_VALUE).row(0, named=True)
    realized = realized_performance(outcomes, stored, decision, NO_VALUE, min_labeled_rows=200).row(0, named=True)

    for metric in ("auc", "precision", "recall", "positive_rate"):
        assert estimated[metric] == pytest.approx(realized[metric], abs=0.02), metric


def test_calibration_check_trusts_calibrated_scores() -> None:
    scores, labels = calibrated(20_000, seed=12)

    result = calibration_check(scores, labels, bins=10, max_calibration_error=0.05)

    assert result.trustworthy
    assert result.ece < 0.02
    assert result.bins["rows"].sum() == 20_000 and result.bins.height == 10


def test_calibration_check_flags_miscalibrated_scores() -> None:
    scores, labels = calibrated(20_000, seed=12)

    result = calibration_check(scores**3, labels, bins=10, max_calibration_error=0.05)

    assert not result.trustworthy
    assert result.ece > 0.05 and result.max_gap >= result.ece
    assert (result.bins["gap"] <= 0).all()  # cubed probabilities understate the risk in every bin


def test_cbpe_cannot_see_concept_drift_but_realized_can() -> None:
    before_scores, before_labels = calibrated(20_000, seed=21)
    after_scores, _ = calibrated(20_000, seed=22)
    rng = np.random.default_rng(23)
    flipped = (rng.random(after_scores.size) < 1 - after_scores).astype(np.int8)  # same features, reversed relationship
    nights = [
        synthetic_night(NIGHTS[0], before_scores, before_labels),
        synthetic_night(NIGHTS[1], after_scores, flipped),
    ]
    outcomes, labels = pl.concat([n[0] for n in nights]), pl.concat([n[1] for n in nights])

    realized = realized_performance(outcomes, labels, HALF, NO_VALUE, min_labeled_rows=200)["auc"].to_list()
    estimated = estimated_performance(outcomes, HALF, NO_VALUE)["auc"].to_list()

    assert realized[0] == pytest.approx(estimated[0], abs=0.02)
    assert estimated[1] == pytest.approx(estimated[0], abs=0.01)  # the scores look as good as before
    assert realized[1] < realized[0] - 0.3  # the labels tell the truth


def test_performance_metrics_are_flat_named_and_leave_out_missing_numbers() -> None:
    scores, labels = calibrated(1_000, seed=31)
    outcomes, stored = synthetic_night(NIGHTS[0], scores, labels)
    realized = realized_performance(outcomes, stored[:50], HALF, NO_VALUE, min_labeled_rows=200).row(0, named=True)
    estimated = estimate_performance(scores, 0.5, NO_VALUE)
    calibration = calibration_check(scores**3, labels)

    metrics = performance_metrics(realized, estimated, calibration)

    assert "performance.realized_auc" not in metrics  # 50 labeled rows are too few
    assert metrics["performance.labeled_rows"] == 50.0 and metrics["performance.label_coverage"] == 0.05
    assert metrics["performance.estimated_auc"] == estimated["auc"]
    assert metrics["performance.calibration_error"] == calibration.ece
    assert metrics["performance.estimate_trustworthy"] == 0.0
    assert all(name.startswith("performance.") and isinstance(v, float) for name, v in metrics.items())
    assert performance_metrics(None, None, None) == {}


def test_performance_metrics_can_keep_missing_numbers_as_none() -> None:
    metrics = performance_metrics(None, None, None, include_missing=True)

    assert metrics["performance.realized_auc"] is None and metrics["performance.estimate_trustworthy"] is None
    assert set(metrics) >= {
        "performance.estimated_auc",
        "performance.realized_business_value",
        "performance.calibration_error",
    }


def test_latest_realized_is_the_latest_night_with_enough_labels() -> None:
    frames = [synthetic_night(NIGHTS[0] + timedelta(days=i), *calibrated(500, seed=50 + i)) for i in range(3)]
    outcomes = pl.concat([f[0] for f in frames])
    labels = pl.concat([frames[0][1], frames[1][1], frames[2][1][:100]])  # the last night's labels are still arriving
    realized = realized_performance(outcomes, labels, HALF, NO_VALUE, min_labeled_rows=200)

    latest = latest_realized(realized)

    assert latest is not None and latest["partition_date"] == NIGHTS[0] + timedelta(days=1)
    assert latest_realized(realized.clear()) is None


def test_plot_performance_writes_a_png_of_realized_and_estimated_auc(tmp_path: Path) -> None:
    frames = [synthetic_night(NIGHTS[0] + timedelta(days=i), *calibrated(2_000, seed=40 + i)) for i in range(5)]
    outcomes = pl.concat([f[0] for f in frames])
    labels = pl.concat([f[1] for f in frames[:3]])  # the last two nights have no labels yet
    table = performance_table(
        realized_performance(outcomes, labels, HALF, NO_VALUE, min_labeled_rows=200),
        estimated_performance(outcomes, HALF, NO_VALUE),
    )
    assert table["realized_auc"].null_count() == 2 and table["estimated_auc"].null_count() == 0
    assert table["labeled_rows"].to_list() == [2_000] * 3 + [0] * 2

    path = plot_performance(table, tmp_path / "plots" / "performance.png")

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000


def test_estimated_performance_has_its_schema_even_when_nothing_was_scored() -> None:
    outcomes, _ = synthetic_night(NIGHTS[0], np.array([]), None)

    assert dict(estimated_performance(outcomes, HALF, NO_VALUE).schema) == ESTIMATED_SCHEMA
