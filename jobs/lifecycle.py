"""Lifecycle jobs, the sensors that decide when to run them, and the monthly retrain schedule.

Sensors decide only from the Dagster event log (materialization metadata of ``alerts``, ``candidate_evaluation`` and
``shadow_scores``); they never open the warehouse. Every change they decide is a run of a job.
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    EventLogEntry,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    asset_sensor,
    define_asset_job,
    schedule,
)

from nightkeeper.config import ProjectConfig
from nightkeeper.pipeline import metadata_keys as keys
from nightkeeper.pipeline.lifecycle import (
    REFUSED,
    SCHEDULED_TRIGGER,
    Evaluation,
    LifecycleState,
    OpenAlert,
    RegistryRequest,
    decide_retrain,
    decide_shadow_start,
    rollout_request,
)

RETRAIN_JOB = "retrain"
PROMOTE_JOB = "promote"
ROLLBACK_JOB = "rollback"
AS_OF_TAG = (
    "nightkeeper/as_of"  # every retrain run carries the night it looks back from: the policy counts attempts by it
)
RECENT_RETRAIN_RUNS = 50

retrain_job = define_asset_job(
    RETRAIN_JOB,
    selection=AssetSelection.assets("candidate_model", "candidate_evaluation", "candidate_model_card"),
    description="Train a candidate on the labeled window (after the training-data gate) and judge it against the "
    "champion.",
)
promote_job = define_asset_job(
    PROMOTE_JOB,
    selection=AssetSelection.assets("model_registry"),
    description="Move a model forward: shadow, canary step, champion.",
)
rollback_job = define_asset_job(
    ROLLBACK_JOB,
    selection=AssetSelection.assets("model_registry"),
    description="Take a model back: reject the challenger or restore the previous champion.",
)


def retrain_run_config(as_of: str, trigger: str) -> dict:
    request = {"config": {"as_of": as_of, "trigger": trigger}}
    return {"ops": {"candidate_model": request, "candidate_evaluation": request, "candidate_model_card": request}}


def registry_run_config(
    action: str, version: str, effective_from: str, reason: str, stage: str = "", actor: str = "dagster"
) -> dict:
    return {
        "ops": {
            "model_registry": {
                "config": {
                    "action": action,
                    "version": version,
                    "stage": stage,
                    "effective_from": effective_from,
                    "reason": reason,
                    "actor": actor,
                }
            }
        }
    }


def retrain_request(as_of: str, trigger: str) -> RunRequest:
    """The run of the retrain job looking back from ``as_of``; its run key is shared by every trigger of that night."""
    return RunRequest(
        job_name=RETRAIN_JOB,
        run_key=f"retrain:{as_of}",
        run_config=retrain_run_config(as_of, trigger),
        tags={AS_OF_TAG: as_of, "nightkeeper/trigger": trigger[:200]},
    )


def registry_request(request: RegistryRequest, job_name: str) -> RunRequest:
    change = request.change
    return RunRequest(
        job_name=job_name,
        run_key=request.key,
        run_config=registry_run_config(
            change.action,
            change.version,
            request.effective.isoformat(),
            change.reason,
            stage=change.stage,
            actor=change.actor,
        ),
    )


def lifecycle_state(instance: DagsterInstance, open_alerts: tuple[OpenAlert, ...] = ()) -> LifecycleState:
    """What the retrain policy needs, read from the event log: the latest retrain attempt (retrain runs' tags, launched
    or finished, and ``candidate_model`` materializations), the latest one that trained a candidate, the latest
    ``candidate_evaluation``, and the challenger on the latest ``shadow_scores``."""
    attempts = [
        run.tags[AS_OF_TAG]
        for run in instance.get_runs(RunsFilter(job_name=RETRAIN_JOB), limit=RECENT_RETRAIN_RUNS)
        if AS_OF_TAG in run.tags
    ]
    candidates = [
        _metadata(record.event_log_entry)
        for record in instance.fetch_materializations(AssetKey("candidate_model"), limit=RECENT_RETRAIN_RUNS).records
    ]
    attempts += [metadata[keys.CANDIDATE_AS_OF] for metadata in candidates if metadata.get(keys.CANDIDATE_AS_OF)]
    trained = [
        metadata[keys.CANDIDATE_AS_OF]
        for metadata in candidates
        if metadata.get(keys.CANDIDATE_AS_OF) and metadata.get(keys.CANDIDATE_STATUS) != REFUSED
    ]
    evaluation = instance.get_latest_materialization_event(AssetKey("candidate_evaluation"))
    shadow = instance.get_latest_materialization_event(AssetKey("shadow_scores"))
    challenger = _metadata(shadow).get(keys.SHADOW_CHALLENGER, keys.NONE) if shadow else keys.NONE
    scored = _partition(shadow) if shadow else None
    return LifecycleState(
        open_alerts=open_alerts,
        last_retrain_night=max(map(dt.date.fromisoformat, attempts)) if attempts else None,
        last_candidate_night=max(map(dt.date.fromisoformat, trained)) if trained else None,
        latest_evaluation=Evaluation.from_metadata(_metadata(evaluation)) if evaluation else None,
        challenger=None if challenger in (keys.NONE, None) else challenger,
        latest_scored_night=dt.date.fromisoformat(scored) if scored else None,
    )


def _partition(event: EventLogEntry) -> str | None:
    return event.dagster_event.partition if event.dagster_event else None


def _metadata(event: EventLogEntry) -> dict:
    materialization = event.asset_materialization
    return {key: value.value for key, value in materialization.metadata.items()} if materialization else {}


def build_lifecycle_automation(config: ProjectConfig) -> tuple[list, list]:
    """The sensors and schedules of the model lifecycle for ``config``."""

    @asset_sensor(
        asset_key=AssetKey("alerts"),
        name="retrain_on_alerts",
        jobs=[retrain_job],
        default_status=DefaultSensorStatus.RUNNING,
        description="After each night's alerts, asks the retrain policy: alerts of category "
        f"{sorted(config.lifecycle.retrain_on_alert_categories)} (and persistent drift if configured) trigger; one "
        "candidate per night, a cooldown after each attempt, none while a rollout is under way; it resumes after a "
        "rejection or rollback while the alert stays open. Skips say why.",
    )
    def retrain_on_alerts(context: SensorEvaluationContext, asset_event: EventLogEntry):
        night = _partition(asset_event)
        if night is None:
            return SkipReason("the alerts materialization has no night")
        open_alerts = tuple(
            OpenAlert.from_metadata(entry) for entry in _metadata(asset_event).get(keys.ALERTS_OPEN) or []
        )
        decision = decide_retrain(
            lifecycle_state(context.instance, open_alerts), dt.date.fromisoformat(night), config.lifecycle
        )
        return retrain_request(night, decision.trigger) if decision.retrain else SkipReason(decision.reason)

    @asset_sensor(
        asset_key=AssetKey("candidate_evaluation"),
        name="shadow_approved_candidates",
        jobs=[promote_job],
        default_status=DefaultSensorStatus.RUNNING,
        description="Starts the shadow of a candidate the never-worse gate approved, from the next night on.",
    )
    def shadow_approved_candidates(context: SensorEvaluationContext, asset_event: EventLogEntry):
        request = decide_shadow_start(Evaluation.from_metadata(_metadata(asset_event)))
        return SkipReason(request) if isinstance(request, str) else registry_request(request, PROMOTE_JOB)

    @asset_sensor(
        asset_key=AssetKey("shadow_scores"),
        name="rollout",
        jobs=[promote_job, rollback_job],
        default_status=DefaultSensorStatus.RUNNING,
        description="Acts on each night's rollout decision: advance the canary, promote to champion, or roll back.",
    )
    def rollout(context: SensorEvaluationContext, asset_event: EventLogEntry):
        request = rollout_request(_metadata(asset_event))
        if isinstance(request, str):
            return SkipReason(request)
        return registry_request(request, ROLLBACK_JOB if request.change.action == "reject_challenger" else PROMOTE_JOB)

    @schedule(
        cron_schedule="0 4 1 * *",
        job=retrain_job,
        name="monthly_retrain",
        execution_timezone=config.schedule.timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Maintenance retrain on the first of each month, looking back from the month's last night, "
        "unless the retrain policy says wait (a retrain of that night already ran, a rollout, a cooldown).",
    )
    def monthly_retrain(context: ScheduleEvaluationContext):
        as_of = context.scheduled_execution_time.date() - dt.timedelta(days=1)
        decision = decide_retrain(
            lifecycle_state(context.instance), as_of, config.lifecycle, schedule=SCHEDULED_TRIGGER
        )
        return retrain_request(as_of.isoformat(), decision.trigger) if decision.retrain else SkipReason(decision.reason)

    return [retrain_on_alerts, shadow_approved_candidates, rollout], [monthly_retrain]
