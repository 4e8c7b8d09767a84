"""Monitoring assets of a night: late labels, realized and estimated performance, drift, and the alerts they raise.

Each asset calls its step in nightkeeper.pipeline.monitoring (the same function the backtest calls) and renders the
result for Dagster: metadata and asset checks. State that accumulates across nights (labels, metrics, alerts) lives
in the warehouse's ``monitoring`` schema, written by the steps.
"""

import datetime as dt

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    Output,
    TimeWindowPartitionsDefinition,
    asset,
)

from assets.checks import check_result, dagster_metadata
from assets.nightly import night_of
from jobs.resources import WAREHOUSE_POOL, ProjectResource, WarehouseResource
from nightkeeper import webhook
from nightkeeper.config import AlertingConfig
from nightkeeper.pipeline import metadata_keys as keys
from nightkeeper.pipeline import monitoring


def build_monitoring_assets(partitions: TimeWindowPartitionsDefinition, shards: int = 1) -> list:
    """The late-label, performance, drift and alert assets over ``partitions``; with ``shards`` > 1 without
    ``drift_metrics``, which the sharded night computes from its shards' summaries (``assets.shards``)."""

    @asset(
        name="labels",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="monitoring",
        deps=[AssetKey("outcomes")],
        description="Label files that arrived in the week up to this night, reconciled with the answers they label: "
        "accepted once, re-deliveries ignored, unknown ids, bad values and conflicts rejected with reasons "
        "(monitoring.labels).",
    )
    def labels_asset(
        context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource
    ) -> MaterializeResult:
        with warehouse.connect() as connection:
            result = monitoring.labels_night(project.load(), connection, night_of(context))
        return MaterializeResult(metadata=dagster_metadata(result.metadata))

    @asset(
        name="performance",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="monitoring",
        deps=[AssetKey("labels"), AssetKey("outcomes")],
        description="Realized AUC, precision, recall, Brier and business value per scoring night and model version "
        "(recomputed as labels land), and tonight's estimate from the scores (CBPE) with a calibration check.",
        check_specs=[
            AssetCheckSpec(
                "estimate_trustworthy", asset="performance", description="Scores are calibrated on recent labels."
            ),
            AssetCheckSpec(
                "performance_holds",
                asset="performance",
                description="Estimated and realized AUC near the champion's holdout AUC.",
            ),
        ],
    )
    def performance_asset(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        with warehouse.connect() as connection:
            result = monitoring.performance_night(project.load(), connection, night_of(context))
        yield MaterializeResult(metadata=dagster_metadata(result.metadata))
        for name in monitoring.PERFORMANCE_CHECKS:
            yield check_result(name, result.checks[name])

    @asset(
        name="alerts",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="monitoring",
        deps=[AssetKey("performance"), AssetKey("drift_metrics"), AssetKey("outcomes")],
        description="Alert rules from the config evaluated on the night's metrics: an alert opens once when its "
        "condition held for its sustained nights, stays open silently, resolves when it clears; each transition goes "
        "to the log, monitoring.alerts and the webhook (retried until delivered).",
    )
    def alerts_asset(
        context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource
    ) -> MaterializeResult:
        config = project.load()
        with warehouse.connect() as connection:
            result = monitoring.alerts_night(config, connection, night_of(context), context.log)
        delivery = deliver_outbox(warehouse, config.monitoring.alerts)  # after the connection is closed
        metadata = {
            **result.metadata,
            keys.ALERTS_WEBHOOK_DELIVERED: delivery.delivered,
            keys.ALERTS_WEBHOOK_PENDING: delivery.pending,
        }
        return MaterializeResult(metadata=dagster_metadata(metadata))

    @asset(
        name="drift_metrics",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="monitoring",
        metadata={"partition_expr": "partition_date"},
        # read from the warehouse a chunk at a time by the step, not loaded whole by the IO manager: flat memory
        deps=[AssetKey("validated_batch"), AssetKey("scored_batch")],
        description="Per-feature drift of tonight's validated rows against the serving champion's reference profile "
        "(PSI, Jensen-Shannon, normalised Wasserstein / KS, chi-square, missing-rate change, new-category share), "
        "prediction and confidence drift, and a domain classifier's AUC; evidently's HTML report for people.",
        check_specs=[
            AssetCheckSpec(
                "features_stable", asset="drift_metrics", description="No feature beyond its fitted drift threshold."
            ),
            AssetCheckSpec(
                "predictions_stable", asset="drift_metrics", description="Score distribution within its threshold."
            ),
            AssetCheckSpec(
                "population_indistinct",
                asset="drift_metrics",
                description="A classifier cannot tell tonight from the reference.",
            ),
        ],
    )
    def drift_metrics(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        with warehouse.connect() as connection:
            result = monitoring.drift_stored_night(project.load(), connection, night_of(context))
        yield Output(result.tables["drift_metrics"], metadata=dagster_metadata(result.metadata))
        for name in monitoring.DRIFT_CHECKS:
            yield check_result(name, result.checks[name])

    if shards > 1:
        return [labels_asset, performance_asset, alerts_asset]
    return [labels_asset, performance_asset, drift_metrics, alerts_asset]


def deliver_outbox(warehouse: WarehouseResource, settings: AlertingConfig) -> webhook.DeliveryReport:
    """Post the due webhook events without holding the warehouse while posting (``webhook.deliver``)."""
    return webhook.deliver(
        warehouse.connect,
        webhook.webhook_url(settings.webhook_url_env),
        settings.webhook_timeout_seconds,
        dt.datetime.now(dt.UTC),
        max_batch=20,
    )
