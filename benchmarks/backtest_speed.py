"""Seconds per night of ``nightkeeper backtest``, at 2,000 and 20,000 rows a night.

    .venv/bin/python benchmarks/backtest_speed.py                    # 2,000 and 20,000 rows, 20 nights each
    .venv/bin/python benchmarks/backtest_speed.py --rows 2000 --nights 40
    .venv/bin/python benchmarks/backtest_speed.py --profile          # also print the 25 hottest functions (cProfile)
    .venv/bin/python benchmarks/backtest_speed.py --skip-reason-codes  # the replay without the reason codes step

For each size: simulate ``--nights`` nights of credit applications (the simulator's concept-drift scenario from a
third of the way in, so alerts, retrains and a rollout happen), a labeled history of 30 nights x 2,000 rows, and
labels arriving ``--label-delay`` nights late; then time ``run_backtest`` with the shipped ``nightkeeper.yaml`` (the
backtest itself turns the per-night plots and evidently reports off). Data generation is outside every
timed region. Printed per size: median seconds per night over the nights without a retrain, min–max of those,
mean seconds per night with retrains included, the number of retrain nights, and the first champion's training time.
Budget (issue #8): at 2,000 rows, at most 1 s a night on 2 cores, plus retrains.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nightkeeper.backtest import run_backtest  # noqa: E402
from nightkeeper.config import parse_config  # noqa: E402
from nightkeeper.examples import simulator  # noqa: E402

FIRST_NIGHT = dt.date(2026, 1, 1)
SEED = 7
HISTORY_DAYS = 30
HISTORY_ROWS_PER_DAY = 2000  # the first champion's training is not what is measured; keep it short at every size


def measure(
    rows: int, nights: int, label_delay: int, root: Path, profile: bool, skip_reason_codes: bool = False
) -> dict:
    """Simulate the data, run the backtest once and return its timing figures."""
    batches, labels = root / "batches", root / "labels"
    plan = simulator.ScenarioPlan.concept_drift(nights // 3, shift=1.0)
    simulator.simulate_to_folders(FIRST_NIGHT, nights, rows, SEED, plan, batches, labels, label_delay_days=0)
    history = simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), HISTORY_DAYS, HISTORY_ROWS_PER_DAY, SEED)
    history_file = root / "history.parquet"
    history.write_parquet(history_file)
    config = parse_config(yaml.safe_load((REPO / "nightkeeper.yaml").read_text()), root=root)

    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    result = run_backtest(
        config,
        history_file,
        batches,
        labels,
        label_delay,
        "daily",
        root / "out",
        progress=False,
        skip_reason_codes=skip_reason_codes,
    )
    if profiler:
        profiler.disable()
    total = time.perf_counter() - started
    per_night = result.summary["nights"]
    plain = [n["seconds"] for n in per_night if not n["retrained"]]
    every = [n["seconds"] for n in per_night]
    figures = {
        "rows": rows,
        "nights": len(per_night),
        "retrain_nights": len(every) - len(plain),
        "median_plain": statistics.median(plain) if plain else float("nan"),
        "min_plain": min(plain) if plain else float("nan"),
        "max_plain": max(plain) if plain else float("nan"),
        "mean_with_retrains": statistics.mean(every),
        "bootstrap_seconds": total - sum(every),
        "by_step": result.summary["timing"]["median_seconds_by_step"],
        "median_cpu": result.summary["timing"]["median_cpu_seconds_per_night_without_retrain"],
    }
    if profiler:
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats(40)
        figures["profile"] = buffer.getvalue()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 20000], help="rows a night (one run per value)")
    parser.add_argument("--nights", type=int, default=20)
    parser.add_argument("--label-delay", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print the hottest functions of each run")
    parser.add_argument("--skip-reason-codes", action="store_true", help="replay without the reason codes step")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    print(
        f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}, nights {args.nights}, labels {args.label_delay} "
        "nights late"
    )
    print(
        f"{'rows/night':>10} {'nights':>6} {'median s/night':>15} {'[min–max]':>14} "
        f"{'mean s/night incl. retrains':>28} {'retrain nights':>15} {'bootstrap s':>12}"
    )
    for rows in args.rows:
        root = Path(tempfile.mkdtemp(prefix=f"nk-backtest-{rows}-"))
        try:
            f = measure(rows, args.nights, args.label_delay, root, args.profile, args.skip_reason_codes)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        spread = f"[{f['min_plain']:.2f}–{f['max_plain']:.2f}]"
        print(
            f"{f['rows']:>10,} {f['nights']:>6} {f['median_plain']:>15.2f} {spread:>14} "
            f"{f['mean_with_retrains']:>28.2f} {f['retrain_nights']:>15} {f['bootstrap_seconds']:>12.1f}"
        )
        print(f"    median process CPU s/night (all threads, without retrains): {f['median_cpu']:.2f}")
        answers = sum(f["by_step"].get(s, 0.0) for s in ("ingest", "validate", "score", "shadow", "answer"))
        print(
            f"    median s to answers (ingest + validate + score + shadow + answer): {answers:.3f}; "
            f"reason codes (explain): {f['by_step'].get('explain', 0.0):.3f}"
        )
        print("    median s by step: " + ", ".join(f"{k} {v:.3f}" for k, v in f["by_step"].items()))
        if args.profile:
            print(f["profile"])


if __name__ == "__main__":
    main()
