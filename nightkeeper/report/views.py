"""What the notebooks draw, derived from a snapshot: rates by reason, who held each alias, the month's lifecycle events,
the review load, and the alert rules' thresholds (the lines on the charts)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import polars as pl

from nightkeeper.report.snapshot import Snapshot
from nightkeeper.review.queue import review_stats


def rule_threshold(snapshot: Snapshot, metric: str) -> float | None:
    """The threshold of the alert rule on ``metric`` in the snapshot's config; None when no rule watches it (or the
    snapshot carries no config): a chart then draws no alert line rather than one the alert engine does not use."""
    for rule in snapshot.config.get("alert_rules") or []:
        if rule.get("metric") == metric:
            return float(rule["threshold"])
    return None


def rates_by_reason(snapshot: Snapshot, top: int = 6) -> pl.DataFrame:
    """Per night and reason, the share of the night's rows not answered by a model: columns night, kind
    ('fallback' or 'undecided'), reason (the ``top`` most frequent reasons of the month, the rest as 'other'), rate."""
    reasons = snapshot["outcome_reasons"]
    volume = snapshot["volume"].select("night", "outcome_rows")
    if reasons.height == 0 or volume.height == 0:
        return pl.DataFrame(
            schema={"night": pl.Date(), "kind": pl.String(), "reason": pl.String(), "rate": pl.Float64()}
        )
    short = reasons.with_columns(
        pl.when(pl.col("source") == "quarantine").then(pl.lit("undecided")).otherwise(pl.col("source")).alias("kind"),
        pl.col("reason").map_elements(short_reason, return_dtype=pl.String).alias("reason"),
    )
    grouped = _top_or_other(short, "reason", top).group_by("night", "kind", "reason").agg(pl.col("rows").sum())
    return (
        grouped.join(volume, on="night")
        .with_columns((pl.col("rows") / pl.col("outcome_rows")).alias("rate"))
        .select("night", "kind", "reason", "rate")
        .sort("night", "kind", "reason")
    )


def quarantine_rates_by_rule(snapshot: Snapshot, top: int = 6) -> pl.DataFrame:
    """Per night and broken row rule ('<column> <rule>', the ``top`` most broken of the month, the rest as 'other'),
    the share of the night's raw rows breaking it: columns night, rule, rate; most broken rule first, 'other' last."""
    rules = snapshot["quarantine_rules"]
    if rules.height == 0:
        return pl.DataFrame(schema={"night": pl.Date(), "rule": pl.String(), "rate": pl.Float64()})
    named = rules.select("night", pl.format("{} {}", "column", "rule").alias("rule"), "rows")
    grouped = _top_or_other(named, "rule", top).group_by("night", "rule").agg(pl.col("rows").sum())
    totals = grouped.group_by("rule").agg(pl.col("rows").sum().alias("total"))
    return (
        grouped.join(snapshot["volume"].select("night", "raw_rows"), on="night", how="left")
        .join(totals, on="rule")
        .with_columns((pl.col("rows") / pl.max_horizontal(pl.col("raw_rows").fill_null(0), 1)).alias("rate"))
        .sort(pl.col("rule") == "other", "total", "rule", "night", descending=[False, True, False, False])
        .select("night", "rule", "rate")
    )


def _top_or_other(frame: pl.DataFrame, column: str, top: int) -> pl.DataFrame:
    """``frame`` with ``column`` kept for its ``top`` values of most ``rows`` in total, 'other' for the rest."""
    leading = (
        frame.group_by(column)
        .agg(pl.col("rows").sum())
        .sort("rows", column, descending=[True, False])
        .head(top)[column]
        .to_list()
    )
    return frame.with_columns(
        pl.when(pl.col(column).is_in(leading)).then(pl.col(column)).otherwise(pl.lit("other")).alias(column)
    )


def business_value_by_night(snapshot: Snapshot) -> pl.DataFrame:
    """Realized business value of the model's answers per scoring night that has it: columns partition_date,
    business_value (over the labeled rows), labeled_rows, rows (every model answer of the night)."""
    return (
        snapshot["performance_realized"]
        .filter((pl.col("source") == "model") & pl.col("business_value").is_not_null())
        .group_by("partition_date")
        .agg(pl.col("business_value").sum(), pl.col("labeled_rows").sum(), pl.col("rows").sum())
        .sort("partition_date")
    )


def alias_status(snapshot: Snapshot, version: str) -> str:
    """Where ``version`` stands in the alias log: 'champion since …' / 'challenger (stage) since …' while it holds
    the alias, 'formerly …' once replaced, 'never held an alias' otherwise."""
    status = "never held an alias"
    for alias in ("challenger", "champion"):
        log = snapshot["model_aliases"].filter(pl.col("alias") == alias).sort("effective_from", "seq")
        held = log.filter(pl.col("version") == version)
        if held.height == 0:
            continue
        latest = log.row(-1, named=True)
        if latest["version"] == version:
            stage = f" ({latest['stage']})" if latest["stage"] else ""
            return f"{alias}{stage} since {latest['effective_from']}"
        status = f"formerly {alias} (first from {held['effective_from'][0]}; replaced on {latest['effective_from']})"
    return status


def short_reason(reason: str | None, width: int = 60) -> str:
    """A reason as a short legend label: model versions and long value lists trimmed."""
    text = (reason or "").strip() or "(no reason recorded)"
    text = re.sub(r"\bmodel [0-9a-f]{8,}\b", "model", text)
    return text if len(text) <= width else text[: width - 1] + "…"


def alias_timeline(snapshot: Snapshot, first: dt.date, last: dt.date) -> pl.DataFrame:
    """Who held each alias over the month: rows (alias, version, stage, start, end, reason), one per stretch, the
    stretch in force at the month's start included (an alias cleared — version null — has no stretch)."""
    log = snapshot["model_aliases"].sort("effective_from", "seq")
    rows = []
    for alias in ("champion", "challenger"):
        entries = log.filter(pl.col("alias") == alias)
        # per effective night, the last row set for it wins
        entries = entries.group_by("effective_from", maintain_order=True).agg(pl.all().last()).sort("effective_from")
        items = list(entries.iter_rows(named=True))
        for index, entry in enumerate(items):
            start = entry["effective_from"]
            end = items[index + 1]["effective_from"] - dt.timedelta(days=1) if index + 1 < len(items) else last
            if entry["version"] is None or end < first or start > last:
                continue
            rows.append(
                {
                    "alias": alias,
                    "version": entry["version"],
                    "stage": entry["stage"] or alias,
                    "start": max(start, first),
                    "end": min(end, last),
                    "reason": entry["reason"],
                    "actor": entry["actor"],
                }
            )
    schema = {
        "alias": pl.String(),
        "version": pl.String(),
        "stage": pl.String(),
        "start": pl.Date(),
        "end": pl.Date(),
        "reason": pl.String(),
        "actor": pl.String(),
    }
    return pl.DataFrame(rows, schema=schema)


def lifecycle_events(snapshot: Snapshot, first: dt.date, last: dt.date) -> pl.DataFrame:
    """The alias log rows effective within the month, each named: bootstrap (first champion), promotion (a new
    champion), rollback (back to an earlier champion, or a reason that says so), shadow / canary (challenger stages),
    challenger promoted / challenger rolled back (the challenger cleared: promoted, or removed by a failed health
    check)."""
    champions: list[str] = []
    current: str | None = None
    events = []
    for row in snapshot["model_aliases"].sort("seq").iter_rows(named=True):
        alias, version, stage = row["alias"], row["version"], row["stage"]
        reason, actor = row["reason"] or "", row["actor"] or ""
        if alias == "champion":
            if version is None:
                kind = "champion cleared"
            elif not champions:
                kind = "bootstrap" if "bootstrap" in f"{actor} {reason}".lower() else "champion set"
            elif version == current:
                kind = "champion confirmed"
            elif version in champions or "rollback" in reason.lower() or "roll back" in reason.lower():
                kind = "rollback"
            else:
                kind = "promotion"
            if version and version not in champions:
                champions.append(version)
            current = version
        elif version is None:
            kind = "challenger promoted" if reason.lower().startswith("promoted") else "challenger rolled back"
        else:
            kind = "canary" if (stage or "").startswith("canary") else (stage or "challenger")
        if first <= row["effective_from"] <= last:
            events.append(
                {
                    "night": row["effective_from"],
                    "alias": alias,
                    "version": version,
                    "stage": stage,
                    "event": kind,
                    "actor": actor,
                    "reason": reason,
                }
            )
    schema = {
        "night": pl.Date(),
        "alias": pl.String(),
        "version": pl.String(),
        "stage": pl.String(),
        "event": pl.String(),
        "actor": pl.String(),
        "reason": pl.String(),
    }
    return pl.DataFrame(events, schema=schema)


def review_summary(snapshot: Snapshot) -> dict[str, Any] | None:
    """Review load of the month (``nightkeeper.review.queue.review_stats``) plus per-night queued/reviewed counts;
    None when the warehouse has no review queue."""
    if "review.queue" in snapshot.missing_tables and snapshot["review_queue"].height == 0:
        return None
    queue, labels, outcomes = snapshot["review_queue"], snapshot["review_labels"], snapshot["review_outcomes"]
    stats = review_stats(
        queue, labels, outcomes, snapshot.config.get("positive_decision") or _positive_decision(snapshot)
    )
    reviewed = queue.join(
        labels.select("entity_id", "partition_date").unique(), on=["entity_id", "partition_date"], how="semi"
    )
    per_night = (
        queue.group_by("partition_date")
        .agg(pl.len().alias("queued"))
        .join(reviewed.group_by("partition_date").agg(pl.len().alias("reviewed")), on="partition_date", how="left")
        .with_columns(pl.col("reviewed").fill_null(0))
        .sort("partition_date")
    )
    by_reason = (
        queue.with_columns(
            pl.when(pl.col("queue_reason").str.starts_with("quarantined"))
            .then(pl.lit("quarantined"))
            .otherwise(pl.col("queue_reason"))
            .alias("why")
        )
        .group_by("why")
        .agg(pl.len().alias("rows"))
        .sort("rows", descending=True)
    )
    return {**stats, "per_night": per_night, "by_reason": by_reason}


def _positive_decision(snapshot: Snapshot) -> str:
    """Without a config: the model decision whose answers score highest on average (the 'at or above' side)."""
    decisions = snapshot["decisions"].filter((pl.col("source") == "model") & pl.col("decision").is_not_null())
    if decisions.height == 0:
        return ""
    weighted = decisions.group_by("decision").agg(
        ((pl.col("mean_score") * pl.col("rows")).sum() / pl.col("rows").sum()).alias("s")
    )
    return str(weighted.sort("s", descending=True)["decision"][0])
