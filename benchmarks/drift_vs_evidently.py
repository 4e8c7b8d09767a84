"""Drift metrics on a big night: nightkeeper's measure_drift against evidently's DataDriftPreset, side by side.

    .venv/bin/python benchmarks/drift_vs_evidently.py [--rows 1000000] [--seed 7]

Data: the credit simulator's 18 features plus two extra columns (a float and an int) = 20 features; the reference
is ``rows`` clean labeled rows (10 nights), tonight is ``rows`` rows of the next night with income x1.2 and 25% of
rows moved to region "north" (so both a numeric and a category statistic move). Scores are a fixed logistic
function of two features (the benchmark is about drift, not models).

Timed: ``fit_profile`` once (training time, not nightly); ``measure_drift`` (univariate statistics, prediction drift
and the 10k-per-side domain classifier) as the median of 3 runs; evidently's DataDriftPreset on the same reference
and tonight (pandas conversion included), once. Peak memory is the rise of the process's resident high-water mark
during each phase (Linux: reset through /proc/self/clear_refs). Figures are compared where the definitions agree
(normalised Wasserstein on numbers, Jensen-Shannon on categories; see nightkeeper.drift_report).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from proc_memory import SELF_STATUS, proc_mib, reset_peak

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nightkeeper.config import DriftConfig  # noqa: E402
from nightkeeper.drift import measure_drift  # noqa: E402
from nightkeeper.drift_report import compare_with_evidently, evidently_drift_scores  # noqa: E402
from nightkeeper.encoding import FeatureCard  # noqa: E402
from nightkeeper.examples.simulator import _LEVELS, FEATURES, REGIONS, simulate_history, simulate_night  # noqa: E402
from nightkeeper.profile import fit_profile, reference_sample  # noqa: E402

NIGHT = date(2024, 5, 1)
DECISION_THRESHOLD = 0.3


def feature_cards_20() -> list[FeatureCard]:
    dtypes = {pl.Float64(): "float", pl.Int64(): "int", pl.Boolean(): "bool", pl.String(): "category"}
    cards = [FeatureCard(name=n, dtype=dtypes[d], categories=_LEVELS.get(n)) for n, d in FEATURES.items()]
    return [*cards, FeatureCard(name="utilization", dtype="float"), FeatureCard(name="inquiries_6m", dtype="int")]


def with_extras(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return frame.with_columns(
        pl.Series("utilization", np.round(rng.beta(2.0, 3.0, frame.height), 4)),
        pl.Series("inquiries_6m", rng.poisson(1.2, frame.height), dtype=pl.Int64),
    )


def scores_of(frame: pl.DataFrame) -> np.ndarray:
    logit = -1.5 - (frame["credit_score"].to_numpy() - 650) / 60 + 1.5 * (frame["debt_to_income"].to_numpy() - 0.4)
    return 1 / (1 + np.exp(-logit))


def peak_rise(action: Callable[[], Any]) -> tuple[Any, float, float | None]:
    """Run ``action``; return its result, the seconds it took and the rise of peak RSS in MiB (None if unknown)."""
    before = proc_mib(SELF_STATUS, "VmRSS")
    reset = reset_peak()
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    peak = proc_mib(SELF_STATUS, "VmHWM")
    rise = peak - before if reset and peak is not None and before is not None else None
    return result, seconds, rise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the reference and of tonight")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3, help="runs of measure_drift (median reported)")
    args = parser.parse_args()
    features = feature_cards_20()
    config = DriftConfig()

    started = time.perf_counter()
    days = 10
    reference = with_extras(
        simulate_history(NIGHT - timedelta(days=1), days, max(args.rows // days, 1), args.seed), args.seed + 1
    )
    tonight = with_extras(simulate_night(NIGHT, args.rows, args.seed).applications, args.seed + 2)
    moved = np.random.default_rng(args.seed + 3).random(tonight.height) < 0.25
    tonight = tonight.with_columns(
        pl.col("income") * 1.2,
        pl.when(pl.Series(moved)).then(pl.lit(REGIONS[0])).otherwise(pl.col("region")).alias("region"),
    )
    reference_scores, tonight_scores = scores_of(reference), scores_of(tonight)
    sample = reference_sample(reference, features, config.domain_classifier_rows, args.seed)
    print(
        f"data: reference {reference.height:,} rows, tonight {tonight.height:,} rows, {len(features)} features "
        f"(generated in {time.perf_counter() - started:.1f} s)"
    )

    profile, fit_seconds, fit_memory = peak_rise(
        lambda: fit_profile(reference, features, reference_scores, DECISION_THRESHOLD, config, seed=args.seed)
    )
    ours_seconds, ours_memory, univariate_seconds = [], [], []
    result = None
    for run in range(args.runs):
        result, seconds, memory = peak_rise(
            partial(
                measure_drift,
                profile,
                tonight,
                tonight_scores,
                features,
                sample,
                config.domain_classifier_rows,
                run,
                id_column="application_id",
            )
        )
        ours_seconds.append(seconds)
        ours_memory.append(memory)
        started = time.perf_counter()
        measure_drift(profile, tonight, tonight_scores, features)
        univariate_seconds.append(time.perf_counter() - started)
    assert result is not None
    scores, evidently_seconds, evidently_memory = peak_rise(
        lambda: evidently_drift_scores(reference, tonight, features)
    )
    comparison = compare_with_evidently(result, profile, scores)

    ours = statistics.median(ours_seconds)
    print(
        f"profile JSON: {len(profile.model_dump_json()) / 1024:.0f} KiB, fit_profile {fit_seconds:.2f} s "
        f"(peak +{_mib(fit_memory)})"
    )
    print()
    print(f"{'':34s}{'seconds':>10s}{'peak RSS rise':>16s}")
    print(
        f"{'nightkeeper measure_drift (median)':34s}{ours:10.2f}{_mib(max(m or 0 for m in ours_memory)):>16s}"
        f"   runs: {', '.join(f'{s:.2f}' for s in ours_seconds)}; without domain classifier: "
        f"{statistics.median(univariate_seconds):.2f} s"
    )
    print(f"{'evidently DataDriftPreset':34s}{evidently_seconds:10.2f}{_mib(evidently_memory):>16s}")
    print(
        f"speed-up: {evidently_seconds / ours:.0f}x (univariate only: "
        f"{evidently_seconds / statistics.median(univariate_seconds):.0f}x)"
    )
    print()
    for method, group in comparison.group_by("method", maintain_order=True):
        worst = group.sort("abs_difference", descending=True).row(0, named=True)
        print(
            f"{method[0]:31s} {group.height:2d} features, max |ours - evidently| = {worst['abs_difference']:.2e} "
            f"({worst['feature']}: ours {worst['nightkeeper']:.5f}, evidently {worst['evidently']:.5f})"
        )
    with pl.Config(tbl_rows=40, tbl_width_chars=160, float_precision=6):
        print(comparison)
    print(
        f"drifted features: {result.drifted_features()}, drifted share {result.drifted_share:.2f}, "
        f"domain AUC {result.multivariate_auc:.3f}, score PSI {result.prediction['score_psi']:.4f}"
    )


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} MiB"


if __name__ == "__main__":
    main()
