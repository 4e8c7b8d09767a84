"""The alert engine: config rules over nightly metrics -> alerts that open once, stay quiet while open, then resolve.

A rule (``config.AlertRule``) *holds* on a night when that night's metric value satisfies ``value <comparison>
threshold``. It is *sustained* on night D when it held on D and on each of the ``sustained_nights - 1`` calendar nights
before D. A night without a value (no row, or a NULL value) breaks the streak: an alert only opens on evidence.

Lifecycle of one rule, evaluated night after night:

- not open and sustained          -> ``opened`` (one alert, id ``<rule>@<opening night>``)
- open and the rule holds         -> nothing (no repeat: steady bad nights stay silent after the first message)
- open and the rule does not hold -> ``resolved`` on the first such night; a later sustained streak opens a new alert
- open and no value tonight       -> nothing (no evidence either way; the alert stays open)

Re-evaluating a night is idempotent: ``transitions`` yields nothing for a night already applied, and
``apply_transitions`` refuses an opening on a night an alert of that rule already covers (opened on or before it, not
closed by then), so re-runs and back-fills never duplicate alerts, events or webhook messages. Re-running a night
older than an open alert never touches that alert.

"Alert on performance first, with drift attached as the probable cause": an opening performance alert carries
``probable_causes`` (the drift rules that hold that night, with value and threshold, most exceeded first) and
``drift_metrics`` (every ``drift.*`` metric of the night), and transitions are ordered performance, drift,
data_quality, operations, so the performance message is sent before the drift one.

What moved: a metric recorded with details (``metrics_store``; drift records the features and levels behind each
aggregate drift metric) gets the details' ``summary`` appended to the opening message ("... for 1 night
(2026-02-04); drifted: employment_type: student 7.0% → 0.0% (vanished), retired 10.1% → 17.3%") and the whole
detail in the payload's ``details``.

Acknowledgement (``acknowledge``): a person who has judged an open alert (say, a persistent drift without
performance impact) acknowledges it with a reason. Its status becomes ``acknowledged``: it no longer counts as open
(``open_alerts``, which retraining reads), it stays quiet while its condition persists (no re-open, no message),
and it resolves as usual when the condition clears; a later sustained streak opens a new alert, which pages again.
Who, when and why are stored on the alert and as an ``acknowledged`` event in the alert log.

Storage (schema ``monitoring``): ``alerts`` (one row per alert, its status), ``alert_events`` (append-only opened /
acknowledged / resolved log) and the webhook outbox (``nightkeeper.webhook``), all written in one transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import polars as pl

from nightkeeper.config import AlertRule
from nightkeeper.metrics_store import details_on, metric_history, metrics_on
from nightkeeper.schema import ALERT_EVENTS as EVENTS
from nightkeeper.schema import ALERTS
from nightkeeper.warehouse import run_transaction
from nightkeeper.webhook import enqueue, webhook_body

RUNBOOK = "docs/runbook.md"
CATEGORY_ORDER: tuple[str, ...] = ("performance", "drift", "data_quality", "operations")
SEVERITY_ORDER: tuple[str, ...] = ("critical", "warning", "info")

Event = Literal["opened", "resolved"]
OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
UNRESOLVED = (OPEN, ACKNOWLEDGED)

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

ALERT_COLUMNS = pl.Schema(
    {
        "alert_id": pl.String(),
        "rule": pl.String(),
        "category": pl.String(),
        "severity": pl.String(),
        "metric": pl.String(),
        "opened_night": pl.Date(),
        "closed_night": pl.Date(),
        "status": pl.String(),
        "value": pl.Float64(),
        "threshold": pl.Float64(),
        "comparison": pl.String(),
        "message": pl.String(),
        "runbook": pl.String(),
    }
)
"""What an alert says: its rule, category and severity, the metric, the nights it opened and closed, its status, the
value against the threshold, the message and the runbook section (what a report shows of it)."""

ALERTS_SCHEMA = pl.Schema(
    {
        **ALERT_COLUMNS,
        "payload": pl.String(),
        "acknowledged_at": pl.Datetime("us", "UTC"),
        "acknowledged_by": pl.String(),
        "ack_reason": pl.String(),
    }
)
"""A row of ``monitoring.alerts``: what the alert says, the webhook payload and who acknowledged it, when and why."""


@dataclass(frozen=True)
class RuleState:
    """One rule judged on one night.

    ``value``: the metric that night (None: no value). ``held``: the condition held that night (None: no value).
    ``nights`` / ``values``: the run of consecutive calendar nights ending that night on which the condition held,
    oldest first, at most ``sustained_nights`` long (empty when it did not hold that night).
    """

    rule: AlertRule
    night: dt.date
    value: float | None
    held: bool | None
    nights: tuple[dt.date, ...] = ()
    values: tuple[float, ...] = ()

    @property
    def sustained(self) -> bool:
        """The condition held on ``sustained_nights`` consecutive nights ending on ``night``."""
        return bool(self.held) and len(self.nights) >= self.rule.sustained_nights


@dataclass(frozen=True)
class AlertTransition:
    """An alert opening or resolving on ``night``; ``payload`` is the structured event (JSON-ready) that is stored,
    logged and sent as the webhook's ``nightkeeper`` object."""

    event: Event
    alert_id: str
    rule: AlertRule
    night: dt.date
    opened_night: dt.date
    value: float | None
    nights: tuple[dt.date, ...]
    message: str
    payload: dict[str, Any] = field(default_factory=dict)


def holds(rule: AlertRule, value: float) -> bool:
    """Whether ``value <comparison> threshold`` for this rule."""
    return _COMPARE[rule.comparison](value, rule.threshold)


def history_nights(rules: list[AlertRule]) -> int:
    """How many nights of history ``evaluate_rules`` needs to judge every rule: the longest ``sustained_nights``."""
    return max((rule.sustained_nights for rule in rules), default=1)


def evaluate_rules(rules: list[AlertRule], history: pl.DataFrame, night: dt.date) -> list[RuleState]:
    """Judge every rule on ``night`` from a long metrics frame (columns ``night``, ``metric``, ``value``).

    Rows after ``night`` are ignored; NULL and NaN values count as missing; a missing night breaks the streak.
    The history must cover ``history_nights(rules)`` nights ending on ``night`` (``metrics_store.metric_history``).
    Raises ValueError if a (night, metric) appears twice. States come back in the order of ``rules``.
    """
    missing = {"night", "metric", "value"} - set(history.columns)
    if missing:
        raise ValueError(f"history lacks column(s) {sorted(missing)}; it needs night, metric, value")
    rows = history.select("night", "metric", pl.col("value").cast(pl.Float64)).filter(pl.col("night") <= night)
    if rows.select(pl.struct("night", "metric").is_duplicated().any()).item():
        raise ValueError("history holds more than one value for some (night, metric)")
    by_metric: dict[str, dict[dt.date, float]] = {}
    for row_night, metric, value in rows.drop_nulls("value").filter(pl.col("value").is_not_nan()).iter_rows():
        by_metric.setdefault(metric, {})[row_night] = value

    states: list[RuleState] = []
    for rule in rules:
        values = by_metric.get(rule.metric, {})
        value = values.get(night)
        streak: list[tuple[dt.date, float]] = []
        day = night
        while len(streak) < rule.sustained_nights and day in values and holds(rule, values[day]):
            streak.append((day, values[day]))
            day -= dt.timedelta(days=1)
        streak.reverse()
        states.append(
            RuleState(
                rule=rule,
                night=night,
                value=value,
                held=None if value is None else holds(rule, value),
                nights=tuple(d for d, _ in streak),
                values=tuple(v for _, v in streak),
            )
        )
    return states


def transitions(
    states: list[RuleState],
    open_alerts: pl.DataFrame,
    night: dt.date,
    context: dict[str, float] | None = None,
    details: dict[str, dict[str, Any]] | None = None,
) -> list[AlertTransition]:
    """The alerts to open and resolve on ``night``, given the unresolved alerts
    (``open_alerts(conn, include_acknowledged=True)``: an acknowledged alert blocks re-opening and resolves as usual).

    Opens a rule's alert when it is sustained and the rule has no open alert; resolves each open alert of a rule
    whose condition does not hold on ``night`` (and that opened on or before ``night``). ``context`` is that night's
    metrics (``metrics_store.metrics_on``); its ``drift.*`` values become a performance alert's ``drift_metrics`` and,
    where a drift rule holds on them, its ``probable_causes`` (without context, the drift rules' own values are used).
    While a data-quality rule holds on ``night``, drift rules do not open: bad data moves distributions as a
    consequence, so the drift that would have opened is listed in the data-quality opening's
    ``drift_attributed_to_this`` instead (one root cause, one page).
    ``details``: that night's metric details (``metrics_store.details_on``); an opening whose metric has some
    carries them (summary in the message, all in the payload).
    Order: openings before resolutions, then by category (performance first), severity (critical first), rule order.
    """
    context = dict(context or {})
    details = details or {}
    by_rule: dict[str, list[dict[str, Any]]] = {}
    if open_alerts.height:
        for alert in open_alerts.filter(pl.col("status").is_in(UNRESOLVED)).iter_rows(named=True):
            by_rule.setdefault(alert["rule"], []).append(alert)
    causes = _probable_causes(states, context)
    drift_metrics = {name: value for name, value in sorted(context.items()) if name.startswith("drift.")}
    # Bad data shifts distributions too: while a data-quality rule holds, drift is its consequence, not news.
    data_quality_holds = any(state.held and state.rule.category == "data_quality" for state in states)
    suppressed = [
        {"rule": state.rule.name, "metric": state.rule.metric, "value": state.value}
        for state in states
        if data_quality_holds
        and state.rule.category == "drift"
        and state.sustained
        and not by_rule.get(state.rule.name)
    ]

    found: list[tuple[tuple[int, int, int, int], AlertTransition]] = []
    for index, state in enumerate(states):
        rule = state.rule
        rank = (CATEGORY_ORDER.index(rule.category), SEVERITY_ORDER.index(rule.severity), index)
        current = by_rule.get(rule.name, [])
        if not current and state.sustained:
            if rule.category == "drift" and data_quality_holds:
                continue
            extra = (
                {"probable_causes": causes, "drift_metrics": drift_metrics} if rule.category == "performance" else {}
            )
            if rule.category == "data_quality" and suppressed:
                extra = {"drift_attributed_to_this": suppressed}
            if rule.metric in details:
                extra = {**extra, "details": details[rule.metric]}
            found.append(((0, *rank), _opening(state, extra)))
        elif state.held is False:
            for alert in current:
                if alert["opened_night"] <= night:
                    found.append(((1, *rank), _resolution(state, alert)))
    return [transition for _, transition in sorted(found, key=lambda item: item[0])]


def apply_transitions(
    connection: duckdb.DuckDBPyConnection, transitions: list[AlertTransition]
) -> list[dict[str, Any]]:
    """Write the transitions (alert rows, events, outbox rows) in one transaction; returns the events written.

    Each returned dict is the structured event (``payload``; its ``message`` is the human line to log), in the order
    given. Skipped, so that re-runs add nothing: an opening whose rule already has an alert covering that night, an
    event already recorded, a resolution of an alert that is not open.
    """
    written: list[dict[str, Any]] = []

    def write_transitions() -> None:
        written.clear()  # a retried attempt starts again
        for transition in transitions:
            if (
                transition.event == "opened"
                and _open(connection, transition)
                or transition.event == "resolved"
                and _resolve(connection, transition)
            ):
                written.append(transition.payload)
        for payload in written:
            enqueue(connection, f"{payload['alert_id']}:{payload['event']}", webhook_body(payload))

    run_transaction(connection, write_transitions)
    return written


def open_alerts(connection: duckdb.DuckDBPyConnection, include_acknowledged: bool = False) -> pl.DataFrame:
    """Every alert with status 'open' — and 'acknowledged' ones too if asked — (columns as in ALERTS_SCHEMA; payload
    as JSON text), oldest first."""
    return list_alerts(connection, UNRESOLVED if include_acknowledged else (OPEN,))


def list_alerts(connection: duckdb.DuckDBPyConnection, statuses: tuple[str, ...] | None = None) -> pl.DataFrame:
    """The alerts whose status is one of ``statuses`` (every alert when None), oldest first, columns as in
    ALERTS_SCHEMA (payload as JSON text)."""
    frame = connection.execute(
        f"""select * exclude (payload), payload::varchar as payload from {ALERTS}
            where $statuses is null or status in (select unnest($statuses)) order by opened_night, alert_id""",
        {"statuses": None if statuses is None else list(statuses)},
    ).pl()
    if not frame.height:
        return pl.DataFrame(schema=ALERTS_SCHEMA)
    return (
        frame.with_columns(pl.col("acknowledged_at").dt.convert_time_zone("UTC"))
        .select(list(ALERTS_SCHEMA))
        .cast(ALERTS_SCHEMA)
    )


def acknowledge(
    connection: duckdb.DuckDBPyConnection, alert_id: str, by: str, reason: str, at: dt.datetime
) -> dict[str, Any]:
    """Acknowledge the open alert ``alert_id``: it stops paging while its condition persists (see the module
    docstring). Stores who (``by``), when (``at``, timezone-aware) and why (``reason``) on the alert and as an
    ``acknowledged`` event (night = ``at``'s date) in one transaction; returns the alert row. Raises ValueError,
    changing nothing, for an empty reason or name, an unknown alert (naming the open ones), or an alert that is
    resolved or already acknowledged (naming who acknowledged it and why)."""
    if not reason.strip():
        raise ValueError("an acknowledgement needs a reason (--reason): the alert log must say why paging stopped")
    if not by.strip():
        raise ValueError("an acknowledgement needs the name of who acknowledges it")
    if at.tzinfo is None:
        raise ValueError("the acknowledgement time must be timezone-aware")
    row = connection.execute(
        f"select status, acknowledged_by, ack_reason, closed_night from {ALERTS} where alert_id = ?", [alert_id]
    ).fetchone()
    if row is None:
        open_now = open_alerts(connection)["alert_id"].to_list()
        raise ValueError(f"no alert {alert_id!r}; open alerts: {', '.join(open_now) or 'none'}")
    status, who, why, closed = row
    if status == ACKNOWLEDGED:
        raise ValueError(f"alert {alert_id!r} is already acknowledged by {who}: {why}")
    if status != OPEN:
        raise ValueError(f"alert {alert_id!r} is {status} (closed {closed}); only an open alert can be acknowledged")
    message = f"[acknowledged] {alert_id} by {by.strip()}: {reason.strip()}"

    def acknowledge_alert() -> None:
        connection.execute(
            f"""update {ALERTS} set status = ?, acknowledged_at = ?, acknowledged_by = ?, ack_reason = ?
                where alert_id = ?""",
            [ACKNOWLEDGED, at, by.strip(), reason.strip(), alert_id],
        )
        connection.execute(
            f"insert into {EVENTS} values (?, ?, 'acknowledged', ?, ?)", [alert_id, at.date(), at, message]
        )

    run_transaction(connection, acknowledge_alert)
    return list_alerts(connection).filter(pl.col("alert_id") == alert_id).row(0, named=True)


def run_alerts(connection: duckdb.DuckDBPyConnection, rules: list[AlertRule], night: dt.date) -> list[dict[str, Any]]:
    """Evaluate ``rules`` on ``night`` from ``monitoring.night_metrics`` and apply the transitions; returns the events
    written (see ``apply_transitions``). The whole alert step of a night; idempotent."""
    if not rules:
        return []
    history = metric_history(connection, sorted({rule.metric for rule in rules}), night, history_nights(rules))
    states = evaluate_rules(rules, history, night)
    found = transitions(
        states,
        open_alerts(connection, include_acknowledged=True),
        night,
        metrics_on(connection, night),
        details_on(connection, night),
    )
    return apply_transitions(connection, found)


def runbook_link(anchor: str) -> str:
    """Where a rule's runbook section is: ``docs/runbook.md#<anchor>``; a path or URL is kept as given; '' stays ''."""
    anchor = anchor.strip()
    if not anchor or "/" in anchor or ".md" in anchor:
        return anchor
    return f"{RUNBOOK}#{anchor.lstrip('#')}"


# --------------------------------------------------------------------------------------------------------- helpers


def _probable_causes(states: list[RuleState], context: dict[str, float]) -> list[dict[str, Any]]:
    causes: list[dict[str, Any]] = []
    for state in states:
        rule = state.rule
        if rule.category != "drift":
            continue
        value = context.get(rule.metric, state.value)
        if value is None or value != value or not holds(rule, value):
            continue
        excess = abs(value - rule.threshold) / max(abs(rule.threshold), 1e-12)
        causes.append(
            {
                "rule": rule.name,
                "metric": rule.metric,
                "value": value,
                "comparison": rule.comparison,
                "threshold": rule.threshold,
                "excess": excess,
            }
        )
    causes.sort(key=lambda cause: -cause["excess"])
    return [{key: value for key, value in cause.items() if key != "excess"} for cause in causes]


def _opening(state: RuleState, extra: dict[str, Any]) -> AlertTransition:
    rule, nights = state.rule, state.nights
    alert_id = f"{rule.name}@{state.night.isoformat()}"
    span = nights[0].isoformat() if len(nights) == 1 else f"{nights[0].isoformat()}..{nights[-1].isoformat()}"
    message = (
        f"[{rule.severity}] {rule.metric} = {_fmt(state.value)} {rule.comparison} {_fmt(rule.threshold)} "
        f"for {len(nights)} night{'s' if len(nights) != 1 else ''} ({span})"
    )
    causes = extra.get("probable_causes") or []
    if causes:
        message += "; probable cause: " + ", ".join(
            f"{c['metric']} = {_fmt(c['value'])} {c['comparison']} {_fmt(c['threshold'])}" for c in causes
        )
    summary = (extra.get("details") or {}).get("summary")
    if summary:
        message += f"; {summary}"
    message += _runbook_suffix(rule)
    payload = (
        _payload("opened", alert_id, state, state.night, None, message)
        | {
            "nights": [night.isoformat() for night in nights],
            "values": list(state.values),
        }
        | extra
    )
    return AlertTransition("opened", alert_id, rule, state.night, state.night, state.value, nights, message, payload)


def _resolution(state: RuleState, alert: dict[str, Any]) -> AlertTransition:
    rule = state.rule
    opened: dt.date = alert["opened_night"]
    message = (
        f"[resolved] {rule.metric} = {_fmt(state.value)}, no longer {rule.comparison} {_fmt(rule.threshold)} "
        f"on {state.night.isoformat()} (alert open since {opened.isoformat()})" + _runbook_suffix(rule)
    )
    payload = _payload("resolved", alert["alert_id"], state, opened, state.night, message) | {
        "nights": [state.night.isoformat()],
        "values": [state.value],
    }
    return AlertTransition(
        "resolved", alert["alert_id"], rule, state.night, opened, state.value, (state.night,), message, payload
    )


def _payload(
    event: Event, alert_id: str, state: RuleState, opened: dt.date, closed: dt.date | None, message: str
) -> dict[str, Any]:
    rule = state.rule
    return {
        "alert_id": alert_id,
        "event": event,
        "night": state.night.isoformat(),
        "rule": rule.name,
        "category": rule.category,
        "severity": rule.severity,
        "metric": rule.metric,
        "value": state.value,
        "comparison": rule.comparison,
        "threshold": rule.threshold,
        "sustained_nights": rule.sustained_nights,
        "opened_night": opened.isoformat(),
        "closed_night": closed.isoformat() if closed else None,
        "message": message,
        "runbook": runbook_link(rule.runbook),
    }


def _open(connection: duckdb.DuckDBPyConnection, transition: AlertTransition) -> bool:
    rule, night = transition.rule, transition.night
    covered = connection.execute(
        f"""select 1 from {ALERTS} where alert_id = ? or (rule = ? and opened_night <= ?
            and (closed_night is null or closed_night > ?))""",
        [transition.alert_id, rule.name, night, night],
    ).fetchone()
    if covered:
        return False
    connection.execute(
        f"""insert into {ALERTS} (alert_id, rule, category, severity, metric, opened_night, closed_night, status, value,
                threshold, comparison, message, runbook, payload)
            values (?, ?, ?, ?, ?, ?, null, 'open', ?, ?, ?, ?, ?, ?)""",
        [
            transition.alert_id,
            rule.name,
            rule.category,
            rule.severity,
            rule.metric,
            night,
            transition.value,
            rule.threshold,
            rule.comparison,
            transition.message,
            runbook_link(rule.runbook),
            json.dumps(transition.payload),
        ],
    )
    return _event(connection, transition)


def _resolve(connection: duckdb.DuckDBPyConnection, transition: AlertTransition) -> bool:
    row = connection.execute(f"select status from {ALERTS} where alert_id = ?", [transition.alert_id]).fetchone()
    if row is None or row[0] not in UNRESOLVED:
        return False
    connection.execute(
        f"update {ALERTS} set status = ?, closed_night = ? where alert_id = ?",
        [RESOLVED, transition.night, transition.alert_id],
    )
    return _event(connection, transition)


def _event(connection: duckdb.DuckDBPyConnection, transition: AlertTransition) -> bool:
    if connection.execute(
        f"select 1 from {EVENTS} where alert_id = ? and event = ?", [transition.alert_id, transition.event]
    ).fetchone():
        return False
    connection.execute(
        f"insert into {EVENTS} values (?, ?, ?, now(), ?)",
        [transition.alert_id, transition.night, transition.event, transition.message],
    )
    return True


def _runbook_suffix(rule: AlertRule) -> str:
    link = runbook_link(rule.runbook)
    return f"; runbook: {link}" if link else ""


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
