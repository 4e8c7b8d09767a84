"""The Definitions of one project: ``build_definitions(config_path)``.

Everything is built from the project config it is given, so the same code serves any dataset a config describes.
Nothing here reads a default config at import: a code location names its config explicitly (``jobs/repository.py``
for this repository's own nightkeeper.yaml, ``jobs.instance.write_workspace`` for any other).
"""

from __future__ import annotations

from pathlib import Path

from dagster import (
    AssetSelection,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    Definitions,
    ExecutorDefinition,
    FilesystemIOManager,
    MonthlyPartitionsDefinition,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
    partition_loading_context,
    schedule,
)

from assets.lifecycle import candidate_evaluation, candidate_model, candidate_model_card, model_registry
from assets.monitoring import build_monitoring_assets
from assets.nightly import build_nightly_assets
from assets.reports import build_report_assets
from assets.review import build_review_assets, review_labels
from assets.shards import SHARD_REPORTS_IO_MANAGER
from jobs.lifecycle import build_lifecycle_automation, promote_job, retrain_job, rollback_job
from jobs.resources import NIGHTLY_SCHEMA, ProjectResource, WarehouseIOManager, WarehouseResource
from jobs.review import build_review_inbox_sensor, review_import_job
from jobs.run_guard import build_reaper_sensor
from jobs.webhook import alert_outbox_job, build_alert_outbox_sensor
from nightkeeper.config import ProjectConfig, load_config
from nightkeeper.warehouse import Lake

REPOSITORY_CONFIG = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
"""This repository's own project config: the credit example, which the demo copies into its folder."""

NIGHTLY_JOB = "nightly_batch"
NIGHTLY_SCHEDULE = "nightly_batch_schedule"
MONTHLY_REVIEW_JOB = "monthly_review_report"


def build_definitions(config_path: Path, executor: ExecutorDefinition | None = None) -> Definitions:
    """All jobs, schedules, sensors, assets and resources for the project config at ``config_path``, their steps run
    by ``executor``: a deployment passes its own (e.g. ``jobs/kubernetes.py``); by default a run's steps run in the
    run's own process, or, with ``scale.shards`` > 1, each in a process of its own so the shards run at once."""
    config = load_config(config_path)
    if executor is None:
        executor = multiprocess_executor if config.scale.shards > 1 else in_process_executor
    partitions = night_partitions(config)
    nightly = [
        *build_nightly_assets(partitions, config.scale.shards),
        *build_monitoring_assets(partitions, config.scale.shards),
        *build_review_assets(partitions),
    ]
    nightly_batch = define_asset_job(
        NIGHTLY_JOB,
        selection=AssetSelection.groups("nightly", "monitoring") | AssetSelection.assets("review_queue"),
        partitions_def=partitions,
        description="One night: ingest, validate, score with the champion, fall back where it cannot, record outcomes; "
        "then late labels, performance, drift and alerts.",
    )
    nightly_schedule = build_nightly_schedule(config, partitions, nightly_batch)
    monthly = MonthlyPartitionsDefinition(
        start_date=config.schedule.start_date.replace(day=1).isoformat(), timezone=config.schedule.timezone
    )
    reports = build_report_assets(monthly)
    monthly_review_job = define_asset_job(
        MONTHLY_REVIEW_JOB,
        selection=AssetSelection.groups("reports"),
        description="Export the month and render its review report.",
    )
    # on the 8th: the month's last nights have had a week for their labels to land
    monthly_review_schedule = build_schedule_from_partitioned_job(
        monthly_review_job,
        name="monthly_review_schedule",
        day_of_month=8,
        hour_of_day=6,
        default_status=DefaultScheduleStatus.RUNNING,
    )
    sensors, lifecycle_schedules = build_lifecycle_automation(config)
    warehouse_resource, io_manager = warehouse_resources(config)
    return Definitions(
        assets=[
            *(a for a in nightly if not _is_check(a)),
            candidate_model,
            candidate_evaluation,
            candidate_model_card,
            model_registry,
            review_labels,
            *reports,
        ],
        asset_checks=[a for a in nightly if _is_check(a)],
        jobs=[
            nightly_batch,
            retrain_job,
            promote_job,
            rollback_job,
            review_import_job,
            monthly_review_job,
            alert_outbox_job,
        ],
        schedules=[nightly_schedule, monthly_review_schedule, *lifecycle_schedules],
        sensors=[
            *sensors,
            build_review_inbox_sensor(config),
            build_alert_outbox_sensor(config),
            build_reaper_sensor(),
        ],
        resources={
            "project": ProjectResource(config_path=str(Path(config_path).resolve())),
            "warehouse": warehouse_resource,
            "io_manager": io_manager,
            SHARD_REPORTS_IO_MANAGER: shard_reports_io_manager(config),
        },
        # One laptop: steps run in the run's own process, so a night costs one process start, and the warehouse
        # pool serialises them; a sharded night's shard ops need processes of their own to run at once. A
        # deployment passes its executor (jobs/kubernetes.py).
        executor=executor,
    )


def warehouse_resources(config: ProjectConfig) -> tuple[WarehouseResource, WarehouseIOManager]:
    """The warehouse resource and IO manager for the config's ``storage``: the DuckDB file, or the DuckLake."""
    location = config.warehouse
    catalog, data_path = (location.catalog, location.data_path) if isinstance(location, Lake) else (None, None)
    database = str(config.warehouse_path)
    return (
        WarehouseResource(database=database, lake_catalog=catalog, lake_data_path=data_path),
        WarehouseIOManager(database=database, lake_catalog=catalog, lake_data_path=data_path, schema=NIGHTLY_SCHEMA),
    )


SHARD_REPORTS_FOLDER = "shard_reports"


def shard_reports_io_manager(config: ProjectConfig) -> FilesystemIOManager:
    """Where a sharded night's shard ops leave their reports for its judge op (pickles, one per shard and night). On a
    DuckLake, in the folder ``shard_reports`` under the lake's data path: every step reaches it wherever it runs (a
    folder every pod mounts, or object storage through fsspec, e.g. s3fs in the ``kubernetes`` extra). On the DuckDB
    file, one machine's, in the Dagster instance's storage."""
    location = config.warehouse
    if isinstance(location, Lake):
        return FilesystemIOManager(base_dir=f"{location.data_path.rstrip('/')}/{SHARD_REPORTS_FOLDER}")
    return FilesystemIOManager()


def build_nightly_schedule(
    config: ProjectConfig, partitions: TimeWindowPartitionsDefinition, nightly_batch
) -> ScheduleDefinition:
    """The schedule of ``nightly_batch``: at each tick, one run of the last night (or week) that is over, keyed by it so
    a night runs once however many ticks see it. Ticks at ``schedule.cron`` if set, else at ``run_at`` after each
    night (weekly: on the day after the week's last day, the weekday its partitions start on)."""
    weekly = config.schedule.cadence == "weekly"
    cron = config.schedule.cron or partitions.get_cron_schedule(
        minute_of_hour=config.schedule.run_at.minute,
        hour_of_day=config.schedule.run_at.hour,
        day_of_week=_dagster_weekday(config.schedule.start_date) if weekly else None,
    )

    @schedule(
        cron_schedule=cron,
        job=nightly_batch,
        name=NIGHTLY_SCHEDULE,
        execution_timezone=config.schedule.timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Runs the batch of the week starting D once that week is over."
        if weekly
        else "Runs the batch of night D once D is over.",
    )
    def nightly_batch_schedule(context: ScheduleEvaluationContext):
        with partition_loading_context(effective_dt=context.scheduled_execution_time):
            night = partitions.get_last_partition_key()
        if night is None:
            return SkipReason("no night is over yet")
        # Dagster dedupes a schedule's run keys per tick only; a cron ticking more often than nights must not rerun one
        launched = context.instance.get_runs(
            RunsFilter(
                job_name=NIGHTLY_JOB, tags={"dagster/partition": night, "dagster/schedule_name": NIGHTLY_SCHEDULE}
            ),
            limit=1,
        )
        if launched:
            return SkipReason(f"night {night} was already launched by this schedule (run {launched[0].run_id})")
        return nightly_batch.run_request_for_partition(partition_key=night, run_key=night)

    return nightly_batch_schedule


def night_partitions(config: ProjectConfig) -> TimeWindowPartitionsDefinition:
    """The nightly partitions for the config's cadence: one per day, or one per week keyed by the date its week starts
    (weeks start on ``schedule.start_date``'s weekday, so start_date is the first key)."""
    schedule = config.schedule
    if schedule.cadence == "weekly":
        return WeeklyPartitionsDefinition(
            start_date=schedule.start_date.isoformat(),
            timezone=schedule.timezone,
            day_offset=_dagster_weekday(schedule.start_date),
        )
    return DailyPartitionsDefinition(start_date=schedule.start_date.isoformat(), timezone=schedule.timezone)


def _dagster_weekday(day) -> int:
    """Dagster counts weekdays from Sunday = 0."""
    return day.isoweekday() % 7


def _is_check(definition) -> bool:
    from dagster import AssetChecksDefinition

    return isinstance(definition, AssetChecksDefinition)
