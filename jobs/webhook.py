"""Draining the alert outbox: a tiny job that posts the due webhook events, and the sensor that runs it every few
minutes while events are pending, so a failed delivery is retried on its backoff, not at the next night.

The sensor never opens the warehouse (DESIGN: sensors decide from the event log): it reads how many events were
pending from the latest report, the ``alerts`` asset's materialization or this job's observation of the outbox,
whichever is newer, and drains once after any lifecycle run that may have raised an alert. The job opens the
warehouse only to read the due events and to record the results (``webhook.deliver``), never while posting, so it
needs no slot of the ``warehouse`` pool: the connection's own lock retry covers its few milliseconds.
"""

import datetime as dt

from dagster import (
    AssetKey,
    AssetObservation,
    DefaultSensorStatus,
    OpExecutionContext,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    job,
    op,
    sensor,
)

from jobs.resources import ProjectResource, WarehouseResource
from nightkeeper import webhook
from nightkeeper.config import ProjectConfig
from nightkeeper.frames import number
from nightkeeper.pipeline import metadata_keys as keys

ALERT_OUTBOX_JOB = "deliver_alert_outbox"
ALERT_OUTBOX_SENSOR = "alert_outbox"
OUTBOX_KEY = AssetKey("alert_outbox")
"""The key this job's observations of the outbox are logged under (``pending`` events after each drain)."""
OUTBOX_PENDING = "pending"
"""The observation's metadata key the sensor reads: events still waiting after the drain."""
ALERTS_KEY = AssetKey("alerts")
LIFECYCLE_KEYS = [AssetKey("candidate_model"), AssetKey("candidate_evaluation"), AssetKey("model_registry")]
"""Lifecycle assets whose runs may raise an alert (rollback, rejected or refused retrain) without posting it."""
DRAIN_INTERVAL_SECONDS = 180


@op(description="POST the due alert events of the outbox to the webhook; record what was delivered.")
def drain_alert_outbox(context: OpExecutionContext, project: ProjectResource, warehouse: WarehouseResource) -> None:
    settings = project.load().monitoring.alerts
    report = webhook.deliver(
        warehouse.connect,
        webhook.webhook_url(settings.webhook_url_env),
        settings.webhook_timeout_seconds,
        dt.datetime.now(dt.UTC),
    )
    context.log_event(
        AssetObservation(
            asset_key=OUTBOX_KEY,
            metadata={
                "delivered": report.delivered,
                "failed": report.failed,
                OUTBOX_PENDING: report.pending,
                "webhook_configured": report.webhook_configured,
            },
        )
    )
    context.log.info(f"alert outbox: {report.delivered} delivered, {report.failed} failed, {report.pending} pending")


@job(name=ALERT_OUTBOX_JOB, description="Deliver the pending alert events to the webhook (retries with backoff).")
def alert_outbox_job() -> None:
    drain_alert_outbox()


def may_be_pending(context: SensorEvaluationContext) -> bool:
    """Whether the event log says alert events may wait in the outbox.

    The newest report decides: the ``alerts`` materialization's ``webhook_pending`` or this job's observation's
    ``pending``, whichever was logged last. A lifecycle asset materialized after both may have raised an alert (a
    rollback, a rejected or refused retrain) that nobody posted yet, so it counts as pending too.
    """
    reports: list[tuple[int, int]] = []
    materialized = context.instance.fetch_materializations(ALERTS_KEY, limit=1, ascending=False).records
    observed = context.instance.fetch_observations(OUTBOX_KEY, limit=1, ascending=False).records
    for records, field in ((materialized, keys.ALERTS_WEBHOOK_PENDING), (observed, OUTBOX_PENDING)):
        event = (records[0].asset_materialization or records[0].asset_observation) if records else None
        value = event.metadata.get(field) if event is not None else None
        if value is not None:
            reports.append((records[0].storage_id, int(number(value.value))))
    newest_report, pending = max(reports) if reports else (0, 0)
    lifecycle = [
        record.storage_id
        for key in LIFECYCLE_KEYS
        for record in context.instance.fetch_materializations(key, limit=1, ascending=False).records
    ]
    return pending > 0 or any(storage_id > newest_report for storage_id in lifecycle)


def build_alert_outbox_sensor(config: ProjectConfig):
    env_var = config.monitoring.alerts.webhook_url_env

    @sensor(
        name=ALERT_OUTBOX_SENSOR,
        job=alert_outbox_job,
        minimum_interval_seconds=DRAIN_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Every {DRAIN_INTERVAL_SECONDS // 60} minutes while alert events are pending: deliver them to the "
        "webhook.",
    )
    def alert_outbox(context: SensorEvaluationContext):
        if webhook.webhook_url(env_var) is None:
            return SkipReason(f"no webhook URL configured (${env_var} is unset)")
        if not may_be_pending(context):
            return SkipReason("no alert event pending")
        return RunRequest()

    return alert_outbox
