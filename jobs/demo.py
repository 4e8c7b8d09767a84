"""The demo: simulated nights driven through the real Dagster definitions on a persistent instance.

The clock is simulated, the machinery is not: for each night the real schedule is evaluated with the night's
run time as "now", and exactly the runs it requests are executed, in order, on the instance ``dagster dev`` opens.

The demo lives in its own folder (its config is ``<folder>/nightkeeper.yaml``, a copy of the credit example unless one
is there already) and never reads $NIGHTKEEPER_CONFIG. It resets only storage it created itself — recorded in
``<folder>/.nightkeeper-demo-storage`` before it creates it — or storage the caller names explicitly for reset, so it
cannot wipe a real project.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from dagster import DagsterInstance, Definitions, RunRequest, build_schedule_context, build_sensor_context
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assets.checks import REPORT_LINK
from jobs.definitions import MONTHLY_REVIEW_JOB, NIGHTLY_SCHEDULE, REPOSITORY_CONFIG, build_definitions
from jobs.instance import persistent_instance
from jobs.nights import QUIET_LOGS, NightRun, execute_night
from jobs.resources import NIGHTLY_SCHEMA
from jobs.run_guard import launch_run
from nightkeeper import warehouse
from nightkeeper.config import ProjectConfig, StorageConfig, load_config
from nightkeeper.examples import simulator
from nightkeeper.models import bootstrap_champion


@dataclass(frozen=True)
class DemoPlan:
    nights: int = 30
    rows_per_night: int = 5000
    seed: int = 7
    bad_data_night: int = 3
    concept_drift_night: int = 6
    history_days: int = 60
    history_rows_per_day: int = 2000
    label_delay_days: int = 2

    def scenarios(self) -> simulator.ScenarioPlan:
        """A bad-data night, then from ``concept_drift_night`` on the world changes how defaults happen."""
        return simulator.ScenarioPlan.combine(
            simulator.ScenarioPlan.bad_data_at(self.bad_data_night),
            simulator.ScenarioPlan.concept_drift(self.concept_drift_night, shift=1.0),
        )


DEMO_CONFIG_NAME = "nightkeeper.yaml"
OWNED_STORAGE_FILE = ".nightkeeper-demo-storage"


class StorageNotOwned(Exception):
    """The demo's config points at existing storage the demo did not create; the message names each path."""


def prepare_demo_folder(folder: Path) -> Path:
    """Create ``folder`` and its config (a copy of the credit example, kept if already there); returns the config
    path."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / DEMO_CONFIG_NAME
    if not config_path.exists():
        shutil.copyfile(REPOSITORY_CONFIG, config_path)
    return config_path.resolve()


def demo_storage(config: ProjectConfig) -> list[Path]:
    """Everything the demo writes and resets: the warehouse, landing, labels, models and Dagster home."""
    return [config.warehouse_path, config.landing_path, config.labels_path, config.models_path, config.dagster_home]


def reset_demo_storage(config: ProjectConfig, folder: Path, reset: Sequence[Path] = ()) -> list[Path]:
    """Delete the demo's storage and record it as the demo's own; returns what was deleted.

    A storage path that exists is deleted only if the demo created it (listed in ``folder``'s owned-storage file) or
    it is, or lies inside, one of ``reset``. Otherwise nothing at all is deleted and StorageNotOwned names the paths.
    """
    record = folder / OWNED_STORAGE_FILE
    owned = {Path(line) for line in record.read_text().splitlines() if line} if record.exists() else set()
    allowed = [Path(path).resolve() for path in reset]
    storage = demo_storage(config)
    foreign = [
        path
        for path in storage
        if path.exists() and path not in owned and not any(path == a or a in path.parents for a in allowed)
    ]
    if foreign:
        raise StorageNotOwned(
            "the demo resets its storage, and these paths exist but were not created by the demo: "
            + ", ".join(str(path) for path in foreign)
            + ". Nothing was deleted. Run the demo in another folder (--dir), or, to delete them, pass "
            + " ".join(f"--reset {path}" for path in foreign)
        )
    # recorded before anything is created, so storage of a demo that crashed half-way is still known as its own
    record.write_text("".join(f"{path}\n" for path in storage))
    removed = []
    for path in storage:
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
        elif path.exists():
            path.unlink()
            removed.append(path)
    for sidecar in config.warehouse_path.parent.glob(config.warehouse_path.name + ".wal"):
        sidecar.unlink()
    return removed


def run_demo(folder: Path, plan: DemoPlan, console, reset: Sequence[Path] = ()) -> tuple[Path, pl.DataFrame]:
    """Simulate, bootstrap and run ``plan.nights`` nights through Dagster in ``folder``; returns the demo's config path
    and the per-night summary. Raises StorageNotOwned, before writing any storage, if its storage is not its own."""
    config_path = prepare_demo_folder(folder)
    config = load_config(config_path)
    reset_demo_storage(config, folder.resolve(), reset)
    start = config.schedule.start_date
    nights = [start + dt.timedelta(days=i) for i in range(plan.nights)]

    console.print(
        f"[bold]Simulating[/] {plan.nights} nights × {plan.rows_per_night:,} applications: bad data on "
        f"{start + dt.timedelta(days=plan.bad_data_night)}, concept drift from "
        f"{start + dt.timedelta(days=plan.concept_drift_night)}, labels {plan.label_delay_days} days late"
    )
    simulator.simulate_to_folders(
        start,
        plan.nights,
        plan.rows_per_night,
        plan.seed,
        plan.scenarios(),
        config.landing_path,
        config.labels_path,
        label_delay_days=plan.label_delay_days,
    )
    history = simulator.simulate_history(
        start - dt.timedelta(days=1), plan.history_days, plan.history_rows_per_day, plan.seed
    )
    champion = bootstrap_champion(config, history, start)
    console.print(
        f"[bold]Bootstrapped[/] champion {champion.version}: holdout AUC {champion.card.holdout_metrics['auc']:.3f} "
        f"on {champion.card.training_window.holdout_rows:,} rows"
    )

    instance = persistent_instance(config.dagster_home)
    defs = build_definitions(config_path)
    runs = run_nights(defs, instance, nights, config, console)
    for line in run_monthly_reports(defs, instance, nights, config.storage.lock_wait_seconds):
        console.print(line, soft_wrap=True)
    failed_runs = [f"{night} ({run.run_id})" for night, run in runs.items() if not run.success]
    if failed_runs:
        console.print(f"[red]{len(failed_runs)} run(s) failed:[/] {failed_runs}")
    checks = pl.DataFrame(
        {
            "night": [dt.date.fromisoformat(n) for n in runs],
            "failed_checks": [", ".join(r.failed_checks) for r in runs.values()],
        },
        schema={"night": pl.Date, "failed_checks": pl.String},
    )
    return config_path, night_summary(config, nights).join(checks, on="night", how="left")


def run_nights(
    defs: Definitions, instance: DagsterInstance, nights: list[dt.date], config: ProjectConfig, console
) -> dict[str, NightRun]:
    """For each night, evaluate the nightly schedule at its run time and execute the runs it requests, then evaluate
    every sensor and execute the runs they request (retrain, shadow, canary steps, promotion, rollback), in order."""
    schedule = defs.resolve_schedule_def(NIGHTLY_SCHEDULE)
    run_at = config.schedule.run_at
    runs: dict[str, NightRun] = {}
    sensors = SensorDriver(defs, instance, config.storage.lock_wait_seconds)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    with progress:
        task = progress.add_task("nights", total=len(nights))
        for night in nights:
            tick_time = dt.datetime.combine(night + dt.timedelta(days=1), run_at, tzinfo=dt.UTC)
            with build_schedule_context(instance=instance, scheduled_execution_time=tick_time) as context:
                requests = schedule.evaluate_tick(context).run_requests or []
            for request in requests:
                runs[_partition_of(request)] = execute_night(
                    defs,
                    instance,
                    _partition_of(request),
                    {**request.tags, "dagster/schedule_name": schedule.name},
                    config.storage.lock_wait_seconds,
                )
            for line in sensors.tick():
                progress.console.print(f"  {night}: {line}")
            progress.update(task, advance=1, description=f"night {night}")
    return runs


def run_monthly_reports(
    defs: Definitions, instance: DagsterInstance, nights: list[dt.date], lock_wait_seconds: float
) -> list[str]:
    """Evaluate the monthly review schedule at its tick after each simulated month and execute what it requests."""
    schedule = defs.resolve_schedule_def("monthly_review_schedule")
    job = defs.resolve_job_def(MONTHLY_REVIEW_JOB)
    lines = []
    for month_start in sorted({night.replace(day=1) for night in nights}):
        next_month = (month_start + dt.timedelta(days=32)).replace(day=8)
        tick = dt.datetime.combine(next_month, dt.time(6, 0), tzinfo=dt.UTC)
        with build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
            requests = schedule.evaluate_tick(context).run_requests or []
        for request in requests:
            result = launch_run(
                job,
                instance,
                lock_wait_seconds,
                partition_key=request.partition_key,
                run_config=QUIET_LOGS,
                tags={**request.tags, "dagster/schedule_name": schedule.name},
            )
            reports = result.asset_materializations_for_node("monthly_review") if result.success else []
            html = next((report.metadata[REPORT_LINK].value for report in reports), None)
            lines.append(
                f"[bold]Monthly review[/] {_partition_of(request)[:7]}: {html or 'FAILED (see the run in the UI)'}"
            )
    return lines


class SensorDriver:
    """Evaluates the definitions' sensors against the instance, keeping their cursors, and executes what they request
    (each run key once, as the daemon would)."""

    def __init__(
        self, defs: Definitions, instance: DagsterInstance, lock_wait_seconds: float = StorageConfig().lock_wait_seconds
    ) -> None:
        self.defs, self.instance, self.lock_wait_seconds = defs, instance, lock_wait_seconds
        self.cursors: dict[str, str | None] = {}
        self.done: set[str | None] = set()

    def tick(self) -> list[str]:
        """One round over every sensor, repeated while any of them requested a run; returns what was run."""
        ran: list[str] = []
        while True:
            requested = False
            for sensor in self.defs.sensors or []:
                with build_sensor_context(
                    instance=self.instance, cursor=self.cursors.get(sensor.name), definitions=self.defs
                ) as context:
                    data = sensor.evaluate_tick(context)
                self.cursors[sensor.name] = data.cursor
                for request in data.run_requests or []:
                    if request.run_key in self.done:
                        continue
                    self.done.add(request.run_key)
                    requested = True
                    job_name = request.job_name or sensor.job_name
                    if job_name is None:
                        raise ValueError(f"sensor {sensor.name} requested a run without naming a job")
                    result = launch_run(
                        self.defs.resolve_job_def(job_name),
                        self.instance,
                        self.lock_wait_seconds,
                        run_config={**request.run_config, **QUIET_LOGS},
                        tags={**request.tags, "dagster/sensor_name": sensor.name},
                    )
                    ran.append(f"{sensor.name} → {job_name} ({request.run_key}){'' if result.success else ' FAILED'}")
            if not requested:
                return ran


def night_summary(config: ProjectConfig, nights: list[dt.date]) -> pl.DataFrame:
    """Rows, quarantined, fallback and undecided counts and the serving model version per night, from the warehouse."""
    with warehouse.connect(config.warehouse_path) as connection:
        return connection.execute(
            f"""select partition_date as night,
                       count(*) as rows,
                       count(*) filter (where source = 'model') as model,
                       count(*) filter (where source = 'canary') as canary,
                       count(*) filter (where reason like 'quarantined:%') as quarantined,
                       count(*) filter (where source = 'fallback') as fallback,
                       count(*) filter (where source = 'quarantine') as undecided,
                       string_agg(distinct model_version, ',') filter (where source = 'model') as model_version
                from {NIGHTLY_SCHEMA}.outcomes
                where partition_date between $first and $last
                group by partition_date order by partition_date""",
            {"first": nights[0], "last": nights[-1]},
        ).pl()


def _partition_of(request: RunRequest) -> str:
    """The partition a schedule's run request names (every Nightkeeper schedule is partitioned)."""
    if request.partition_key is None:
        raise ValueError(f"the schedule requested a run without a partition: {request}")
    return request.partition_key
