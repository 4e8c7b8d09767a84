"""One night at several sizes, next to its floor measured in the same run on the same file.

    .venv/bin/python benchmarks/night_throughput.py                      # 100k and 1M rows, 3 repeats
    .venv/bin/python benchmarks/night_throughput.py --rows 200000 --repeats 5
    .venv/bin/python benchmarks/night_throughput.py --quick              # smoke: 10k rows, 1 repeat, 5 nights history
    .venv/bin/python benchmarks/night_throughput.py --json results.json  # also write the raw measurements
    .venv/bin/python benchmarks/night_throughput.py --rows 1000000 --ten-million --repeats 1 --shard-rows  # + 10M rows

Per size and repeat, each in a fresh process:

(a) ``dagster``: the whole night through the real ``nightly_batch`` job (``execute_in_process`` with an ephemeral
    Dagster instance on a real DuckDB warehouse file), with a champion and a challenger in shadow: wall time, time to
    answers (the ``outcomes`` asset's ``seconds_to_answers`` metadata, and the outcomes step's end from the run's
    start), time to reason codes (the ``reason_codes`` step's end from the run's start), peak RSS, and each step's
    duration and highest sampled RSS. It exports the keys of the night's ``reason_codes`` rows for (b).
(b) ``floor``: what the night cannot go below, on the same landed file: read it (polars), encode it to the model's
    matrix (``encoding.feature_matrix``), LightGBM ``Booster.predict`` of the champion and of the challenger, write
    the scores (Parquet); and LightGBM's own ``pred_contrib`` TreeSHAP of the champion on the rows the night
    explained (the reason_codes rows of (a)); above ``--contrib-sample`` rows a fixed sample is timed and the
    figure extrapolated (printed as such).
(c) ``shards`` (at ``--shard-rows`` sizes, 1M by default): the row-level steps of the night through the core
    ``nightkeeper.pipeline.shard.answer_shard`` (validate, score, shadow, answer), each shard reading the night's
    landed file itself: ``scale.shards: 1`` on one process against ``scale.shards: 4`` on 2 processes (two shards
    each, one after the other) and on 4 processes (``--shard-processes``). The processes import first and start
    their work together; the work is timed from that start to the last one's end, and the wall time with the
    interpreter starts is printed beside it. "Cores busy" is the processes' CPU time over the work's time: where
    one shard on one process already keeps every core busy, more shards on the same machine have nothing to gain.

Then the ratios issue #11 sets as targets, each marked met / NOT met: time to answers / floor (read + encode +
predict of both models + write) <= 2x; LightGBM pred_contrib on the due rows / the reason_codes step >= 10x; peak RSS
at 10M / at 1M <= 1.3x; 1 shard / 4 shards (the work, imports excluded) >= 1.6x.

Data generation (simulate_night on the clean scenario + write_landing) and the bootstraps (champion on
simulate_history, 30 nights x 2000 rows, ``--history-days``; challenger on another seed's history, put in shadow)
happen once per size in a separate "prepare" process, outside every timed region. Each Dagster measurement starts
from a fresh copy of the warehouse as it was right after the bootstraps.

A Dagster night is stopped (SIGINT, a failed run with its peak RSS so far, printed as a lower bound and without a
floor) when the machine's available memory falls below ``--min-available-gib`` (2 GiB): other processes share it.

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
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from proc_memory import MEMINFO, SELF_STATUS, proc_mib

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "nightkeeper.yaml"
NIGHT = "2026-01-01"  # the config's schedule.start_date: the first partition of the nightly job
SEED = 7
CHALLENGER_SEED = 8  # the challenger is trained on another draw of the same history: a different model
HISTORY_DAYS = 30
HISTORY_ROWS_PER_DAY = 2000
# The Dagster steps until the night's answers are stored, and the reason codes step after them; any other step of
# nightly_batch (late labels, performance, drift, alerts, ...) is reported as "rest of the job".
ANSWER_STEPS = ("raw_batch", "validate_batch", "scored_batch", "shadow_scores", "outcomes")
REASON_STEP = "reason_codes"
WORKER_TIMEOUT_SECONDS = 3600 * 3
TEN_MILLION = 10_000_000
ONE_MILLION = 1_000_000
CONTRIB_SAMPLE_ROWS = 10_000
SHARDS = 4
# issue #11's targets
ANSWERS_OVER_FLOOR_MAX = 2.0
REASONS_SPEEDUP_MIN = 10.0
RSS_GROWTH_MAX = 1.3
SHARD_SPEEDUP_MIN = 1.6
ONE_CORE_EACH = ", one core each"
"""Marks a shard layout measured with each process held to one core (``--one-core-each``)."""


def one_shard_key(key: str) -> str:
    """The key of the one-shard layout a shard layout ``key`` (``"<shards>x<processes>"``, maybe ``ONE_CORE_EACH``)
    is compared with: measured alike, held to one core or not."""
    return "1x1" + (ONE_CORE_EACH if key.endswith(ONE_CORE_EACH) else "")


# ---------------------------------------------------------------------------------------------- memory helpers


def ru_maxrss_mib() -> float:
    """Peak RSS of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mem_available_mib() -> float | None:
    """The machine's MemAvailable, in MiB; None where /proc is not available."""
    return proc_mib(MEMINFO, "MemAvailable")


def vm_hwm_mib() -> float | None:
    """Peak RSS of this address space (VmHWM), in MiB; None where /proc is not available."""
    return proc_mib(SELF_STATUS, "VmHWM")


class RssSampler:
    """Samples this process's current RSS every ``interval`` seconds on a daemon thread, so a Dagster run's peak can
    be attributed to the step running at that moment (ru_maxrss only gives the peak of the whole process).

    On a shared machine it also guards the others: when the machine's MemAvailable falls below
    ``min_available_mib`` it interrupts this process (SIGINT: Dagster fails the run) once, and ``stopped`` records
    when and at what RSS, so a night too big for the machine ends as a measured failure instead of an OOM kill."""

    def __init__(self, interval: float = 0.02, min_available_mib: float | None = None) -> None:
        import threading

        self.samples: list[tuple[float, float]] = []
        self.min_available_mib = min_available_mib
        self.stopped: dict | None = None
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
            if self.min_available_mib is not None and self.stopped is None and len(self.samples) % 10 == 0:
                available = mem_available_mib()
                if available is not None and available < self.min_available_mib:
                    self.stopped = {"at": time.time(), "available_mib": available, "rss_mib": pages * self._page_mib}
                    os.kill(os.getpid(), signal.SIGINT)
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
    other engineers' test runs on a shared box show up here and make the times pessimistic. With ``children``, our
    own time is that of this process's finished children (the shard processes it waited for) instead."""

    def __init__(self, children: bool = False) -> None:
        self.who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
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
        usage = resource.getrusage(self.who)
        return time.perf_counter(), busy / self.tick, usage.ru_utime + usage.ru_stime

    def others_share(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        wall, machine, own = (e - s for e, s in zip(end, self.start, strict=True))
        return max(0.0, (machine - own) / (wall * self.nproc))


# ------------------------------------------------------------------------------------------------------ workers


def _worker_prepare(spec: dict) -> dict:
    """Create the size's work dir: config copy, the night's landing file, the bootstrapped champion, a challenger in
    shadow, and a pristine copy of the warehouse (registry only) that every Dagster measurement starts from."""
    sys.path.insert(0, str(REPO))
    import datetime as dt

    from nightkeeper import warehouse
    from nightkeeper.config import load_config
    from nightkeeper.examples import simulator
    from nightkeeper.lifecycle import start_shadow
    from nightkeeper.models import bootstrap_champion, register_trained
    from nightkeeper.training import train_model

    workdir = Path(spec["workdir"])
    config = load_config(workdir / "nightkeeper.yaml")
    night = dt.date.fromisoformat(spec["night"])

    started = time.perf_counter()
    data = simulator.simulate_night(night, spec["rows"], SEED, simulator.CLEAN)
    landing_file = simulator.write_landing(data, night, config.landing_path)
    generated = time.perf_counter() - started

    started = time.perf_counter()
    end = night - dt.timedelta(days=1)
    champion = bootstrap_champion(
        config, simulator.simulate_history(end, spec["history_days"], HISTORY_ROWS_PER_DAY, SEED), night
    )
    trained = train_model(
        simulator.simulate_history(end, spec["history_days"], HISTORY_ROWS_PER_DAY, CHALLENGER_SEED), config
    )
    with warehouse.connect(config.warehouse) as connection:
        challenger = register_trained(connection, trained, config)
        start_shadow(connection, challenger.version, night, "benchmark", "challenger in shadow for the benchmark")
    bootstrapped = time.perf_counter() - started

    shutil.copyfile(config.warehouse_path, workdir / "warehouse.template.duckdb")
    return {
        "rows": data.applications.height,
        "landing_file": str(landing_file),
        "landing_bytes": landing_file.stat().st_size,
        "generate_seconds": generated,
        "bootstrap_seconds": bootstrapped,
        "champion": champion.version,
        "challenger": challenger.version,
        "holdout_auc": champion.card.holdout_metrics.get("auc"),
    }


def _worker_dagster(spec: dict) -> dict:
    """The night through the real nightly_batch job, timed around execute_in_process only; writes the keys of the
    night's reason_codes rows to ``spec["due_file"]`` for the floor."""
    sys.path.insert(0, str(REPO))
    config_path = Path(spec["workdir"]) / "nightkeeper.yaml"
    import gc

    import duckdb
    import polars as pl
    from dagster import DagsterEventType, DagsterInstance

    from jobs.definitions import NIGHTLY_JOB, build_definitions
    from jobs.resources import NIGHTLY_SCHEMA
    from nightkeeper.config import load_config

    config = load_config(config_path)
    job = build_definitions(config_path).resolve_job_def(NIGHTLY_JOB)
    instance = DagsterInstance.ephemeral()
    gc.collect()
    baseline = ru_maxrss_mib()
    meter = CpuMeter()

    with RssSampler(min_available_mib=spec["min_available_gib"] * 1024) as sampler:
        started = time.perf_counter()
        result = job.execute_in_process(partition_key=spec["night"], instance=instance, raise_on_error=False)
        wall = time.perf_counter() - started
    others_cpu = meter.others_share()
    peak = ru_maxrss_mib()
    hwm = vm_hwm_mib()
    run = instance.get_run_record_by_id(result.run_id)
    run_start = run.start_time if run is not None and run.start_time is not None else None

    steps: dict[str, float] = {}
    step_ends: dict[str, float] = {}
    step_peaks: dict[str, float | None] = {}
    began: dict[str, float] = {}
    failures: list[str] = []
    metadata: dict[str, dict] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            metadata[materialization.asset_key.to_user_string()] = {
                key: value.value for key, value in materialization.metadata.items()
            }
        if event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            began[event.step_key] = entry.timestamp  # dicts keep insertion order: the order the steps started
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in began:
            steps[event.step_key] = entry.timestamp - began[event.step_key]
            step_peaks[event.step_key] = sampler.peak_between(began[event.step_key], entry.timestamp)
            if run_start is not None:
                step_ends[event.step_key] = entry.timestamp - run_start
        if event.event_type_value == "STEP_FAILURE":
            failures.append(f"{event.step_key}: {event.event_specific_data.error.to_string()[:2000]}")

    tables = ("raw_batch", "validated_batch", "quarantine", "scored_batch", "shadow_scores", "outcomes", REASON_STEP)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as connection:

        def count(table: str) -> int | None:
            try:
                return connection.execute(
                    f"select count(*) from {NIGHTLY_SCHEMA}.{table} where partition_date = ?", [spec["night"]]
                ).fetchone()[0]
            except duckdb.Error:
                return None

        stored = {table: count(table) for table in tables}
        try:
            due = connection.execute(
                f"select entity_id, model_version from {NIGHTLY_SCHEMA}.{REASON_STEP} where partition_date = ?",
                [spec["night"]],
            ).pl()
        except duckdb.CatalogException:  # a run that failed before its first reason codes
            due = pl.DataFrame(schema={"entity_id": pl.String, "model_version": pl.String})
    due.write_parquet(spec["due_file"])
    outcomes = metadata.get("outcomes", {})
    return {
        "rows": stored["raw_batch"],
        "success": result.success,
        "failures": failures,
        "stored_rows": stored,
        "seconds": wall,
        "seconds_to_answers": outcomes.get("seconds_to_answers"),
        "answers_step_end": step_ends.get("outcomes"),
        "reason_codes_step_end": step_ends.get(REASON_STEP),
        "reason_codes_step_seconds": steps.get(REASON_STEP),
        "reason_codes_core_seconds": metadata.get(REASON_STEP, {}).get("seconds"),
        "due_rows": due.height,
        "due_versions": sorted(set(due["model_version"].to_list())),
        "shadow_rows": stored["shadow_scores"],
        "step_seconds": steps,
        "step_ends": step_ends,
        "step_peak_rss_mib": step_peaks,
        "step_order": list(began),
        "baseline_rss_mib": baseline,
        "others_cpu": others_cpu,
        "peak_rss_mib": peak,
        "vm_hwm_mib": hwm,
        "warehouse_mib": config.warehouse_path.stat().st_size / 2**20,
        "stopped_low_memory": sampler.stopped,
        "running_when_stopped": [
            step
            for step, at in began.items()
            if sampler.stopped and at <= sampler.stopped["at"] <= at + steps.get(step, float("inf"))
        ],
    }


def _worker_floor(spec: dict) -> dict:
    """The floor on the same landed file: read, encode, predict (champion, challenger), write; and LightGBM's
    pred_contrib on the rows the night explained (a timed sample when there are more than ``contrib_sample``)."""
    sys.path.insert(0, str(REPO))
    import datetime as dt
    import gc

    import duckdb
    import polars as pl

    from nightkeeper import registry
    from nightkeeper.artifacts import load_verified
    from nightkeeper.config import load_config
    from nightkeeper.encoding import feature_matrix
    from nightkeeper.ingest import landed_files

    workdir = Path(spec["workdir"])
    config = load_config(workdir / "nightkeeper.yaml")
    night = dt.date.fromisoformat(spec["night"])
    with duckdb.connect(str(config.warehouse_path), read_only=True) as connection:
        champion = registry.alias_record(connection, registry.CHAMPION, night)
        challenger = registry.alias_record(connection, registry.CHALLENGER, night)
    if champion is None or challenger is None:
        raise RuntimeError(f"the floor needs a champion and a challenger on {night}: {champion}, {challenger}")
    models = {"champion": (load_verified(champion), champion.card.features)}
    models["challenger"] = (load_verified(challenger), challenger.card.features)
    paths = landed_files(config.landing_path, config.source.pattern, night)
    due = pl.read_parquet(spec["due_file"])
    if set(due["model_version"]) - {champion.version}:
        raise RuntimeError(f"the night explained rows of other versions than the champion: {set(due['model_version'])}")
    entity = config.contract.entity_id
    gc.collect()

    seconds: dict[str, float] = {}
    baseline = ru_maxrss_mib()
    meter = CpuMeter()
    started = time.perf_counter()
    frame = pl.read_parquet(paths)
    seconds["read"] = time.perf_counter() - started

    started = time.perf_counter()
    matrices = {name: feature_matrix(frame, features) for name, (_, features) in models.items()}
    seconds["encode"] = time.perf_counter() - started

    scores = {}
    for name, (booster, _) in models.items():
        started = time.perf_counter()
        scores[name] = booster.predict(matrices[name])
        seconds[f"predict_{name}"] = time.perf_counter() - started

    started = time.perf_counter()
    pl.DataFrame(
        {"entity_id": frame[entity].cast(pl.String), "score": scores["champion"], "shadow": scores["challenger"]}
    ).write_parquet(workdir / "floor-scores.parquet")
    seconds["write"] = time.perf_counter() - started
    others_cpu = meter.others_share()

    due_mask = frame[entity].cast(pl.String).is_in(due["entity_id"]).to_numpy()
    due_matrix = matrices["champion"][due_mask]
    sample = due_matrix[: spec["contrib_sample"]]  # the first rows of the file: no order bias in a simulated night
    contrib_meter = CpuMeter()
    started = time.perf_counter()
    models["champion"][0].predict(sample, pred_contrib=True)
    sample_seconds = time.perf_counter() - started
    return {
        "rows": frame.height,
        "seconds": seconds,
        "floor_seconds": sum(seconds.values()),
        "due_rows": int(due_mask.sum()),
        "due_rows_exported": due.height,
        "contrib_rows": len(sample),
        "contrib_sample_seconds": sample_seconds,
        "contrib_seconds": sample_seconds * len(due_matrix) / len(sample) if len(sample) else 0.0,
        "contrib_extrapolated": len(sample) < len(due_matrix),
        "contrib_others_cpu": contrib_meter.others_share(),
        "baseline_rss_mib": baseline,
        "others_cpu": others_cpu,
        "peak_rss_mib": ru_maxrss_mib(),
        "vm_hwm_mib": vm_hwm_mib(),
    }


def _worker_shard(spec: dict) -> dict:
    """Shards ``spec["shard_list"]`` of the night, one after another, each through ``answer_shard`` on the night's
    landed files read again for it (as a shard op on its own machine would). Imports first, then waits for the
    orchestrator's go (``spec["go_file"]``), so that every process of a group starts its work at the same moment."""
    sys.path.insert(0, str(REPO))
    import datetime as dt

    import duckdb

    from nightkeeper.config import load_config
    from nightkeeper.ingest import read_night
    from nightkeeper.pipeline.shard import answer_shard, serving_of

    config = load_config(Path(spec["workdir"]) / "nightkeeper.yaml")
    config = config.model_copy(update={"scale": config.scale.model_copy(update={"shards": spec["shards"]})})
    night = dt.date.fromisoformat(spec["night"])
    Path(spec["ready_file"]).touch()
    go = Path(spec["go_file"])
    while not go.exists():
        time.sleep(0.005)

    started_at = time.time()
    cpu_started = time.process_time()  # every thread of this process: LightGBM, numba, polars and DuckDB pools
    shards = []
    for shard in spec["shard_list"]:
        started = time.perf_counter()
        batch = read_night(config.landing_path, config.source.pattern, night, config.contract, config.root)
        read = time.perf_counter() - started
        started = time.perf_counter()
        with duckdb.connect(str(config.warehouse_path), read_only=True) as connection:  # readers share the file
            serving = serving_of(config, connection, night)
        answers = answer_shard(config, serving, night, batch.frame, shard)
        shards.append(
            {
                "shard": shard,
                "rows": batch.frame.height,
                "outcome_rows": answers.outcomes.height,
                "shadow_rows": answers.shadow_scores.height,
                "champion_error": answers.champion_error,
                "read_seconds": read,
                "answer_seconds": time.perf_counter() - started,
            }
        )
    return {
        "shards": shards,
        "started_at": started_at,
        "ended_at": time.time(),
        "cpu_seconds": time.process_time() - cpu_started,
        "peak_rss_mib": ru_maxrss_mib(),
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
    "dagster": _worker_dagster,
    "floor": _worker_floor,
    "shard": _worker_shard,
    "versions": _worker_versions,
}


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    outcome = WORKERS[spec["mode"]](spec)
    Path(spec["out"]).write_text(json.dumps(outcome, default=str))


# ------------------------------------------------------------------------------------------------- orchestrator


class WorkerFailed(RuntimeError):
    pass


def _worker_command(mode: str, scratch: Path, label: str, spec: dict) -> tuple[list[str], Path, Path]:
    out = scratch / f"{label}.json"
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_worker",
        json.dumps({"mode": mode, "out": str(out), **spec}),
    ]
    return command, out, scratch / f"{label}.log"


def _worker_result(label: str, returncode: int, out: Path, log: Path) -> dict:
    if returncode != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise WorkerFailed(f"{label} worker exited with {returncode}; last lines of {log}:\n{tail}")
    return json.loads(out.read_text())


def run_worker(mode: str, scratch: Path, label: str, **spec) -> dict:
    """Run one measurement in a fresh interpreter and return what it wrote."""
    command, out, log = _worker_command(mode, scratch, label, spec)
    with log.open("w") as log_file:
        completed = subprocess.run(
            command,
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=WORKER_TIMEOUT_SECONDS,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return _worker_result(label, completed.returncode, out, log)


def run_shard_group(scratch: Path, label: str, shards: int, processes: int, one_core_each: bool, **spec) -> dict:
    """The night's ``shards`` shards on ``processes`` fresh processes (shard i on process i mod processes), started
    together once every process has imported: ``seconds`` from the go to the last process's end (the work), and
    ``wall_seconds`` from the first launch to the last exit (interpreter starts and imports included); the other
    processes' CPU share over the wall time (the machine's busy time minus our children's). ``one_core_each``:
    process i may run on core i mod the machine's cores only (``sched_setaffinity``), as on machines of one core."""
    go = scratch / f"{label}.go"
    go.unlink(missing_ok=True)
    launched = []
    meter = CpuMeter(children=True)  # from the launch: our children's CPU time includes their imports
    launch = time.perf_counter()
    try:
        for process in range(processes):
            ready = scratch / f"{label}-{process}.ready"
            ready.unlink(missing_ok=True)
            shard_list = list(range(process, shards, processes))
            command, out, log = _worker_command(
                "shard",
                scratch,
                f"{label}-{process}",
                {**spec, "shards": shards, "shard_list": shard_list, "ready_file": str(ready), "go_file": str(go)},
            )
            core = {process % (os.cpu_count() or 1)}
            with log.open("w") as log_file:
                popen = subprocess.Popen(
                    command,
                    cwd=REPO,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    preexec_fn=(lambda core=core: os.sched_setaffinity(0, core)) if one_core_each else None,
                )
            launched.append((popen, ready, out, log))
        while not all(ready.exists() for _, ready, _, _ in launched):
            if any(popen.poll() not in (None, 0) for popen, _, _, _ in launched):
                break  # a process died while importing: its error is read below
            time.sleep(0.01)
        go_at = time.time()
        go.touch()
        for popen, _, _, _ in launched:
            popen.wait(timeout=WORKER_TIMEOUT_SECONDS)
        wall = time.perf_counter() - launch
    finally:
        for popen, _, _, _ in launched:  # only after a failure: stop the processes still running
            if popen.poll() is None:
                popen.kill()
    runs = [
        _worker_result(f"{label}-{index}", popen.returncode, out, log)
        for index, (popen, _, out, log) in enumerate(launched)
    ]
    parts = [part for run in runs for part in run["shards"]]
    return {
        "shards": shards,
        "processes": processes,
        "seconds": max(run["ended_at"] for run in runs) - go_at,  # not the processes' exits: their teardown
        "cpu_seconds": sum(run["cpu_seconds"] for run in runs),
        "wall_seconds": wall,
        "slowest_seconds": max(part["read_seconds"] + part["answer_seconds"] for part in parts),
        "read_seconds": [part["read_seconds"] for part in parts],
        "answer_seconds": [part["answer_seconds"] for part in parts],
        "outcome_rows": sum(part["outcome_rows"] for part in parts),
        "rows": parts[0]["rows"],
        "champion_errors": [part["champion_error"] for part in parts if part["champion_error"]],
        "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
        "others_cpu": meter.others_share(),
    }


def prepare_size(rows: int, config: Path, scratch: Path, history_days: int) -> tuple[Path, dict]:
    workdir = scratch / f"rows-{rows}"
    workdir.mkdir(parents=True)
    shutil.copyfile(config, workdir / "nightkeeper.yaml")
    info = run_worker(
        "prepare", scratch, f"prepare-{rows}", workdir=str(workdir), rows=rows, night=NIGHT, history_days=history_days
    )
    return workdir, info


def reset_warehouse(workdir: Path) -> None:
    """Put back the warehouse as it was right after the bootstraps (registry only, no nightly tables)."""
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


def median(values: list[float]) -> float:
    return statistics.median(values)


def to_answers(measured: dict) -> float:
    """Seconds from the run's start until the outcomes were stored: the asset's own metadata, else its step's end."""
    value = measured["seconds_to_answers"]
    value = value if value is not None else measured["answers_step_end"]
    return value if value is not None else float("nan")  # a run stopped before its answers


def answer_steps(measured: dict) -> float:
    """The durations of the steps that answer the night, added up."""
    return sum(measured["step_seconds"].get(step, 0.0) for step in ANSWER_STEPS)


def target_rows(results: dict) -> list[dict]:
    """Issue #11's ratios, one entry per target and size: per-repeat values (each from one run) and met or not on
    their median."""
    entries: list[dict] = []
    sizes = results["sizes"]
    for rows, measured in sizes.items():
        answered = [night for night in measured.get("dagster", []) if night["success"]]
        pairs = list(zip(answered, measured.get("floor", []), strict=False))  # a floor follows each answered night
        if pairs:
            entries.append(
                {
                    "target": "time to answers / floor (read + encode + predict both + write)",
                    "rows": rows,
                    "values": [to_answers(night) / floor["floor_seconds"] for night, floor in pairs],
                    "limit": f"<= {ANSWERS_OVER_FLOOR_MAX:g}x",
                    "met": lambda v: v <= ANSWERS_OVER_FLOOR_MAX,
                }
            )
            extrapolated = any(floor["contrib_extrapolated"] for _, floor in pairs)
            entries.append(
                {
                    "target": "LightGBM pred_contrib on the due rows / reason_codes step"
                    + (" (pred_contrib extrapolated from a sample)" if extrapolated else ""),
                    "rows": rows,
                    "values": [
                        floor["contrib_seconds"] / night["reason_codes_step_seconds"]
                        for night, floor in pairs
                        if night["reason_codes_step_seconds"]
                    ],
                    "limit": f">= {REASONS_SPEEDUP_MIN:g}x",
                    "met": lambda v: v >= REASONS_SPEEDUP_MIN,
                }
            )
        groups = measured.get("shards", {})
        for key, runs in groups.items():
            pinned = key.endswith(ONE_CORE_EACH)
            whole = groups.get(one_shard_key(key), [])
            if key == one_shard_key(key) or not whole:
                continue
            entries.append(
                {
                    "target": f"1 shard / {key.replace('x', ' shards on ', 1).replace(ONE_CORE_EACH, '')} processes"
                    + (f"{ONE_CORE_EACH}: how shards scale with cores, not the target" if pinned else "")
                    + " (work, imports excluded)",
                    "rows": rows,
                    "values": [one["seconds"] / many["seconds"] for one, many in zip(whole, runs, strict=False)],
                    "limit": "" if pinned else f">= {SHARD_SPEEDUP_MIN:g}x",
                    "met": None if pinned else lambda v: v >= SHARD_SPEEDUP_MIN,
                }
            )
    if str(ONE_MILLION) in sizes:
        base = [m["peak_rss_mib"] for m in sizes[str(ONE_MILLION)].get("dagster", [])]
        for rows, measured in sizes.items():
            here = [m["peak_rss_mib"] for m in measured.get("dagster", [])]
            stopped = any(m["stopped_low_memory"] for m in measured.get("dagster", []))
            if int(rows) > ONE_MILLION and here and base:
                entries.append(
                    {
                        "target": f"peak RSS of the Dagster night / the 1M-row night's ({median(base):,.0f} MiB)"
                        + (" (a lower bound: the night was stopped for low memory)" if stopped else ""),
                        "rows": rows,
                        "values": [median(here) / median(base)],
                        "limit": f"<= {RSS_GROWTH_MAX:g}x" if int(rows) == TEN_MILLION else "(target at 10M)",
                        # a lower bound above the limit misses it; one below says nothing
                        "met": (
                            lambda v, stopped=stopped: None if stopped and v <= RSS_GROWTH_MAX else v <= RSS_GROWTH_MAX
                        )
                        if int(rows) == TEN_MILLION
                        else None,
                    }
                )
    for entry in entries:
        judge = entry.pop("met")
        entry["median"] = median(entry["values"]) if entry["values"] else None
        verdict = None if judge is None or entry["median"] is None else judge(entry["median"])
        entry["met"] = None if verdict is None else bool(verdict)
    return entries


def summarise(results: dict) -> dict:
    """Medians per size, in a JSON-friendly shape for --json and the README."""
    summary: dict = {}
    for rows, measured in results["sizes"].items():
        entry: dict = {}
        if night := [m for m in measured.get("dagster", []) if m["success"]]:
            entry["dagster"] = {
                "seconds": median([m["seconds"] for m in night]),
                "seconds_to_answers": median([to_answers(m) for m in night]),
                "seconds_to_reason_codes": median([m["reason_codes_step_end"] for m in night]),
                "reason_codes_step_seconds": median([m["reason_codes_step_seconds"] for m in night]),
                "peak_rss_mib": median([m["peak_rss_mib"] for m in night]),
                "steps": {k: median([m["step_seconds"].get(k, 0.0) for m in night]) for k in night[0]["step_seconds"]},
            }
        if floor := measured.get("floor"):
            entry["floor"] = {
                **{k: median([m["seconds"][k] for m in floor]) for k in floor[0]["seconds"]},
                "floor_seconds": median([m["floor_seconds"] for m in floor]),
                "contrib_seconds": median([m["contrib_seconds"] for m in floor]),
                "due_rows": floor[0]["due_rows"],
            }
        if groups := measured.get("shards"):
            entry["shards"] = {key: median([g["seconds"] for g in runs]) for key, runs in groups.items()}
        summary[rows] = entry
    return summary


def render(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=220)  # a file or pipe gets unwrapped rows
    info = results["machine"]
    console.print(
        f"[bold]Machine[/bold]: nproc={info['nproc']}  cpu={info['cpu']}  memory={info['memory']}  "
        f"python {info['python']}  polars {info['polars']} (threads {info['polars_threads']})  "
        f"lightgbm {info['lightgbm']}  duckdb {info['duckdb']}  dagster {info['dagster']}  numpy {info['numpy']}"
    )
    console.print(
        f"Load average (1, 5, 15 min) at the start: {results['load_before']}, at the end: {results['load_after']}"
    )
    console.print(
        f"One clean night ({NIGHT}), seed {SEED}; champion bootstrapped on {results['history_days']} nights x "
        f"{HISTORY_ROWS_PER_DAY} rows, a challenger (seed {CHALLENGER_SEED}) in shadow; {results['repeats']} "
        "repeat(s), each measurement in a fresh process. Cells: median \\[min–max]."
    )
    sizes = results["sizes"]

    night = Table(title="(a) The night through Dagster: nightly_batch.execute_in_process on a DuckDB warehouse file")
    for column in (
        "rows",
        "wall s",
        "rows/s",
        "time to answers s",
        "answer steps s (sum)",
        "time to reason codes s",
        "reason-code rows",
        "peak RSS MiB",
        "VmHWM MiB",
        "warehouse MiB",
        "other CPU %",
        "ok",
    ):
        night.add_column(column, justify="right")
    for rows, measured in sizes.items():
        runs = measured.get("dagster", [])
        if not runs:
            continue
        ok = all(m["success"] and m["stored_rows"]["outcomes"] == int(rows) for m in runs)
        night.add_row(
            f"{int(rows):,}",
            fmt_range([m["seconds"] for m in runs]),
            fmt_rate(int(rows), [m["seconds"] for m in runs]),
            fmt_range([to_answers(m) for m in runs]),
            fmt_range([answer_steps(m) for m in runs]),
            fmt_range([m["reason_codes_step_end"] or 0.0 for m in runs]),
            f"{runs[0]['due_rows']:,}",
            fmt_range([m["peak_rss_mib"] for m in runs], 0),
            fmt_range([m["vm_hwm_mib"] or 0.0 for m in runs], 0),
            fmt_range([m["warehouse_mib"] for m in runs], 0),
            fmt_range([(m["others_cpu"] or 0.0) * 100 for m in runs], 0),
            "yes" if ok else "[red]NO[/red]",
        )
    console.print(night)
    console.print(
        "time to answers: the outcomes asset's seconds_to_answers metadata (run start -> outcomes stored); answer "
        f"steps: the durations of {', '.join(ANSWER_STEPS)} added up (the time to answers if no other step ran "
        "before outcomes); time to reason codes: the reason_codes step's end, from the run's start."
    )
    render_steps(console, sizes)

    floor = Table(title="(b) The floor, same file, same run: polars read, encode, LightGBM predict, Parquet write")
    for column in (
        "rows",
        "read",
        "encode",
        "predict champion",
        "predict challenger",
        "write",
        "floor s",
        "due rows",
        "pred_contrib s (due rows)",
        "pred_contrib rows/s",
        "peak RSS MiB",
        "other CPU %",
    ):
        floor.add_column(column, justify="right")
    notes = []
    for rows, measured in sizes.items():
        runs = measured.get("floor", [])
        if not runs:
            continue
        extrapolated = runs[0]["contrib_extrapolated"]
        if extrapolated:
            notes.append(
                f"{int(rows):,} rows: pred_contrib timed on {runs[0]['contrib_rows']:,} of the "
                f"{runs[0]['due_rows']:,} due rows and extrapolated (marked *)"
            )
        floor.add_row(
            f"{int(rows):,}",
            *(fmt_range([m["seconds"][k] for m in runs], 3) for k in runs[0]["seconds"]),
            fmt_range([m["floor_seconds"] for m in runs]),
            f"{runs[0]['due_rows']:,}",
            fmt_range([m["contrib_seconds"] for m in runs], 1) + (" *" if extrapolated else ""),
            fmt_range([m["contrib_rows"] / m["contrib_sample_seconds"] for m in runs], 0),
            fmt_range([m["peak_rss_mib"] for m in runs], 0),
            fmt_range([(m["others_cpu"] or 0.0) * 100 for m in runs], 0),
        )
    console.print(floor)
    for note in notes:
        console.print(f"[yellow]extrapolated[/yellow]: {note}")
    console.print(
        "floor s = read + encode + predict champion + predict challenger + write (LightGBM with its default threads, "
        "one per core); pred_contrib is the champion's, the model that answered every due row."
    )

    shards = Table(
        title=f"(c) Row-level steps through answer_shard (validate, score, shadow, answer), each process reading the "
        f"night itself: 1 shard vs {SHARDS}"
    )
    for column in (
        "rows",
        "shards x processes",
        "work s (go to last end)",
        "wall s (with interpreter starts)",
        "slowest shard s (read + answer)",
        "speedup vs 1 shard (work)",
        "cores busy (CPU s / work s)",
        "outcome rows",
        "peak RSS per process MiB",
        "other CPU %",
    ):
        shards.add_column(column, justify="right")
    for rows, measured in sizes.items():
        groups = measured.get("shards", {})
        for key, runs in groups.items():
            whole = groups.get(one_shard_key(key), [])
            speedup = (
                fmt_range([one["seconds"] / many["seconds"] for one, many in zip(whole, runs, strict=False)])
                if whole
                else ""
            )
            shards.add_row(
                f"{int(rows):,}",
                key.replace("x", " x "),
                fmt_range([g["seconds"] for g in runs]),
                fmt_range([g["wall_seconds"] for g in runs]),
                fmt_range([g["slowest_seconds"] for g in runs]),
                speedup,
                fmt_range([g["cpu_seconds"] / g["seconds"] for g in runs]),
                f"{runs[0]['outcome_rows']:,}",
                fmt_range([g["peak_rss_mib"] for g in runs], 0),
                fmt_range([(g["others_cpu"] or 0.0) * 100 for g in runs], 0),
            )
    if shards.row_count:
        console.print(shards)

    targets = Table(title="Issue #11's targets, from this run (ratio per repeat, median \\[min–max])")
    for column in ("target", "rows", "measured", "target", "met"):
        targets.add_column(column, justify="right" if column != "target" else "left")
    for entry in results["targets"]:
        met = {True: "met", False: "[red]NOT met[/red]", None: ""}[entry["met"]]
        targets.add_row(
            entry["target"],
            f"{int(entry['rows']):,}",
            fmt_range(entry["values"]) + "x" if entry["values"] else "n/a",
            entry["limit"],
            met,
        )
    console.print(targets)
    console.print(
        "other CPU %: share of the machine's CPU time used by OTHER processes during the timed region "
        f"(nproc={info['nproc']}); well above 0 means the CPUs were shared and the times are pessimistic."
    )
    for note in results.get("notes", []):
        console.print(f"[yellow]note[/yellow]: {note}")


def render_steps(console, sizes: dict) -> None:
    """Each Dagster step's median duration, its end from the run's start and its highest sampled RSS."""
    from rich.table import Table

    nights = [(rows, measured["dagster"]) for rows, measured in sizes.items() if measured.get("dagster")]
    found = {k for _, runs in nights for m in runs for k in m["step_seconds"]}
    order = [k for _, runs in nights for m in runs for k in m.get("step_order", [])]
    rest = sorted(found - {*ANSWER_STEPS, REASON_STEP}, key=lambda k: order.index(k) if k in order else len(order))
    keys = [k for k in (*ANSWER_STEPS, REASON_STEP) if k in found] + rest
    if not keys:
        return
    table = Table(
        title="Dagster steps: duration STEP_START→STEP_SUCCESS (incl. the IO manager's DuckDB loads/stores), its end "
        "from the run's start, highest RSS sampled during the step (every 20 ms); medians"
    )
    table.add_column("step")
    table.add_column("group")
    for rows, _ in nights:
        for what in ("s", "ends at s", "peak RSS MiB"):
            table.add_column(f"{int(rows):,}: {what}", justify="right")

    def group(key: str) -> str:
        return "answers" if key in ANSWER_STEPS else "reason codes" if key == REASON_STEP else "rest of the job"

    for key in keys:
        cells = []
        for _, runs in nights:
            ends = [m["step_ends"][key] for m in runs if key in m.get("step_ends", {})]
            cells += [
                f"{median([m['step_seconds'].get(key, 0.0) for m in runs]):.2f}",
                f"{median(ends):.2f}" if ends else "",
                f"{median([m['step_peak_rss_mib'].get(key) or 0.0 for m in runs]):,.0f}",
            ]
        table.add_row(key, group(key), *cells)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[100_000, ONE_MILLION], help="night sizes (default 100000 1000000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="fresh-process repeats per size and measurement (default 3)"
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=HISTORY_DAYS,
        help=f"nights of {HISTORY_ROWS_PER_DAY} labeled rows each model is bootstrapped on (default {HISTORY_DAYS})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 10k rows, 1 repeat, 5 nights of history, shards at 10k"
    )
    parser.add_argument(
        "--ten-million", action="store_true", help="also measure a 10,000,000-row night (long; over 19 GiB RSS)"
    )
    parser.add_argument(
        "--contrib-sample",
        type=int,
        default=CONTRIB_SAMPLE_ROWS,
        help=f"time pred_contrib on at most this many due rows and extrapolate (default {CONTRIB_SAMPLE_ROWS})",
    )
    parser.add_argument(
        "--shard-rows",
        type=int,
        nargs="*",
        default=[ONE_MILLION],
        help="sizes at which 1 shard is compared with 4 (default 1000000; none: no shard measurement)",
    )
    parser.add_argument(
        "--shard-processes",
        type=int,
        nargs="+",
        default=[2, SHARDS],
        help=f"processes the {SHARDS} shards run on, one measurement each (default 2 4)",
    )
    parser.add_argument(
        "--one-core-each",
        action="store_true",
        help="also measure the shard layouts with process i held to core i mod cores (as on machines of one core): "
        "how the shards scale with cores, where one process cannot use them all",
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="project config to copy (default: the repo's)"
    )
    parser.add_argument(
        "--min-available-gib",
        type=float,
        default=2.0,
        help="stop a Dagster night when the machine's available memory falls below this (default 2 GiB)",
    )
    parser.add_argument("--json", type=Path, help="also write all measurements and medians to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data, warehouses, worker logs)")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker:
        worker_main(args._worker)
        return 0
    if args.quick:
        args.rows, args.repeats, args.history_days, args.shard_rows = [10_000], 1, 5, [10_000]
    if args.ten_million and TEN_MILLION not in args.rows:
        args.rows = [*args.rows, TEN_MILLION]
    if args.repeats < 1 or args.history_days < 1 or args.contrib_sample < 1 or any(r < 1 for r in args.rows):
        parser.error("--rows, --repeats, --history-days and --contrib-sample must be positive")
    if any(p < 1 or p > SHARDS for p in args.shard_processes):
        parser.error(f"--shard-processes values must be between 1 and {SHARDS}")

    scratch = Path(tempfile.mkdtemp(prefix="nk-bench-"))
    started = time.perf_counter()
    results: dict = {
        "repeats": args.repeats,
        "history_days": args.history_days,
        "night": NIGHT,
        "load_before": [round(v, 2) for v in os.getloadavg()],
        "sizes": {},
        "prepare": {},
        "notes": [],
    }

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    try:
        results["machine"] = machine(run_worker("versions", scratch, "versions"))
        for rows in args.rows:
            progress(f"{rows:,} rows: generating the night, bootstrapping the champion and a challenger")
            workdir, info = prepare_size(rows, args.config, scratch, args.history_days)
            results["prepare"][str(rows)] = info
            measured: dict = {"dagster": [], "floor": [], "shards": {}}
            results["sizes"][str(rows)] = measured
            spec = {"workdir": str(workdir), "rows": rows, "night": NIGHT}
            for repeat in range(args.repeats):
                label = f"{rows}-{repeat}"
                reset_warehouse(workdir)
                due_file = str(workdir / f"due-{repeat}.parquet")
                night = run_worker(
                    "dagster",
                    scratch,
                    f"dagster-{label}",
                    due_file=due_file,
                    min_available_gib=args.min_available_gib,
                    **spec,
                )
                measured["dagster"].append(night)
                progress(
                    f"{rows:,} rows, repeat {repeat + 1}/{args.repeats}, dagster: {night['seconds']:.2f} s, answers "
                    f"at {to_answers(night):.2f} s, reason codes at {night['reason_codes_step_end'] or 0:.2f} s, "
                    f"ok {night['success']}, "
                    f"peak RSS {night['peak_rss_mib']:,.0f} MiB"
                )
                check_night(results["notes"], rows, repeat, night)
                if not night["success"]:
                    continue  # no answers and reason codes to hold the floor against
                floor = run_worker(
                    "floor", scratch, f"floor-{label}", due_file=due_file, contrib_sample=args.contrib_sample, **spec
                )
                measured["floor"].append(floor)
                progress(
                    f"{rows:,} rows, repeat {repeat + 1}/{args.repeats}, floor: {floor['floor_seconds']:.2f} s, "
                    f"pred_contrib on {floor['due_rows']:,} due rows {floor['contrib_seconds']:.1f} s"
                    + (" (extrapolated)" if floor["contrib_extrapolated"] else "")
                )
                if rows in args.shard_rows:
                    layouts = [(1, 1), *((SHARDS, p) for p in args.shard_processes)]
                    for one_core_each in (False, True) if args.one_core_each else (False,):
                        for shards, processes in layouts:
                            key = f"{shards}x{processes}" + (ONE_CORE_EACH if one_core_each else "")
                            group = run_shard_group(
                                scratch, f"shards-{label}-{key}", shards, processes, one_core_each, **spec
                            )
                            measured["shards"].setdefault(key, []).append(group)
                            progress(
                                f"{rows:,} rows, repeat {repeat + 1}/{args.repeats}, {shards} shard(s) on "
                                f"{processes} process(es){ONE_CORE_EACH if one_core_each else ''}: "
                                f"{group['seconds']:.2f} s, {group['wall_seconds']:.2f} s with interpreter starts"
                            )
                            if group["outcome_rows"] != rows or group["champion_errors"]:
                                results["notes"].append(
                                    f"{rows:,} rows, {key} shards: {group['outcome_rows']:,} outcome rows, champion "
                                    f"errors {group['champion_errors']}"
                                )
            if not args.keep:  # a 1M-row warehouse is a few hundred MB; free it before the next size
                shutil.rmtree(workdir, ignore_errors=True)
        results["load_after"] = [round(v, 2) for v in os.getloadavg()]
        results["elapsed_seconds"] = time.perf_counter() - started
        results["targets"] = target_rows(results)
        results["summary"] = summarise(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
        render(results)
        print(
            f"benchmark wall time {results['elapsed_seconds']:.0f} s (generation, bootstrap and process starts "
            "included)"
        )
    except WorkerFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def check_night(notes: list[str], rows: int, repeat: int, night: dict) -> None:
    """Note a Dagster night that failed or did not answer every row."""
    if night["stopped_low_memory"]:
        stopped = night["stopped_low_memory"]
        notes.append(
            f"{rows:,} rows, repeat {repeat + 1}: STOPPED when the machine had {stopped['available_mib']:,.0f} MiB "
            f"available, at {stopped['rss_mib']:,.0f} MiB RSS, during {night['running_when_stopped']}; its peak RSS "
            "is a lower bound and it has no floor"
        )
        return
    if not night["success"]:
        notes.append(f"{rows:,} rows, repeat {repeat + 1}: the Dagster run FAILED: {night['failures']}")
    if night["stored_rows"].get("outcomes") != rows:
        notes.append(f"{rows:,} rows, repeat {repeat + 1}: stored rows {night['stored_rows']}")
    if not night["shadow_rows"]:
        notes.append(f"{rows:,} rows, repeat {repeat + 1}: the challenger scored no row in shadow")


if __name__ == "__main__":
    sys.exit(main())
