"""Monitoring assets of a night: late labels, realized and estimated performance, and the alerts they raise.

State that accumulates across nights (labels, metrics, alerts) lives in the warehouse's ``monitoring`` schema and is
written by nightkeeper/ functions; these assets report on it through metadata and asset checks.
"""

import datetime as dt
from pathlib import Path

import polars as pl
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)

from assets.checks import check_result, markdown_table
from assets.nightly import night_of
from jobs.resources import NIGHTLY_SCHEMA, WAREHOUSE_POOL, ProjectResource, WarehouseResource
from nightkeeper import alerts, drift, labels, metrics_store, performance, registry, webhook
from nightkeeper.artifacts import ModelUnavailable, load_reference_sample
from nightkeeper.batch_checks import CheckOutcome
from nightkeeper.config import AlertingConfig
from nightkeeper.drift_report import write_evidently_report
from nightkeeper.profile import with_threshold_overrides
from nightkeeper.validation import ROW_KEY

REPORTS_FOLDER = "reports"
LIFECYCLE_EVENT_METRICS = ("lifecycle.rollbacks", "lifecycle.candidate_rejected", "lifecycle.retrain_refused")
REALIZED_WINDOW_NIGHTS = 7  # realized AUC for alerting is pooled over this many labeled scoring nights
LABEL_LOOKBACK_NIGHTS = 7
PERFORMANCE_HOLD_TOLERANCE = 0.03  # AUC below the champion's holdout by more than this fails `performance_holds`


def build_monitoring_assets(partitions: DailyPartitionsDefinition) -> list:
    """The late-label, performance and alert assets over ``partitions``."""

    @asset(
        name="labels",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="monitoring",
        deps=[AssetKey("outcomes")],
        description="Label files that arrived in the week up to this night, reconciled with the answers they label: accepted once, "
        "re-deliveries ignored, unknown ids, bad values and conflicts rejected with reasons (monitoring.labels).",
    )
    def labels_asset(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource) -> MaterializeResult:
        config = project.load()
        night = night_of(context)
        totals: dict[str, int] = {}
        # files that arrived within the last week: re-reading them is harmless (nothing counts twice) and picks up
        # labels whose answer was stored after the file arrived; older files were settled on earlier nights
        files = [
            path for path in labels.label_files(config.labels_path, night)
            if labels.arrival_date(path) > night - dt.timedelta(days=LABEL_LOOKBACK_NIGHTS)
        ]
        with warehouse.connect() as connection:
            for path in files:
                incoming = labels.read_label_file(path, config.contract)
                answered = connection.execute(
                    f"select distinct entity_id, partition_date from {NIGHTLY_SCHEMA}.outcomes "
                    "where entity_id in (select unnest($ids))",
                    {"ids": incoming["entity_id"].drop_nulls().unique().to_list()},
                ).pl()
                batch = labels.reconcile_labels(incoming, answered, labels.stored_labels(connection), labels.arrival_date(path))
                labels.store_label_batch(connection, batch)
                for name, count in batch.summary().items():
                    totals[name] = totals.get(name, 0) + count
            stored = labels.stored_labels(connection)
            rejected = labels.stored_rejections(connection)
        return MaterializeResult(
            metadata={
                "files_read": len(files),
                **{name.replace("labels.", ""): count for name, count in totals.items()},
                "labels_stored": stored.height,
                "rejections_stored": rejected.height,
                "recent_rejections": markdown_table(rejected.sort("arrived_on", descending=True), rows=10),
            }
        )

    @asset(
        name="performance",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="monitoring",
        deps=[AssetKey("labels"), AssetKey("outcomes")],
        description="Realized AUC, precision, recall, Brier and business value per scoring night and model version "
        "(recomputed as labels land), and tonight's estimate from the scores (CBPE) with a calibration check.",
        check_specs=[
            AssetCheckSpec("estimate_trustworthy", asset="performance", description="Scores are calibrated on recent labels."),
            AssetCheckSpec("performance_holds", asset="performance", description="Estimated and realized AUC near the champion's holdout AUC."),
        ],
    )
    def performance_asset(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        config = project.load()
        night = night_of(context)
        settings = config.monitoring.performance
        decision = config.model.decision
        with warehouse.connect() as connection:
            every_night = connection.execute(f"select * from {NIGHTLY_SCHEMA}.outcomes").pl()
            stored = labels.stored_labels(connection)
            champion = registry.alias_record(connection, registry.CHAMPION, night)
        # the stored table covers every night (re-running an old night must not drop later ones); tonight's metrics
        # see only what was known by tonight
        realized_all = performance.realized_performance(every_night, stored, decision, settings.business_value, settings.min_labeled_rows)
        outcomes = every_night.filter(pl.col("partition_date") <= night)
        stored = stored.filter(pl.col("arrived_on") <= night)
        realized = performance.realized_performance(outcomes, stored, decision, settings.business_value, settings.min_labeled_rows)
        estimated = performance.estimated_performance(outcomes, decision, settings.business_value)  # every night, for the plot
        calibration = _calibration(outcomes, stored, settings.max_calibration_error)
        tonight = estimated.filter((pl.col("partition_date") == night) & (pl.col("source") == "model"))
        estimate_row = tonight.row(0, named=True) if tonight.height else None
        latest = performance.latest_realized(realized)
        metrics = performance.performance_metrics(latest, estimate_row, calibration, include_missing=True)
        reference_auc = champion.card.holdout_metrics["auc"] if champion else None
        expected_auc = champion.card.holdout_metrics.get("estimated_auc") if champion else None
        pooled = performance.pooled_realized_auc(
            performance.scored_with_labels(outcomes, stored), REALIZED_WINDOW_NIGHTS, settings.min_labeled_rows
        )
        metrics["performance.realized_auc_window"] = pooled["auc"] if pooled else None
        metrics["performance.estimated_auc_drop"] = _drop(expected_auc, metrics.get("performance.estimated_auc"))
        metrics["performance.realized_auc_drop"] = _drop(reference_auc, pooled["auc"] if pooled else None)
        with warehouse.connect() as connection:
            _replace_table(connection, "monitoring.performance_realized", realized_all)
            metrics_store.record_metrics(connection, night, metrics, champion.version if champion else None)
        plot = _plot(config.path(Path(REPORTS_FOLDER)), night, realized, estimated)
        yield MaterializeResult(
            metadata={
                "estimated_auc": metrics.get("performance.estimated_auc"),
                "realized_auc_latest": metrics.get("performance.realized_auc"),
                "realized_night_latest": str(latest["partition_date"]) if latest else "none yet",
                "calibration_error": metrics.get("performance.calibration_error"),
                "reference_auc": reference_auc,
                "realized_by_night": markdown_table(realized.sort("partition_date", descending=True), rows=14),
                "plot": MetadataValue.path(str(plot)) if plot else "no nights yet",
            }
        )
        yield check_result("estimate_trustworthy", _trustworthy(calibration))
        yield check_result("performance_holds", _holds(metrics, reference_auc))

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
    def alerts_asset(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource) -> MaterializeResult:
        config = project.load()
        night = night_of(context)
        settings = config.monitoring.alerts
        with warehouse.connect() as connection:
            # lifecycle events are counted when they happen; a night without one counts 0, which resolves its alert
            recorded = metrics_store.metrics_on(connection, night)
            metrics_store.record_metrics(connection, night, {m: 0.0 for m in LIFECYCLE_EVENT_METRICS if m not in recorded}, None)
        events, delivery = raise_alerts(warehouse, settings, night, context.log)
        with warehouse.connect() as connection:
            still_open = alerts.open_alerts(connection)
        opened = [e for e in events if e["event"] == "opened"]
        return MaterializeResult(
            metadata={
                "opened": len(opened),
                "resolved": sum(e["event"] == "resolved" for e in events),
                "open_now": still_open.height,
                "opened_alerts": MetadataValue.json([
                    {"alert_id": e["alert_id"], "rule": e["rule"], "category": e["category"], "severity": e["severity"]}
                    for e in opened
                ]),
                "open_alerts": markdown_table(still_open.select("alert_id", "category", "severity", "opened_night", "message"), rows=20),
                "open_alert_categories": MetadataValue.json(
                    [{"alert_id": a, "category": c} for a, c in still_open.select("alert_id", "category").iter_rows()]
                ),
                "webhook_delivered": delivery.delivered,
                "webhook_pending": delivery.pending,
                "webhook_configured": delivery.webhook_configured,
            }
        )

    @asset(
        name="drift_metrics",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="monitoring",
        metadata={"partition_expr": "partition_date"},
        description="Per-feature drift of tonight's validated rows against the serving champion's reference profile "
        "(PSI, Jensen-Shannon, normalised Wasserstein / KS, chi-square, missing-rate change, new-category share), "
        "prediction and confidence drift, and a domain classifier's AUC; evidently's HTML report for people.",
        check_specs=[
            AssetCheckSpec("features_stable", asset="drift_metrics", description="No feature beyond its fitted drift threshold."),
            AssetCheckSpec("predictions_stable", asset="drift_metrics", description="Score distribution within its threshold."),
            AssetCheckSpec("population_indistinct", asset="drift_metrics", description="A classifier cannot tell tonight from the reference."),
        ],
    )
    def drift_metrics(
        context: AssetExecutionContext,
        validated_batch: pl.DataFrame,
        scored_batch: pl.DataFrame,
        project: ProjectResource,
        warehouse: WarehouseResource,
    ):
        config = project.load()
        night = night_of(context)
        settings = config.monitoring.drift
        with warehouse.connect() as connection:
            champion = registry.alias_record(connection, registry.CHAMPION, night)
        if champion is None:
            context.log.warning("no champion: drift has no reference to compare with")
            yield Output(pl.DataFrame(schema={"partition_date": pl.Date, **drift.FEATURE_SCHEMA}), metadata={"reference": "none"})
            for name in ("features_stable", "predictions_stable", "population_indistinct"):
                yield check_result(name, CheckOutcome(True, "no champion, no reference profile", "WARN"))
            return
        card = champion.card
        rows = validated_batch.sort(ROW_KEY).join(scored_batch.select(*ROW_KEY, "score"), on=ROW_KEY, how="left")
        scores = rows["score"].fill_null(float("nan")).to_numpy()
        try:
            sample = load_reference_sample(champion)
        except ModelUnavailable as exc:
            context.log.warning(f"multivariate drift skipped: {exc}")
            sample = None
        profile = with_threshold_overrides(card.profile, settings.thresholds)
        result = drift.measure_drift(profile, rows, scores, card.features, sample, settings.domain_classifier_rows)
        folder = config.path(Path(REPORTS_FOLDER))
        plot = result.plot(folder / f"drift-{night}.png")
        report = None
        if settings.evidently_report and sample is not None and rows.height:
            report = write_evidently_report(sample, rows, card.features, folder / f"drift-{night}.html", settings.report_sample_rows, seed=0)
        with warehouse.connect() as connection:
            metrics_store.record_metrics(connection, night, result.metrics(), champion.version)
        drifted = result.drifted_features()
        yield Output(
            result.features.with_columns(pl.lit(night, dtype=pl.Date).alias("partition_date")).select("partition_date", *drift.FEATURE_SCHEMA),
            metadata={
                "reference_version": champion.version,
                "rows": result.rows,
                "drifted_share": result.drifted_share,
                "drifted_features": ", ".join(drifted) or "none",
                "multivariate_auc": result.multivariate_auc,
                "prediction_psi": result.prediction.get("score_psi"),
                "by_feature": markdown_table(result.features.select("feature", "psi", "threshold", "drifted", "missing_rate_change"), rows=50),
                "plot": MetadataValue.path(str(plot)),
                "evidently_report": MetadataValue.path(str(report)) if report else "not rendered",
            },
        )
        yield check_result("features_stable", CheckOutcome(
            not drifted, f"drifted: {', '.join(drifted)}" if drifted else "every feature within its fitted threshold", "WARN",
            {"drifted_share": result.drifted_share},
        ))
        score_psi = result.prediction.get("score_psi", float("nan"))
        yield check_result("predictions_stable", CheckOutcome(
            not result.prediction.get("score_drifted"),
            f"score PSI {score_psi:.3f} vs threshold {result.prediction.get('score_threshold', float('nan')):.3f}", "WARN",
        ))
        auc = result.multivariate_auc
        yield check_result("population_indistinct", CheckOutcome(
            auc is None or auc <= settings.max_domain_auc,
            "no reference sample or too few rows" if auc is None else f"domain classifier AUC {auc:.3f} (limit {settings.max_domain_auc})",
            "WARN",
        ))

    return [labels_asset, performance_asset, drift_metrics, alerts_asset]


def raise_alerts(warehouse: WarehouseResource, settings: AlertingConfig, night: dt.date, log) -> tuple[list[dict], webhook.DeliveryReport]:
    """Evaluate the alert rules on ``night``, log each transition at its severity and deliver the webhook outbox.

    The one way a night's alerts go out, whether from the nightly ``alerts`` asset or from a lifecycle event
    (a rollback, a rejected or refused retrain) that must not wait for the next night.
    """
    with warehouse.connect() as connection:
        events = alerts.run_alerts(connection, settings.rules, night)
    for event in events:
        level = log.info if event["event"] == "resolved" or event["severity"] == "info" else (
            log.error if event["severity"] == "critical" else log.warning
        )
        level(event["message"])
    with warehouse.connect() as connection:
        delivery = webhook.deliver_pending(
            connection, webhook.webhook_url(settings.webhook_url_env), settings.webhook_timeout_seconds,
            dt.datetime.now(dt.timezone.utc), max_batch=20,
        )
    return events, delivery


def _calibration(outcomes: pl.DataFrame, stored: pl.DataFrame, max_error: float, nights: int = 14) -> performance.CalibrationResult | None:
    joined = performance.scored_with_labels(outcomes, stored).filter((pl.col("source") == "model") & pl.col("label").is_not_null())
    if joined.height == 0:
        return None
    recent = joined.filter(pl.col("partition_date") > joined["partition_date"].max() - dt.timedelta(days=nights))
    return performance.calibration_check(recent["score"].to_numpy(), recent["label"].to_numpy(), max_calibration_error=max_error)


def _drop(reference: float | None, value: float | None) -> float | None:
    return None if reference is None or value is None else reference - value


def _trustworthy(calibration: performance.CalibrationResult | None) -> CheckOutcome:
    if calibration is None:
        return CheckOutcome(True, "no labels yet: calibration cannot be judged", "WARN")
    return CheckOutcome(
        calibration.trustworthy,
        f"expected calibration error {calibration.ece:.3f} on {calibration.rows} recent labeled rows "
        f"(limit {calibration.max_calibration_error}); estimated performance is "
        + ("trustworthy" if calibration.trustworthy else "NOT trustworthy — trust realized figures"),
        "WARN",
        {"ece": calibration.ece},
    )


def _holds(metrics: dict[str, float | None], reference: float | None) -> CheckOutcome:
    drops = {name: metrics.get(f"performance.{name}_auc_drop") for name in ("estimated", "realized")}
    known = {name: drop for name, drop in drops.items() if drop is not None}
    if reference is None or not known:
        return CheckOutcome(True, "no champion reference or no performance figures yet", "WARN")
    limit = PERFORMANCE_HOLD_TOLERANCE
    return CheckOutcome(
        max(known.values()) <= limit,
        "; ".join(f"{name} AUC {-drop:+.3f} against the champion's holdout (limit −{limit})" for name, drop in known.items()),
        "ERROR",
        {name + "_auc_drop": drop for name, drop in known.items()},
    )


def _replace_table(connection, table: str, frame: pl.DataFrame) -> None:
    schema = table.split(".")[0]
    frame_arrow = frame.to_arrow()  # noqa: F841  (DuckDB reads the local variable by name)
    connection.execute(f"create schema if not exists {schema}")
    connection.execute(f"create or replace table {table} as select * from frame_arrow")


def _plot(folder: Path, night: dt.date, realized: pl.DataFrame, estimated: pl.DataFrame) -> Path | None:
    if estimated.height == 0:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return performance.plot_performance(performance.performance_table(realized, estimated), folder / f"performance-{night}.png")
