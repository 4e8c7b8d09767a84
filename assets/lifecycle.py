"""Lifecycle assets: a retrain's candidate model, its evaluation against the champion, and the model registry.

Every change of a model's role is a materialization of ``model_registry`` by the ``promote`` or ``rollback`` job,
so the Dagster UI's history of that asset is the history of who served, when and why.
"""

import datetime as dt
import time
from pathlib import Path

import numpy as np
import polars as pl
from dagster import AssetCheckSpec, AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.checks import check_result, markdown_table
from assets.monitoring import raise_alerts
from jobs.resources import ProjectResource, WarehouseResource
from nightkeeper import gates, lifecycle, metrics_store, registry, report
from nightkeeper.artifacts import load_verified
from nightkeeper.behaviour import behaviour_tests
from nightkeeper.config import ProjectConfig
from nightkeeper.batch_checks import CheckOutcome
from nightkeeper.encoding import feature_cards, feature_matrix
from nightkeeper.models import publish
from nightkeeper.training import train_model, training_frame
from nightkeeper.training_data import labeled_history, split_holdout

BEHAVIOUR_CHECKS = ["directions_hold", "invariant_features_do_not_matter", "scores_and_confidence_in_range", "edge_rows_are_scored"]
CANDIDATES = "lifecycle.candidates"


class RetrainRequest(Config):
    as_of: str = Field(description="The night (YYYY-MM-DD) the retrain looks back from.")
    trigger: str = Field("manual", description="Why: the alert ids, the schedule, or a person.")


class RegistryChange(Config):
    action: str = Field("refresh", description="start_shadow | advance | promote | reject_challenger | rollback_champion | refresh")
    version: str = ""
    stage: str = ""
    effective_from: str = Field("", description="First night (YYYY-MM-DD) the change applies to.")
    reason: str = ""
    actor: str = "dagster"


@asset(
    name="candidate_model",
    group_name="lifecycle",
    pool="warehouse",
    description="A LightGBM model retrained on the labeled window (delivered and reviewed labels), after the "
    "training-data gate excluded suspect nights or refused the window; registered with full lineage.",
    check_specs=[AssetCheckSpec(name, asset="candidate_model", blocking=True) for name in BEHAVIOUR_CHECKS],
)
def candidate_model(context: AssetExecutionContext, config: RetrainRequest, project: ProjectResource, warehouse: WarehouseResource):
    settings = project.load()
    as_of = dt.date.fromisoformat(config.as_of)
    life = settings.lifecycle
    first_night = as_of - dt.timedelta(days=life.training_window_days)
    with warehouse.connect() as connection:
        labeled = labeled_history(connection, settings.contract, first_night, as_of, life.include_review_labels)
    window, _ = split_holdout(labeled, life.promotion_gate.holdout_days)
    last_training_night = window["partition_date"].max() if window.height else None
    # nights are judged on delivered labels: reviewers label a chosen, near-threshold few, whose rate says nothing
    delivered = window.filter(pl.col("label_source") == "delivered")
    verdict = gates.training_window_gate(delivered, settings.contract.target, feature_cards(settings.contract), life.data_gate)
    if not verdict.gate.passed:
        reason = "; ".join(verdict.gate.reasons)
        context.log.error(f"retrain refused: {reason}")
        _record_event(warehouse, settings, as_of, "lifecycle.retrain_refused", context)
        _record_candidate(warehouse, None, as_of, config.trigger, "refused", reason)
        yield MaterializeResult(metadata={"status": "refused", "reasons": reason, "trigger": config.trigger,
                                          "per_night": markdown_table(verdict.per_night, rows=100)})
        for name in BEHAVIOUR_CHECKS:
            yield check_result(name, CheckOutcome(False, f"no candidate: the retrain was refused ({reason})", "WARN"))
        return
    kept = window.filter(~pl.col("partition_date").cast(pl.String).is_in(list(verdict.excluded_nights)))
    trained = train_model(kept.drop("partition_date", "label_source"), settings)
    record = publish(trained, settings)
    sample = training_frame(kept, settings)
    results = behaviour_tests(trained.booster, record.card, sample, settings.contract, life.behaviour)
    status = "trained" if all(outcome.passed for outcome in results.values()) else "rejected"
    reason = "; ".join(f"{name}: {outcome.description}" for name, outcome in results.items() if not outcome.passed)
    if status == "rejected":
        _record_event(warehouse, settings, as_of, "lifecycle.candidate_rejected", context)
    _record_candidate(warehouse, record.version, as_of, config.trigger, status, reason)
    review_rows = kept.filter(pl.col("label_source").str.starts_with("review:")).height
    yield MaterializeResult(
        metadata={
            "status": status,
            "version": record.version,
            "trigger": config.trigger,
            "training_nights": f"{first_night} .. {last_training_night}",
            "training_rows": record.card.training_window.rows,
            "review_labeled_rows": review_rows,
            "excluded_nights": MetadataValue.json(verdict.excluded_nights),
            "data_fingerprint": record.card.data_fingerprint,
            "holdout_auc": record.card.holdout_metrics["auc"],
            "library_versions": MetadataValue.json(record.card.library_versions),
            "model_path": MetadataValue.path(str(record.model_path)),
        }
    )
    for name, outcome in results.items():
        yield check_result(name, outcome)


@asset(
    name="candidate_evaluation",
    group_name="lifecycle",
    pool="warehouse",
    deps=[AssetKey("candidate_model")],
    description="The never-worse gate: candidate and champion scored on the same recent labeled holdout (AUC with a "
    "bootstrap CI, every segment, Brier, business value, latency). Approved candidates go to shadow; rejected ones "
    "never serve and raise an alert.",
)
def candidate_evaluation(context: AssetExecutionContext, config: RetrainRequest, project: ProjectResource, warehouse: WarehouseResource) -> MaterializeResult:
    settings = project.load()
    as_of = dt.date.fromisoformat(config.as_of)
    gate_config = settings.lifecycle.promotion_gate
    with warehouse.connect() as connection:
        candidate_version = _latest_candidate(connection, as_of)
        if candidate_version is None:
            return MaterializeResult(metadata={"decision": "nothing to evaluate", "as_of": config.as_of})
        candidate = registry.get_version(connection, candidate_version)
        champion = registry.alias_record(connection, registry.CHAMPION, as_of)
        labeled = labeled_history(
            connection, settings.contract, as_of - dt.timedelta(days=settings.lifecycle.training_window_days), as_of, include_review=False
        )
    _, holdout = split_holdout(labeled, gate_config.holdout_days)
    if champion is None:
        return MaterializeResult(metadata={"decision": "approved", "version": candidate.version, "reasons": "no champion to beat"})
    champion_scores, champion_seconds = _timed_scores(champion, holdout)
    candidate_scores, candidate_seconds = _timed_scores(candidate, holdout)
    result = gates.never_worse_gate(
        holdout, settings.contract.target, champion_scores, candidate_scores, settings.model.decision.threshold,
        settings.monitoring.performance.business_value, candidate_seconds / max(champion_seconds, 1e-9), gate_config,
    )
    decision = "approved" if result.passed else "rejected"
    reasons = "; ".join(result.reasons) or "never worse than the champion on every rule"
    if not result.passed:
        context.log.error(f"candidate {candidate.version} rejected: {reasons}")
        _record_event(warehouse, settings, as_of, "lifecycle.candidate_rejected", context)
    with warehouse.connect() as connection:
        connection.execute(f"update {CANDIDATES} set status = ?, reasons = ? where version = ?", [decision, reasons, candidate.version])
    return MaterializeResult(
        metadata={
            "decision": decision,
            "version": candidate.version,
            "champion": champion.version,
            "as_of": config.as_of,
            "reasons": reasons,
            "holdout_rows": holdout.height,
            "holdout_nights": ", ".join(map(str, holdout["partition_date"].unique().sort().to_list())),
            **{name: float(value) for name, value in result.metrics.items()},
        }
    )


@asset(
    name="candidate_model_card",
    group_name="lifecycle",
    deps=[AssetKey("candidate_evaluation")],
    description="notebooks/model_card.ipynb for the latest candidate, run by papermill and rendered to HTML: metrics, "
    "lineage, feature importance, calibration and the gates' verdicts.",
)
def candidate_model_card(context: AssetExecutionContext, config: RetrainRequest, project: ProjectResource, warehouse: WarehouseResource) -> MaterializeResult:
    settings = project.load()
    with warehouse.connect() as connection:
        version = _latest_candidate(connection, dt.date.fromisoformat(config.as_of), statuses=("trained", "approved", "rejected"))
        record = registry.get_version(connection, version) if version else None
    if record is None:
        return MaterializeResult(metadata={"card": "no candidate was trained"})
    folder = settings.path(Path("reports/models") / record.version)
    snapshot = report.export_model_snapshot(settings.warehouse_path, record.version, folder)
    result = report.run_model_card(record.version, snapshot, record.model_path.parent, folder)
    return MaterializeResult(metadata={"version": record.version, "html": MetadataValue.path(str(result.html)), "images": result.images})


@asset(
    name="model_registry",
    group_name="lifecycle",
    pool="warehouse",
    description="Registered model versions and the dated alias log (champion, challenger and its stage). Each "
    "materialization is one change of role — shadow, canary step, promotion, rejection or rollback — with who and why.",
)
def model_registry(context: AssetExecutionContext, config: RegistryChange, project: ProjectResource, warehouse: WarehouseResource) -> MaterializeResult:
    settings = project.load()
    effective = dt.date.fromisoformat(config.effective_from) if config.effective_from else dt.date.today()
    with warehouse.connect() as connection:
        summary = apply_change(connection, config, effective)
        versions = registry.versions(connection)
        log = registry.alias_log(connection)
    if config.action in ("reject_challenger", "rollback_champion"):
        _record_event(warehouse, settings, effective - dt.timedelta(days=1), "lifecycle.rollbacks", context)
    context.log.info(summary)
    return MaterializeResult(
        metadata={
            "action": config.action,
            "change": summary,
            "actor": config.actor,
            "versions": markdown_table(versions.select("version", "registered_at", "holdout_auc", "training_rows"), rows=20),
            "alias_log": markdown_table(log.sort("seq", descending=True).select("effective_from", "alias", "version", "stage", "actor", "reason"), rows=20),
        }
    )


def apply_change(connection, change: RegistryChange, effective: dt.date) -> str:
    """Carry out one registry change on the alias log; returns a sentence saying what changed."""
    actor, reason = change.actor, change.reason or change.action
    if change.action == "start_shadow":
        lifecycle.start_shadow(connection, change.version, effective, actor, reason)
        return f"{change.version} is challenger in shadow from {effective}"
    if change.action == "advance":
        lifecycle.advance(connection, change.version, change.stage, effective, actor, reason)
        return f"{change.version} advances to {change.stage} from {effective}"
    if change.action == "promote":
        lifecycle.promote(connection, change.version, effective, actor, reason)
        return f"{change.version} is champion from {effective}"
    if change.action == "reject_challenger":
        removed = lifecycle.reject_challenger(connection, effective, actor, reason)
        return f"challenger {removed} rolled back from {effective}: {reason}"
    if change.action == "rollback_champion":
        previous, restored = lifecycle.rollback_champion(connection, effective, actor, reason)
        return f"champion rolled back from {previous} to {restored} from {effective}: {reason}"
    if change.action == "refresh":
        return "registry listed"
    raise ValueError(f"unknown registry action {change.action!r}")


def _timed_scores(record: registry.ModelRecord, holdout: pl.DataFrame, repeats: int = 5) -> tuple[np.ndarray, float]:
    """Scores of ``record`` on the holdout and the best of ``repeats`` timings (the first call pays for warm-up)."""
    booster = load_verified(record)
    matrix = feature_matrix(holdout, record.card.features)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        scores = booster.predict(matrix)
        timings.append(time.perf_counter() - started)
    return scores, min(timings)


def _record_candidate(warehouse: WarehouseResource, version: str | None, as_of: dt.date, trigger: str, status: str, reasons: str) -> None:
    with warehouse.connect() as connection:
        connection.execute("create schema if not exists lifecycle")
        connection.execute(
            f"""create table if not exists {CANDIDATES} (version varchar, as_of date, trigger varchar, status varchar,
                reasons varchar, recorded_at timestamptz)"""
        )
        connection.execute(f"insert into {CANDIDATES} values (?, ?, ?, ?, ?, now())", [version, as_of, trigger, status, reasons])


def _latest_candidate(connection, as_of: dt.date, statuses: tuple[str, ...] = ("trained",)) -> str | None:
    exists = connection.execute(
        "select count(*) from information_schema.tables where table_schema = 'lifecycle' and table_name = 'candidates'"
    ).fetchone()[0]
    if not exists:
        return None
    row = connection.execute(
        f"select version from {CANDIDATES} where as_of = $as_of and status in (select unnest($statuses)) and version is not null "
        "order by recorded_at desc limit 1",
        {"as_of": as_of, "statuses": list(statuses)},
    ).fetchone()
    return row[0] if row else None


def _record_event(warehouse: WarehouseResource, settings: ProjectConfig, night: dt.date, metric: str, context) -> None:
    """Count a lifecycle event on ``night`` and run that night's alert rules at once (a rollback must not wait a day)."""
    with warehouse.connect() as connection:
        current = metrics_store.metrics_on(connection, night).get(metric, 0.0)
        metrics_store.record_metrics(connection, night, {metric: current + 1}, None)
    raise_alerts(warehouse, settings.monitoring.alerts, night, context.log)
