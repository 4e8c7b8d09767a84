"""Reports for the humans who own the model: the monthly review and the model card, as self-contained HTML.

Two steps, so the warehouse is held for seconds only (DuckDB lets one process open the file at a time):

1. ``export_month_snapshot`` opens the warehouse once, reads what the month's review needs — mostly aggregated per
   night in DuckDB, so the snapshot stays small at any volume — closes it, and writes one Parquet file per section
   into ``<out_dir>/snapshot/`` plus ``manifest.json`` (``export_model_snapshot`` does the same for one model version).
2. ``run_monthly_review`` / ``run_model_card`` execute the papermill notebook on that snapshot (never on the
   warehouse) and convert the executed notebook to one HTML file without code cells, images embedded.

The notebooks call the loading and "what needs attention" helpers below, so the logic is testable without a kernel.
No Dagster imports: the monthly asset is a thin call into these functions.
"""

from __future__ import annotations

import calendar
import datetime as dt
import html
import io
import json
import math
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from nightkeeper import warehouse
from nightkeeper.drift import FEATURE_SCHEMA
from nightkeeper.frames import conform, day, number
from nightkeeper.performance import REALIZED_SCHEMA
from nightkeeper.review import QUEUE_SCHEMA

SNAPSHOT_FOLDER = "snapshot"
MANIFEST = "manifest.json"
KERNEL_NAME = "python3"
REPO_ROOT = Path(__file__).resolve().parents[1]
MONTHLY_NOTEBOOK = Path("notebooks/monthly_review.ipynb")
MODEL_CARD_NOTEBOOK = Path("notebooks/model_card.ipynb")
EXECUTION_TIMEOUT_SECONDS = 600
SCORE_BINS = 20
LABELED_SCORES_LIMIT = 200_000

# The headings of the monthly review, in order (the notebook's markdown cells; tests check the HTML has each).
MONTHLY_SECTIONS: tuple[str, ...] = (
    "What needs attention",
    "Nightly volume",
    "Quarantine and fallback rates by reason",
    "Scoring latency",
    "Drift",
    "Score distribution over time",
    "Realized vs estimated performance",
    "Business value",
    "Model versions, promotions and rollbacks",
    "Alerts opened and closed",
    "Review queue",
)
MODEL_CARD_SECTIONS: tuple[str, ...] = (
    "Summary",
    "Metrics",
    "Lineage",
    "Feature importance",
    "Calibration and ROC",
    "Gate results",
    "Alias history",
)

# Defaults for "what needs attention" when the snapshot carries no config (they mirror the shipped nightkeeper.yaml).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "quarantine_rate": 0.02,
    "fallback_rate": 0.05,
    "prediction_psi": 0.1,
    "multivariate_auc": 0.6,
    "auc_drop": 0.03,
    "review_pending_share": 0.5,
}

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
    "alerts": {
        "alert_id": pl.String(),
        "rule": pl.String(),
        "category": pl.String(),
        "severity": pl.String(),
        "metric": pl.String(),
        "opened_night": pl.Date(),
        "closed_night": pl.Date(),
        "status": pl.String(),
        "status_at_month_end": pl.String(),
        "value": pl.Float64(),
        "threshold": pl.Float64(),
        "comparison": pl.String(),
        "message": pl.String(),
        "runbook": pl.String(),
    },
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


@dataclass(frozen=True)
class ReportResult:
    """An executed report: the executed notebook, its HTML (no code, images embedded) and how many images it holds."""

    executed_notebook: Path
    html: Path
    images: int


# ------------------------------------------------------------------------------------------------------- months


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    """First and last day of ``month`` ('YYYY-MM'); ValueError naming the value otherwise."""
    match = _MONTH.match(str(month).strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"month must be 'YYYY-MM', got {month!r}")
    year, number = int(match.group(1)), int(match.group(2))
    return dt.date(year, number, 1), dt.date(year, number, calendar.monthrange(year, number)[1])


# ------------------------------------------------------------------------------------------------------- export


def export_month_snapshot(warehouse_path: Path, month: str, out_dir: Path, config: Any | None = None) -> Path:
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
    warehouse_path = Path(warehouse_path)
    if not warehouse_path.exists():
        raise FileNotFoundError(f"warehouse {warehouse_path} does not exist; run a night first")
    missing: list[str] = []
    with warehouse.connect(warehouse_path) as connection:
        frames = _read_month(connection, first, last, missing)
    manifest = {
        "kind": "monthly_review",
        "month": month,
        "first_night": first.isoformat(),
        "last_night": last.isoformat(),
        "warehouse": str(warehouse_path.resolve()),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "missing_tables": sorted(set(missing)),
        "rows": {name: frame.height for name, frame in frames.items()},
        "nights_with_data": _nights_with_data(frames),
        "config": config_summary(config) if config is not None else None,
    }
    return _write_snapshot(Path(out_dir), frames, manifest)


def export_model_snapshot(warehouse_path: Path, version: str, out_dir: Path) -> Path:
    """Write what the model card of ``version`` needs into ``out_dir/snapshot/``: every registered version (the card
    JSON of ``version`` included), the alias log, the version's realized performance per night, its labeled production
    scores (at most LABELED_SCORES_LIMIT rows, a stable sample by entity hash) and its retrain record with the gates'
    verdicts (``lifecycle.candidates``). Returns the folder."""
    warehouse_path = Path(warehouse_path)
    if not warehouse_path.exists():
        raise FileNotFoundError(f"warehouse {warehouse_path} does not exist")
    missing: list[str] = []
    with warehouse.connect(warehouse_path) as connection:
        tables = _tables(connection)
        frames: dict[str, pl.DataFrame] = {}
        frames["model_versions"] = _query(
            connection,
            tables,
            missing,
            ["registry.model_versions"],
            MODEL_SECTION_SCHEMAS["model_versions"],
            _VERSIONS_SQL.replace("{card}", "case when version = $version then card_json end as card_json"),
            {"version": version},
        )
        frames["model_aliases"] = _query(
            connection,
            tables,
            missing,
            ["registry.model_aliases"],
            MODEL_SECTION_SCHEMAS["model_aliases"],
            "select seq, alias, version, effective_from, set_at, actor, reason, stage "
            "from registry.model_aliases order by seq",
        )
        frames["performance_realized"] = _query(
            connection,
            tables,
            missing,
            ["monitoring.performance_realized"],
            MODEL_SECTION_SCHEMAS["performance_realized"],
            "select * from monitoring.performance_realized "
            "where model_version = $version order by partition_date, source",
            {"version": version},
        )
        frames["labeled_scores"] = _query(
            connection,
            tables,
            missing,
            ["nightly.outcomes", "monitoring.labels"],
            MODEL_SECTION_SCHEMAS["labeled_scores"],
            f"""select o.partition_date, o.source, o.score, l.label
                from nightly.outcomes o join monitoring.labels l using (entity_id, partition_date)
                where o.model_version = $version and o.source in ('model', 'canary') and o.score is not null
                order by hash(o.entity_id) limit {LABELED_SCORES_LIMIT}""",
            {"version": version},
        )
        frames["candidates"] = _query(
            connection,
            tables,
            missing,
            ["lifecycle.candidates"],
            MODEL_SECTION_SCHEMAS["candidates"],
            "select version, as_of, trigger, status, reasons, recorded_at "
            "from lifecycle.candidates where version = $version order by recorded_at",
            {"version": version},
        )
    manifest = {
        "kind": "model_card",
        "version": version,
        "warehouse": str(warehouse_path.resolve()),
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


_VERSIONS_SQL = """
select version, project, created_at, registered_at, model_sha256, model_path,
       cast(json_extract(card_json, '$.holdout_metrics.auc') as double) as holdout_auc,
       cast(json_extract(card_json, '$.holdout_metrics.estimated_auc') as double) as holdout_estimated_auc,
       json_extract_string(card_json, '$.training_window.start') as window_start,
       json_extract_string(card_json, '$.training_window.end') as window_end,
       cast(json_extract(card_json, '$.training_window.rows') as bigint) as training_rows,
       json_extract_string(card_json, '$.data_fingerprint') as data_fingerprint,
       {card}
from registry.model_versions order by registered_at, version
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
        ["monitoring.night_metrics"],
        "select night, metric, value, model_version from monitoring.night_metrics "
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
        ["monitoring.labels"],
        f"""select partition_date as night, count(*) as labeled_rows, sum(label)::bigint as positives,
                 min(arrived_on) as first_arrival, max(arrived_on) as last_arrival
          from monitoring.labels where {in_month} group by all order by all""",
        span,
    )
    versions = _query(
        connection,
        tables,
        missing,
        ["registry.model_versions"],
        {**SECTION_SCHEMAS["model_versions"], "card_json": pl.String()},
        _VERSIONS_SQL.replace("{card}", "null::varchar as card_json"),
    )
    q(
        "model_aliases",
        ["registry.model_aliases"],
        """select seq, alias, version, effective_from, set_at, actor, reason, stage from registry.model_aliases
         where effective_from <= $last order by seq""",
        until,
    )
    frames["model_versions"] = _versions_known_by(versions, frames["model_aliases"], last)
    q(
        "alerts",
        ["monitoring.alerts"],
        """select alert_id, rule, category, severity, metric, opened_night,
                case when closed_night <= $last then closed_night end as closed_night, status,
                case when closed_night is null or closed_night > $last then 'open' else 'resolved' end
                    as status_at_month_end,
                value, threshold, comparison, message, runbook
         from monitoring.alerts where opened_night <= $last order by opened_night, alert_id""",
        until,
    )
    q(
        "alert_events",
        ["monitoring.alert_events"],
        "select alert_id, night, event, message from monitoring.alert_events "
        "where night <= $last order by night, alert_id, event",
        until,
    )
    q(
        "candidates",
        ["lifecycle.candidates"],
        """select version, as_of, trigger, status, reasons, recorded_at from lifecycle.candidates
         where as_of between $first and $last order by as_of, recorded_at""",
        span,
    )
    q(
        "review_queue",
        ["review.queue"],
        f"select * from review.queue where {in_month} order by partition_date, priority",
        span,
    )
    q(
        "review_labels",
        ["review.labels"],
        "select entity_id, partition_date, label, reviewer, reviewed_at "
        f"from review.labels where {in_month} order by reviewed_at, entity_id",
        span,
    )
    q(
        "review_outcomes",
        ["review.queue", "nightly.outcomes"],
        f"""select o.partition_date, o.source_file, o.row_number, o.source, o.decision
          from nightly.outcomes o semi join review.queue q using (partition_date, source_file, row_number)
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
    connection, tables: set[str], missing: list[str], table: str, expression: str, span: Mapping[str, Any]
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


# ---------------------------------------------------------------------------------------------- reading (notebooks)


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


def threshold(snapshot: Snapshot, metric: str, default: float) -> float:
    """The alert threshold on ``metric`` from the snapshot's config, else ``default``."""
    for rule in snapshot.config.get("alert_rules") or []:
        if rule.get("metric") == metric:
            return float(rule["threshold"])
    return default


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
    leading = (
        short.group_by("reason").agg(pl.col("rows").sum()).sort("rows", descending=True).head(top)["reason"].to_list()
    )
    grouped = (
        short.with_columns(
            pl.when(pl.col("reason").is_in(leading)).then(pl.col("reason")).otherwise(pl.lit("other")).alias("reason")
        )
        .group_by("night", "kind", "reason")
        .agg(pl.col("rows").sum())
    )
    return (
        grouped.join(volume, on="night")
        .with_columns((pl.col("rows") / pl.col("outcome_rows")).alias("rate"))
        .select("night", "kind", "reason", "rate")
        .sort("night", "kind", "reason")
    )


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
    """Review load of the month (``nightkeeper.review.review_stats``) plus per-night queued/reviewed counts; None when
    the warehouse has no review queue."""
    if "review.queue" in snapshot.missing_tables and snapshot["review_queue"].height == 0:
        return None
    from nightkeeper.review import review_stats

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


@dataclass(frozen=True)
class Attention:
    """One thing a person should look at: how urgent (critical, warning, info), what, and where to read more."""

    level: str
    text: str
    link: str = ""


def attention_items(snapshot: Snapshot) -> list[Attention]:
    """What needs attention this month, computed from the snapshot: open alerts at month end, rising quarantine or
    fallback, champion failures, drifted features, prediction or population drift, performance below the champion's
    holdout, untrustworthy estimates, no labels yet, pending review load, nights missing. Most urgent first."""
    items: list[Attention] = []
    if not snapshot.has_data:
        month = snapshot.manifest.get("month", "this month")
        return [
            Attention(
                "info", f"No data for {month}: the warehouse holds no night in this month, so nothing can be judged."
            )
        ]
    items += _attention_alerts(snapshot)
    items += _attention_rates(snapshot)
    items += _attention_drift(snapshot)
    items += _attention_performance(snapshot)
    items += _attention_review(snapshot)
    items += _attention_lifecycle(snapshot)
    items += _attention_gaps(snapshot)
    items += _attention_incomplete(snapshot)
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(items, key=lambda item: order.get(item.level, 3))


def _attention_alerts(snapshot: Snapshot) -> list[Attention]:
    alerts = snapshot["alerts"]
    items = []
    for row in alerts.filter(pl.col("status_at_month_end") == "open").iter_rows(named=True):
        items.append(
            Attention(
                "critical" if row["severity"] == "critical" else "warning",
                f"Alert **{row['rule']}** open since {row['opened_night']} ({row['category']}, {row['severity']}): "
                f"{row['message']}",
                row["runbook"] or "",
            )
        )
    return items


def _attention_rates(snapshot: Snapshot) -> list[Attention]:
    items = []
    wide = metric_wide(snapshot, ["validation.quarantine_rate", "outcomes.fallback_rate", "scoring.model_failed"])
    quarantine = wide.drop_nulls("validation.quarantine_rate")
    limit = threshold(snapshot, "validation.quarantine_rate", DEFAULT_THRESHOLDS["quarantine_rate"])
    if quarantine.height:
        rates = quarantine["validation.quarantine_rate"]
        over = quarantine.filter(pl.col("validation.quarantine_rate") > limit)["night"].to_list()
        if over:
            items.append(
                Attention(
                    "warning",
                    f"Quarantine rate above {limit:.1%} on {len(over)} night(s): {_nights(over)}.",
                    _runbook("quarantine-spike"),
                )
            )
        if quarantine.height >= 6:
            half = quarantine.height // 2
            early, late = number(rates.head(half).median()), number(rates.tail(3).mean())
            if late > max(2 * early, 0.005) and late > early + 0.002:
                items.append(
                    Attention(
                        "warning",
                        f"Quarantine is rising: {late:.2%} over the last 3 nights vs a median of {early:.2%} earlier "
                        "in the month.",
                        _runbook("quarantine-spike"),
                    )
                )
    fallback = wide.drop_nulls("outcomes.fallback_rate")
    limit = threshold(snapshot, "outcomes.fallback_rate", DEFAULT_THRESHOLDS["fallback_rate"])
    over = fallback.filter(pl.col("outcomes.fallback_rate") > limit)["night"].to_list()
    if over:
        items.append(
            Attention(
                "critical",
                f"Fallback answered more than {limit:.0%} of rows on {len(over)} night(s): {_nights(over)}.",
                _runbook("fallback-spike"),
            )
        )
    failed = wide.filter(pl.col("scoring.model_failed") > 0)["night"].to_list()
    if failed:
        items.append(
            Attention(
                "critical",
                f"The champion failed to score on {len(failed)} night(s): {_nights(failed)}.",
                _runbook("champion-down"),
            )
        )
    return items


def data_quality_nights(snapshot: Snapshot) -> set[dt.date]:
    """Nights with bad data (schema problems, or quarantine above its alert threshold). As in the alert engine, drift
    measured on such a night is the bad data's consequence, not news of its own."""
    limit = threshold(snapshot, "validation.quarantine_rate", DEFAULT_THRESHOLDS["quarantine_rate"])
    quarantine = (
        metric_series(snapshot, "validation.quarantine_rate").filter(pl.col("value") > limit)["night"].to_list()
    )
    schema = metric_series(snapshot, "validation.schema_problems").filter(pl.col("value") > 0)["night"].to_list()
    return set(quarantine) | set(schema)


def _attention_drift(snapshot: Snapshot) -> list[Attention]:
    items = []
    bad = data_quality_nights(snapshot)
    drift = snapshot["drift"].filter(~pl.col("partition_date").is_in(sorted(bad)))
    if drift.height:
        last_night = day(drift["partition_date"].max())
        drifted = (
            drift.filter(pl.col("drifted"))
            .group_by("feature")
            .agg(pl.len().alias("nights"), pl.col("partition_date").max().alias("last"))
            .sort("nights", "feature", descending=[True, False])
        )
        still = drifted.filter(pl.col("last") == last_night)["feature"].to_list()
        if still:
            items.append(
                Attention(
                    "warning",
                    f"Feature(s) drifted on the month's last measured night ({last_night}): {', '.join(still)}.",
                    _runbook("feature-drift"),
                )
            )
        frequent = drifted.filter((pl.col("nights") >= 3) & ~pl.col("feature").is_in(still))
        if frequent.height:
            listed = ", ".join(f"{f} ({n} nights)" for f, n in frequent.select("feature", "nights").iter_rows())
            items.append(
                Attention(
                    "info", f"Features that drifted on 3+ nights this month: {listed}.", _runbook("feature-drift")
                )
            )
    for metric, default, what, anchor in [
        (
            "drift.prediction_psi",
            DEFAULT_THRESHOLDS["prediction_psi"],
            "Score distribution shifted (PSI > {limit:g})",
            "prediction-drift",
        ),
        (
            "drift.multivariate_auc",
            DEFAULT_THRESHOLDS["multivariate_auc"],
            "Population shift (domain classifier AUC > {limit:g})",
            "population-shift",
        ),
    ]:
        limit = threshold(snapshot, metric, default)
        nights = metric_series(snapshot, metric).filter(pl.col("value") > limit)["night"].to_list()
        nights = [night for night in nights if night not in bad]
        if nights:
            items.append(
                Attention(
                    "warning",
                    what.format(limit=limit) + f" on {len(nights)} night(s): {_nights(nights)}.",
                    _runbook(anchor),
                )
            )
    if bad and snapshot["drift"].filter(pl.col("partition_date").is_in(sorted(bad)) & pl.col("drifted")).height:
        items.append(
            Attention(
                "info",
                f"Drift measured on bad-data night(s) {_nights(sorted(bad))} is left out above: the bad data "
                "explains it (see the quarantine and schema findings).",
            )
        )
    return items


def _attention_performance(snapshot: Snapshot) -> list[Attention]:
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
                _runbook("estimated-auc-drop"),
            )
        )
    drop_limit = threshold(snapshot, "performance.realized_auc_drop", DEFAULT_THRESHOLDS["auc_drop"])
    drop = metric_series(snapshot, "performance.realized_auc_drop")
    if drop.height and drop["value"][-1] > drop_limit:
        items.append(
            Attention(
                "critical",
                f"Realized AUC (pooled over a week) is {drop['value'][-1]:.3f} below the champion's holdout AUC "
                f"(limit {drop_limit:g}).",
                _runbook("realized-auc-drop"),
            )
        )
    est_limit = threshold(snapshot, "performance.estimated_auc_drop", DEFAULT_THRESHOLDS["auc_drop"])
    est = metric_series(snapshot, "performance.estimated_auc_drop")
    if est.height and est["value"][-1] > est_limit:
        items.append(
            Attention(
                "warning",
                f"Estimated AUC is {est['value'][-1]:.3f} below what the champion's holdout predicts "
                f"(limit {est_limit:g}).",
                _runbook("estimated-auc-drop"),
            )
        )
    return items


def _attention_review(snapshot: Snapshot) -> list[Attention]:
    summary = review_summary(snapshot)
    if not summary or not summary["queued"]:
        return []
    items = []
    share = summary["pending"] / summary["queued"]
    if share > DEFAULT_THRESHOLDS["review_pending_share"]:
        items.append(
            Attention(
                "warning",
                f"Review backlog: {summary['pending']:,} of {summary['queued']:,} queued rows "
                f"({share:.0%}) are still waiting for a reviewer.",
            )
        )
    if summary["agreement"] is not None and summary["agreement_rows"] >= 20 and summary["agreement"] < 0.7:
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
                _runbook("rollback"),
            )
        )
    removed = events.filter(pl.col("event") == "challenger rolled back")
    if removed.height:
        listed = "; ".join(f"{n}: {r}" for n, r in removed.select("night", "reason").iter_rows())
        items.append(
            Attention(
                "warning",
                f"{removed.height} challenger(s) rolled back during shadow or canary ({listed}).",
                _runbook("rollback"),
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
                    "warning" if status == "refused" else "info", f"{rows.height} {what} ({listed}).", _runbook(anchor)
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


def _runbook(anchor: str) -> str:
    return f"docs/runbook.md#{anchor}"


NOTHING_NEEDS_ATTENTION = (
    "Nothing needs attention this month: no open alert, rates within limits, no drift, performance holds."
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


def html_table(frame: pl.DataFrame, max_rows: int = 30, formats: Mapping[str, str] | None = None) -> str:
    """A plain, escaped HTML table of ``frame`` (first ``max_rows`` rows); ``formats``: column -> format spec.
    Numeric columns are right-aligned (class ``num``); missing values show as a dash."""
    formats = dict(formats or {})
    numeric = {name for name, dtype in frame.schema.items() if dtype.is_numeric()}

    def cell(tag: str, name: str, text: str) -> str:
        return (
            f"<{tag} class='num'>{html.escape(text)}</{tag}>"
            if name in numeric
            else f"<{tag}>{html.escape(text)}</{tag}>"
        )

    head = "".join(cell("th", name, str(name)) for name in frame.columns)
    body = []
    for row in frame.head(max_rows).iter_rows():
        cells = []
        for name, value in zip(frame.columns, row, strict=True):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                text = "–"
            elif name in formats:
                text = format(value, formats[name])
            elif isinstance(value, float):
                text = f"{value:,.0f}" if abs(value) >= 1000 or value.is_integer() else f"{value:.4g}"
            else:
                text = str(value)
            cells.append(cell("td", name, text))
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p class='nk-more'>… {frame.height - max_rows} more row(s)</p>" if frame.height > max_rows else ""
    return f"<table class='nk-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (no pyplot, no backend state: works under any MPLBACKEND)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def new_figure(width: float = 11.0, height: float = 4.0, rows: int = 1, cols: int = 1, **kwargs: Any):
    """A matplotlib Figure on the Agg canvas and its axes (a single Axes, or an array for several)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, **kwargs)
    return figure, axes


# ----------------------------------------------------------------------------------------------------- execution


def run_monthly_review(
    snapshot_dir: Path, month: str, output_dir: Path, notebook: Path = MONTHLY_NOTEBOOK
) -> ReportResult:
    """Execute the monthly review notebook on a snapshot (papermill; parameters month, snapshot_dir, output_dir) and
    write ``output_dir/monthly_review-<month>.ipynb`` and ``.html`` (no code cells, images embedded)."""
    month_bounds(month)
    output_dir = Path(output_dir)
    parameters = {
        "month": month,
        "snapshot_dir": str(Path(snapshot_dir).resolve()),
        "output_dir": str(output_dir.resolve()),
    }
    return _execute(
        _notebook_path(notebook), output_dir, f"monthly_review-{month}", parameters, f"Monthly review {month}"
    )


def run_model_card(
    version: str, snapshot_dir: Path, model_dir: Path, output_dir: Path, notebook: Path = MODEL_CARD_NOTEBOOK
) -> ReportResult:
    """Execute the model card notebook for ``version`` (parameters version, snapshot_dir — a snapshot with registry
    rows, from ``export_model_snapshot`` or ``export_month_snapshot`` — model_dir holding card.json, output_dir) and
    write ``output_dir/model_card-<version>.ipynb`` and ``.html``."""
    output_dir = Path(output_dir)
    parameters = {
        "version": version,
        "snapshot_dir": str(Path(snapshot_dir).resolve()),
        "model_dir": str(Path(model_dir).resolve()),
        "output_dir": str(output_dir.resolve()),
    }
    return _execute(_notebook_path(notebook), output_dir, f"model_card-{version}", parameters, f"Model card {version}")


def monthly_review(config: Any, month: str, out_dir: Path | None = None) -> ReportResult:
    """Both steps for a ``ProjectConfig``: export the month's snapshot from its warehouse into ``out_dir`` (default
    ``<project>/reports/monthly/<month>/``), then render the review there. For a command line or the demo; a Dagster
    deployment runs the two steps as two assets so only the export holds the warehouse pool."""
    target = Path(out_dir) if out_dir is not None else config.path(Path("reports") / "monthly" / month)
    snapshot = export_month_snapshot(config.warehouse_path, month, target, config=config)
    return run_monthly_review(snapshot, month, target)


def kernel_name() -> str:
    """A Jupyter kernel that runs this interpreter: 'python3' when its spec launches this Python (a fresh venv with
    ipykernel has one under ``<venv>/share/jupyter/kernels``; jupyter_client swaps a bare ``python`` for
    ``sys.executable``). Otherwise a 'nightkeeper-python' spec is installed into ``sys.prefix`` and used."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(KERNEL_NAME)
        launcher = spec.argv[0] if spec.argv else ""
        if launcher in {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"} or _same_file(
            launcher, sys.executable
        ):
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    name = "nightkeeper-python"
    try:
        if _same_file(manager.get_kernel_spec(name).argv[0], sys.executable):
            return name
    except NoSuchKernel:
        pass
    install(kernel_name=name, display_name="Python (nightkeeper)", prefix=sys.prefix)
    return name


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() and Path(a).exists()
    except OSError:
        return False


def _notebook_path(notebook: Path) -> Path:
    notebook = Path(notebook)
    if notebook.exists():
        return notebook.resolve()
    candidate = REPO_ROOT / notebook
    if not notebook.is_absolute() and candidate.exists():
        return candidate
    raise FileNotFoundError(f"notebook {notebook} not found (looked in {Path.cwd()} and {REPO_ROOT})")


def _execute(notebook: Path, output_dir: Path, stem: str, parameters: dict[str, Any], title: str) -> ReportResult:
    import papermill

    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / f"{stem}.ipynb"
    papermill.execute_notebook(
        str(notebook),
        str(executed),
        parameters=parameters,
        kernel_name=kernel_name(),
        cwd=str(output_dir),
        progress_bar=False,
        log_output=False,
        execution_timeout=EXECUTION_TIMEOUT_SECONDS,
    )
    page = output_dir / f"{stem}.html"
    text = notebook_html(executed, title)
    page.write_text(text, encoding="utf-8")
    return ReportResult(executed, page, count_images(text))


def notebook_html(executed: Path, title: str) -> str:
    """The executed notebook as one self-contained HTML page: no code cells or prompts, images inline (data URIs),
    no script fetched from the network (MathJax and require.js left out)."""
    import nbformat
    from nbconvert import HTMLExporter

    node = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(
        template_name="lab",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    exporter.mathjax_url = ""
    body, _ = exporter.from_notebook_node(node, resources={"metadata": {"name": title}})
    body = re.sub(r"<script[^>]*src=\"(https?://[^\"]*)?\"[^>]*>\s*</script>", "", body)
    return body


def count_images(text: str) -> int:
    """How many <img> tags an HTML text holds."""
    return len(re.findall(r"<img\b", text, flags=re.IGNORECASE))
