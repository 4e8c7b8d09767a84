"""The row-level part of one night (read, validate, score, shadow, answer, store) whole and in shards.

    .venv/bin/python benchmarks/sharded_night.py                        # 1M rows, 4 shards, 3 repeats
    .venv/bin/python benchmarks/sharded_night.py --rows 100000 --shards 2 --repeats 1

Prints, per repeat and as medians, the wall time of:

- ``whole``: the nightly steps the unsharded Dagster assets call (``ingest_night``, ``validate_night``,
  ``score_night``, ``shadow_night``, ``answer_night``), each stored with ``warehouse.store_partition`` as the IO
  manager does, in one process (the assets' loads of their inputs from the warehouse are not included);
- ``sharded``: what a sharded night's Dagster ops call: ``run_shard`` for every shard, each in a process of its own
  (a pool of ``--shards`` processes started and warmed up before the clock starts, as the multiprocess executor's
  step processes are running by then), all at once, then ``judge_shards`` in this process. ``--shard-threads``
  sets ``OMP_NUM_THREADS`` in the shard processes (LightGBM's threads when the model does not fix them): four
  shards with two OpenMP threads each on two cores spin against each other.

For ``whole`` it also prints the cores it kept busy (the process's CPU time over its wall time, every thread
counted): on a machine of C cores no split of the same work can run faster than C / busy times the whole night, so
that ratio is the ceiling of what shards can win there.

Both on the same DuckDB file (put back to its state after the champion's bootstrap before each measurement), the
same landed night (the simulator's clean night) and the same champion (the shipped config: 200 trees, LightGBM
``num_threads: 2``). The machine's load average is printed with the figures: on a shared machine they vary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
NIGHT = dt.date(2026, 1, 1)  # the shipped config's schedule.start_date
SEED = 7
HISTORY_DAYS = 20
HISTORY_ROWS_PER_DAY = 2000


def write_config(folder: Path, shards: int) -> Path:
    raw = yaml.safe_load((REPO / "nightkeeper.yaml").read_text())
    raw["scale"] = {"shards": shards}
    raw["monitoring"]["drift"]["evidently_report"] = False
    path = folder / f"nightkeeper-{shards}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepare(folder: Path, rows: int) -> Path:
    """Land the night and bootstrap the champion; returns the pristine warehouse's copy."""
    from nightkeeper.config import load_config
    from nightkeeper.examples import simulator
    from nightkeeper.models import bootstrap_champion

    config = load_config(write_config(folder, 1))
    simulator.write_landing(simulator.simulate_night(NIGHT, rows, SEED, simulator.CLEAN), NIGHT, config.landing_path)
    history = simulator.simulate_history(NIGHT - dt.timedelta(days=1), HISTORY_DAYS, HISTORY_ROWS_PER_DAY, SEED)
    bootstrap_champion(config, history, NIGHT)
    template = folder / "warehouse.template.duckdb"
    shutil.copyfile(config.warehouse_path, template)
    return template


def whole(config_path: Path) -> tuple[float, float]:
    """The wall time and the CPU time (all threads of this process) of the night's row-level part, unsharded."""
    from nightkeeper.config import load_config
    from nightkeeper.pipeline import nightly
    from nightkeeper.warehouse import NIGHTLY_SCHEMA, connect, store_partition

    config = load_config(config_path)
    started, cpu_started = time.perf_counter(), time.process_time()
    with connect(config.warehouse) as connection:

        def stored(result):
            for table, frame in result.tables.items():
                store_partition(connection, NIGHTLY_SCHEMA, table, NIGHT, frame)
            return result.tables

        raw = stored(nightly.ingest_night(config, connection, NIGHT))["raw_batch"]
        validated = stored(nightly.validate_night(config, connection, NIGHT, raw))
        rows = validated["validated_batch"]
        scored = stored(nightly.score_night(config, connection, NIGHT, rows))["scored_batch"]
        shadow = stored(nightly.shadow_night(config, connection, NIGHT, rows, scored))["shadow_scores"]
        stored(nightly.answer_night(config, connection, NIGHT, raw, validated["quarantine"], scored, shadow))
    return time.perf_counter() - started, time.process_time() - cpu_started


def _limit_threads(threads: int | None) -> None:
    if threads is not None:  # before LightGBM's OpenMP runtime starts in this process
        os.environ["OMP_NUM_THREADS"] = str(threads)


def _warm_up(_: int) -> int:
    import nightkeeper.pipeline.shard  # noqa: F401  (the imports a step process has done before its op runs)

    time.sleep(0.5)  # long enough for every process of the pool to take a turn
    return os.getpid()


def _run_shard(config_path: str, shard: int):
    from nightkeeper.config import load_config
    from nightkeeper.pipeline.shard import run_shard

    config = load_config(config_path)
    return run_shard(config, config.warehouse, NIGHT, shard)


def sharded(config_path: Path, pool: ProcessPoolExecutor, shards: int) -> float:
    from nightkeeper.config import load_config
    from nightkeeper.pipeline.shard import judge_shards
    from nightkeeper.warehouse import connect

    config = load_config(config_path)
    started = time.perf_counter()
    reports = list(pool.map(_run_shard, [str(config_path)] * shards, range(shards)))
    with connect(config.warehouse) as connection:
        judge_shards(config, connection, NIGHT, reports)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-threads", type=int, default=None, help="OMP_NUM_THREADS of the shard processes")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nk-sharded-bench-") as scratch:
        folder = Path(scratch)
        started = time.perf_counter()
        template = prepare(folder, options.rows)
        print(f"prepared {options.rows:,} rows and the champion in {time.perf_counter() - started:.0f} s")
        whole_config, sharded_config = write_config(folder, 1), write_config(folder, options.shards)
        warehouse = folder / "data" / "warehouse.duckdb"
        from nightkeeper.config import load_config

        assert load_config(whole_config).warehouse_path == warehouse, "the configs name another warehouse"
        times: dict[str, list[float]] = {"whole": [], "sharded": []}
        busy: list[float] = []
        with ProcessPoolExecutor(
            options.shards,
            mp_context=get_context("spawn"),
            initializer=_limit_threads,
            initargs=(options.shard_threads,),
        ) as pool:
            pids = set(pool.map(_warm_up, range(options.shards * 4)))
            assert len(pids) == options.shards, f"the pool did not start {options.shards} processes: {pids}"
            for repeat in range(options.repeats):
                shutil.copyfile(template, warehouse)
                seconds, cpu_seconds = whole(whole_config)
                times["whole"].append(seconds)
                busy.append(cpu_seconds / seconds)
                print(
                    f"repeat {repeat + 1}: whole    {seconds:7.1f} s   cores busy {busy[-1]:.2f}   "
                    f"load {os.getloadavg()[0]:.2f}"
                )
                shutil.copyfile(template, warehouse)
                seconds = sharded(sharded_config, pool, options.shards)
                times["sharded"].append(seconds)
                print(f"repeat {repeat + 1}: sharded  {seconds:7.1f} s   load {os.getloadavg()[0]:.2f}")
    median_whole, median_sharded = statistics.median(times["whole"]), statistics.median(times["sharded"])
    print(
        f"{options.rows:,} rows, row-level part of the night, median of {options.repeats}: whole {median_whole:.1f} s, "
        f"{options.shards} shards {median_sharded:.1f} s ({median_whole / median_sharded:.2f}x; shard threads "
        f"{options.shard_threads or 'default'}) on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    cores, median_busy = os.cpu_count() or 1, statistics.median(busy)
    print(
        f"the whole night kept {median_busy:.2f} cores busy: on {cores} cores no split of its work can be more than "
        f"{cores / median_busy:.2f}x faster"
    )


if __name__ == "__main__":
    main()
