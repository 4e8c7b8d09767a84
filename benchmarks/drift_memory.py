"""Peak memory of the drift step (``drift_metrics``) on a night's validated rows and champion scores, by size.

    .venv/bin/python benchmarks/drift_memory.py                          # 1M and 10M rows, both paths
    .venv/bin/python benchmarks/drift_memory.py --rows 100000 1000000 --paths stored

A "prepare" process simulates a clean 1M-row night (``--base-rows``), bootstraps a champion on 30 nights x 2000
rows, validates and scores the night through the pipeline's own steps (``validate_night``, ``score_night``) and
writes ``validated_batch`` and ``scored_batch`` as Parquet; a larger size repeats those rows with new entity ids,
row numbers, continuous amounts and scores (so the summary's distinct values grow with the rows, as in a real night).

Per size and path, a fresh process measures one drift step, its peak RSS reset (``/proc/self/clear_refs``) just
before the step so only what the process held before counts besides the step:

* ``stored``: ``monitoring.drift_stored_night``, the asset's path: the step reads the night from the warehouse a
  chunk at a time (a "store" process first writes the size's rows into the warehouse, as the nightly steps do).
* ``frames``: ``monitoring.drift_night`` on both frames already in memory (the backtest's path; the frames' load is
  not counted, unlike an IO manager load inside a Dagster step).

It prints the RSS held before the step, the step's peak RSS, the peak above what was held, and the wall time; and
per path, the step's peak RSS at the largest size over the smallest (issue #11: <= 1.3x for the whole night).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from proc_memory import SELF_STATUS, proc_mib, reset_peak

REPO = Path(__file__).resolve().parent.parent
NIGHT = "2026-01-01"
SEED = 7
HISTORY_DAYS = 30
HISTORY_ROWS_PER_DAY = 2000
JITTERED = ("income", "monthly_expenses", "debt_to_income")  # the simulator's continuous amounts


def _prepare(workdir: Path, base_rows: int) -> None:
    from nightkeeper import warehouse
    from nightkeeper.config import load_config
    from nightkeeper.examples import simulator
    from nightkeeper.ingest import read_raw_batch
    from nightkeeper.models import bootstrap_champion
    from nightkeeper.pipeline.nightly import score_night, validate_night

    config = load_config(workdir / "nightkeeper.yaml")
    night = dt.date.fromisoformat(NIGHT)
    history = simulator.simulate_history(night - dt.timedelta(days=1), HISTORY_DAYS, HISTORY_ROWS_PER_DAY, SEED)
    bootstrap_champion(config, history, night)
    data = simulator.simulate_night(night, base_rows, SEED, simulator.CLEAN)
    landing = simulator.write_landing(data, night, config.landing_path)
    raw = read_raw_batch([landing], night, config.contract).frame
    with warehouse.connect(config.warehouse) as connection:
        validated = validate_night(config, connection, night, raw).tables["validated_batch"]
        scored = score_night(config, connection, night, validated).tables["scored_batch"]
    validated.write_parquet(workdir / "validated.parquet")
    scored.write_parquet(workdir / "scored.parquet")
    print(json.dumps({"rows": raw.height}))


def _night_frames(workdir: Path, rows: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The prepared night's validated rows and scores repeated to ``rows`` rows: each copy with new entity ids and
    row numbers, and new continuous amounts and scores (a real larger night has more distinct values)."""
    base_validated = pl.read_parquet(workdir / "validated.parquet")
    base_scored = pl.read_parquet(workdir / "scored.parquet")
    base = base_validated.height
    copies = -(-rows // base)

    def repeated(frame: pl.DataFrame) -> pl.DataFrame:
        parts = [
            frame.with_columns(
                (pl.col("entity_id").cast(pl.String) + f"-{copy}").alias("entity_id"),
                pl.col("row_number") + copy * base,
                *(pl.col(name) + copy * 1e-3 for name in JITTERED if name in frame.columns),
                *(pl.col(name) * (1 - copy * 1e-9) for name in ("score",) if name in frame.columns),
            )
            if copy
            else frame
            for copy in range(copies)
        ]
        return pl.concat(parts).head(rows)

    return repeated(base_validated), repeated(base_scored)


def _store(workdir: Path, rows: int) -> None:
    from nightkeeper import warehouse
    from nightkeeper.config import load_config

    config = load_config(workdir / "nightkeeper.yaml")
    validated, scored = _night_frames(workdir, rows)
    with warehouse.connect(config.warehouse) as connection:
        for table, frame in (("validated_batch", validated), ("scored_batch", scored)):
            warehouse.store_partition(connection, warehouse.NIGHTLY_SCHEMA, table, dt.date.fromisoformat(NIGHT), frame)
    print(json.dumps({"stored": validated.height}))


def _measure(workdir: Path, rows: int, stored: bool) -> None:
    import gc

    from nightkeeper import warehouse
    from nightkeeper.config import load_config
    from nightkeeper.pipeline.monitoring import drift_night, drift_stored_night

    config = load_config(workdir / "nightkeeper.yaml")
    night = dt.date.fromisoformat(NIGHT)
    frames = None if stored else _night_frames(workdir, rows)
    gc.collect()
    held = proc_mib(SELF_STATUS, "VmRSS")
    if not reset_peak():  # the inputs' load must not count
        raise RuntimeError("the kernel does not let this process reset its peak RSS (/proc/self/clear_refs)")
    with warehouse.connect(config.warehouse) as connection:
        started = time.perf_counter()
        if frames is None:
            result = drift_stored_night(config, connection, night, plots=False)
        else:
            result = drift_night(config, connection, night, *frames, plots=False)
        seconds = time.perf_counter() - started
    peak = proc_mib(SELF_STATUS, "VmHWM")
    print(
        json.dumps(
            {
                "rows": result.metadata["rows"],
                "held_mib": held,
                "peak_mib": peak,
                "above_inputs_mib": peak - held,
                "seconds": seconds,
                "drifted": result.metadata["drifted_features"],
                "drift_metrics": result.tables["drift_metrics"].drop("partition_date").to_dicts(),
            }
        )
    )


def _run(mode: str, workdir: Path, rows: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", mode, str(workdir), str(rows)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{mode} {rows} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--base-rows", type=int, default=1_000_000, help="rows simulated, validated and scored")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=["stored", "frames"],
        default=["stored", "frames"],
        help="stored: drift_stored_night (the asset's path, reading the warehouse); frames: drift_night on frames",
    )
    parser.add_argument("--keep", type=Path, help="reuse (or create) this work dir instead of a temporary one")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(REPO))
        mode, workdir, rows = args.worker
        if mode == "prepare":
            _prepare(Path(workdir), int(rows))
        elif mode == "store":
            _store(Path(workdir), int(rows))
        else:
            _measure(Path(workdir), int(rows), stored=mode == "stored")
        return

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="drift_memory_"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "scored.parquet").exists():
        shutil.copyfile(REPO / "nightkeeper.yaml", workdir / "nightkeeper.yaml")
        print(f"preparing {args.base_rows:,} rows in {workdir} ...", flush=True)
        _run("prepare", workdir, args.base_rows)
    figures: dict[tuple[str, int], list[dict]] = {}
    for rows in args.rows:
        if "stored" in args.paths:
            _run("store", workdir, rows)
        for path in args.paths:
            for _ in range(args.repeats):
                measured = _run(path, workdir, rows)
                figures.setdefault((path, rows), []).append(measured)
                print(
                    f"{path:>7} {rows:>11,} rows: inputs held {measured['held_mib']:7.0f} MiB, step peak "
                    f"{measured['peak_mib']:7.0f} MiB, above inputs {measured['above_inputs_mib']:7.0f} MiB, "
                    f"{measured['seconds']:6.1f} s; drifted: {measured['drifted']}",
                    flush=True,
                )
    for path in args.paths:
        sizes = sorted(rows for p, rows in figures if p == path)
        if len(sizes) > 1:
            small, large = (min(m["peak_mib"] for m in figures[path, size]) for size in (sizes[0], sizes[-1]))
            print(f"{path}: step peak RSS {sizes[-1]:,} / {sizes[0]:,} rows: {large / small:.2f}x")
    if not args.keep:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
