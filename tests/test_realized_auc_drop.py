"""The realized-AUC drop pages only beyond chance: a week of small nights wanders further from the champion's holdout
AUC than a week of large nights, and a small holdout is itself uncertain, so the drop the shipped rule reads
(``performance.realized_auc_drop_beyond_noise``) counts only beyond ``drop_noise_z`` standard errors of the
difference.
Issue #9: most alerts in stationary worlds of 150–600-row nights came from the raw drop crossing 0.03 by chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from nightkeeper import metric_names
from nightkeeper.config import PerformanceConfig
from nightkeeper.performance import auc_drop_beyond_noise

SHIPPED = yaml.safe_load((Path(__file__).resolve().parents[1] / "nightkeeper.yaml").read_text())
Z = PerformanceConfig().drop_noise_z
LIMIT = 0.03  # the shipped rule's threshold


def labeled(rows: int, rng: np.random.Generator, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a model and labels drawn from the truth; ``signal`` below 1 weakens the truth's link to the score
    (concept drift: the model ranks worse)."""
    logit = rng.normal(-1.5, 1.3, rows)
    truth = 1 / (1 + np.exp(-(signal * logit + (1 - signal) * rng.normal(-1.5, 1.3, rows))))
    return 1 / (1 + np.exp(-logit)), (rng.random(rows) < truth).astype(np.int8)


def holdout_metrics(rows: int, rng: np.random.Generator) -> dict[str, float]:
    scores, labels = labeled(rows, rng)
    return {"auc": float(roc_auc_score(labels, scores)), "rows": float(rows), "positive_rate": float(labels.mean())}


def pooled(rows: int, rng: np.random.Generator, signal: float = 1.0) -> dict[str, float]:
    scores, labels = labeled(rows, rng, signal)
    return {"auc": float(roc_auc_score(labels, scores)), "labeled_rows": float(rows), "positives": float(labels.sum())}


def test_weeks_of_small_stable_nights_cross_the_raw_limit_by_chance_but_never_beyond_noise():
    rng = np.random.default_rng(0)
    holdout = holdout_metrics(2_000, rng)
    weeks = [pooled(7 * 150, rng) for _ in range(300)]

    raw = [holdout["auc"] - week["auc"] for week in weeks]
    beyond = [auc_drop_beyond_noise(holdout, week, Z) for week in weeks]

    assert sum(drop > LIMIT for drop in raw) >= 5  # the old rule: a false alarm every few weeks
    assert max(beyond) <= LIMIT


def test_a_real_drop_on_large_nights_counts_whole():
    rng = np.random.default_rng(1)
    holdout = holdout_metrics(40_000, rng)
    week = pooled(7 * 20_000, rng, signal=0.6)

    drop = holdout["auc"] - week["auc"]

    assert drop > 0.05
    assert auc_drop_beyond_noise(holdout, week, Z) == pytest.approx(drop)


def test_a_small_holdout_makes_the_same_drop_within_chance_for_the_champions_whole_life():
    rng = np.random.default_rng(2)
    week = pooled(7 * 2_000, rng)
    small, large = holdout_metrics(300, rng), holdout_metrics(30_000, rng)
    small["auc"] = large["auc"] = week["auc"] + 0.045  # the same drop, against a holdout of 300 rows or of 30,000

    assert auc_drop_beyond_noise(small, week, Z) == 0.0
    assert auc_drop_beyond_noise(large, week, Z) == pytest.approx(0.045)


def test_a_card_without_holdout_rows_counts_its_holdout_as_exact():
    rng = np.random.default_rng(3)
    week = pooled(7 * 2_000, rng)
    counted, exact = holdout_metrics(300, rng), {"auc": week["auc"] + 0.045}
    counted["auc"] = exact["auc"]

    assert auc_drop_beyond_noise(counted, week, Z) == 0.0 < auc_drop_beyond_noise(exact, week, Z)


def test_the_shipped_realized_auc_drop_rule_reads_the_drop_beyond_noise():
    [rule] = [r for r in SHIPPED["monitoring"]["alerts"]["rules"] if r["name"] == "realized-auc-drop"]

    assert rule["metric"] == metric_names.REALIZED_AUC_DROP_BEYOND_NOISE
