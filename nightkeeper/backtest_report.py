"""What a backtest did, night by night: ``summary.json`` and a self-contained ``report.html``.

The summary is built from the backtest's warehouse (outcomes, night metrics, alerts, the alias log, the candidates
table) plus two things only the backtest has: the first champion's scores on every night's rows (the counterfactual
"first champion left alone", stored in ``backtest.first_champion_scores``) and the complete label files (the truth,
including labels the replay had not seen yet on a given night). Realized AUCs here are therefore judged with every
label the user supplied, whereas the pipeline's own ``performance.*`` metrics only knew what had arrived by then.

The report is rendered from the summary alone, so ``summary.json`` can be re-rendered without the warehouse.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import polars as pl

from nightkeeper import metric_names, registry
from nightkeeper.performance import auc
from nightkeeper.report.figures import figure_png, new_figure
from nightkeeper.warehouse import table_exists

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCHEMA = "backtest"
FIRST_CHAMPION_TABLE = f"{SCHEMA}.first_champion_scores"
FIRST_CHAMPION_SCHEMA = pl.Schema(
    {
        "partition_date": pl.Date(),
        "source_file": pl.String(),
        "row_number": pl.Int64(),
        "entity_id": pl.String(),
        "score": pl.Float64(),
    }
)
TRUTH_SCHEMA = pl.Schema({"entity_id": pl.String(), "label": pl.Int8()})
BLOCK_NIGHTS = 30  # served vs first champion is also compared per block of this many nights (pooled rows)
SOURCES = ("model", "canary", "fallback", "quarantine")
ESTIMATED_AUC = "performance.estimated_auc"
# the estimate-trust verdict (labels or holdout, with the night's chance wander), not the calibration-only flag
ESTIMATE_TRUSTED = metric_names.ESTIMATE_TRUSTED


@dataclass
class ReplayTiming:
    """How long the replay took: wall and process CPU seconds per night (retrains included, on the nights after which
    they ran), each step's wall seconds (one entry per night it ran), and the nights followed by a retrain."""

    wall: dict[dt.date, float] = field(default_factory=dict)
    cpu: dict[dt.date, float] = field(default_factory=dict)
    by_step: dict[str, list[float]] = field(default_factory=dict)
    retrain_nights: set[dt.date] = field(default_factory=set)


def summarize(
    connection: duckdb.DuckDBPyConnection,
    nights: list[dt.date],
    first_champion: str,
    truth: pl.DataFrame,
    timing: ReplayTiming,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The backtest's summary as plain JSON-able data.

    ``truth`` holds every supplied label (TRUTH_SCHEMA, one row per entity id); ``timing`` how long the replay took;
    ``settings`` what the backtest was run with. Per night: rows, rows per outcome source, serving champion and
    challenger, realized AUC of the served scores and of the first champion on the same labeled rows, the pipeline's
    estimated AUC and whether it trusted it. Then blocks of BLOCK_NIGHTS nights (pooled AUCs), alert transitions and
    lifecycle events.
    """
    served = connection.execute(
        "select partition_date, source_file, row_number, entity_id, source, score from nightly.outcomes "
        "where partition_date between ? and ?",
        [nights[0], nights[-1]],
    ).pl()
    first = connection.execute(f"select * from {FIRST_CHAMPION_TABLE}").pl()
    truth = truth.cast(TRUTH_SCHEMA).unique("entity_id", keep="first")
    # the same rows on both sides: answered with a score, scored by the first champion, and labeled
    paired = (
        served.filter(pl.col("score").is_not_null())
        .join(
            first.select("partition_date", "source_file", "row_number", pl.col("score").alias("first_score")),
            on=["partition_date", "source_file", "row_number"],
        )
        .filter(pl.col("first_score").is_not_null())
        .join(truth, on="entity_id")
    )
    counts = served.group_by("partition_date", "source").len()
    metrics = _night_metrics(connection, nights)
    per_night = []
    for night in nights:
        rows = paired.filter(pl.col("partition_date") == night)
        labels = rows["label"].to_numpy()
        sources = {s: 0 for s in SOURCES} | {
            source: int(n) for _, source, n in counts.filter(pl.col("partition_date") == night).iter_rows()
        }
        challenger = registry.alias_state(connection, registry.CHALLENGER, night)
        trusted = metrics.get((night, ESTIMATE_TRUSTED))
        per_night.append(
            {
                "night": night.isoformat(),
                "rows": sum(sources.values()),
                "sources": sources,
                "serving_version": registry.alias_version(connection, registry.CHAMPION, night),
                "challenger": {"version": challenger.version, "stage": challenger.stage}
                if challenger.version
                else None,
                "labeled_rows": int(labels.size),
                "served_auc": auc(labels, rows["score"].to_numpy()),
                "first_champion_auc": auc(labels, rows["first_score"].to_numpy()),
                "estimated_auc": metrics.get((night, ESTIMATED_AUC)),
                "estimate_trusted": None if trusted is None else trusted >= 0.5,
                "seconds": round(timing.wall.get(night, 0.0), 3),
                "cpu_seconds": round(timing.cpu.get(night, 0.0), 3),
                "retrained": night in timing.retrain_nights,
            }
        )
    return {
        "settings": settings,
        "first_champion": first_champion,
        "label_lag_days": _label_lag(connection),
        "nights": per_night,
        "blocks": _blocks(paired, nights),
        "alerts": _alert_events(connection),
        "lifecycle": _lifecycle_events(connection),
        "timing": _timing(per_night, timing.by_step),
    }


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path


def _night_metrics(connection: duckdb.DuckDBPyConnection, nights: list[dt.date]) -> dict[tuple[dt.date, str], float]:
    rows = connection.execute(
        "select night, metric, value from monitoring.night_metrics where metric in (?, ?) and night between ? and ? "
        "and value is not null",
        [ESTIMATED_AUC, ESTIMATE_TRUSTED, nights[0], nights[-1]],
    ).fetchall()
    return {(night, metric): float(value) for night, metric, value in rows}


def _label_lag(connection: duckdb.DuckDBPyConnection) -> dict[str, float] | None:
    """Days between a label's scoring night and the night the replay saw it arrive (median, min, max): with labels
    given per scoring night this is the label delay; more means the labels folder was already laid out by arrival."""
    if not table_exists(connection, "monitoring", "labels"):
        return None
    row = connection.execute(
        "select median(arrived_on - partition_date), min(arrived_on - partition_date), "
        "max(arrived_on - partition_date) from monitoring.labels"
    ).fetchone()
    return (
        None if row is None or row[0] is None else {"median": float(row[0]), "min": float(row[1]), "max": float(row[2])}
    )


def _blocks(paired: pl.DataFrame, nights: list[dt.date]) -> list[dict[str, Any]]:
    blocks = []
    for start in range(0, len(nights), BLOCK_NIGHTS):
        span = nights[start : start + BLOCK_NIGHTS]
        rows = paired.filter(pl.col("partition_date").is_between(span[0], span[-1]))
        labels = rows["label"].to_numpy()
        served, first = (
            auc(labels, rows["score"].to_numpy()),
            auc(labels, rows["first_score"].to_numpy()),
        )
        blocks.append(
            {
                "first_night": span[0].isoformat(),
                "last_night": span[-1].isoformat(),
                "labeled_rows": int(labels.size),
                "served_auc": served,
                "first_champion_auc": first,
                "served_minus_first": None if served is None or first is None else served - first,
            }
        )
    return blocks


def _alert_events(connection: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    if not table_exists(connection, "monitoring", "alert_events"):
        return []
    frame = connection.execute(
        """select e.night, e.event, e.alert_id, a.rule, a.category, a.severity, a.metric, e.message
           from monitoring.alert_events e join monitoring.alerts a using (alert_id)
           order by e.night, e.event desc, e.alert_id"""
    ).pl()
    return [{**row, "night": row["night"].isoformat()} for row in frame.iter_rows(named=True)]


def _lifecycle_events(connection: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every alias change (champion, challenger stage, clearing) and every candidate with its verdict, by night."""
    events = []
    for row in registry.alias_log(connection).iter_rows(named=True):
        if row["alias"] == registry.CHAMPION:
            event = "champion"
        elif row["version"] is None:
            event = "challenger cleared"
        else:
            event = f"challenger {row['stage']}"
        events.append(
            {
                "night": row["effective_from"].isoformat(),
                "event": event,
                "version": row["version"],
                "actor": row["actor"],
                "detail": row["reason"],
            }
        )
    if table_exists(connection, "lifecycle", "candidates"):
        for row in (
            connection.execute("select * from lifecycle.candidates order by as_of, recorded_at")
            .pl()
            .iter_rows(named=True)
        ):
            events.append(
                {
                    "night": row["as_of"].isoformat(),
                    "event": f"candidate {row['status']}",
                    "version": row["version"],
                    "actor": row["trigger"],
                    "detail": row["reasons"],
                }
            )
    return sorted(events, key=lambda e: e["night"])


def _timing(per_night: list[dict[str, Any]], step_seconds: dict[str, list[float]]) -> dict[str, Any]:
    plain = [n["seconds"] for n in per_night if not n["retrained"]]
    every = [n["seconds"] for n in per_night]
    cpu = [n["cpu_seconds"] for n in per_night if not n["retrained"]]
    return {
        "median_seconds_per_night_without_retrain": float(np.median(plain)) if plain else None,
        # process CPU time (all threads) barely depends on what else the machine runs, unlike wall time
        "median_cpu_seconds_per_night_without_retrain": float(np.median(cpu)) if cpu else None,
        "mean_seconds_per_night_with_retrains": float(np.mean(every)) if every else None,
        "total_seconds": float(np.sum(every)) if every else 0.0,
        # the lifecycle part includes retrains: its median is a plain night's, its total the retrains'
        "median_seconds_by_step": {name: round(float(np.median(times)), 4) for name, times in step_seconds.items()},
        "total_seconds_by_step": {name: round(float(np.sum(times)), 3) for name, times in step_seconds.items()},
    }


# ------------------------------------------------------------------------------------------------------ the HTML


def write_report(summary: dict[str, Any], path: Path) -> Path:
    """Render ``summary`` to one self-contained HTML file (plots embedded as base64 PNG) at ``path``."""
    nights = summary["nights"]
    sections = [
        ("Served AUC vs the first champion left alone", _img(_auc_plot(summary)), _blocks_table(summary["blocks"])),
        (
            "Alerts",
            _img(_alerts_plot(summary)),
            _table(summary["alerts"], ["night", "event", "rule", "severity", "message"]),
        ),
        ("Lifecycle", "", _table(summary["lifecycle"], ["night", "event", "version", "actor", "detail"])),
        ("Estimated (CBPE) vs realized AUC", _img(_estimate_plot(summary)), _estimate_note(nights)),
        ("Nights", "", _nights_table(nights)),
    ]
    settings = summary["settings"]
    timing = summary["timing"]
    head = (
        (
            f"<p>{len(nights)} nights, {nights[0]['night']} … {nights[-1]['night']}; "
            f"labels {settings.get('label_delay')} night(s) late; cadence {settings.get('cadence')}; "
            f"first champion {html.escape(summary['first_champion'])}. "
            f"Replay: median {_fmt(timing['median_seconds_per_night_without_retrain'])} s a night without retrains, "
            f"{_fmt(timing['mean_seconds_per_night_with_retrains'])} s on average with them.</p>"
        )
        if nights
        else "<p>No nights were replayed.</p>"
    )
    body = "".join(f"<h2>{title}</h2>{plot}{extra}" for title, plot, extra in sections)
    document = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Nightkeeper backtest</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}img{max-width:100%}"
        f"</style></head><body><h1>Backtest: {html.escape(str(settings.get('project', '')))}</h1>"
        f"{head}{body}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document)
    return path


def _dates(nights: list[dict[str, Any]]) -> list[dt.date]:
    return [dt.date.fromisoformat(n["night"]) for n in nights]


def _values(nights: list[dict[str, Any]], key: str) -> list[float]:
    return [np.nan if n[key] is None else n[key] for n in nights]


def _auc_plot(summary: dict[str, Any]) -> Figure:
    figure, axes = new_figure(11, 4)
    nights = summary["nights"]
    dates = _dates(nights)
    axes.plot(dates, _values(nights, "served_auc"), marker="o", markersize=3, label="served")
    axes.plot(
        dates,
        _values(nights, "first_champion_auc"),
        marker="o",
        markersize=3,
        linestyle="--",
        label="first champion left alone",
    )
    for event in summary["lifecycle"]:
        if event["event"] == "champion" and event["night"] != (nights[0]["night"] if nights else None):
            axes.axvline(dt.date.fromisoformat(event["night"]), color="green", alpha=0.4)
    axes.set_ylabel("realized ROC AUC (every label)")
    axes.set_title("Served scores vs the first champion on the same rows (green: a new champion serves)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    figure.autofmt_xdate()
    return figure


def _alerts_plot(summary: dict[str, Any]) -> Figure:
    alerts: dict[str, dict[str, Any]] = {}
    for event in summary["alerts"]:
        entry = alerts.setdefault(
            event["alert_id"], {"rule": event["rule"], "severity": event["severity"], "message": ""}
        )
        entry[event["event"]] = dt.date.fromisoformat(event["night"])
        if event["event"] == "opened":
            entry["message"] = event["message"]
    dates = _dates(summary["nights"]) or [dt.date.today()]
    last = dates[-1]
    figure, axes = new_figure(11, max(2.0, 0.35 * len(alerts) + 1))
    for position, entry in enumerate(alerts.values()):
        opened = entry.get("opened", last)
        closed = entry.get("resolved", last + dt.timedelta(days=1))
        colour = (
            "tab:red"
            if entry["severity"] == "critical"
            else "tab:orange"
            if entry["severity"] == "warning"
            else "tab:blue"
        )
        axes.barh(position, (closed - opened).days or 1, left=opened, color=colour, alpha=0.6)
        axes.text(opened, position, f" {entry['rule']}: {entry['message'][:90]}", va="center", fontsize=7)
    axes.set_xlim(dates[0], last + dt.timedelta(days=1))  # the whole replay, so an alert's length reads as nights
    axes.set_yticks([])
    axes.set_title("Alerts, open to resolved (red critical, orange warning), with what they said when they opened")
    axes.grid(alpha=0.3, axis="x")
    if not alerts:
        axes.text(0.5, 0.5, "no alert opened", transform=axes.transAxes, ha="center")
    figure.autofmt_xdate()
    return figure


def _estimate_plot(summary: dict[str, Any]) -> Figure:
    nights = summary["nights"]
    dates = _dates(nights)
    figure, axes = new_figure(11, 4)
    axes.plot(dates, _values(nights, "served_auc"), marker="o", markersize=3, label="realized (served, every label)")
    estimated = _values(nights, "estimated_auc")
    axes.plot(dates, estimated, linestyle="--", label="estimated (CBPE), that night")
    untrusted = [(d, e) for d, e, n in zip(dates, estimated, nights, strict=True) if n["estimate_trusted"] is False]
    if untrusted:
        axes.scatter(
            *zip(*untrusted, strict=True), marker="x", color="red", label="estimate marked untrusted", zorder=3
        )
    axes.set_ylabel("ROC AUC")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    figure.autofmt_xdate()
    return figure


def _img(figure: Figure) -> str:
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(figure_png(figure)).decode()}'>"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _blocks_table(blocks: list[dict[str, Any]]) -> str:
    return "<p>Pooled over every labeled row of each block of nights:</p>" + _table(
        blocks, ["first_night", "last_night", "labeled_rows", "served_auc", "first_champion_auc", "served_minus_first"]
    )


def _estimate_note(nights: list[dict[str, Any]]) -> str:
    pairs = [
        (n["estimated_auc"], n["served_auc"], n["estimate_trusted"])
        for n in nights
        if n["estimated_auc"] is not None and n["served_auc"] is not None
    ]
    if not pairs:
        return "<p>No night has both an estimate and realized labels.</p>"
    off = [abs(e - r) for e, r, _ in pairs]
    missed = sum(1 for e, r, t in pairs if abs(e - r) > 0.03 and t is not False)
    return (
        f"<p>Estimate vs realized on {len(pairs)} nights: mean absolute gap {np.mean(off):.3f}; "
        f"{missed} night(s) off by more than 0.03 while the estimate was not marked untrusted.</p>"
    )


def _nights_table(nights: list[dict[str, Any]]) -> str:
    rows = [
        {
            **n,
            **{f"n_{s}": n["sources"][s] for s in SOURCES},
            "challenger": f"{n['challenger']['version']} ({n['challenger']['stage']})" if n["challenger"] else "",
        }
        for n in nights
    ]
    return _table(
        rows,
        [
            "night",
            "rows",
            *(f"n_{s}" for s in SOURCES),
            "serving_version",
            "challenger",
            "labeled_rows",
            "served_auc",
            "first_champion_auc",
            "estimated_auc",
            "estimate_trusted",
            "seconds",
            "retrained",
        ],
    )
