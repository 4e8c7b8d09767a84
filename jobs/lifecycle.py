"""Lifecycle jobs, the sensors that decide when to run them, and the monthly retrain schedule.

Sensors decide only from the Dagster event log (materialization metadata of ``alerts``, ``candidate_evaluation`` and
``shadow_scores``); they never open the warehouse. Every change they decide is a run of a job.
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    AssetKey,
    AssetSelection,
    EventLogEntry,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    asset_sensor,
    define_asset_job,
    schedule,
)

from nightkeeper.config import ProjectConfig

RETRAIN_JOB = "retrain"
PROMOTE_JOB = "promote"
ROLLBACK_JOB = "rollback"

retrain_job = define_asset_job(
    RETRAIN_JOB,
    selection=AssetSelection.assets("candidate_model", "candidate_evaluation", "candidate_model_card"),
    description="Train a candidate on the labeled window (after the training-data gate) and judge it against the champion.",
)
promote_job = define_asset_job(
    PROMOTE_JOB, selection=AssetSelection.assets("model_registry"), description="Move a model forward: shadow, canary step, champion."
)
rollback_job = define_asset_job(
    ROLLBACK_JOB, selection=AssetSelection.assets("model_registry"), description="Take a model back: reject the challenger or restore the previous champion."
)


def retrain_run_config(as_of: str, trigger: str) -> dict:
    request = {"config": {"as_of": as_of, "trigger": trigger}}
    return {"ops": {"candidate_model": request, "candidate_evaluation": request, "candidate_model_card": request}}


def registry_run_config(action: str, version: str, effective_from: str, reason: str, stage: str = "", actor: str = "dagster") -> dict:
    return {"ops": {"model_registry": {"config": {
        "action": action, "version": version, "stage": stage, "effective_from": effective_from, "reason": reason, "actor": actor,
    }}}}


def _metadata(event: EventLogEntry) -> dict:
    materialization = event.asset_materialization
    return {key: value.value for key, value in materialization.metadata.items()} if materialization else {}


def _next_night(night: str) -> str:
    return (dt.date.fromisoformat(night) + dt.timedelta(days=1)).isoformat()


def build_lifecycle_automation(config: ProjectConfig) -> tuple[list, list]:
    """The sensors and schedules of the model lifecycle for ``config``."""
    retrain_categories = set(config.lifecycle.retrain_on_alert_categories)

    @asset_sensor(
        asset_key=AssetKey("alerts"), name="retrain_on_alerts", jobs=[retrain_job],
        description=f"Requests a retrain each night an alert of category {sorted(retrain_categories)} is open and no "
        "rollout is under way; a refused or rejected retrain is tried again on a later night, with more labels.",
    )
    def retrain_on_alerts(context: SensorEvaluationContext, asset_event: EventLogEntry):
        metadata = _metadata(asset_event)
        night = asset_event.dagster_event.partition if asset_event.dagster_event else None
        triggering = [a for a in metadata.get("open_alert_categories") or [] if a.get("category") in retrain_categories]
        if not triggering or night is None:
            return SkipReason("no retrain-triggering alert is open")
        shadow = context.instance.get_latest_materialization_event(AssetKey("shadow_scores"))
        if shadow and _metadata(shadow).get("challenger_version", "none") != "none":
            return SkipReason(f"a rollout of {_metadata(shadow)['challenger_version']} is under way")
        evaluation = context.instance.get_latest_materialization_event(AssetKey("candidate_evaluation"))
        if evaluation and _metadata(evaluation).get("decision") == "approved":
            return SkipReason(f"candidate {_metadata(evaluation).get('version')} was approved and is about to shadow")
        trigger = ",".join(sorted(a["alert_id"] for a in triggering))
        return RunRequest(run_key=f"retrain:{night}", run_config=retrain_run_config(night, trigger), tags={"nightkeeper/trigger": trigger})

    @asset_sensor(
        asset_key=AssetKey("candidate_evaluation"), name="shadow_approved_candidates", jobs=[promote_job],
        description="Starts the shadow of a candidate the never-worse gate approved, from the next night on.",
    )
    def shadow_approved_candidates(context: SensorEvaluationContext, asset_event: EventLogEntry):
        metadata = _metadata(asset_event)
        if metadata.get("decision") != "approved":
            return SkipReason(f"latest evaluation: {metadata.get('decision', 'none')}")
        version, as_of = metadata["version"], metadata["as_of"]
        return RunRequest(
            run_key=f"shadow:{version}",
            run_config=registry_run_config("start_shadow", version, _next_night(as_of), f"approved by the never-worse gate on {as_of}", actor="sensor"),
        )

    @asset_sensor(
        asset_key=AssetKey("shadow_scores"), name="rollout", jobs=[promote_job, rollback_job],
        description="Acts on each night's rollout decision: advance the canary, promote to champion, or roll back.",
    )
    def rollout(context: SensorEvaluationContext, asset_event: EventLogEntry):
        metadata = _metadata(asset_event)
        action, version, night = metadata.get("rollout_action", "none"), metadata.get("challenger_version"), metadata.get("night")
        if action in ("none", "hold") or not version or not night:
            return SkipReason(f"rollout: {action}")
        effective, reason = _next_night(night), metadata.get("rollout_reason", "")
        run_key = f"{action}:{version}:{night}"
        if action == "advance":
            return RunRequest(job_name=PROMOTE_JOB, run_key=run_key, run_config=registry_run_config(
                "advance", version, effective, reason, stage=metadata["rollout_next_stage"], actor="sensor"))
        if action == "promote":
            return RunRequest(job_name=PROMOTE_JOB, run_key=run_key, run_config=registry_run_config("promote", version, effective, reason, actor="sensor"))
        return RunRequest(job_name=ROLLBACK_JOB, run_key=run_key, run_config=registry_run_config("reject_challenger", version, effective, reason, actor="sensor"))

    @schedule(cron_schedule="0 4 1 * *", job=retrain_job, name="monthly_retrain", execution_timezone=config.schedule.timezone,
              description="Maintenance retrain on the first of each month, looking back from the month's last night.")
    def monthly_retrain(context):
        as_of = (context.scheduled_execution_time.date() - dt.timedelta(days=1)).isoformat()
        return RunRequest(run_key=f"monthly:{as_of}", run_config=retrain_run_config(as_of, "monthly schedule"))

    return [retrain_on_alerts, shadow_approved_candidates, rollout], [monthly_retrain]
