"""What needs attention this month, for the monthly review and the monthly asset's metadata.

The alert engine is the judge of the nightly metrics: every alert opened in the month (``monitoring.alerts``, as the
snapshot carries it) is listed, with whether it resolved, and so is every alert carried into the month that was
still open at its end — the report does not judge the metrics again with thresholds of its own. Beside the alerts
come the facts no alert rule covers: no labels yet, an untrustworthy estimate, the review backlog and agreement,
the month's rollbacks and rejected or refused retrains (from the alias log and the retrain records), nights without
a run and nights whose monitoring did not finish.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass

import polars as pl

from nightkeeper.alerts import SEVERITY_ORDER, runbook_link
from nightkeeper.report.snapshot import Snapshot, metric_series, month_bounds
from nightkeeper.report.views import lifecycle_events, review_summary, short_reason

# The review backlog and agreement no alert rule watches (they are people's work, not nightly metrics).
REVIEW_BACKLOG_SHARE = 0.5  # pending / queued above this: the backlog needs attention
MIN_REVIEW_AGREEMENT = 0.7  # reviewers agreeing with the model less often than this (on 20+ answers) needs a look


@dataclass(frozen=True)
class Attention:
    """One thing a person should look at: how urgent (critical, warning, info), what, and where to read more."""

    level: str
    text: str
    link: str = ""


def attention_items(snapshot: Snapshot) -> list[Attention]:
    """What needs attention this month, most urgent first: the month's alerts (``month_alerts``), an untrustworthy
    estimate or no labels yet, the review load, rollbacks and rejected or refused retrains, nights missing, and
    nights whose monitoring did not finish. A snapshot without data says so and nothing else."""
    if not snapshot.has_data:
        month = snapshot.manifest.get("month", "this month")
        return [
            Attention(
                "info", f"No data for {month}: the warehouse holds no night in this month, so nothing can be judged."
            )
        ]
    items = [
        *month_alerts(snapshot),
        *_attention_performance(snapshot),
        *_attention_review(snapshot),
        *_attention_lifecycle(snapshot),
        *_attention_gaps(snapshot),
        *_attention_incomplete(snapshot),
    ]
    return sorted(items, key=lambda item: SEVERITY_ORDER.index(item.level))


def month_alerts(snapshot: Snapshot) -> list[Attention]:
    """One item per alert opened in the snapshot's month, and per alert opened before it still open at its end, at the
    alert's severity, oldest first: the rule, when it opened, whether it resolved (and when) or is still open, its
    message; the link is the rule's runbook section."""
    month = snapshot.manifest.get("month")
    alerts = snapshot["alerts"]
    if month:
        first, _ = month_bounds(month)
        alerts = alerts.filter((pl.col("opened_night") >= first) | (pl.col("status_at_month_end") == "open"))
    items = []
    for row in alerts.sort("opened_night", "alert_id").iter_rows(named=True):
        if row["status_at_month_end"] == "open":
            state = f"open since {row['opened_night']}"
        else:
            state = f"opened {row['opened_night']}, resolved {row['closed_night']}"
        level = row["severity"] if row["severity"] in SEVERITY_ORDER else "warning"
        items.append(
            Attention(
                level,
                f"Alert **{row['rule']}** {state} ({row['category']}, {row['severity']}): {row['message']}",
                runbook_link(row["runbook"] or ""),
            )
        )
    return items


def _attention_performance(snapshot: Snapshot) -> list[Attention]:
    """No labels yet, and an estimate the monitoring step judged untrustworthy on the latest night (both facts
    beside the alerts: no rule watches them)."""
    items = []
    realized = snapshot["performance_realized"].filter(pl.col("source") == "model")
    labeled = int(snapshot["labels"]["labeled_rows"].sum() or 0)
    if labeled == 0 and realized.filter(pl.col("labeled_rows") > 0).height == 0:
        items.append(
            Attention(
                "info",
                "No labels yet for this month's nights: realized performance cannot be judged; "
                "the estimates below are all there is.",
            )
        )
    trust = metric_series(snapshot, "performance.estimate_trustworthy")
    if trust.height and trust["value"][-1] == 0:
        error = metric_series(snapshot, "performance.calibration_error")
        ece = f" (calibration error {error['value'][-1]:.3f})" if error.height else ""
        items.append(
            Attention(
                "warning",
                f"Estimated performance is not trustworthy on the latest night{ece}: scores are "
                "miscalibrated on recent labels — trust realized figures.",
                runbook_link("estimated-auc-drop"),
            )
        )
    return items


def _attention_review(snapshot: Snapshot) -> list[Attention]:
    summary = review_summary(snapshot)
    if not summary or not summary["queued"]:
        return []
    items = []
    share = summary["pending"] / summary["queued"]
    if share > REVIEW_BACKLOG_SHARE:
        items.append(
            Attention(
                "warning",
                f"Review backlog: {summary['pending']:,} of {summary['queued']:,} queued rows "
                f"({share:.0%}) are still waiting for a reviewer.",
            )
        )
    if (
        summary["agreement"] is not None
        and summary["agreement_rows"] >= 20
        and summary["agreement"] < MIN_REVIEW_AGREEMENT
    ):
        items.append(
            Attention(
                "warning",
                f"Reviewers agree with the model on only {summary['agreement']:.0%} of "
                f"{summary['agreement_rows']} reviewed model answers.",
            )
        )
    return items


def _attention_lifecycle(snapshot: Snapshot) -> list[Attention]:
    month = snapshot.manifest.get("month")
    if not month:
        return []
    events = lifecycle_events(snapshot, *month_bounds(month))
    items = []
    for row in events.filter(pl.col("event") == "rollback").iter_rows(named=True):
        items.append(
            Attention(
                "warning",
                f"Champion rolled back to {row['version']} on {row['night']} by {row['actor']}: {row['reason']}",
                runbook_link("rollback"),
            )
        )
    removed = events.filter(pl.col("event") == "challenger rolled back")
    if removed.height:
        listed = "; ".join(f"{n}: {r}" for n, r in removed.select("night", "reason").iter_rows())
        items.append(
            Attention(
                "warning",
                f"{removed.height} challenger(s) rolled back during shadow or canary ({listed}).",
                runbook_link("rollback"),
            )
        )
    candidates = snapshot["candidates"]
    for status, anchor, what in [
        ("rejected", "candidate-rejected", "retrained candidate(s) rejected by a gate"),
        ("refused", "retrain-refused", "retrain(s) refused by the training-data gate"),
    ]:
        rows = candidates.filter(pl.col("status") == status)
        if rows.height:
            listed = "; ".join(
                f"{night}: {short_reason(reason, 140)}" for night, reason in rows.select("as_of", "reasons").iter_rows()
            )
            items.append(
                Attention(
                    "warning" if status == "refused" else "info",
                    f"{rows.height} {what} ({listed}).",
                    runbook_link(anchor),
                )
            )
    return items


def _attention_gaps(snapshot: Snapshot) -> list[Attention]:
    nights = sorted(dt.date.fromisoformat(n) for n in snapshot.manifest.get("nights_with_data") or [])
    if len(nights) < 2:
        return []
    expected = {nights[0] + dt.timedelta(days=i) for i in range((nights[-1] - nights[0]).days + 1)}
    gaps = sorted(expected - set(nights))
    if gaps:
        return [
            Attention(
                "warning", f"{len(gaps)} night(s) without a run between {nights[0]} and {nights[-1]}: {_nights(gaps)}."
            )
        ]
    return []


def _attention_incomplete(snapshot: Snapshot) -> list[Attention]:
    """Nights that were answered but whose monitoring did not finish (a failed drift, performance or alert step)."""
    answered = set(snapshot["volume"].filter(pl.col("model_rows") + pl.col("canary_rows") > 0)["night"].to_list())
    if not answered:
        return []
    measured = {
        "drift": set(snapshot["drift"]["partition_date"].to_list()),
        "performance": set(metric_series(snapshot, "performance.estimated_auc")["night"].to_list()),
    }
    items = []
    for step, nights in measured.items():
        if "nightly.drift_metrics" in snapshot.missing_tables and step == "drift":
            continue
        lacking = sorted(answered - nights)
        if lacking:
            items.append(
                Attention(
                    "warning",
                    f"Monitoring incomplete: {step} was not measured on {len(lacking)} answered night(s): "
                    f"{_nights(lacking)} — the night's run likely failed after scoring (alerts are not evaluated on "
                    "such a night); re-run it.",
                )
            )
    return items


def _nights(nights: list[dt.date], most: int = 6) -> str:
    shown = ", ".join(str(n) for n in nights[:most])
    return shown + (f" and {len(nights) - most} more" if len(nights) > most else "")


NOTHING_NEEDS_ATTENTION = (
    "Nothing needs attention this month: no alert opened or open, labels arriving, reviews keeping up, no rollback."
)


def attention_markdown(items: list[Attention]) -> str:
    """The attention list as markdown bullets (for Dagster metadata or a chat message)."""
    if not items:
        return NOTHING_NEEDS_ATTENTION
    return "\n".join(
        f"- **{item.level.upper()}** {item.text}" + (f" (runbook: `{item.link}`)" if item.link else "")
        for item in items
    )


def attention_html(items: list[Attention]) -> str:
    """The attention list as an HTML list: a coloured level badge, the text (``**bold**`` honoured), the runbook
    section as text (``docs/runbook.md#anchor``: a report is read far from the repository, a relative link would
    break)."""
    if not items:
        return f"<p class='nk-ok'>{html.escape(NOTHING_NEEDS_ATTENTION)}</p>"
    rows = []
    for item in items:
        level = html.escape(item.level)
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(item.text))
        link = f" <span class='nk-runbook'>runbook: <code>{html.escape(item.link)}</code></span>" if item.link else ""
        rows.append(f"<li><span class='nk-badge nk-{level}'>{level}</span> {text}{link}</li>")
    return "<ul class='nk-attention'>" + "".join(rows) + "</ul>"
