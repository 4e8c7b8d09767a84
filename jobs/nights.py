"""Nights on demand: one night (``nightkeeper run``) or a range (``nightkeeper backfill``), as real runs of the nightly
job on the config's persistent Dagster instance, so the UI shows them beside the scheduled ones.

A backfill is a real Dagster asset backfill record (the UI's Backfills page lists it, and its runs carry the
``dagster/backfill`` tag), but the runs are executed here, in order, one at a time — no daemon is needed. The record is
stored once its runs are done, already in a terminal state: a daemon that later runs on the same instance
(``dagster dev``) only launches backfills that are still REQUESTED, so it never runs these nights a second time.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance, Definitions

# Dagster has no public API to record a backfill whose runs were executed elsewhere (here, in order, without a daemon):
# the record, its id and its tag are private types, used only by _backfill_record and backfill_nights below.
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset  # noqa: TID251
from dagster._core.definitions.events import AssetKeyPartitionKey  # noqa: TID251
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill  # noqa: TID251
from dagster._core.storage.tags import BACKFILL_ID_TAG  # noqa: TID251
from dagster._core.utils import make_new_backfill_id  # noqa: TID251

from jobs.definitions import NIGHTLY_JOB, build_definitions, night_partitions
from jobs.instance import persistent_instance
from jobs.run_guard import launch_run
from nightkeeper.config import ProjectConfig, load_config

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
TRIGGER_TAG = "nightkeeper/trigger"


@dataclass(frozen=True)
class NightRun:
    """One run of the nightly job: its partition key, run id, success, and the asset checks that failed."""

    partition: str
    run_id: str
    success: bool
    failed_checks: list[str]


@dataclass(frozen=True)
class Backfill:
    """A backfill's id (as the Dagster UI shows it) and its runs, in partition order."""

    backfill_id: str
    runs: list[NightRun]


def partition_for(config: ProjectConfig, night: dt.date) -> str:
    """The partition key whose period holds ``night`` (the night itself when daily, its week's first day when weekly).
    Raises ValueError when the night is before ``schedule.start_date`` or its period is not over yet."""
    keys = partitions_between(config, night, night)
    if not keys:
        raise ValueError(
            f"night {night} has no partition: partitions start on schedule.start_date {config.schedule.start_date} and "
            f"end with the last {'week' if config.schedule.cadence == 'weekly' else 'night'} that is over"
        )
    return keys[0]


def partitions_between(config: ProjectConfig, first: dt.date, last: dt.date) -> list[str]:
    """Partition keys, in order, of every complete period that overlaps ``first`` … ``last`` (inclusive)."""
    partitions = night_partitions(config)
    keys = []
    for key in partitions.get_partition_keys():
        window = partitions.time_window_for_partition_key(key)
        if window.start.date() <= last and window.end.date() > first:
            keys.append(key)
    return keys


def execute_night(
    defs: Definitions, instance: DagsterInstance, partition: str, tags: dict[str, str], lock_wait_seconds: float
) -> NightRun:
    """Run the nightly job for ``partition`` on ``instance`` in this process (through the run guard, which gives up
    after ``lock_wait_seconds`` waiting for the warehouse); a failure is reported, not raised."""
    result = launch_run(
        defs.resolve_job_def(NIGHTLY_JOB),
        instance,
        lock_wait_seconds,
        partition_key=partition,
        tags=tags,
        run_config=QUIET_LOGS,
    )
    failed_checks = sorted(e.check_name for e in result.get_asset_check_evaluations() if not e.passed)
    return NightRun(partition, result.run_id, result.success, failed_checks)


def run_night(config_path: Path, night: dt.date) -> NightRun:
    """Run the night (its partition) through the nightly job on the config's persistent instance."""
    config = load_config(config_path)
    partition = partition_for(config, night)
    defs = build_definitions(config_path)
    return execute_night(
        defs,
        persistent_instance(config.dagster_home),
        partition,
        {TRIGGER_TAG: "run"},
        config.storage.lock_wait_seconds,
    )


def backfill_nights(config_path: Path, first: dt.date, last: dt.date) -> Backfill:
    """Run every partition from ``first`` to ``last`` in order, as one Dagster backfill on the persistent instance.
    Raises ValueError when the range holds no complete partition."""
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    config = load_config(config_path)
    partitions = partitions_between(config, first, last)
    if not partitions:
        raise ValueError(
            f"no complete partition between {first} and {last} (partitions start on {config.schedule.start_date})"
        )
    defs = build_definitions(config_path)
    instance = persistent_instance(config.dagster_home)
    backfill_id = make_new_backfill_id()
    started = time.time()
    tags = {BACKFILL_ID_TAG: backfill_id, TRIGGER_TAG: "backfill"}
    runs = [
        execute_night(defs, instance, partition, tags, config.storage.lock_wait_seconds) for partition in partitions
    ]
    instance.add_backfill(_backfill_record(defs, instance, backfill_id, partitions, runs, started, f"{first} … {last}"))
    return Backfill(backfill_id, runs)


def _backfill_record(
    defs: Definitions,
    instance: DagsterInstance,
    backfill_id: str,
    partitions: list[str],
    runs: list[NightRun],
    started: float,
    span: str,
) -> PartitionBackfill:
    """The finished backfill as Dagster stores it: targets, what materialized and what failed, per asset partition."""
    graph = defs.resolve_asset_graph()
    job_assets: list[AssetKey] = sorted(defs.resolve_job_def(NIGHTLY_JOB).asset_layer.selected_asset_keys)
    record = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id,
        asset_graph=graph,
        partition_names=partitions,
        asset_selection=job_assets,
        backfill_timestamp=started,
        tags={TRIGGER_TAG: "backfill"},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=f"nightkeeper backfill {span}",
        description=f"{len(partitions)} partition(s) run in order by `nightkeeper backfill`",
        run_config=None,
    )
    materialized = {
        AssetKeyPartitionKey(event.asset_key, event.partition_key)
        for run in runs
        for event in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
        if event.asset_key is not None  # a materialization always names its asset
    }
    failed = {
        AssetKeyPartitionKey(key, run.partition) for run in runs if not run.success for key in job_assets
    } - materialized
    targets = record.asset_backfill_data
    if targets is None:  # from_asset_partitions always builds an asset backfill
        raise ValueError(f"backfill {backfill_id} has no asset partitions")
    data = targets._replace(
        requested_runs_for_target_roots=True,
        requested_subset=targets.target_subset,
        materialized_subset=AssetGraphSubset.from_asset_partition_set(materialized, graph),
        failed_and_downstream_subset=AssetGraphSubset.from_asset_partition_set(failed, graph),
    )
    status = (
        BulkActionStatus.COMPLETED_SUCCESS if all(run.success for run in runs) else BulkActionStatus.COMPLETED_FAILED
    )
    return (
        record.with_asset_backfill_data(data, dynamic_partitions_store=instance, asset_graph=graph)
        .with_status(status)
        .with_end_timestamp(time.time())
    )
