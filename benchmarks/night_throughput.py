"""Throughput and peak memory of ONE night, at several sizes.

    .venv/bin/python benchmarks/night_throughput.py                      # 100k and 1M rows, 3 repeats
    .venv/bin/python benchmarks/night_throughput.py --rows 200000 --repeats 5
    .venv/bin/python benchmarks/night_throughput.py --quick              # smoke: 10k rows, 1 repeat, 5 nights history
    .venv/bin/python benchmarks/night_throughput.py --json results.json  # also write the raw measurements
    .venv/bin/python benchmarks/night_throughput.py --ten-million --repeats 1  # adds 10M rows (~25 min, ~10 GB disk)

Two measurements per size and repeat:

(a) ``dagster``: the whole night through the real ``nightly_batch`` job (``execute_in_process`` with an ephemeral
    Dagster instance on a real DuckDB warehouse file in a temp dir): wall time of the run and peak RSS of the process.
    The job is whatever ``nightly_batch`` selects (the four core steps and, today, the monitoring steps too). Per-step
    durations come from the run's event log; per-step peak RSS from a 20 ms RSS sampler thread.
(b) ``stages``: the core functions called directly, no Dagster and no warehouse writes: ingest (landed_files +
    read_raw_batch), validate, score (load_verified + score_batch) and outcomes (assemble_outcomes).

Each measurement runs in a fresh process (this script re-executed with a hidden ``--_worker`` flag) on a fresh copy
of the warehouse as it was right after the champion was bootstrapped, so neither its peak memory nor its warehouse
state is polluted by earlier measurements. Data generation (simulate_night on the clean scenario + write_landing)
and the champion bootstrap (simulate_history, 30 nights x 2000 rows, ``--history-days``) happen once per size, in a
separate "prepare" process, outside every timed region.

Memory growth: the last table prints each size's peak RSS as a multiple of the 1M-row night's (issue #11's target:
at most 1.3x at 10M rows, i.e. memory flat in the night's size).

Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux) of the measuring process. Linux carries
the parent's high-water mark into a child across fork/exec, so the orchestrating parent deliberately imports
nothing heavy (no polars, numpy, dagster) and stays far below the workers' footprint; the workers also report
VmHWM from /proc/self/status, which is per address space and not inherited, as a cross-check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "nightkeeper.yaml"
NIGHT = "2026-01-01"  # the config's schedule.start_date: the first partition of the nightly job
SEED = 7
HISTORY_DAYS = 30
HISTORY_ROWS_PER_DAY = 2000
STAGES = ("ingest", "validate", "score", "outcomes")
# The Dagster steps that wrap the four stages (plus the row-conservation check on outcomes); any other step of
# nightly_batch (late labels, performance, drift, alerts, ...) is reported as "rest of the job".
CORE_STEPS = ("raw_batch", "validate_batch", "scored_batch", "outcomes", "outcomes_outcomes_conserve_rows")
WORKER_TIMEOUT_SECONDS = 3600 * 3
TEN_MILLION = 10_000_000
ONE_MILLION = 1_000_000


# ---------------------------------------------------------------------------------------------- memory helpers


def ru_maxrss_mib() -> float:
    """Peak RSS of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mib() -> float | None:
    """Peak RSS of this address space (VmHWM), in MiB; None where /proc is not available."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class RssSampler:
    """Samples this process's current RSS every ``interval`` seconds on a daemon thread, so a Dagster run's peak can
    be attributed to the step running at that moment (ru_maxrss only gives the peak of the whole process)."""

    def __init__(self, interval: float = 0.02) -> None:
        import threading

        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True, name="rss-sampler")

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                pages = int(Path("/proc/self/statm").read_text().split()[1])
            except (OSError, ValueError, IndexError):
                return
            self.samples.append((time.time(), pages * self._page_mib))
            self._stop.wait(interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> float | None:
        inside = [rss for at, rss in self.samples if start <= at <= end]
        return max(inside) if inside else None


class CpuMeter:
    """How busy OTHER processes kept the machine during a timed region: (all CPU time the kernel counted in
    /proc/stat - this process's own user+sys time) / (wall x nproc). 0 means the measurement had the CPUs to itself;
    other engineers' test runs on a shared box show up here and make the times pessimistic."""

    def __init__(self) -> None:
        self.nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (
            sum(fields[:8]) - fields[3] - fields[4]
        )  # user nice system idle iowait irq softirq steal: all but idle+iowait
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), busy / self.tick, usage.ru_utime + usage.ru_stime

    def others_share(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        wall, machine, own = (e - s for e, s in zip(end, self.start, strict=True))
        return max(0.0, (machine - own) / (wall * self.nproc))


# ------------------------------------------------------------------------------------------------------ workers


def _worker_prepare(spec: dict) -> dict:
    """Create the size's work dir: config copy, the night's landing file, the bootstrapped champion, and a pristine
    copy of the warehouse (registry only) that every measurement starts from."""
    sys.path.insert(0, str(REPO))
    import datetime as dt

    from nightkeeper.config import load_config
    from nightkeeper.examples import simulator
    from nightkeeper.models import bootstrap_champion

    workdir = Path(spec["workdir"])
    config_path = workdir / "nightkeeper.yaml"
    config = load_config(config_path)
    night = dt.date.fromisoformat(spec["night"])

    started = time.perf_counter()
    data = simulator.simulate_night(night, spec["rows"], SEED, simulator.CLEAN)
    landing_file = simulator.write_landing(data, night, config.landing_path)
    generated = time.perf_counter() - started

    started = time.perf_counter()
    history = simulator.simulate_history(night - dt.timedelta(days=1), spec["history_days"], HISTORY_ROWS_PER_DAY, SEED)
    record = bootstrap_champion(config, history, night)
    bootstrapped = time.perf_counter() - started

    shutil.copyfile(config.warehouse_path, workdir / "warehouse.template.duckdb")
    return {
        "rows": data.applications.height,
        "landing_file": str(landing_file),
        "landing_bytes": landing_file.stat().st_size,
        "generate_seconds": generated,
        "bootstrap_seconds": bootstrapped,
        "champion": record.version,
        "holdout_auc": record.card.holdout_metrics.get("auc"),
    }


def _worker_stages(spec: dict) -> dict:
    """The night through the core functions, one stage after the other, each timed."""
    sys.path.insert(0, str(REPO))
    import datetime as dt
    import gc

    from nightkeeper import registry, warehouse
    from nightkeeper.artifacts import load_verified
    from nightkeeper.config import load_config
    from nightkeeper.ingest import landed_files, read_raw_batch
    from nightkeeper.outcomes import Fallback, assemble_outcomes, outcome_summary
    from nightkeeper.scoring import score_batch
    from nightkeeper.validation import validate

    config = load_config(Path(spec["workdir"]) / "nightkeeper.yaml")
    contract = config.contract
    night = dt.date.fromisoformat(spec["night"])
    with warehouse.connect(config.warehouse_path) as connection:
        champion = registry.alias_record(connection, registry.CHAMPION, night)
    if champion is None:
        raise RuntimeError(f"no champion for {night}")
    fallback = Fallback(champion.card.fallback, champion.version)
    gc.collect()

    seconds: dict[str, float] = {}
    peak_after: dict[str, float] = {}
    baseline = ru_maxrss_mib()
    meter = CpuMeter()

    started = time.perf_counter()
    paths = landed_files(config.landing_path, config.source.pattern, night)
    batch = read_raw_batch(paths, night, contract)
    seconds["ingest"], peak_after["ingest"] = time.perf_counter() - started, ru_maxrss_mib()

    started = time.perf_counter()
    result = validate(batch.frame, contract)
    seconds["validate"], peak_after["validate"] = time.perf_counter() - started, ru_maxrss_mib()

    started = time.perf_counter()
    booster = load_verified(champion)
    scored = score_batch(
        result.valid, booster, champion.card, config.model.chunk_rows, config.model.time_budget_seconds
    )
    seconds["score"], peak_after["score"] = time.perf_counter() - started, ru_maxrss_mib()

    started = time.perf_counter()
    outcomes = assemble_outcomes(
        batch.frame,
        result.quarantine,
        scored.frame,
        fallback,
        config.model.decision,
        config.fallback.answer_quarantined,
    )
    seconds["outcomes"], peak_after["outcomes"] = time.perf_counter() - started, ru_maxrss_mib()
    others_cpu = meter.others_share()

    return {
        "rows": batch.frame.height,
        "valid_rows": result.valid.height,
        "outcome_rows": outcomes.height,
        "sources": outcome_summary(outcomes),
        "model_error": scored.error,
        "seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "baseline_rss_mib": baseline,
        "others_cpu": others_cpu,
        "peak_rss_after_mib": peak_after,
        "peak_rss_mib": ru_maxrss_mib(),
        "vm_hwm_mib": vm_hwm_mib(),
    }


def _worker_dagster(spec: dict) -> dict:
    """The night through the real nightly_batch job, timed around execute_in_process only."""
    sys.path.insert(0, str(REPO))
    config_path = Path(spec["workdir"]) / "nightkeeper.yaml"
    import gc

    import duckdb
    from dagster import DagsterInstance

    from jobs.definitions import NIGHTLY_JOB, build_definitions
    from jobs.resources import NIGHTLY_SCHEMA
    from nightkeeper.config import load_config

    config = load_config(config_path)
    job = build_definitions(config_path).resolve_job_def(NIGHTLY_JOB)
    instance = DagsterInstance.ephemeral()
    gc.collect()
    baseline = ru_maxrss_mib()
    meter = CpuMeter()

    with RssSampler() as sampler:
        started = time.perf_counter()
        result = job.execute_in_process(partition_key=spec["night"], instance=instance, raise_on_error=False)
        wall = time.perf_counter() - started
    others_cpu = meter.others_share()
    peak = ru_maxrss_mib()
    hwm = vm_hwm_mib()

    steps: dict[str, float] = {}
    step_peaks: dict[str, float | None] = {}
    began: dict[str, float] = {}
    failures: list[str] = []
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            began[event.step_key] = entry.timestamp  # dicts keep insertion order: the order the steps started
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in began:
            steps[event.step_key] = entry.timestamp - began[event.step_key]
            step_peaks[event.step_key] = sampler.peak_between(began[event.step_key], entry.timestamp)
        if event.event_type_value == "STEP_FAILURE":
            failures.append(f"{event.step_key}: {event.event_specific_data.error.to_string()[:2000]}")

    with duckdb.connect(str(config.warehouse_path), read_only=True) as connection:

        def count(table: str) -> int | None:
            try:
                return connection.execute(
                    f"select count(*) from {NIGHTLY_SCHEMA}.{table} where partition_date = ?", [spec["night"]]
                ).fetchone()[0]
            except duckdb.Error:
                return None

        stored = {
            table: count(table) for table in ("raw_batch", "validated_batch", "quarantine", "scored_batch", "outcomes")
        }
    return {
        "rows": stored["raw_batch"],
        "success": result.success,
        "failures": failures,
        "stored_rows": stored,
        "seconds": wall,
        "step_seconds": steps,
        "step_peak_rss_mib": step_peaks,
        "step_order": list(began),
        "baseline_rss_mib": baseline,
        "others_cpu": others_cpu,
        "peak_rss_mib": peak,
        "vm_hwm_mib": hwm,
        "warehouse_mib": config.warehouse_path.stat().st_size / 2**20,
    }


def _worker_versions(_: dict) -> dict:
    import duckdb
    import lightgbm
    import polars

    return {
        "polars_threads": polars.thread_pool_size(),
        "polars": polars.__version__,
        "lightgbm": lightgbm.__version__,
        "duckdb": duckdb.__version__,
    }


WORKERS = {
    "prepare": _worker_prepare,
    "stages": _worker_stages,
    "dagster": _worker_dagster,
    "versions": _worker_versions,
}


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    outcome = WORKERS[spec["mode"]](spec)
    Path(spec["out"]).write_text(json.dumps(outcome, default=str))


# ------------------------------------------------------------------------------------------------- orchestrator


class WorkerFailed(RuntimeError):
    pass


def run_worker(mode: str, scratch: Path, label: str, **spec) -> dict:
    """Run one measurement in a fresh interpreter and return what it wrote."""
    out = scratch / f"{label}.json"
    log = scratch / f"{label}.log"
    out.unlink(missing_ok=True)
    spec = {"mode": mode, "out": str(out), **spec}
    with log.open("w") as log_file:
        completed = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec)],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=WORKER_TIMEOUT_SECONDS,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if completed.returncode != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise WorkerFailed(f"{label} worker exited with {completed.returncode}; last lines of {log}:\n{tail}")
    return json.loads(out.read_text())


def prepare_size(rows: int, config: Path, scratch: Path, history_days: int) -> tuple[Path, dict]:
    workdir = scratch / f"rows-{rows}"
    workdir.mkdir(parents=True)
    shutil.copyfile(config, workdir / "nightkeeper.yaml")
    info = run_worker(
        "prepare", scratch, f"prepare-{rows}", workdir=str(workdir), rows=rows, night=NIGHT, history_days=history_days
    )
    return workdir, info


def reset_warehouse(workdir: Path) -> None:
    """Put back the warehouse as it was right after the bootstrap (registry only, no nightly tables)."""
    warehouse = workdir / "data" / "warehouse.duckdb"
    for leftover in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(workdir / "warehouse.template.duckdb", warehouse)


def machine(worker_versions: dict) -> dict:
    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    cpu = "?"
    with contextlib.suppress(OSError, StopIteration):  # no /proc (not Linux) or no model name in it
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    memory = "?"
    try:
        kib = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")
            )
        )
        memory = f"{kib / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "polars": worker_versions.get("polars", package("polars")),
        "polars_threads": worker_versions.get("polars_threads"),
        "lightgbm": worker_versions.get("lightgbm", package("lightgbm")),
        "duckdb": worker_versions.get("duckdb", package("duckdb")),
        "dagster": package("dagster"),
        "numpy": package("numpy"),
    }


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt_range(values: list[float], digits: int = 2, scale: float = 1.0) -> str:
    med, low, high = spread([v * scale for v in values])
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} [{low:,.{digits}f}–{high:,.{digits}f}]"


def fmt_rate(rows: int, seconds: list[float]) -> str:
    rates = [rows / s if s > 0 else float("inf") for s in seconds]
    return fmt_range(rates, digits=0)


def summarise(results: dict) -> dict:
    """Medians (and min/max) per size, in a JSON-friendly shape for --json and the README."""
    summary = {}
    for rows, by_mode in results["sizes"].items():
        dag = by_mode.get("dagster", [])
        stg = by_mode.get("stages", [])
        entry: dict = {}
        if dag:
            entry["dagster"] = {
                "seconds": spread([m["seconds"] for m in dag]),
                "rows_per_second": spread([int(rows) / m["seconds"] for m in dag]),
                "peak_rss_mib": spread([m["peak_rss_mib"] for m in dag]),
                "baseline_rss_mib": spread([m["baseline_rss_mib"] for m in dag]),
                "steps": {
                    step: statistics.median(m["step_seconds"].get(step, 0.0) for m in dag)
                    for step in dag[0]["step_seconds"]
                },
            }
        if stg:
            entry["stages"] = {
                stage: {
                    "seconds": spread([m["seconds"][stage] for m in stg]),
                    "rows_per_second": spread([int(rows) / m["seconds"][stage] for m in stg]),
                    "peak_rss_after_mib": statistics.median(m["peak_rss_after_mib"][stage] for m in stg),
                }
                for stage in STAGES
            }
            entry["stages"]["total"] = {
                "seconds": spread([m["total_seconds"] for m in stg]),
                "rows_per_second": spread([int(rows) / m["total_seconds"] for m in stg]),
                "peak_rss_after_mib": statistics.median(m["peak_rss_mib"] for m in stg),
            }
        summary[rows] = entry
    return summary


def render(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=200)  # a file or pipe gets unwrapped rows
    info = results["machine"]
    console.print(
        f"[bold]Machine[/bold]: nproc={info['nproc']}  cpu={info['cpu']}  memory={info['memory']}  "
        f"python {info['python']}  polars {info['polars']} (threads {info['polars_threads']})  "
        f"lightgbm {info['lightgbm']}  duckdb {info['duckdb']}  dagster {info['dagster']}  numpy {info['numpy']}"
    )
    console.print(
        f"One clean night ({NIGHT}), seed {SEED}; champion bootstrapped on {results['history_days']} nights x "
        f"{HISTORY_ROWS_PER_DAY} rows; {results['repeats']} repeat(s), each in a fresh process. "
        "Cells: median \\[min–max]."
    )

    table = Table(title="(a) Whole night through Dagster: nightly_batch.execute_in_process, DuckDB warehouse file")
    for column in (
        "rows",
        "wall s",
        "rows/s",
        "peak RSS MiB",
        "RSS before run MiB",
        "VmHWM MiB",
        "warehouse MiB",
        "other CPU %",
        "ok",
    ):
        table.add_column(column, justify="right")
    for rows, by_mode in results["sizes"].items():
        runs = by_mode.get("dagster", [])
        if not runs:
            continue
        table.add_row(
            f"{int(rows):,}",
            fmt_range([m["seconds"] for m in runs]),
            fmt_rate(int(rows), [m["seconds"] for m in runs]),
            fmt_range([m["peak_rss_mib"] for m in runs], 0),
            fmt_range([m["baseline_rss_mib"] for m in runs], 0),
            fmt_range([m["vm_hwm_mib"] or 0.0 for m in runs], 0),
            fmt_range([m["warehouse_mib"] for m in runs], 0),
            fmt_range([(m["others_cpu"] or 0.0) * 100 for m in runs], 0),
            "yes" if all(m["success"] and m["stored_rows"]["outcomes"] == int(rows) for m in runs) else "[red]NO[/red]",
        )
    console.print(table)

    dagster_sizes = [(rows, by_mode["dagster"]) for rows, by_mode in results["sizes"].items() if by_mode.get("dagster")]
    found = {k for _, runs in dagster_sizes for m in runs for k in m["step_seconds"]}
    started_order = [k for _, runs in dagster_sizes for m in runs for k in m.get("step_order", [])]
    rest = sorted(
        found - set(CORE_STEPS), key=lambda k: started_order.index(k) if k in started_order else len(started_order)
    )
    step_keys = [k for k in CORE_STEPS if k in found] + rest
    if step_keys:
        steps = Table(
            title="Dagster steps: duration STEP_START→STEP_SUCCESS (incl. the IO manager's DuckDB loads/stores) and "
            "highest RSS sampled during the step (every 20 ms), medians"
        )
        steps.add_column("step")
        steps.add_column("group")
        for rows, _ in dagster_sizes:
            steps.add_column(f"{int(rows):,} rows: s", justify="right")
            steps.add_column(f"{int(rows):,} rows: peak RSS MiB", justify="right")
        peaks = {
            rows: {k: statistics.median(m.get("step_peak_rss_mib", {}).get(k) or 0.0 for m in runs) for k in step_keys}
            for rows, runs in dagster_sizes
        }
        medians = {
            rows: {k: statistics.median(m["step_seconds"].get(k, 0.0) for m in runs) for k in step_keys}
            for rows, runs in dagster_sizes
        }
        for key in step_keys:
            group = "core (stages)" if key in CORE_STEPS else "rest of the job"
            steps.add_row(
                key,
                group,
                *(v for rows, _ in dagster_sizes for v in (f"{medians[rows][key]:.2f}", f"{peaks[rows][key]:,.0f}")),
            )
        steps.add_section()

        def per_run_median(runs: list[dict], part) -> float:  # sums per run, then the median (medians do not add)
            return statistics.median(part(m) for m in runs)

        core = {
            rows: per_run_median(runs, lambda m: sum(v for k, v in m["step_seconds"].items() if k in CORE_STEPS))
            for rows, runs in dagster_sizes
        }
        other = {
            rows: per_run_median(runs, lambda m: sum(v for k, v in m["step_seconds"].items() if k not in CORE_STEPS))
            for rows, runs in dagster_sizes
        }
        outside = {
            rows: per_run_median(runs, lambda m: m["seconds"] - sum(m["step_seconds"].values()))
            for rows, runs in dagster_sizes
        }
        steps.add_row(
            "[bold]core steps[/bold]", "", *(v for rows, _ in dagster_sizes for v in (f"{core[rows]:.2f}", ""))
        )
        steps.add_row(
            "[bold]rest of the job[/bold]", "", *(v for rows, _ in dagster_sizes for v in (f"{other[rows]:.2f}", ""))
        )
        steps.add_row("wall − all steps", "", *(v for rows, _ in dagster_sizes for v in (f"{outside[rows]:.2f}", "")))
        console.print(steps)

    stages = Table(title="(b) Per stage, core functions called directly (no Dagster, no warehouse writes)")
    for column in ("rows", "stage", "seconds", "rows/s", "peak RSS after stage MiB", "share", "other CPU %"):
        stages.add_column(column, justify="right")
    for rows, by_mode in results["sizes"].items():
        runs = by_mode.get("stages", [])
        if not runs:
            continue
        total = statistics.median(m["total_seconds"] for m in runs)
        for stage in STAGES:
            values = [m["seconds"][stage] for m in runs]
            stages.add_row(
                f"{int(rows):,}",
                stage,
                fmt_range(values, 3),
                fmt_rate(int(rows), values),
                f"{statistics.median(m['peak_rss_after_mib'][stage] for m in runs):,.0f}",
                f"{statistics.median(values) / total:.0%}" if total else "",
                "",
            )
        values = [m["total_seconds"] for m in runs]
        stages.add_row(
            f"{int(rows):,}",
            "[bold]total[/bold]",
            fmt_range(values, 3),
            fmt_rate(int(rows), values),
            fmt_range([m["peak_rss_mib"] for m in runs], 0),
            "100%",
            fmt_range([(m["others_cpu"] or 0.0) * 100 for m in runs], 0),
            end_section=True,
        )
    console.print(stages)
    baselines = [m["baseline_rss_mib"] for by_mode in results["sizes"].values() for m in by_mode.get("stages", [])]
    if baselines:
        console.print(
            f"RSS of a stages worker after imports, before the first stage: {statistics.median(baselines):,.0f} MiB "
            "(peak columns include it)."
        )
    console.print(
        "other CPU %: share of the machine's CPU time used by OTHER processes during the timed region "
        f"(nproc={info['nproc']}); well above 0 means the CPUs were shared and the times are pessimistic."
    )
    growth = memory_growth(results)
    if growth:
        relative = Table(title="Peak RSS as a multiple of the 1M-row night's (target at 10M: <= 1.3x)")
        for column in ("rows", "dagster peak MiB", "x 1M", "stages peak MiB", "x 1M"):
            relative.add_column(column, justify="right")
        for rows, row in growth.items():
            relative.add_row(f"{int(rows):,}", *row)
        console.print(relative)
    for note in results.get("notes", []):
        console.print(f"[yellow]note[/yellow]: {note}")


def memory_growth(results: dict) -> dict[str, list[str]]:
    """Per size, the median peak RSS of each measurement and its multiple of the 1M-row night's; empty without 1M."""
    sizes = results["sizes"]
    if str(ONE_MILLION) not in sizes:
        return {}

    def peak(rows: str, mode: str) -> float | None:
        runs = sizes[rows].get(mode, [])
        return statistics.median(m["peak_rss_mib"] for m in runs) if runs else None

    cells: dict[str, list[str]] = {}
    for rows in sizes:
        row = []
        for mode in ("dagster", "stages"):
            here, base = peak(rows, mode), peak(str(ONE_MILLION), mode)
            row += [f"{here:,.0f}", f"{here / base:.2f}"] if here is not None and base else ["", ""]
        cells[rows] = row
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="night sizes (default 100000 1000000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="fresh-process repeats per size and measurement (default 3)"
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=HISTORY_DAYS,
        help=f"nights of {HISTORY_ROWS_PER_DAY} labeled rows the champion is bootstrapped on (default {HISTORY_DAYS})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 10k rows, 1 repeat, champion on 5 nights of history"
    )
    parser.add_argument(
        "--ten-million", action="store_true", help="also measure a 10,000,000-row night (long; needs ~10 GB disk)"
    )
    parser.add_argument("--only", choices=["dagster", "stages"], help="run one of the two measurements only")
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="project config to copy (default: the repo's)"
    )
    parser.add_argument("--json", type=Path, help="also write all measurements and medians to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data, warehouses, worker logs)")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker:
        worker_main(args._worker)
        return 0
    if args.quick:
        args.rows, args.repeats, args.history_days = [10_000], 1, 5
    if args.ten_million and TEN_MILLION not in args.rows:
        args.rows = [*args.rows, TEN_MILLION]
    if args.repeats < 1 or args.history_days < 1 or any(r < 1 for r in args.rows):
        parser.error("--rows, --repeats and --history-days must be positive")
    modes = [args.only] if args.only else ["dagster", "stages"]

    scratch = Path(tempfile.mkdtemp(prefix="nk-bench-"))
    started = time.perf_counter()
    results: dict = {
        "repeats": args.repeats,
        "history_days": args.history_days,
        "night": NIGHT,
        "sizes": {},
        "prepare": {},
        "notes": [],
    }
    try:
        results["machine"] = machine(run_worker("versions", scratch, "versions"))
        for rows in args.rows:
            print(
                f"[{time.perf_counter() - started:6.1f}s] {rows:,} rows: generating the night and bootstrapping the "
                "champion",
                flush=True,
            )
            workdir, info = prepare_size(rows, args.config, scratch, args.history_days)
            results["prepare"][str(rows)] = info
            by_mode: dict[str, list] = {mode: [] for mode in modes}
            results["sizes"][str(rows)] = by_mode
            for repeat in range(args.repeats):
                for mode in modes:  # interleaved, so a slow phase of the machine hits both alike
                    reset_warehouse(workdir)
                    measured = run_worker(
                        mode, scratch, f"{mode}-{rows}-{repeat}", workdir=str(workdir), rows=rows, night=NIGHT
                    )
                    by_mode[mode].append(measured)
                    seconds = measured["seconds"] if mode == "dagster" else measured["total_seconds"]
                    print(
                        f"[{time.perf_counter() - started:6.1f}s] {rows:,} rows, repeat {repeat + 1}/{args.repeats}, "
                        f"{mode}: {seconds:.2f} s, peak RSS {measured['peak_rss_mib']:,.0f} MiB",
                        flush=True,
                    )
                    if mode == "dagster" and not measured["success"]:
                        results["notes"].append(
                            f"{rows:,} rows, repeat {repeat + 1}: the Dagster run FAILED: {measured['failures']}"
                        )
                    if mode == "dagster" and measured["stored_rows"].get("outcomes") != rows:
                        results["notes"].append(
                            f"{rows:,} rows, repeat {repeat + 1}: stored outcomes {measured['stored_rows']}"
                        )
                    if mode == "stages" and (measured["model_error"] or measured["outcome_rows"] != rows):
                        results["notes"].append(
                            f"{rows:,} rows, repeat {repeat + 1}: stages model_error={measured['model_error']!r}, "
                            f"outcomes {measured['outcome_rows']}, sources {measured['sources']}"
                        )
            if not args.keep:  # a 1M-row warehouse is a few hundred MB; free it before the next size
                shutil.rmtree(workdir, ignore_errors=True)
        results["elapsed_seconds"] = time.perf_counter() - started
        results["summary"] = summarise(results)
        render(results)
        print(
            f"benchmark wall time {results['elapsed_seconds']:.0f} s (generation, bootstrap and process starts "
            "included)"
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    except WorkerFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
