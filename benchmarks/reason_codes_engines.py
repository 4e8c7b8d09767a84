"""Exact TreeSHAP engines and compiled scorers against LightGBM itself, on one product-trained model, in one run.

    .venv/bin/python benchmarks/reason_codes_engines.py                  # 5k rows explained, 100k scored, 3 repeats
    .venv/bin/python benchmarks/reason_codes_engines.py --quick          # 1k / 10k rows, 1 repeat (smoke)
    .venv/bin/python benchmarks/reason_codes_engines.py --json out.json      # also write the raw measurements

The model: the product champion of ``benchmarks/reason_codes.py`` (``train_model`` on the shipped config: 200 trees x
31 leaves over 18 features, 5 of them categorical); the rows: one simulated night, encoded as at
scoring time. Every engine explains the SAME rows and is compared with ``booster.predict(X, pred_contrib=True)``:
rows/s (median of ``--repeats``), its ratio to LightGBM's 2-thread rate measured in this run, and the max abs
difference over all contributions and the base value. Engines:

* ``lightgbm pred_contrib`` with 1 and 2 threads, and as 2 parallel chunks of 1 thread each (a thread pool; the
  ctypes call releases the GIL);
* ``nightkeeper.treeshap`` (what reason codes use) with 1 and 2 threads; its one-off per-model compile is timed
  apart (it is paid once per model per night);
* ``woodelf-explainer``, ``fasttreeshap``, ``fasttreeshap-fixed``, ``shap`` when installed; an engine that refuses or
  misreads the model is reported with its error. When woodelf refuses the categorical model, it is also measured on
  a numeric-only variant (same data, categories as plain numbers, same params) against LightGBM on that variant.

Scoring: ``Booster.predict`` (probabilities, 2 threads) against ``lleaves`` (LLVM-compiled, compile time apart),
``tl2cgen`` (C code compiled with gcc) and ``treelite.gtil`` (treelite's interpreter), each with its max abs
probability difference. The machine is shared: ``uptime``'s load is printed before and after, and ratios measured in
the same run are the figures to quote.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reason_codes import ALTERNATIVES_VERDICT, HISTORY_END, SEED, product_model  # noqa: E402

from nightkeeper.encoding import categorical_indices, feature_matrix  # noqa: E402
from nightkeeper.examples.simulator import simulate_night  # noqa: E402
from nightkeeper.reasons import reason_codes  # noqa: E402
from nightkeeper.treeshap import compile_forest, contributions_of  # noqa: E402

TOLERANCE = 1e-6


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"


def median_seconds(repeats: int, run: Callable[[], object]) -> tuple[float, Any]:
    """Median wall seconds of ``repeats`` calls of ``run`` and the last call's result."""
    seconds, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), result


def chunked_contrib(booster: lgb.Booster, matrix: np.ndarray, parts: int) -> np.ndarray:
    with ThreadPoolExecutor(parts) as pool:
        chunks = np.array_split(matrix, parts)
        return np.vstack(list(pool.map(lambda c: booster.predict(c, pred_contrib=True, num_threads=1), chunks)))


def shap_engines(booster: lgb.Booster, matrix: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    """Every TreeSHAP engine on ``matrix``, compared with LightGBM's 2-thread pred_contrib."""
    reference_s, reference = median_seconds(repeats, lambda: booster.predict(matrix, pred_contrib=True, num_threads=2))
    began = time.perf_counter()
    forest = compile_forest(booster)
    compile_s = time.perf_counter() - began
    contributions_of(forest, matrix[:10])  # JIT-compiled kernels load from numba's cache once per process
    results = [_entry("lightgbm pred_contrib, 2 threads", len(matrix), reference_s, reference_s, reference, reference)]
    engines: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("lightgbm pred_contrib, 1 thread", lambda: booster.predict(matrix, pred_contrib=True, num_threads=1)),
        ("lightgbm pred_contrib, 2 chunks x 1 thread", lambda: chunked_contrib(booster, matrix, 2)),
        ("nightkeeper.treeshap, 1 thread", lambda: contributions_of(forest, matrix, 1)),
        ("nightkeeper.treeshap, 2 threads", lambda: contributions_of(forest, matrix, 2)),
    ]
    for name, run in engines:
        seconds, values = median_seconds(repeats, run)
        results.append(_entry(name, len(matrix), seconds, reference_s, values, reference))
        if name.startswith("nightkeeper"):
            results[-1]["one_off_compile_seconds"] = round(compile_s, 2)
    return results + library_engines(booster, matrix, repeats, reference, reference_s)


def library_engines(
    booster: lgb.Booster, matrix: np.ndarray, repeats: int, reference: np.ndarray, reference_s: float
) -> list[dict[str, Any]]:
    found = []
    for module_name, make in (
        ("woodelf", _woodelf),
        ("fasttreeshap", _fasttreeshap),
        ("fasttreeshap_fixed", _fasttreeshap),
        ("shap", _shap_own),
    ):
        name = f"{module_name} (path-dependent)"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(module_name)
        except Exception as exc:  # not installed, or does not import with our numpy: a finding
            found.append({"engine": name, "error": f"import: {type(exc).__name__}: {exc}"[:300]})
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run = make(module, booster, matrix)
                seconds, values = median_seconds(repeats, run)
        except Exception as exc:  # refusing or misreading our model is a finding, not a crash
            found.append({"engine": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        found.append(_entry(name, len(matrix), seconds, reference_s, values, reference))
    return found


def _woodelf(module: Any, booster: lgb.Booster, matrix: np.ndarray) -> Callable[[], np.ndarray]:
    import pandas as pd

    frame = pd.DataFrame(matrix, columns=booster.feature_name())
    explainer = module.WoodelfExplainer(booster)
    expected = booster.predict(matrix[:1], pred_contrib=True)[0, -1]  # woodelf returns no base value

    def run() -> np.ndarray:
        values = np.asarray(explainer.shap_values(frame, verbose=False), dtype=np.float64)
        return np.hstack([values, np.full((len(values), 1), expected)])

    return run


def _fasttreeshap(module: Any, booster: lgb.Booster, matrix: np.ndarray) -> Callable[[], np.ndarray]:
    explainer = module.TreeExplainer(booster, algorithm="v2", shortcut=False, n_jobs=2)

    def run() -> np.ndarray:
        values = explainer.shap_values(matrix, check_additivity=False)
        values = np.asarray(values[1] if isinstance(values, list) else values)
        return np.hstack([values, np.full((len(values), 1), explainer.expected_value)])

    return run


def _shap_own(module: Any, booster: lgb.Booster, matrix: np.ndarray) -> Callable[[], np.ndarray]:
    explainer = module.TreeExplainer(booster)
    explainer.model.model_type = "internal"  # bypass shap's shortcut to LightGBM's own pred_contrib

    def run() -> np.ndarray:
        values = np.asarray(explainer.shap_values(matrix, check_additivity=False))
        return np.hstack([values, np.full((len(values), 1), explainer.expected_value)])

    return run


def _entry(
    name: str, rows: int, seconds: float, reference_s: float, values: np.ndarray, reference: np.ndarray
) -> dict[str, Any]:
    difference = np.abs(np.asarray(values, dtype=np.float64) - reference).max(axis=1)
    return {
        "engine": name,
        "rows_per_second": round(rows / seconds, 1),
        "speedup_vs_lightgbm_2_threads": round(reference_s / seconds, 2),
        "max_abs_difference": float(difference.max()),
        "rows_off_by_more_than_1e-6": int((difference > TOLERANCE).sum()),
        "matches": bool(difference.max() <= TOLERANCE),
    }


def numeric_variant(booster: lgb.Booster, matrix: np.ndarray) -> lgb.Booster:
    """The same params and rounds with every feature numeric (no categorical splits), trained on ``matrix`` with
    labels drawn from ``booster``'s own probabilities (only the model's shape matters for speed)."""
    labels = (np.random.default_rng(SEED).random(len(matrix)) < booster.predict(matrix)).astype(float)
    dropped = ("categorical_feature", "categorical_column", "cat_feature", "categorical_features", "num_iterations")
    params = {k: v for k, v in booster.params.items() if k not in dropped}
    params.update(verbose=-1, num_threads=2)
    return lgb.train(params, lgb.Dataset(matrix, labels, categorical_feature=[]), num_boost_round=booster.num_trees())


def scorers(booster: lgb.Booster, matrix: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    """Booster.predict against compiled scorers: rows/s, ratio, max abs probability difference, compile seconds."""
    reference_s, reference = median_seconds(repeats, lambda: booster.predict(matrix, num_threads=2))
    results: list[dict[str, Any]] = [
        {"engine": "lightgbm Booster.predict, 2 threads", "rows_per_second": round(len(matrix) / reference_s)}
    ]
    workdir = Path(tempfile.mkdtemp(prefix="scorers-"))
    model_file = workdir / "model.txt"
    booster.save_model(model_file)
    makers: list[tuple[str, Callable[[], Callable[[], np.ndarray]]]] = [
        ("lleaves, 2 threads", lambda: _lleaves(model_file, workdir)),
        ("tl2cgen (gcc -O2), 2 threads", lambda: _tl2cgen(model_file, workdir)),
        ("treelite.gtil, 2 threads", lambda: _gtil(model_file)),
    ]
    for name, make in makers:
        try:
            began = time.perf_counter()
            run = make()
            compile_s = time.perf_counter() - began
            seconds, values = median_seconds(repeats, lambda run=run: run(matrix))  # type: ignore[misc]
        except Exception as exc:
            results.append({"engine": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        difference = np.abs(np.asarray(values, dtype=np.float64).ravel() - reference)
        results.append(
            {
                "engine": name,
                "rows_per_second": round(len(matrix) / seconds),
                "speedup_vs_predict": round(reference_s / seconds, 2),
                "max_abs_difference": float(difference.max()),
                "rows_not_identical": int((difference > 0).sum()),
                "one_off_compile_seconds": round(compile_s, 1),
            }
        )
    return results


def _lleaves(model_file: Path, workdir: Path) -> Callable[[np.ndarray], np.ndarray]:
    import lleaves

    model = lleaves.Model(model_file=str(model_file))
    model.compile(cache=str(workdir / "lleaves.o"))
    return lambda matrix: model.predict(matrix, n_jobs=2)


def _tl2cgen(model_file: Path, workdir: Path) -> Callable[[np.ndarray], np.ndarray]:
    import tl2cgen
    import treelite

    model = treelite.frontend.load_lightgbm_model(str(model_file))
    library = workdir / "model.so"
    tl2cgen.export_lib(model, toolchain="gcc", libpath=str(library), params={"parallel_comp": 8}, nthread=2)
    predictor = tl2cgen.Predictor(str(library), nthread=2)
    return lambda matrix: predictor.predict(tl2cgen.DMatrix(matrix, dtype="float64"))


def _gtil(model_file: Path) -> Callable[[np.ndarray], np.ndarray]:
    import treelite

    model = treelite.frontend.load_lightgbm_model(str(model_file))
    return lambda matrix: treelite.gtil.predict(model, matrix, nthread=2)


def table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    for row in rows:
        if "error" in row:
            print(f"  {row['engine']:<46} FAILED: {row['error']}")
            continue
        figures = "  ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "engine"
        )
        print(f"  {row['engine']:<46} {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000, help="rows explained per engine and run")
    parser.add_argument("--score-rows", type=int, default=100_000, help="rows scored per scorer and run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--due-rows", type=int, default=152_000, help="rows for one end-to-end reason_codes run (0: skip)"
    )
    parser.add_argument("--quick", action="store_true", help="1k explained, 10k scored, 1 repeat")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.score_rows, args.repeats, args.due_rows = 1_000, 10_000, 1, 0

    booster, features, model = product_model()
    night = simulate_night(HISTORY_END + timedelta(days=1), max(args.rows, args.score_rows), SEED)
    matrix = feature_matrix(night.applications, features)
    explain = matrix[: args.rows]
    print(f"model: {model}; categorical feature indices {categorical_indices(features)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {load()} (before)")
    print(f"lightgbm {lgb.__version__}, numpy {np.__version__}, python {platform.python_version()}")
    print(f"{args.rows:,} rows explained, {args.score_rows:,} scored; median of {args.repeats} run(s)")

    report: dict[str, Any] = {"model": model, "load_before": os.getloadavg()}
    report["treeshap"] = shap_engines(booster, explain, args.repeats)
    table("exact path-dependent TreeSHAP vs LightGBM pred_contrib (2 threads), same rows:", report["treeshap"])
    if not any(r.get("matches") for r in report["treeshap"] if not r["engine"].startswith(("lightgbm", "nightkeeper"))):
        print(
            "  recorded verdict on libraries not importable here:\n    " + ALTERNATIVES_VERDICT.replace("\n", "\n    ")
        )

    if any("woodelf" in r["engine"] and "error" in r for r in report["treeshap"]):
        numeric = shap_engines(numeric_variant(booster, matrix), explain, args.repeats)
        report["treeshap_numeric_variant"] = numeric
        table("numeric-only variant (no categorical splits; NOT our model), same rows:", numeric)

    # end to end, as the reason_codes step calls it: encoding, per-call compile, TreeSHAP, top-3, text
    frame = night.applications.head(args.rows)
    seconds, _ = median_seconds(args.repeats, lambda: reason_codes(frame, booster, features))
    contrib = next(r for r in report["treeshap"] if r["engine"] == "lightgbm pred_contrib, 2 threads")
    report["reason_codes"] = [
        {
            "engine": f"reason_codes() end to end, {args.rows:,} rows",
            "rows_per_second": round(args.rows / seconds, 1),
            "speedup_vs_lightgbm_pred_contrib_alone": round(args.rows / seconds / contrib["rows_per_second"], 2),
        }
    ]
    if args.due_rows:
        due = simulate_night(HISTORY_END + timedelta(days=2), args.due_rows, SEED + 1).applications
        seconds, _ = median_seconds(1, lambda: reason_codes(due, booster, features))
        lightgbm_s = args.due_rows / contrib["rows_per_second"]
        report["reason_codes"].append(
            {
                "engine": f"reason_codes() end to end, {args.due_rows:,} rows (a 1M-row night's due rows), 1 run",
                "seconds": round(seconds, 1),
                "lightgbm_pred_contrib_alone_seconds_at_its_rate_above": round(lightgbm_s, 1),
                "speedup": round(lightgbm_s / seconds, 1),
            }
        )
    table("reason codes end to end (default threads):", report["reason_codes"])

    report["scoring"] = scorers(booster, matrix[: args.score_rows], args.repeats)
    table("scoring (probabilities) vs Booster.predict (2 threads), same rows:", report["scoring"])
    report["load_after"] = os.getloadavg()
    print(f"\n{load()} (after)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
