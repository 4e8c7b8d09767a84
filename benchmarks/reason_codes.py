"""What exact TreeSHAP reason codes cost next to a plain prediction, on a model trained like the product's.

    .venv/bin/python benchmarks/reason_codes.py                 # 10k rows explained, 100k predicted, 1 and 2 threads
    .venv/bin/python benchmarks/reason_codes.py --quick         # 1k / 10k rows, 1 repeat (smoke test)
    .venv/bin/python benchmarks/reason_codes.py --json out.json # also write the raw measurements

The model: ``train_model`` on the shipped ``nightkeeper.yaml`` (its LightGBM params: 31 leaves, learning rate 0.05,
200 rounds) over 30 simulated nights x 2000 rows, 18 features of which 5 categorical. The rows: one simulated night.

Per thread count, median of ``--repeats`` runs of rows/s for:

* ``predict``: ``booster.predict(X)`` (probabilities), what the nightly scoring does;
* ``pred_contrib``: ``booster.predict(X, pred_contrib=True)``, LightGBM's own exact TreeSHAP;
* ``reason_codes``: ``nightkeeper.reasons.reason_codes`` end to end (encoding, TreeSHAP, top-3, text).

Alternative exact TreeSHAP implementations (fasttreeshap, shap's own C++ TreeSHAP) are measured only when installed
in this environment, and only counted as usable when they match LightGBM's contributions to 1e-6 on every row; they
are not project dependencies. ``ALTERNATIVES_VERDICT`` records why none is (checked 2026 on Python 3.11, numpy 2.4,
LightGBM 4.7): the script prints it when none is installed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from nightkeeper.config import load_config
from nightkeeper.encoding import FeatureCard, feature_matrix
from nightkeeper.examples.simulator import simulate_history, simulate_night
from nightkeeper.reasons import reason_codes
from nightkeeper.training import train_model

REPO = Path(__file__).resolve().parent.parent
SEED = 7
HISTORY_END = date(2025, 12, 31)
HISTORY_DAYS = 30
HISTORY_ROWS_PER_DAY = 2000
MATCH_TOLERANCE = 1e-6

ALTERNATIVES_VERDICT = """\
No alternative exact TreeSHAP implementation is usable on our models (each was installed in the venv, tried, and
uninstalled again):
* fasttreeshap 0.1.6 (PyPI, last release 2023-06, sdist only): builds, but does not import on numpy 2
  (`np.obj2sctype` removed; its pinned shap 0.45 extension fails with `_ARRAY_API not found`).
* fasttreeshap-fixed 0.1.5 (numpy-2 fork): needs undeclared slicer and numba to import; its tree parser cannot read
  LightGBM categorical splits (it silently drops the trees), so on our models (5 categorical features)
  algorithm v1 and v2 both fail (AttributeError) and only its 'shortcut', which IS LightGBM's pred_contrib, runs.
  On a numeric-only variant of the model (categories as plain numbers, i.e. not our model), 1 thread, 5000 rows:
  v1 matches LightGBM to 2e-15 at 1,148 rows/s vs LightGBM's 835 (1.4x); v2 runs 3,983 rows/s (4.8x) but is
  WRONG by up to 0.29 log-odds on 167 rows (those with a missing value).
* shap 0.51: its default TreeExplainer path for a LightGBM Booster calls LightGBM's pred_contrib (identical output,
  no gain); its own C++ TreeSHAP (forced by this script) on our categorical model gives contributions off by up to
  0.97 log-odds on 4303 of 5000 rows, at 1,066 rows/s single-threaded vs LightGBM's 866 (1 thread).
* treeshap 0.1.2 (Rust): sdist only; building needs the Rust toolchain and crates.io, unavailable here.
* woodelf-explainer 0.4.8 (installs cleanly): refuses our model ("woodelf does not support trees with categorical
  splits"); on a numeric-only variant it runs at LightGBM's speed on this 2-core machine (1.03x) and differs from it
  by up to 1.1e-5 (> 1e-6), see benchmarks/reason_codes_engines.py.
Verdict: none of the libraries; reason codes use nightkeeper.treeshap (the same exact TreeSHAP, tabulated per leaf,
equal to LightGBM's to ~1e-14, ~20x faster in the same run), measured by benchmarks/reason_codes_engines.py."""


def median_rate(rows: int, repeats: int, run: Callable[[], object]) -> tuple[float, list[float], float]:
    """Median rows/s of ``repeats`` timed calls of ``run`` (each call processes ``rows`` rows), the raw wall seconds,
    and the median CPU seconds this process got per wall second: about the thread count when the threads had the
    CPUs, less when other processes on the machine took them (the rates are then pessimistic)."""
    seconds, cpu_share = [], []
    for _ in range(repeats):
        began, cpu_began = time.perf_counter(), time.process_time()
        run()
        wall = time.perf_counter() - began
        seconds.append(wall)
        cpu_share.append((time.process_time() - cpu_began) / wall)
    return rows / statistics.median(seconds), seconds, statistics.median(cpu_share)


def product_model() -> tuple[lgb.Booster, list[FeatureCard], dict[str, Any]]:
    """A booster trained exactly as the product trains a champion, on simulated history."""
    config = load_config(REPO / "nightkeeper.yaml")
    history = simulate_history(HISTORY_END, HISTORY_DAYS, HISTORY_ROWS_PER_DAY, SEED)
    trained = train_model(history, config)
    params = dict(trained.card.params)
    description = {
        "training_rows": trained.card.training_window.rows,
        "num_boost_round": trained.card.num_boost_round,
        "num_trees": trained.booster.num_trees(),
        "num_leaves": params.get("num_leaves"),
        "learning_rate": params.get("learning_rate"),
        "features": len(trained.card.features),
        "categorical_features": sum(feature.dtype == "category" for feature in trained.card.features),
        "holdout_auc": round(trained.card.holdout_metrics["auc"], 4),
    }
    return trained.booster, trained.card.features, description


def alternatives(booster: lgb.Booster, matrix: np.ndarray, repeats: int, threads: int) -> list[dict[str, Any]]:
    """Measure each installed alternative exact TreeSHAP against LightGBM's pred_contrib (values and rows/s)."""
    reference = booster.predict(matrix, pred_contrib=True, num_threads=threads)[:, :-1]
    results = []
    candidates: list[tuple[str, str, Callable[[Any], Callable[[], np.ndarray]]]] = [
        ("fasttreeshap", "v1", lambda m: _fasttreeshap(m, booster, matrix, "v1", threads)),
        ("fasttreeshap", "v2", lambda m: _fasttreeshap(m, booster, matrix, "v2", threads)),
        ("fasttreeshap_fixed", "v1", lambda m: _fasttreeshap(m, booster, matrix, "v1", threads)),
        ("fasttreeshap_fixed", "v2", lambda m: _fasttreeshap(m, booster, matrix, "v2", threads)),
        ("shap", "own C++ TreeSHAP", lambda m: _shap_own(m, booster, matrix)),
    ]
    for module_name, variant, make in candidates:
        entry: dict[str, Any] = {"implementation": f"{module_name} {variant}", "threads": threads}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(module_name)
                run = make(module)
                values = run()
                rate, _, _ = median_rate(len(matrix), repeats, run)
        except ModuleNotFoundError:
            continue
        except Exception as exc:  # an alternative failing on our model is a finding, not a crash
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
            results.append(entry)
            continue
        difference = np.abs(values - reference).max(axis=1)
        entry.update(
            rows_per_second=rate,
            max_abs_difference=float(difference.max()),
            rows_off_by_more_than_1e_6=int((difference > MATCH_TOLERANCE).sum()),
            usable=bool(difference.max() <= MATCH_TOLERANCE),
        )
        results.append(entry)
    return results


def _fasttreeshap(
    module: Any, booster: lgb.Booster, matrix: np.ndarray, algorithm: str, threads: int
) -> Callable[[], np.ndarray]:
    explainer = module.TreeExplainer(booster, algorithm=algorithm, shortcut=False, n_jobs=threads)

    def run() -> np.ndarray:
        values = explainer.shap_values(matrix, check_additivity=False)
        return np.asarray(values[1] if isinstance(values, list) else values)

    return run


def _shap_own(module: Any, booster: lgb.Booster, matrix: np.ndarray) -> Callable[[], np.ndarray]:
    explainer = module.TreeExplainer(booster)
    if explainer.model.trees is None:
        raise RuntimeError("shap cannot parse this model's trees; it can only call LightGBM's pred_contrib")
    explainer.model.model_type = "internal"  # bypass the shortcut to LightGBM's pred_contrib

    def run() -> np.ndarray:
        return np.asarray(explainer.shap_values(matrix, check_additivity=False))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000, help="rows explained per run")
    parser.add_argument("--predict-rows", type=int, default=100_000, help="rows predicted per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="1k explained, 10k predicted, 1 repeat")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.predict_rows, args.repeats = 1_000, 10_000, 1

    booster, features, model = product_model()
    night = simulate_night(HISTORY_END + timedelta(days=1), max(args.rows, args.predict_rows), SEED)
    applications: pl.DataFrame = night.applications
    predict_matrix = feature_matrix(applications, features)
    explain_frame = applications.head(args.rows)
    explain_matrix = predict_matrix[: args.rows]

    print(f"model: {model}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average before {os.getloadavg()}")
    versions = f"lightgbm {lgb.__version__}, numpy {np.__version__}, polars {pl.__version__}"
    print(f"{versions}, python {platform.python_version()}")
    print(f"rows: {args.predict_rows:,} predicted, {args.rows:,} explained; median of {args.repeats} run(s)\n")
    header = (
        f"{'threads':>7}  {'predict rows/s':>15}  {'pred_contrib rows/s':>20}  {'reason_codes rows/s':>20}"
        f"  {'cost ratio':>10}  {'CPU/wall (predict, contrib, reasons)':>36}"
    )
    print(header)
    measurements: list[dict[str, Any]] = []
    for threads in args.threads:
        predict_rate, predict_s, predict_cpu = median_rate(
            len(predict_matrix), args.repeats, partial(booster.predict, predict_matrix, num_threads=threads)
        )
        contrib_rate, contrib_s, contrib_cpu = median_rate(
            len(explain_matrix),
            args.repeats,
            partial(booster.predict, explain_matrix, pred_contrib=True, num_threads=threads),
        )
        reasons_rate, reasons_s, reasons_cpu = median_rate(
            explain_frame.height,
            args.repeats,
            partial(reason_codes, explain_frame, booster, features, num_threads=threads),
        )
        ratio = predict_rate / contrib_rate
        shares = f"{predict_cpu:.2f}, {contrib_cpu:.2f}, {reasons_cpu:.2f}"
        rates = f"{predict_rate:>15,.0f}  {contrib_rate:>20,.0f}  {reasons_rate:>20,.0f}"
        print(f"{threads:>7}  {rates}  {ratio:>9,.0f}x  {shares:>36}")
        measurements.append(
            {
                "threads": threads,
                "predict_rows_per_second": predict_rate,
                "pred_contrib_rows_per_second": contrib_rate,
                "reason_codes_rows_per_second": reasons_rate,
                "pred_contrib_cost_ratio": ratio,
                "seconds": {"predict": predict_s, "pred_contrib": contrib_s, "reason_codes": reasons_s},
                "cpu_per_wall": {"predict": predict_cpu, "pred_contrib": contrib_cpu, "reason_codes": reasons_cpu},
            }
        )

    found: list[dict[str, Any]] = []
    for threads in args.threads:
        found += alternatives(booster, explain_matrix[: min(args.rows, 5_000)], args.repeats, threads)
    print("\nalternative exact TreeSHAP implementations:")
    if not found:
        print("none installed in this environment. Recorded verdict:\n" + ALTERNATIVES_VERDICT)
    for entry in found:
        print(f"  {entry}")

    if args.json:
        report = {"model": model, "measurements": measurements, "alternatives": found}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
