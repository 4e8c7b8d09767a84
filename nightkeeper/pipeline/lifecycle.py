"""The lifecycle steps of the pipeline core, and the decisions the lifecycle sensors and schedule make.

Steps (called by the Dagster assets in assets/lifecycle.py and by ``nightkeeper backtest`` alike):

* ``train_candidate`` — the training-data gate on the labeled window, then a LightGBM candidate, registered with
  lineage and put through the behaviour tests; every attempt is a row of ``lifecycle.candidates``.
* ``evaluate_candidate`` — the never-worse gate: candidate and champion on the same recent labeled holdout.
* ``apply_registry_change`` — one change of role (shadow, canary step, promotion, rejection, rollback).

Decisions (pure functions of small state objects, so the sensors, which read the Dagster event log, and the backtest,
which keeps its own books, decide alike):

* ``decide_retrain`` — the retrain policy: which open alerts trigger, one candidate per night, a cooldown after an
  attempt, no retrain while a rollout is under way, and resuming after a rollback or rejection.
* ``decide_shadow_start`` — an approved candidate starts its shadow the next night.
* ``rollout_request`` — the registry change a night's rollout decision asks for.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import numpy as np
import polars as pl

from nightkeeper import gates, lifecycle, metrics_store, registry
from nightkeeper.artifacts import load_verified
from nightkeeper.batch_checks import CheckOutcome
from nightkeeper.behaviour import behaviour_tests
from nightkeeper.config import LifecycleConfig, ProjectConfig
from nightkeeper.encoding import feature_cards, feature_matrix
from nightkeeper.frames import day
from nightkeeper.metric_names import CANDIDATE_REJECTED, RETRAIN_REFUSED, ROLLBACKS
from nightkeeper.models import register_trained
from nightkeeper.pipeline import metadata_keys as keys
from nightkeeper.pipeline.monitoring import raise_alerts
from nightkeeper.pipeline.step import StepResult
from nightkeeper.schema import CANDIDATES
from nightkeeper.training import train_model, training_frame
from nightkeeper.training_data import HISTORY_SOURCE, labeled_history, split_holdout

BEHAVIOUR_CHECKS = (
    "directions_hold",
    "invariant_features_do_not_matter",
    "scores_and_confidence_in_range",
    "edge_rows_are_scored",
)
APPROVED, REJECTED, REFUSED, TRAINED = "approved", "rejected", "refused", "trained"
_LOG = logging.getLogger(__name__)
SCHEDULED_TRIGGER = "monthly schedule"  # the trigger of the monthly retrain (the schedule and the backtest name it so)
TIMING_ROWS = 50_000  # rows the never-worse gate times each model on, so the latency ratio is measurable
RegistryAction = Literal["start_shadow", "advance", "promote", "reject_challenger", "rollback_champion", "refresh"]


# --------------------------------------------------------------------------------------------------- the steps


def train_candidate(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    as_of: dt.date,
    trigger: str,
    log: logging.Logger = _LOG,
) -> StepResult:
    """Train a candidate on the labeled window that ends on ``as_of`` (its latest holdout nights left out for the
    never-worse gate), after the training-data gate excluded suspect nights or refused the window.

    Metadata ``status`` is 'refused' (the gate said no; a retrain-refused event is recorded), 'trained' (every
    behaviour test passed) or 'rejected' (one failed; a candidate-rejected event is recorded). Checks: one per
    behaviour test. The attempt is a row of ``lifecycle.candidates`` whatever its outcome.
    """
    life = config.lifecycle
    first_night = as_of - dt.timedelta(days=life.training_window_days)
    labeled = labeled_history(connection, config.contract, first_night, as_of, life.include_review_labels)
    window, _ = split_holdout(labeled, life.promotion_gate.holdout_days)
    # nights are judged on delivered labels: reviewers label a chosen, near-threshold few, whose rate says nothing
    delivered = window.filter(pl.col("label_source") == "delivered")
    history_rows = window.filter(
        pl.col("label_source") == HISTORY_SOURCE
    ).height  # the user's own history: counted, not judged
    verdict = gates.training_window_gate(
        delivered, config.contract.target, feature_cards(config.contract), life.data_gate, history_rows
    )
    if not verdict.gate.passed:
        reason = "; ".join(verdict.gate.reasons)
        _record_candidate(connection, None, as_of, trigger, REFUSED, reason)
        log.error(f"retrain refused: {reason}")
        record_lifecycle_event(config, connection, as_of, RETRAIN_REFUSED, log)
        refused = CheckOutcome(False, f"no candidate: the retrain was refused ({reason})", "WARN")
        return StepResult(
            metadata={
                keys.CANDIDATE_STATUS: REFUSED,
                keys.CANDIDATE_AS_OF: as_of.isoformat(),
                "trigger": trigger,
                "reasons": reason,
                "per_night": verdict.per_night,
            },
            checks={name: refused for name in BEHAVIOUR_CHECKS},
        )
    kept = window.filter(~pl.col("partition_date").cast(pl.String).is_in(list(verdict.excluded_nights)))
    trained = train_model(kept.drop("partition_date", "label_source"), config)
    record = register_trained(connection, trained, config)
    results = behaviour_tests(
        trained.booster, record.card, training_frame(kept, config), config.contract, life.behaviour
    )
    failed = {name: outcome for name, outcome in results.items() if not outcome.passed}
    status = REJECTED if failed else TRAINED
    _record_candidate(
        connection,
        record.version,
        as_of,
        trigger,
        status,
        "; ".join(f"{n}: {o.description}" for n, o in failed.items()),
    )
    if failed:
        record_lifecycle_event(config, connection, as_of, CANDIDATE_REJECTED, log)
    return StepResult(
        metadata={
            keys.CANDIDATE_STATUS: status,
            "version": record.version,
            keys.CANDIDATE_AS_OF: as_of.isoformat(),
            "trigger": trigger,
            "training_nights": f"{first_night} .. {day(window['partition_date'].max())}",
            "training_rows": record.card.training_window.rows,
            "review_labeled_rows": kept.filter(pl.col("label_source").str.starts_with("review:")).height,
            "history_rows": history_rows,
            "excluded_nights": verdict.excluded_nights,
            "data_fingerprint": record.card.data_fingerprint,
            "holdout_auc": record.card.holdout_metrics["auc"],
            "library_versions": record.card.library_versions,
            "model_path": record.model_path,
        },
        checks=results,
    )


def evaluate_candidate(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, as_of: dt.date, log: logging.Logger = _LOG
) -> StepResult:
    """Judge the candidate trained for ``as_of`` against the champion serving on ``as_of`` with the never-worse gate,
    on the latest ``holdout_days`` labeled nights (which the candidate did not learn from). Business value is counted
    at the champion card's decision threshold: the decisions that were served.

    Metadata ``decision`` is 'approved', 'rejected' or 'nothing to evaluate'; ``version`` and ``as_of`` say which
    candidate, ``trigger`` what asked for it. The verdict is written to ``lifecycle.candidates``. A rejection records
    a candidate-rejected event (which pages) unless only the schedule asked for the candidate: a routine retrain
    that does not beat the champion is the gate doing its job, and the champion serves on; a retrain asked for by
    an alert that cannot produce a better model is news for a person.
    """
    gate_config = config.lifecycle.promotion_gate
    candidate_version = latest_candidate(connection, as_of)
    if candidate_version is None:
        return StepResult(
            metadata={keys.EVALUATION_DECISION: "nothing to evaluate", keys.EVALUATION_AS_OF: as_of.isoformat()}
        )
    candidate = registry.get_version(connection, candidate_version)
    champion = registry.alias_record(connection, registry.CHAMPION, as_of)
    verdict = {keys.EVALUATION_VERSION: candidate.version, keys.EVALUATION_AS_OF: as_of.isoformat()}
    if champion is None:
        _set_candidate_status(connection, candidate.version, APPROVED, "no champion to beat")
        return StepResult(metadata={keys.EVALUATION_DECISION: APPROVED, **verdict, "reasons": "no champion to beat"})
    first = as_of - dt.timedelta(days=config.lifecycle.training_window_days)
    _, holdout = split_holdout(
        labeled_history(connection, config.contract, first, as_of, include_review=False), gate_config.holdout_days
    )
    champion_scores, champion_seconds = _timed_scores(champion, holdout)
    candidate_scores, candidate_seconds = _timed_scores(candidate, holdout)
    threshold = champion.card.decision.threshold  # the decisions actually served, not the config's (issue #9.7)
    result = gates.never_worse_gate(
        holdout,
        config.contract.target,
        champion_scores,
        candidate_scores,
        threshold,
        config.monitoring.performance.business_value,
        gates.latency_ratio(candidate_seconds, champion_seconds),
        gate_config,
    )
    decision = APPROVED if result.passed else REJECTED
    reasons = "; ".join(result.reasons) or "never worse than the champion on every rule"
    _set_candidate_status(connection, candidate.version, decision, reasons)
    trigger = _candidate_trigger(connection, candidate.version)
    if not result.passed:
        if trigger == SCHEDULED_TRIGGER:
            log.info(f"scheduled candidate {candidate.version} not promoted, the champion serves on: {reasons}")
        else:
            log.error(f"candidate {candidate.version} rejected: {reasons}")
            record_lifecycle_event(config, connection, as_of, CANDIDATE_REJECTED, log)
    return StepResult(
        metadata={
            keys.EVALUATION_DECISION: decision,
            **verdict,
            "trigger": trigger,
            "champion": champion.version,
            "decision_threshold": threshold,
            "reasons": reasons,
            "holdout_rows": holdout.height,
            "holdout_nights": ", ".join(map(str, holdout["partition_date"].unique().sort().to_list())),
            **{name: float(value) for name, value in result.metrics.items()},
        }
    )


@dataclass(frozen=True)
class RegistryChange:
    """One change of a model's role, as a person or a sensor asks for it."""

    action: RegistryAction = "refresh"
    version: str = ""
    stage: str = ""
    reason: str = ""
    actor: str = "dagster"


def apply_registry_change(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    change: RegistryChange,
    effective: dt.date,
    log: logging.Logger = _LOG,
) -> StepResult:
    """Carry out ``change`` on the alias log from night ``effective`` on.

    Metadata ``change`` is a sentence saying what changed. A rejected challenger or a rolled-back champion counts a
    rollback event on the night before ``effective`` (the night whose evidence caused it) and raises its alert at
    once. Raises ValueError for an unknown action or a rollback with no earlier champion.
    """
    actor, reason = change.actor, change.reason or change.action
    if change.action == "start_shadow":
        lifecycle.start_shadow(connection, change.version, effective, actor, reason)
        summary = f"{change.version} is challenger in shadow from {effective}"
    elif change.action == "advance":
        lifecycle.advance(connection, change.version, change.stage, effective, actor, reason)
        summary = f"{change.version} advances to {change.stage} from {effective}"
    elif change.action == "promote":
        lifecycle.promote(connection, change.version, effective, actor, reason)
        summary = f"{change.version} is champion from {effective}"
    elif change.action == "reject_challenger":
        removed = lifecycle.reject_challenger(connection, effective, actor, reason)
        summary = f"challenger {removed} rolled back from {effective}: {reason}"
    elif change.action == "rollback_champion":
        previous, restored = lifecycle.rollback_champion(connection, effective, actor, reason)
        summary = f"champion rolled back from {previous} to {restored} from {effective}: {reason}"
    elif change.action == "refresh":
        summary = "registry listed"
    else:
        raise ValueError(f"unknown registry action {change.action!r}")
    log.info(summary)
    if change.action in ("reject_challenger", "rollback_champion"):
        record_lifecycle_event(config, connection, effective - dt.timedelta(days=1), ROLLBACKS, log)
    return StepResult(
        metadata={
            "action": change.action,
            "version": change.version,
            "change": summary,
            "actor": actor,
            "effective_from": effective.isoformat(),
        }
    )


def record_lifecycle_event(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    metric: str,
    log: logging.Logger = _LOG,
) -> None:
    """Count one lifecycle event (``metric``) on ``night`` and send that night's alerts at once (a rollback must not
    wait for the next night's alert step)."""
    current = metrics_store.metrics_on(connection, night).get(metric, 0.0)
    metrics_store.record_metrics(connection, night, {metric: current + 1}, None)
    raise_alerts(connection, config.monitoring.alerts, night, log)


def latest_candidate(
    connection: duckdb.DuckDBPyConnection, as_of: dt.date, statuses: tuple[str, ...] = (TRAINED,)
) -> str | None:
    """The version of the latest candidate trained for ``as_of`` whose status is one of ``statuses``; None if none."""
    row = connection.execute(
        f"select version from {CANDIDATES} "
        "where as_of = $as_of and status in (select unnest($statuses)) and version is not null "
        "order by recorded_at desc limit 1",
        {"as_of": as_of, "statuses": list(statuses)},
    ).fetchone()
    return row[0] if row else None


def _record_candidate(
    connection: duckdb.DuckDBPyConnection, version: str | None, as_of: dt.date, trigger: str, status: str, reasons: str
) -> None:
    connection.execute(
        f"insert into {CANDIDATES} values (?, ?, ?, ?, ?, now())", [version, as_of, trigger, status, reasons]
    )


def _candidate_trigger(connection: duckdb.DuckDBPyConnection, version: str) -> str:
    row = connection.execute(
        f"select trigger from {CANDIDATES} where version = ? order by recorded_at desc limit 1", [version]
    ).fetchone()
    return row[0] if row else ""


def _set_candidate_status(connection: duckdb.DuckDBPyConnection, version: str, status: str, reasons: str) -> None:
    connection.execute(f"update {CANDIDATES} set status = ?, reasons = ? where version = ?", [status, reasons, version])


def _timed_scores(
    record: registry.ModelRecord, holdout: pl.DataFrame, min_seconds: float = 0.2, min_repeats: int = 3
) -> tuple[np.ndarray, float]:
    """Scores of ``record`` on the holdout and its median scoring time per row, over at least ``min_repeats``
    timings of at least ``TIMING_ROWS`` rows (the holdout repeated), repeated until ``min_seconds`` were timed
    (a warm-up call first)."""
    booster = load_verified(record)
    matrix = feature_matrix(holdout, record.card.features)
    scores = np.asarray(booster.predict(matrix))
    # a few thousand rows score in a millisecond or two, where a shared machine's jitter alone makes 8× ratios: the
    # latency rule must compare the models' cost, not the scheduler's noise
    timed = np.tile(matrix, (max(1, -(-TIMING_ROWS // max(len(matrix), 1))), 1))
    seconds_per_row: list[float] = []
    timed_seconds = 0.0
    while len(seconds_per_row) < min_repeats or timed_seconds < min_seconds:
        started = time.perf_counter()
        booster.predict(timed)
        elapsed = time.perf_counter() - started
        timed_seconds += elapsed
        seconds_per_row.append(elapsed / max(len(timed), 1))
    return scores, float(np.median(seconds_per_row))


# ----------------------------------------------------------------------------------------------- the decisions


@dataclass(frozen=True)
class OpenAlert:
    """An alert open after a night's alert step: its id, its rule's category and the night it opened."""

    alert_id: str
    category: str
    opened_night: dt.date | None = None

    @classmethod
    def from_metadata(cls, entry: dict[str, Any]) -> OpenAlert:
        """From one entry of the ``alerts`` asset's ``keys.ALERTS_OPEN`` metadata."""
        opened = entry.get(keys.OPEN_ALERT_OPENED_NIGHT)
        return cls(
            str(entry[keys.OPEN_ALERT_ID]),
            str(entry[keys.OPEN_ALERT_CATEGORY]),
            dt.date.fromisoformat(opened) if opened else None,
        )


@dataclass(frozen=True)
class Evaluation:
    """The never-worse gate's verdict on a candidate, as ``evaluate_candidate`` reports it in its metadata."""

    decision: str
    version: str | None = None
    as_of: dt.date | None = None

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Evaluation:
        as_of = metadata.get(keys.EVALUATION_AS_OF)
        return cls(
            str(metadata.get(keys.EVALUATION_DECISION, keys.NONE)),
            metadata.get(keys.EVALUATION_VERSION),
            dt.date.fromisoformat(as_of) if as_of else None,
        )


@dataclass(frozen=True)
class LifecycleState:
    """What the retrain policy knows when it decides on a night.

    The sensors fill it from the Dagster event log (the ``alerts``, ``candidate_model``, ``candidate_evaluation``
    and ``shadow_scores`` materializations and the retrain runs); the backtest from its own record of the nights.
    """

    open_alerts: tuple[OpenAlert, ...] = ()
    last_retrain_night: dt.date | None = None  # the ``as_of`` of the latest retrain attempt, whatever came of it
    last_candidate_night: dt.date | None = None  # the ``as_of`` of the latest attempt that trained a candidate
    latest_evaluation: Evaluation | None = None
    challenger: str | None = None  # the challenger in shadow or canary on the latest night scored
    latest_scored_night: dt.date | None = None  # that night


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to train a candidate looking back from a night, why (a sentence for the sensor's skip reason or the
    run's tags) and what triggered it."""

    retrain: bool
    reason: str
    trigger: str = ""


def decide_retrain(
    state: LifecycleState, night: dt.date, policy: LifecycleConfig, schedule: str | None = None
) -> RetrainDecision:
    """The retrain policy for ``night``; ``schedule`` names a scheduled retrain (e.g. the monthly one) as a trigger.

    Triggers: an open alert of a ``retrain_on_alert_categories`` category, a drift alert open for at least
    ``retrain.drift_persistence_nights`` nights when ``retrain.on_persistent_drift``, or the schedule. Then, in this
    order, a triggered retrain waits: when a retrain already looked back from this night or a later one (one
    candidate per night, whatever triggered it), while a challenger is in shadow or canary, while an approved
    candidate has not started its shadow yet, and for ``retrain.cooldown_nights`` after the last attempt that trained
    a candidate. A window the training-data gate refused trained nothing and is tried again the next night, with
    more labels. A candidate that was rejected or rolled back blocks nothing beyond the cooldown: the policy resumes
    while the alert stays open.
    """
    triggers = _triggers(state.open_alerts, night, policy)
    if schedule:
        triggers.append(schedule)
    if not triggers:
        return RetrainDecision(
            False, "no retrain-triggering alert is open" + _drift_progress(state.open_alerts, night, policy)
        )
    trigger = ", ".join(triggers)
    last = state.last_retrain_night
    if last is not None and last >= night:
        return RetrainDecision(
            False,
            f"a retrain already looked back from {last} (one candidate per night); triggered by {trigger}",
            trigger,
        )
    if state.challenger is not None:
        return RetrainDecision(False, f"a rollout of {state.challenger} is under way; triggered by {trigger}", trigger)
    evaluation = state.latest_evaluation
    if (
        evaluation is not None
        and evaluation.decision == APPROVED
        and evaluation.as_of is not None
        and (state.latest_scored_night is None or state.latest_scored_night <= evaluation.as_of)
    ):
        return RetrainDecision(
            False, f"candidate {evaluation.version} was approved on {evaluation.as_of} and is about to shadow", trigger
        )
    cooldown, trained = policy.retrain.cooldown_nights, state.last_candidate_night
    if trained is not None and (night - trained).days < cooldown:
        resume = trained + dt.timedelta(days=cooldown)
        return RetrainDecision(
            False,
            f"cooldown: the last candidate was trained looking back from {trained}; the next may from {resume} "
            f"({cooldown} nights); triggered by {trigger}",
            trigger,
        )
    return RetrainDecision(True, f"retrain looking back from {night}: {trigger}", trigger)


def _triggers(open_alerts: tuple[OpenAlert, ...], night: dt.date, policy: LifecycleConfig) -> list[str]:
    categories = set(policy.retrain_on_alert_categories)
    found = [f"{a.category} alert {a.alert_id}" for a in open_alerts if a.category in categories]
    if policy.retrain.on_persistent_drift:
        found += [
            f"drift alert {a.alert_id} open for {_open_nights(a, night)} nights"
            for a in open_alerts
            if a.category == "drift"
            and "drift" not in categories
            and _open_nights(a, night) >= policy.retrain.drift_persistence_nights
        ]
    return found


def _open_nights(alert: OpenAlert, night: dt.date) -> int:
    """Nights ``alert`` has been open on ``night``, counting both ends (1 on the night it opened)."""
    return (night - alert.opened_night).days + 1 if alert.opened_night else 1


def _drift_progress(open_alerts: tuple[OpenAlert, ...], night: dt.date, policy: LifecycleConfig) -> str:
    if not policy.retrain.on_persistent_drift:
        return ""
    drifting = [a for a in open_alerts if a.category == "drift"]
    if not drifting:
        return ""
    longest = max(drifting, key=lambda a: _open_nights(a, night))
    persistence = policy.retrain.drift_persistence_nights
    return f" (drift alert {longest.alert_id} open {_open_nights(longest, night)} of {persistence} nights)"


@dataclass(frozen=True)
class RegistryRequest:
    """A registry change a decision asks for, the first night it applies to, and a key that makes it happen once."""

    change: RegistryChange
    effective: dt.date

    @property
    def key(self) -> str:
        return f"{self.change.action}:{self.change.version}:{self.effective}"


def decide_shadow_start(evaluation: Evaluation) -> RegistryRequest | str:
    """An approved candidate becomes challenger in shadow from the night after its evaluation; otherwise the reason
    nothing starts (a sentence)."""
    if evaluation.decision != APPROVED or not evaluation.version or evaluation.as_of is None:
        return f"latest evaluation: {evaluation.decision}"
    change = RegistryChange(
        "start_shadow",
        evaluation.version,
        reason=f"approved by the never-worse gate on {evaluation.as_of}",
        actor="sensor",
    )
    return RegistryRequest(change, evaluation.as_of + dt.timedelta(days=1))


def rollout_request(shadow: dict[str, Any]) -> RegistryRequest | str:
    """The registry change a night's rollout decision asks for (from the ``shadow_scores`` metadata: its night,
    challenger, rollout action, next stage and reason), effective the next night; otherwise why nothing changes (a
    sentence)."""
    action = shadow.get(keys.SHADOW_ROLLOUT_ACTION, keys.NONE)
    version, night = shadow.get(keys.SHADOW_CHALLENGER), shadow.get(keys.SHADOW_NIGHT)
    reason = str(shadow.get(keys.SHADOW_ROLLOUT_REASON) or "")
    if action in (keys.NONE, "hold") or not version or version == keys.NONE or not night:
        return f"rollout: {action}" + (f" ({reason})" if reason else "")
    effective = dt.date.fromisoformat(str(night)) + dt.timedelta(days=1)
    if action == "advance":
        return RegistryRequest(
            RegistryChange("advance", version, str(shadow[keys.SHADOW_ROLLOUT_NEXT_STAGE]), reason, "sensor"), effective
        )
    if action == "promote":
        return RegistryRequest(RegistryChange("promote", version, reason=reason, actor="sensor"), effective)
    if action == "rollback":
        return RegistryRequest(RegistryChange("reject_challenger", version, reason=reason, actor="sensor"), effective)
    raise ValueError(f"unknown rollout action {action!r} in the shadow_scores metadata")
