"""Estimate trust: CBPE's estimate drives health checks and alerts only where it matched reality — the serving
model's latest labels (or its holdout before they land), including the chance wander of one night's realized AUC —
and the reason is recorded beside the verdict. Unit cases on calibrated and shifted scores; scenario runs on the
simulator's base-rate-drift and weak-model worlds, labels 5 nights late."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from test_performance_incremental import store_partition

from nightkeeper import warehouse
from nightkeeper.artifacts import load_verified
from nightkeeper.config import PerformanceConfig, load_config
from nightkeeper.examples import worlds
from nightkeeper.ingest import read_raw_batch
from nightkeeper.models import bootstrap_champion
from nightkeeper.outcomes import Fallback, assemble_outcomes
from nightkeeper.performance import estimate_performance, estimate_trust
from nightkeeper.pipeline import monitoring
from nightkeeper.scoring import score_batch
from nightkeeper.validation import validate

SETTINGS = PerformanceConfig()
HOLDOUT = {"auc": 0.80, "estimated_auc": 0.80}


def calibrated(rows: int, seed: int, label_scale: float = 1.0) -> tuple[pl.DataFrame, dict[str, object]]:
    """Labeled rows whose labels are drawn from their scores (times ``label_scale``: below 1, the base rate fell),
    and tonight's CBPE estimate for as many fresh rows."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(2, 5, rows)
    labels = (rng.random(rows) < scores * label_scale).astype(np.int8)
    tonight = rng.beta(2, 5, rows)
    return pl.DataFrame({"score": scores, "label": labels}), {
        "rows": rows,
        **estimate_performance(tonight, 0.5, SETTINGS.business_value),
    }


def test_an_estimate_that_matched_the_labels_on_large_nights_is_trusted():
    labeled, tonight = calibrated(40_000, seed=1)

    trust = estimate_trust(labeled, None, HOLDOUT, tonight, SETTINGS)

    assert trust.trusted and trust.evidence == "labels", trust.reason
    assert abs(trust.auc_gap) < 0.01 and abs(trust.positive_rate_gap) < 0.01


def test_a_fallen_base_rate_makes_the_estimate_untrusted_and_says_so():
    labeled, tonight = calibrated(40_000, seed=2, label_scale=0.5)

    trust = estimate_trust(labeled, None, HOLDOUT, tonight, SETTINGS)

    assert not trust.trusted
    assert trust.positive_rate_gap > 0.1 and "base rate moved" in trust.reason


def test_a_small_night_cannot_promise_the_gap_even_with_a_perfect_estimate():
    labeled, tonight = calibrated(40_000, seed=3)
    tonight["rows"] = 300  # one night's realized AUC on 300 rows wanders by about ±0.03 by chance

    trust = estimate_trust(labeled, None, HOLDOUT, tonight, SETTINGS)

    assert not trust.trusted and "wanders" in trust.reason


def test_before_labels_the_holdout_is_the_evidence_and_without_it_nothing_is_trusted():
    _, tonight = calibrated(40_000, seed=4)
    no_labels = pl.DataFrame(schema={"score": pl.Float64, "label": pl.Int8})

    from_holdout = estimate_trust(no_labels, None, HOLDOUT, tonight, SETTINGS)
    off_holdout = estimate_trust(no_labels, None, {"auc": 0.70, "estimated_auc": 0.79}, tonight, SETTINGS)
    nothing = estimate_trust(no_labels, None, None, tonight, SETTINGS)

    assert from_holdout.trusted and from_holdout.evidence == "holdout"
    assert not off_holdout.trusted and "holdout" in off_holdout.reason
    assert not nothing.trusted and nothing.evidence == "none"


def run_world(world: worlds.World, folder: Path) -> pl.DataFrame:
    """Answer every night of ``world`` with a champion trained on its history, run the labels and performance steps
    (labels 5 nights late); per night: realized AUC (with every label, known later), the estimate, the verdict."""
    files = worlds.write_world(world, folder, label_delay=5)
    raw = yaml.safe_load(files.config.read_text())
    raw["model"]["num_boost_round"] = 60  # a test-sized model; the worlds' CBPE errors hold at this size
    files.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(files.config)
    champion = bootstrap_champion(config, pl.read_parquet(files.history), files.nights[0])
    booster, card = load_verified(champion), champion.card
    for night in files.nights:
        batch = read_raw_batch([files.batches / night.isoformat() / "batch.parquet"], night, config.contract).frame
        checked = validate(batch, config.contract)
        scored = score_batch(checked.valid, booster, card, 10_000, 300).frame
        outcomes = assemble_outcomes(
            batch,
            checked.quarantine,
            scored,
            Fallback(card.fallback, card.version),
            config.model.decision,
            True,
        )
        with warehouse.connect(config.warehouse_path) as connection:
            store_partition(connection, "outcomes", night, outcomes)
            monitoring.labels_night(config, connection, night)
            result = monitoring.performance_night(config, connection, night, plots=False)
        assert result.metadata["estimate_trust_reason"]
        assert result.checks["estimate_trustworthy"].passed == result.metadata["estimate_trusted"]
    with warehouse.connect(config.warehouse_path) as connection:
        realized = connection.execute(
            "select partition_date as night, auc as realized_auc from monitoring.performance_realized "
            "where source = 'model'"
        ).pl()
        metrics = connection.execute(
            "select night, metric, value from monitoring.night_metrics where metric in "
            "('performance.estimated_auc', 'performance.estimate_trusted', 'performance.estimated_auc_drop')"
        ).pl()
    wide = metrics.pivot(on="metric", index="night", values="value")
    return realized.join(wide, on="night").drop_nulls("realized_auc").sort("night")


def assert_untrusted_wherever_off(nights: pl.DataFrame) -> None:
    off = nights.filter((pl.col("performance.estimated_auc") - pl.col("realized_auc")).abs() > 0.03)
    trusted_and_off = off.filter(pl.col("performance.estimate_trusted") == 1.0)
    assert trusted_and_off.is_empty(), trusted_and_off
    untrusted = nights.filter(pl.col("performance.estimate_trusted") == 0.0)
    assert untrusted["performance.estimated_auc_drop"].is_null().all()  # an untrusted estimate raises nothing


@pytest.mark.slow
def test_base_rate_drift_estimate_is_untrusted_on_every_night_it_is_off(tmp_path):
    world = worlds.base_rate_drift_world(nights=30, cadence="weekly", history_nights=20)

    nights = run_world(world, tmp_path)

    assert (nights["performance.estimated_auc"] - nights["realized_auc"]).abs().max() > 0.03  # the estimate does go off
    assert_untrusted_wherever_off(nights)


@pytest.mark.slow
def test_weak_model_estimate_is_untrusted_on_every_night_it_is_off(tmp_path):
    world = worlds.weak_model_world(nights=40, history_nights=20)

    nights = run_world(world, tmp_path)

    assert_untrusted_wherever_off(nights)
