"""The nightly assets: raw_batch -> validated_batch + quarantine -> scored_batch -> shadow_scores -> outcomes ->
reason_codes, one daily partition each.

Each asset opens the warehouse, calls its step in nightkeeper.pipeline.nightly and reports the step's tables,
metadata and checks; every one runs in the ``warehouse`` pool.
"""

import datetime as dt
import time

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetOut,
    Output,
    TimeWindowPartitionsDefinition,
    asset,
    asset_check,
    multi_asset,
)

from assets.checks import check_result, dagster_metadata
from jobs.resources import (
    NIGHTLY_SCHEMA,
    WAREHOUSE_POOL,
    ProjectResource,
    StoredPartition,
    WarehouseResource,
)
from nightkeeper.pipeline import chunked, nightly
from nightkeeper.pipeline import metadata_keys as keys
from nightkeeper.pipeline.step import StepResult

PARTITION_METADATA = {"partition_expr": "partition_date"}
# The steps on the way to the night's answers run before every other step that is ready (drift, labels,
# performance: Dagster starts ready steps by this priority, then by name), so the answers never wait for monitoring.
ANSWERS_FIRST = {"dagster/priority": "1"}


def night_of(context: AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def _stored_outputs(result: StepResult, table: str, night: dt.date):
    """The output of a step that stored its one table itself (``nightkeeper.pipeline.chunked``): a
    ``StoredPartition`` the IO manager records without writing, with the step's metadata, then its check results."""
    yield Output(StoredPartition(f"{NIGHTLY_SCHEMA}.{table}", night), metadata=dagster_metadata(result.metadata))
    for check, outcome in result.checks.items():
        yield check_result(check, outcome)


def build_nightly_assets(partitions: TimeWindowPartitionsDefinition, shards: int = 1) -> list:
    """The nightly assets and checks over ``partitions``. With ``shards`` > 1 the row-level assets (raw_batch to
    outcomes, and drift_metrics) are one graph-backed multi-asset of that many shard ops (``assets.shards``)."""

    @asset(
        name="raw_batch",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        op_tags=ANSWERS_FIRST,
        group_name="nightly",
        metadata=PARTITION_METADATA,
        description="Every row of the night's landed files with its file and row number, whatever the file's "
        "schema: the contract's columns typed, and what was received (JSON record) only for rows that failed typing.",
        check_specs=[
            AssetCheckSpec(
                "schema_matches_contract", asset="raw_batch", description="Columns and types match the contract."
            ),
            AssetCheckSpec("volume_within_history", asset="raw_batch", description="Row count near recent nights."),
            AssetCheckSpec("entity_ids_unique", asset="raw_batch", description="No id appears twice in the night."),
        ],
    )
    def raw_batch(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        night = night_of(context)
        with warehouse.connect() as connection:
            result = chunked.ingest_stored_night(project.load(), connection, night)
        for warning in result.metadata["file_warnings"]:
            context.log.warning(warning)
        yield from _stored_outputs(result, "raw_batch", night)

    @multi_asset(
        name="validate_batch",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        op_tags=ANSWERS_FIRST,
        group_name="nightly",
        outs={
            "validated_batch": AssetOut(
                metadata=PARTITION_METADATA,
                description="Rows that passed every row rule, typed per the contract: the model's input.",
            ),
            "quarantine": AssetOut(
                metadata=PARTITION_METADATA,
                description="One row per (input row, broken rule): column, rule, offending value, what was expected.",
            ),
        },
        check_specs=[
            AssetCheckSpec(
                "null_rates_stable", asset="validated_batch", description="No feature's empty share spiked."
            ),
        ],
        # read from the warehouse and stored a block of rows at a time by the step (chunked): flat memory
        deps=["raw_batch"],
    )
    def validate_batch(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        night = night_of(context)
        with warehouse.connect() as connection:
            result = chunked.validate_stored_night(project.load(), connection, night)
        for name in ("validated_batch", "quarantine"):
            partition = StoredPartition(f"{NIGHTLY_SCHEMA}.{name}", night)
            yield Output(partition, output_name=name, metadata=dagster_metadata(result.metadata[name]))
        for check, outcome in result.checks.items():
            yield check_result(check, outcome, asset_key="validated_batch")

    @asset(
        name="scored_batch",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        op_tags=ANSWERS_FIRST,
        group_name="nightly",
        metadata=PARTITION_METADATA,
        description="The champion's score, confidence and decision for every validated row, in chunks within a time "
        "budget; rows it could not score carry the reason instead.",
        check_specs=[
            AssetCheckSpec(
                "champion_answered", asset="scored_batch", description="The champion scored every validated row."
            )
        ],
        # read from the warehouse and stored a block of rows at a time by the step (chunked): flat memory
        deps=["validated_batch"],
    )
    def scored_batch(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        night = night_of(context)
        with warehouse.connect() as connection:
            result = chunked.score_stored_night(project.load(), connection, night)
        if result.metadata["degraded"]:
            context.log.error(
                f"degraded night: {result.metadata['model_error']}; the fallback answers every validated row"
            )
        yield from _stored_outputs(result, "scored_batch", night)

    @asset(
        name="shadow_scores",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        op_tags=ANSWERS_FIRST,
        group_name="nightly",
        metadata=PARTITION_METADATA,
        description="The challenger's score for every validated row (logged, served only to its canary share), and "
        "its health against the champion tonight: errors, agreement, estimated AUC, latency. Its metadata carries "
        "the rollout decision (hold / advance / promote / rollback) the rollout sensor acts on.",
        check_specs=[
            AssetCheckSpec(
                "challenger_healthy", asset="shadow_scores", description="The challenger kept its health rules tonight."
            )
        ],
        # read from the warehouse and stored a block of rows at a time by the step (chunked): flat memory
        deps=["validated_batch", "scored_batch"],
    )
    def shadow_scores(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        night = night_of(context)
        with warehouse.connect() as connection:
            result = chunked.shadow_stored_night(project.load(), connection, night)
        shadow = result.metadata
        if shadow[keys.SHADOW_CHALLENGER] != keys.NONE:
            context.log.info(
                f"rollout of {shadow[keys.SHADOW_CHALLENGER]} ({shadow[keys.SHADOW_STAGE]}): "
                f"{shadow[keys.SHADOW_ROLLOUT_ACTION]} — {shadow[keys.SHADOW_ROLLOUT_REASON]}"
            )
        yield from _stored_outputs(result, "shadow_scores", night)

    @asset(
        name="outcomes",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        op_tags=ANSWERS_FIRST,
        group_name="nightly",
        metadata=PARTITION_METADATA,
        description="Exactly one answer per raw row: source (model / canary / fallback / quarantine), decision, score, "
        "confidence, model version, latency and the reason when the model did not answer.",
        check_specs=[
            AssetCheckSpec("fallback_rate_within_limit", asset="outcomes", description="Few rows left to the fallback.")
        ],
        # read from the warehouse and stored a block of rows at a time by the step (chunked): flat memory
        deps=["raw_batch", "quarantine", "scored_batch", "shadow_scores"],
    )
    def outcomes(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        night = night_of(context)
        with warehouse.connect() as connection:
            result = chunked.answer_stored_night(project.load(), connection, night)
        # the user's wait for the night's answers, on its own: reason codes come after, in their own step
        run = context.instance.get_run_record_by_id(context.run.run_id)
        if run is not None and run.start_time is not None:
            result.metadata["seconds_to_answers"] = time.time() - run.start_time
        yield from _stored_outputs(result, "outcomes", night)

    @asset(
        name="reason_codes",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="nightly",
        metadata=PARTITION_METADATA,
        description="Why the model answered as it did, for the answers due for reasons (declined or near the "
        "threshold, per model.reason_codes): the top features by exact TreeSHAP contribution of the model version "
        "that answered, and the reasons as a sentence. Computed after outcomes, so answers never wait for it.",
        # read from the warehouse, explained and stored a block of rows at a time by the step (chunked): flat memory
        deps=["outcomes", "validated_batch"],
    )
    def reason_codes(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        night = night_of(context)
        with warehouse.connect() as connection:
            result = chunked.explain_stored_answers(project.load(), connection, night)
        for version, error in result.metadata["unexplained_versions"].items():
            context.log.warning(f"answers of {version} left without reason codes: {error}")
        yield from _stored_outputs(result, "reason_codes", night)

    @asset_check(
        asset="outcomes",
        name="outcomes_conserve_rows",
        pool=WAREHOUSE_POOL,
        description="Across all stored nights, every raw row has exactly one outcome row (none missing, none extra).",
    )
    def outcomes_conserve_rows(warehouse: WarehouseResource):
        with warehouse.connect() as connection:
            return check_result("outcomes_conserve_rows", nightly.outcomes_conserve_rows(connection))

    if shards > 1:
        from assets.shards import build_sharded_night  # here: assets.shards imports this module

        return [build_sharded_night(partitions, shards), reason_codes, outcomes_conserve_rows]
    return [raw_batch, validate_batch, scored_batch, shadow_scores, outcomes, reason_codes, outcomes_conserve_rows]
