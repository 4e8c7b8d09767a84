"""A sharded night (``scale.shards`` > 1): the row-level assets of a night as one graph-backed multi-asset whose
graph fans out one op per shard and joins them in one op.

``answer_shard_<k>`` reads the night's landed files, keeps its shard's rows, validates, scores, shadows and answers
them and stores them (``nightkeeper.pipeline.shard.run_shard``); the shard ops are not in the ``warehouse`` pool,
so the run's executor runs them at once (they hold the warehouse only to read the registry and to store). Each
returns a small ``ShardReport`` through ``SHARD_REPORTS_IO_MANAGER`` (pickled files). ``judge_night`` (in the pool)
then judges the night from the reports and the stored tables (``judge_shards``): the metadata, checks and night
metrics of the unsharded assets, under the same asset keys and check names, and the ``drift_metrics`` partition from
the shards' merged drift summaries. The row-level tables are stored already, so their outputs are
``StoredPartition`` handles the IO manager records without writing.

The night's partitions stay daily: sensors, schedules, backfills and the assets downstream (reason codes, labels,
performance, alerts, review queue, which read the stored tables) do not change.
"""

import datetime as dt
import time
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetOut,
    In,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    TimeWindowPartitionsDefinition,
    graph_multi_asset,
    op,
)

from assets.checks import check_result, dagster_metadata
from assets.nightly import PARTITION_METADATA
from jobs.resources import WAREHOUSE_POOL, ProjectResource, StoredPartition, WarehouseResource
from nightkeeper.pipeline import metadata_keys as keys
from nightkeeper.pipeline import monitoring
from nightkeeper.pipeline.shard import ShardReport, judge_shards, run_shard
from nightkeeper.warehouse import NIGHTLY_SCHEMA

SHARD_REPORTS_IO_MANAGER = "shard_reports_io_manager"
"""The resource key of the IO manager that carries each shard op's ``ShardReport`` to ``judge_night``."""
SHARDED_NIGHT = "night_shards"

# asset -> (description, the step of judge_shards whose result it reports, its metadata key in that result or None)
_ASSETS: dict[str, tuple[str, str, str | None]] = {
    "raw_batch": (
        "Every row of the night's landed files with its file and row number (stored by its shard).",
        "ingest",
        None,
    ),
    "validated_batch": (
        "Rows that passed every row rule, typed per the contract: the model's input.",
        "validate",
        "validated_batch",
    ),
    "quarantine": (
        "One row per (input row, broken rule): column, rule, offending value, what was expected.",
        "validate",
        "quarantine",
    ),
    "scored_batch": ("The champion's score, confidence and decision for every validated row.", "score", None),
    "shadow_scores": ("The challenger's score for every validated row and its rollout decision.", "shadow", None),
    "outcomes": ("Exactly one answer per raw row: model, canary, fallback or quarantine.", "answer", None),
    "drift_metrics": (
        "Per-feature, prediction and multivariate drift from the shards' merged summaries.",
        "drift",
        None,
    ),
}
# the unsharded assets' checks, under the same names and assets
_CHECKS: dict[str, tuple[str, str]] = {
    "schema_matches_contract": ("raw_batch", "ingest"),
    "volume_within_history": ("raw_batch", "ingest"),
    "entity_ids_unique": ("raw_batch", "ingest"),
    "null_rates_stable": ("validated_batch", "validate"),
    "champion_answered": ("scored_batch", "score"),
    "challenger_healthy": ("shadow_scores", "shadow"),
    "fallback_rate_within_limit": ("outcomes", "answer"),
    **{name: ("drift_metrics", "drift") for name in monitoring.DRIFT_CHECKS},
}


def build_sharded_night(partitions: TimeWindowPartitionsDefinition, shards: int):
    """The graph-backed multi-asset of a night in ``shards`` shards over ``partitions``: ``shards`` shard ops and
    ``judge_night``."""
    shard_ops = [shard_op(shard) for shard in range(shards)]
    judge = judge_op(shards)
    check_specs = [AssetCheckSpec(name, asset=asset) for name, (asset, _) in _CHECKS.items()]

    @graph_multi_asset(
        name=SHARDED_NIGHT,
        partitions_def=partitions,
        group_name="nightly",
        outs={
            name: AssetOut(metadata=PARTITION_METADATA, description=description)
            for name, (description, _, _) in _ASSETS.items()
        },
        check_specs=check_specs,
    )
    def night_shards():
        reports = {f"shard_{shard}": answer() for shard, answer in enumerate(shard_ops)}
        return judge(**reports)._asdict()

    return night_shards


def shard_op(shard: int) -> OpDefinition:
    """The op answering and storing shard ``shard`` of the run's night."""

    @op(
        name=f"answer_shard_{shard}",
        out=Out(ShardReport, io_manager_key=SHARD_REPORTS_IO_MANAGER),
        description=f"Read the night's landed files, answer the rows of shard {shard} and store them.",
    )
    def answer_shard(context: OpExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        report = run_shard(project.load(), warehouse.location, dt.date.fromisoformat(context.partition_key), shard)
        context.log.info(f"shard {shard}: {report.rows} rows stored")
        return report

    return answer_shard


def judge_op(shards: int) -> OpDefinition:
    """The op judging the night from its ``shards`` shard reports."""
    check_outputs = {spec_name(name, asset): Out(is_required=True) for name, (asset, _) in _CHECKS.items()}

    @op(
        name="judge_night",
        pool=WAREHOUSE_POOL,
        ins={f"shard_{shard}": In(ShardReport) for shard in range(shards)},
        out={**{name: Out(is_required=True) for name in _ASSETS}, **check_outputs},
        description="The night's checks, metrics, rollout decision and drift, from every shard's report.",
    )
    def judge_night(
        context: OpExecutionContext, project: ProjectResource, warehouse: WarehouseResource, **reports: ShardReport
    ):
        night = dt.date.fromisoformat(context.partition_key)
        with warehouse.connect() as connection:
            results = judge_shards(project.load(), connection, night, list(reports.values()))
        for warning in results["ingest"].metadata["file_warnings"]:
            context.log.warning(warning)
        if results["score"].metadata["degraded"]:
            context.log.error(
                f"degraded night: {results['score'].metadata['model_error']}; the fallback answers every validated row"
            )
        shadow = results["shadow"].metadata
        if shadow[keys.SHADOW_CHALLENGER] != keys.NONE:
            context.log.info(
                f"rollout of {shadow[keys.SHADOW_CHALLENGER]} ({shadow[keys.SHADOW_STAGE]}): "
                f"{shadow[keys.SHADOW_ROLLOUT_ACTION]} — {shadow[keys.SHADOW_ROLLOUT_REASON]}"
            )
        run = context.instance.get_run_record_by_id(context.run.run_id)
        if run is not None and run.start_time is not None:
            results["answer"].metadata["seconds_to_answers"] = time.time() - run.start_time
        for asset, (_, step, key) in _ASSETS.items():
            result = results[step]
            metadata: dict[str, Any] = result.metadata[key] if key else result.metadata
            value = (
                result.tables[asset] if asset in result.tables else StoredPartition(f"{NIGHTLY_SCHEMA}.{asset}", night)
            )
            yield Output(value, output_name=asset, metadata=dagster_metadata(metadata))
        for name, (asset, step) in _CHECKS.items():
            yield check_result(name, results[step].checks[name], asset_key=asset)

    return judge_night


def spec_name(check: str, asset: str) -> str:
    """The output name Dagster gives the check ``check`` of ``asset`` in a multi-asset."""
    return AssetCheckSpec(check, asset=asset).get_python_identifier()
