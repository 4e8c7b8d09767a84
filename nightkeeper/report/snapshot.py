"""The report snapshot: the month's (or one model version's) review data exported from the warehouse into Parquet
files, and read back by the notebooks. The warehouse is opened once, read, and closed before anything is written."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from nightkeeper import warehouse
from nightkeeper.alerts import ALERT_COLUMNS
from nightkeeper.drift import FEATURE_SCHEMA
from nightkeeper.frames import conform
from nightkeeper.performance import REALIZED_SCHEMA
from nightkeeper.review.queue import QUEUE_SCHEMA
from nightkeeper.schema import (
    ALERT_EVENTS,
    ALERTS,
    CANDIDATES,
    LABELS,
    MODEL_ALIASES,
    MODEL_VERSIONS,
    NIGHT_METRICS,
    REVIEW_LABELS,
    REVIEW_QUEUE,
)
from nightkeeper.warehouse import Lake, Location

SNAPSHOT_FOLDER = "snapshot"
MANIFEST = "manifest.json"
SCORE_BINS = 20
LABELED_SCORES_LIMIT = 200_000

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")

# --------------------------------------------------------------------------------------------- section schemas

SECTION_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "volume": {
        "night": pl.Date(),
        "raw_rows": pl.Int64(),
        "validated_rows": pl.Int64(),
        "quarantined_rows": pl.Int64(),
        "outcome_rows": pl.Int64(),
        "model_rows": pl.Int64(),
        "canary_rows": pl.Int64(),
        "fallback_rows": pl.Int64(),
        "undecided_rows": pl.Int64(),
    },
    "decisions": {
        "night": pl.Date(),
        "source": pl.String(),
        "decision": pl.String(),
        "rows": pl.Int64(),
        "mean_score": pl.Float64(),
    },
    "outcome_reasons": {"night": pl.Date(), "source": pl.String(), "reason": pl.String(), "rows": pl.Int64()},
    "quarantine_rules": {
        "night": pl.Date(),
        "column": pl.String(),
        "rule": pl.String(),
        "rows": pl.Int64(),
        "violations": pl.Int64(),
    },
    "latency": {
        "night": pl.Date(),
        "source": pl.String(),
        "rows": pl.Int64(),
        "p50_ms": pl.Float64(),
        "p95_ms": pl.Float64(),
        "p99_ms": pl.Float64(),
        "max_ms": pl.Float64(),
    },
    "score_histogram": {"night": pl.Date(), "source": pl.String(), "bin": pl.Int64(), "rows": pl.Int64()},
    "score_quantiles": {
        "night": pl.Date(),
        "source": pl.String(),
        "rows": pl.Int64(),
        "mean": pl.Float64(),
        "q05": pl.Float64(),
        "q25": pl.Float64(),
        "q50": pl.Float64(),
        "q75": pl.Float64(),
        "q95": pl.Float64(),
    },
    "drift": {"partition_date": pl.Date(), **FEATURE_SCHEMA},
    "night_metrics": {"night": pl.Date(), "metric": pl.String(), "value": pl.Float64(), "model_version": pl.String()},
    "performance_realized": REALIZED_SCHEMA,
    "labels": {
        "night": pl.Date(),
        "labeled_rows": pl.Int64(),
        "positives": pl.Int64(),
        "first_arrival": pl.Date(),
        "last_arrival": pl.Date(),
    },
    "model_versions": {
        "version": pl.String(),
        "project": pl.String(),
        "created_at": pl.Datetime("us", "UTC"),
        "registered_at": pl.Datetime("us", "UTC"),
        "model_sha256": pl.String(),
        "model_path": pl.String(),
        "holdout_auc": pl.Float64(),
        "holdout_estimated_auc": pl.Float64(),
        "window_start": pl.String(),
        "window_end": pl.String(),
        "training_rows": pl.Int64(),
        "data_fingerprint": pl.String(),
    },
    "model_aliases": {
        "seq": pl.Int64(),
        "alias": pl.String(),
        "version": pl.String(),
        "effective_from": pl.Date(),
        "set_at": pl.Datetime("us", "UTC"),
        "actor": pl.String(),
        "reason": pl.String(),
        "stage": pl.String(),
    },
    "alerts": {**ALERT_COLUMNS, "status_at_month_end": pl.String()},  # the columns nightkeeper.alerts stores
    "alert_events": {"alert_id": pl.String(), "night": pl.Date(), "event": pl.String(), "message": pl.String()},
    "candidates": {
        "version": pl.String(),
        "as_of": pl.Date(),
        "trigger": pl.String(),
        "status": pl.String(),
        "reasons": pl.String(),
        "recorded_at": pl.Datetime("us", "UTC"),
    },
    "review_queue": QUEUE_SCHEMA,
    "review_labels": {
        "entity_id": pl.String(),
        "partition_date": pl.Date(),
        "label": pl.Int8(),
        "reviewer": pl.String(),
        "reviewed_at": pl.Datetime("us", "UTC"),
    },
    "review_outcomes": {
        "partition_date": pl.Date(),
        "source_file": pl.String(),
        "row_number": pl.Int64(),
        "source": pl.String(),
        "decision": pl.String(),
    },
}

# The model card's snapshot: registry rows (with the card JSON), the version's realized performance and labeled scores.
MODEL_SECTION_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "model_versions": {**SECTION_SCHEMAS["model_versions"], "card_json": pl.String()},
    "model_aliases": SECTION_SCHEMAS["model_aliases"],
    "performance_realized": SECTION_SCHEMAS["performance_realized"],
    "labeled_scores": {"partition_date": pl.Date(), "source": pl.String(), "score": pl.Float64(), "label": pl.Int8()},
    "candidates": SECTION_SCHEMAS["candidates"],
}


# ------------------------------------------------------------------------------------------------------- months


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    """First and last day of ``month`` ('YYYY-MM'); ValueError naming the value otherwise."""
    match = _MONTH.match(str(month).strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"month must be 'YYYY-MM', got {month!r}")
    year, number = int(match.group(1)), int(match.group(2))
    return dt.date(year, number, 1), dt.date(year, number, calendar.monthrange(year, number)[1])


# ------------------------------------------------------------------------------------------------------- export


def _existing(location: Location, hint: str) -> Location:
    """``location`` (a file's path made absolute); FileNotFoundError when it is a DuckDB file that does not exist."""
    if isinstance(location, Lake):
        return location
    path = Path(location).resolve()
    if not path.exists():
        raise FileNotFoundError(f"warehouse {path} does not exist{hint}")
    return path


def export_month_snapshot(warehouse_path: Location, month: str, out_dir: Path, config: Any | None = None) -> Path:
    """Write the month's review data into ``out_dir/snapshot/`` (one Parquet per section, plus manifest.json).

    Nightly sections (volume, decisions, reasons, quarantine rules, latency, score distribution, drift, metrics,
    realized performance, labels, review) cover the nights of ``month``; the registry (versions, alias log) and the
    alerts cover all time up to the month's last day, so the state carried into the month is known. A table the
    warehouse does not hold yet (no labels, no review queue...) gives an empty section, listed in the manifest's
    ``missing_tables``. The warehouse is opened once, read, and closed before anything is written. ``config`` (a
    ``ProjectConfig``, optional) adds the decision and alert thresholds the notebook judges against. Re-exporting
    replaces the snapshot. Returns the snapshot folder.
    """
    first, last = month_bounds(month)
    warehouse_path = _existing(warehouse_path, "; run a night first")
    missing: list[str] = []
    with warehouse.connect(warehouse_path) as connection:
        frames = _read_month(connection, first, last, missing)
    manifest = {
        "kind": "monthly_review",
        "month": month,
        "first_night": first.isoformat(),
        "last_night": last.isoformat(),
        "warehouse": str(warehouse_path),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "missing_tables": sorted(set(missing)),
        "rows": {name: frame.height for name, frame in frames.items()},
        "nights_with_data": _nights_with_data(frames),
        "config": config_summary(config) if config is not None else None,
    }
    return _write_snapshot(Path(out_dir), frames, manifest)


def export_model_snapshot(warehouse_path: Location, version: str, out_dir: Path) -> Path:
    """Write what the model card of ``version`` needs into ``out_dir/snapshot/``: every registered version (the card
    JSON of ``version`` included), the alias log, the version's realized performance per night, its labeled production
    scores (at most LABELED_SCORES_LIMIT rows, a stable sample by entity hash) and its retrain record with the gates'
    verdicts (``lifecycle.candidates``). Returns the folder."""
    warehouse_path = _existing(warehouse_path, "")
    missing: list[str] = []
    with warehouse.connect(warehouse_path) as connection:
        tables = _tables(connection)
        frames: dict[str, pl.DataFrame] = {}
        frames["model_versions"] = _query(
            connection,
            tables,
            missing,
            [MODEL_VERSIONS],
            MODEL_SECTION_SCHEMAS["model_versions"],
            _VERSIONS_SQL.replace("{card}", "case when version = $version then card_json end as card_json"),
            {"version": version},
        )
        frames["model_aliases"] = _query(
            connection,
            tables,
            missing,
            [MODEL_ALIASES],
            MODEL_SECTION_SCHEMAS["model_aliases"],
            f"select seq, alias, version, effective_from, set_at, actor, reason, stage from {MODEL_ALIASES} "
            "order by seq",
        )
        frames["performance_realized"] = _query(
            connection,
            tables,
            missing,
            ["monitoring.performance_realized"],
            MODEL_SECTION_SCHEMAS["performance_realized"],
            "select * from monitoring.performance_realized where model_version = $version "
            "order by partition_date, source",
            {"version": version},
        )
        frames["labeled_scores"] = _query(
            connection,
            tables,
            missing,
            ["nightly.outcomes", LABELS],
            MODEL_SECTION_SCHEMAS["labeled_scores"],
            f"""select o.partition_date, o.source, o.score, l.label
                from nightly.outcomes o join {LABELS} l using (entity_id, partition_date)
                where o.model_version = $version and o.source in ('model', 'canary') and o.score is not null
                order by hash(o.entity_id) limit {LABELED_SCORES_LIMIT}""",
            {"version": version},
        )
        frames["candidates"] = _query(
            connection,
            tables,
            missing,
            [CANDIDATES],
            MODEL_SECTION_SCHEMAS["candidates"],
            f"select version, as_of, trigger, status, reasons, recorded_at from {CANDIDATES} "
            "where version = $version order by recorded_at",
            {"version": version},
        )
    manifest = {
        "kind": "model_card",
        "version": version,
        "warehouse": str(warehouse_path),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "missing_tables": sorted(set(missing)),
        "rows": {name: frame.height for name, frame in frames.items()},
    }
    return _write_snapshot(Path(out_dir), frames, manifest)


def config_summary(config: Any) -> dict[str, Any]:
    """The thresholds of a ``ProjectConfig`` the monthly review judges against, as JSON-ready data."""
    rules = [
        {
            "name": r.name,
            "metric": r.metric,
            "comparison": r.comparison,
            "threshold": r.threshold,
            "sustained_nights": r.sustained_nights,
            "severity": r.severity,
            "category": r.category,
            "runbook": r.runbook,
        }
        for r in config.monitoring.alerts.rules
    ]
    review = getattr(config, "review", None)
    return {
        "project": config.name,
        "decision_threshold": config.model.decision.threshold,
        "positive_decision": config.model.decision.at_or_above_threshold,
        "max_fallback_rate": config.checks.max_fallback_rate,
        "max_domain_auc": config.monitoring.drift.max_domain_auc,
        "min_labeled_rows": config.monitoring.performance.min_labeled_rows,
        "max_calibration_error": config.monitoring.performance.max_calibration_error,
        "review_capacity": review.capacity if review is not None else None,
        "alert_rules": rules,
    }


_VERSIONS_SQL = f"""
select version, project, created_at, registered_at, model_sha256, model_path,
       cast(json_extract(card_json, '$.holdout_metrics.auc') as double) as holdout_auc,
       cast(json_extract(card_json, '$.holdout_metrics.estimated_auc') as double) as holdout_estimated_auc,
       json_extract_string(card_json, '$.training_window.start') as window_start,
       json_extract_string(card_json, '$.training_window.end') as window_end,
       cast(json_extract(card_json, '$.training_window.rows') as bigint) as training_rows,
       json_extract_string(card_json, '$.data_fingerprint') as data_fingerprint,
       {{card}}
from {MODEL_VERSIONS} order by registered_at, version
"""


def _read_month(
    connection: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date, missing: list[str]
) -> dict[str, pl.DataFrame]:
    tables = _tables(connection)
    span = {"first": first, "last": last}
    until = {"last": last}
    frames: dict[str, pl.DataFrame] = {}

    def q(name: str, needs: list[str], sql: str, params: Mapping[str, Any] | None = None) -> None:
        frames[name] = _query(connection, tables, missing, needs, SECTION_SCHEMAS[name], sql, params)

    in_month = "partition_date between $first and $last"
    counts = {
        "raw_rows": _count(connection, tables, missing, "nightly.raw_batch", "count(*)", span),
        "validated_rows": _count(connection, tables, missing, "nightly.validated_batch", "count(*)", span),
        "quarantined_rows": _count(
            connection, tables, missing, "nightly.quarantine", "count(distinct (source_file, row_number))", span
        ),
    }
    outcomes = _query(
        connection,
        tables,
        missing,
        ["nightly.outcomes"],
        {k: v for k, v in SECTION_SCHEMAS["volume"].items() if k not in counts},
        f"""select partition_date as night, count(*) as outcome_rows,
                   count(*) filter (where source = 'model') as model_rows,
                   count(*) filter (where source = 'canary') as canary_rows,
                   count(*) filter (where source = 'fallback') as fallback_rows,
                   count(*) filter (where source = 'quarantine') as undecided_rows
            from nightly.outcomes where {in_month} group by all""",
        span,
    )
    frames["volume"] = _volume(outcomes, counts)
    q(
        "decisions",
        ["nightly.outcomes"],
        f"""select partition_date as night, source, decision, count(*) as rows, avg(score) as mean_score
          from nightly.outcomes where {in_month} group by all order by all""",
        span,
    )
    q(
        "outcome_reasons",
        ["nightly.outcomes"],
        f"""select partition_date as night, source, coalesce(reason, '(no reason recorded)') as reason, count(*) as rows
          from nightly.outcomes where {in_month} and source not in ('model', 'canary') group by all order by all""",
        span,
    )
    q(
        "quarantine_rules",
        ["nightly.quarantine"],
        f"""select partition_date as night, "column", rule, count(distinct (source_file, row_number)) as rows,
                 count(*) as violations
          from nightly.quarantine where {in_month} group by all order by all""",
        span,
    )
    q(
        "latency",
        ["nightly.outcomes"],
        f"""select partition_date as night, source, count(latency_ms) as rows,
                 quantile_cont(latency_ms, 0.5) as p50_ms, quantile_cont(latency_ms, 0.95) as p95_ms,
                 quantile_cont(latency_ms, 0.99) as p99_ms, max(latency_ms) as max_ms
          from nightly.outcomes where {in_month} and latency_ms is not null group by all order by all""",
        span,
    )
    q(
        "score_histogram",
        ["nightly.outcomes"],
        f"""select partition_date as night, source,
                 least(greatest(floor(score * {SCORE_BINS}), 0), {SCORE_BINS - 1})::bigint as bin,
                 count(*) as rows
          from nightly.outcomes where {in_month} and score is not null group by all order by all""",
        span,
    )
    q(
        "score_quantiles",
        ["nightly.outcomes"],
        f"""select partition_date as night, source, count(*) as rows, avg(score) as mean,
                 quantile_cont(score, 0.05) as q05, quantile_cont(score, 0.25) as q25, quantile_cont(score, 0.5) as q50,
                 quantile_cont(score, 0.75) as q75, quantile_cont(score, 0.95) as q95
          from nightly.outcomes where {in_month} and score is not null group by all order by all""",
        span,
    )
    q(
        "drift",
        ["nightly.drift_metrics"],
        f"select * from nightly.drift_metrics where {in_month} order by partition_date, feature",
        span,
    )
    q(
        "night_metrics",
        [NIGHT_METRICS],
        f"select night, metric, value, model_version from {NIGHT_METRICS} "
        "where night between $first and $last order by night, metric",
        span,
    )
    q(
        "performance_realized",
        ["monitoring.performance_realized"],
        f"select * from monitoring.performance_realized where {in_month} "
        "order by partition_date, source, model_version",
        span,
    )
    q(
        "labels",
        [LABELS],
        f"""select partition_date as night, count(*) as labeled_rows, sum(label)::bigint as positives,
                 min(arrived_on) as first_arrival, max(arrived_on) as last_arrival
          from {LABELS} where {in_month} group by all order by all""",
        span,
    )
    versions = _query(
        connection,
        tables,
        missing,
        [MODEL_VERSIONS],
        {**SECTION_SCHEMAS["model_versions"], "card_json": pl.String()},
        _VERSIONS_SQL.replace("{card}", "null::varchar as card_json"),
    )
    q(
        "model_aliases",
        [MODEL_ALIASES],
        f"""select seq, alias, version, effective_from, set_at, actor, reason, stage from {MODEL_ALIASES}
         where effective_from <= $last order by seq""",
        until,
    )
    frames["model_versions"] = _versions_known_by(versions, frames["model_aliases"], last)
    q(
        "alerts",
        [ALERTS],
        f"""select alert_id, rule, category, severity, metric, opened_night,
                case when closed_night <= $last then closed_night end as closed_night, status,
                case when closed_night is null or closed_night > $last then 'open' else 'resolved' end
                    as status_at_month_end,
                value, threshold, comparison, message, runbook
         from {ALERTS} where opened_night <= $last order by opened_night, alert_id""",
        until,
    )
    q(
        "alert_events",
        [ALERT_EVENTS],
        f"select alert_id, night, event, message from {ALERT_EVENTS} where night <= $last "
        "order by night, alert_id, event",
        until,
    )
    q(
        "candidates",
        [CANDIDATES],
        f"""select version, as_of, trigger, status, reasons, recorded_at from {CANDIDATES}
         where as_of between $first and $last order by as_of, recorded_at""",
        span,
    )
    q(
        "review_queue",
        [REVIEW_QUEUE],
        f"select * from {REVIEW_QUEUE} where {in_month} order by partition_date, priority",
        span,
    )
    q(
        "review_labels",
        [REVIEW_LABELS],
        f"select entity_id, partition_date, label, reviewer, reviewed_at from {REVIEW_LABELS} where {in_month} "
        "order by reviewed_at, entity_id",
        span,
    )
    q(
        "review_outcomes",
        [REVIEW_QUEUE, "nightly.outcomes"],
        f"""select o.partition_date, o.source_file, o.row_number, o.source, o.decision
          from nightly.outcomes o semi join {REVIEW_QUEUE} q using (partition_date, source_file, row_number)
          where o.{in_month}""",
        span,
    )
    return frames


def _tables(connection: duckdb.DuckDBPyConnection) -> set[str]:
    rows = connection.execute("select table_schema, table_name from information_schema.tables").fetchall()
    return {f"{schema}.{name}" for schema, name in rows}


def _query(
    connection: duckdb.DuckDBPyConnection,
    tables: set[str],
    missing: list[str],
    needs: list[str],
    schema: dict[str, pl.DataType],
    sql: str,
    params: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """The query's rows in ``schema`` (columns it lacks are null); an empty frame when a table it needs is absent."""
    absent = [table for table in needs if table not in tables]
    if absent:
        missing.extend(absent)
        return pl.DataFrame(schema=schema)
    frame = connection.execute(sql, dict(params or {})).pl()
    return _conform_loose(frame, schema)


def _count(
    connection: duckdb.DuckDBPyConnection,
    tables: set[str],
    missing: list[str],
    table: str,
    expression: str,
    span: Mapping[str, Any],
) -> pl.DataFrame:
    schema = {"night": pl.Date(), "rows": pl.Int64()}
    return _query(
        connection,
        tables,
        missing,
        [table],
        schema,
        f"select partition_date as night, {expression} as rows from {table} "
        "where partition_date between $first and $last group by all",
        span,
    )


def _conform_loose(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """``frame`` with exactly ``schema``'s columns and types; a column the source lacks becomes null."""
    if frame.height == 0:
        return pl.DataFrame(schema=schema)
    columns = []
    for name, dtype in schema.items():
        if name not in frame.columns:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
        elif (
            isinstance(dtype, pl.Datetime) and isinstance(found := frame.schema[name], pl.Datetime) and found.time_zone
        ):
            columns.append(pl.col(name).dt.convert_time_zone(dtype.time_zone or "UTC").cast(dtype))
        else:
            columns.append(pl.col(name).cast(dtype, strict=False))
    return frame.select(columns)


def _volume(outcomes: pl.DataFrame, counts: dict[str, pl.DataFrame]) -> pl.DataFrame:
    nights = pl.concat([outcomes.select("night"), *(frame.select("night") for frame in counts.values())]).unique()
    table = nights
    for name, frame in counts.items():
        table = table.join(frame.rename({"rows": name}), on="night", how="left")
    table = table.join(outcomes, on="night", how="left")
    schema = SECTION_SCHEMAS["volume"]
    return (
        conform(table, schema)
        .with_columns(pl.col(name).fill_null(0) for name in schema if name != "night")
        .sort("night")
    )


def _versions_known_by(versions: pl.DataFrame, aliases: pl.DataFrame, last: dt.date) -> pl.DataFrame:
    """Versions an alias pointed at by ``last``, or trained on data that ends by then (registration times are wall
    clock, not nights, so they cannot date a version)."""
    named = set(aliases["version"].drop_nulls().to_list())
    window_end = pl.col("window_end").str.slice(0, 10).str.to_date(strict=False)
    known = versions.filter(pl.col("version").is_in(list(named)) | (window_end <= last))
    return known.select(list(SECTION_SCHEMAS["model_versions"]))


def _nights_with_data(frames: dict[str, pl.DataFrame]) -> list[str]:
    nights = set(frames["volume"]["night"].to_list()) | set(frames["night_metrics"]["night"].to_list())
    return sorted(night.isoformat() for night in nights if night is not None)


def _write_snapshot(out_dir: Path, frames: dict[str, pl.DataFrame], manifest: dict[str, Any]) -> Path:
    """Write the sections into a fresh folder, then swap it in: a reader never sees half a snapshot."""
    target = out_dir / SNAPSHOT_FOLDER
    partial = out_dir / f".{SNAPSHOT_FOLDER}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    for name, frame in frames.items():
        frame.write_parquet(partial / f"{name}.parquet")
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    return target


# --------------------------------------------------------------------------------------------------- reading


@dataclass
class Snapshot:
    """A snapshot folder read back: its manifest and its sections (an absent section reads as an empty frame)."""

    folder: Path
    manifest: dict[str, Any]
    sections: dict[str, pl.DataFrame] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pl.DataFrame:
        if name in self.sections:
            return self.sections[name]
        schema = SECTION_SCHEMAS.get(name) or MODEL_SECTION_SCHEMAS.get(name) or {}
        return pl.DataFrame(schema=schema)

    @property
    def missing_tables(self) -> list[str]:
        return list(self.manifest.get("missing_tables") or [])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest.get("config") or {})

    @property
    def has_data(self) -> bool:
        return bool(self.manifest.get("nights_with_data")) or self["volume"].height > 0


def load_snapshot(snapshot_dir: Path | str) -> Snapshot:
    """Read a snapshot folder written by ``export_month_snapshot`` / ``export_model_snapshot``. A folder that does not
    exist, or lacks files, reads as empty sections (the notebooks then say there is no data)."""
    folder = Path(snapshot_dir)
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    sections = (
        {path.stem: pl.read_parquet(path) for path in sorted(folder.glob("*.parquet"))} if folder.is_dir() else {}
    )
    return Snapshot(folder, manifest, sections)


def metric_series(snapshot: Snapshot, metric: str) -> pl.DataFrame:
    """(night, value) of one nightly metric, nulls dropped, by night."""
    rows = snapshot["night_metrics"]
    return (
        rows.filter((pl.col("metric") == metric) & pl.col("value").is_not_null() & pl.col("value").is_not_nan())
        .select("night", "value")
        .sort("night")
    )


def metric_wide(snapshot: Snapshot, metrics: list[str]) -> pl.DataFrame:
    """One row per night, one column per metric (null where absent)."""
    rows = snapshot["night_metrics"].filter(pl.col("metric").is_in(metrics))
    nights = snapshot["night_metrics"].select("night").unique().sort("night")
    if rows.height == 0:
        return nights.with_columns(pl.lit(None, dtype=pl.Float64).alias(m) for m in metrics)
    wide = rows.pivot(on="metric", index="night", values="value", aggregate_function="first")
    for name in metrics:
        if name not in wide.columns:
            wide = wide.with_columns(pl.lit(None, dtype=pl.Float64).alias(name))
    return nights.join(wide.select("night", *metrics), on="night", how="left").sort("night")
