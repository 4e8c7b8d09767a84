"""The nightly metrics table: one number per (night, metric), long format, in the warehouse.

``monitoring.night_metrics`` is what every monitoring figure ends up as (quarantine and fallback rates, drift
scores, estimated and realized performance) and what alert rules read. Metric names are dotted strings whose first
part is the family: ``validation.quarantine_rate``, ``outcomes.fallback_rate``, ``drift.drifted_share``,
``drift.multivariate_auc``, ``performance.estimated_auc``, ``performance.realized_auc``...

A metric may carry ``details`` (JSON): what lies behind the number, for the people an alert pages. Drift records,
per aggregate metric, the features and category levels that moved (``DriftResult.details``); the alert engine
appends a detail's ``summary`` to the alert message and stores the whole detail in the alert's payload.

Metric names are owned by ``nightkeeper.metric_names``.

Recording a night again replaces that night's values for the metric names given and leaves its other metrics alone,
so re-running a night is idempotent. A value of None (or NaN) is stored as NULL: "measured, but no value tonight"
(e.g. realized AUC before labels land); readers treat it like a missing night.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import duckdb
import polars as pl

from nightkeeper.schema import NIGHT_METRICS as TABLE
from nightkeeper.warehouse import run_transaction

HISTORY_SCHEMA = pl.Schema(
    {
        "night": pl.Date(),
        "metric": pl.String(),
        "value": pl.Float64(),
        "model_version": pl.String(),
        "recorded_at": pl.Datetime("us", "UTC"),
    }
)


def record_metrics(
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    metrics: Mapping[str, float | None],
    model_version: str | None,
    details: dict[str, dict[str, Any]] | None = None,
) -> int:
    """Store ``metrics`` for ``night``, replacing earlier values of the same names that night; returns rows written.

    Metrics of ``night`` not named in ``metrics`` are kept. None and NaN are stored as NULL (no value).
    ``details``: per metric name (each one of ``metrics``), a JSON-ready dict stored with it (replaced too; a metric
    without details gets NULL). Raises ValueError for an empty or non-string metric name, an infinite value, or
    details for a metric not being recorded (nothing is written then). All rows are written in one transaction.
    """
    for name in metrics:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"metric names must be non-empty strings, got {name!r}")
    details = details or {}
    stray = sorted(set(details) - set(metrics))
    if stray:
        raise ValueError(f"details given for metric(s) {stray} that are not recorded with them")
    if not metrics:
        return 0
    values = [_stored(name, value) for name, value in metrics.items()]
    texts = [json.dumps(_plain(details[name]), allow_nan=False) if name in details else None for name in metrics]
    # one statement for all rows: DuckDB's executemany costs ~5 ms a row, a night records ~60 metrics. A MERGE on
    # (night, metric) rather than an upsert on the key: a DuckLake warehouse has no keys. On a lake the transaction
    # is run again when another night's writer commits to the table first.
    run_transaction(
        connection,
        lambda: connection.execute(
            f"""merge into {TABLE} as stored
                using (select ?::date as night, unnest(?::varchar[]) as metric, unnest(?::double[]) as value,
                       ?::varchar as model_version, now() as recorded_at, unnest(?::json[]) as details) as new
                on stored.night = new.night and stored.metric = new.metric
                when matched then update set
                    value = new.value, model_version = new.model_version, recorded_at = new.recorded_at,
                    details = new.details
                when not matched then insert by name""",
            [night, list(metrics), values, model_version, texts],
        ),
    )
    return len(values)


def metric_history(
    connection: duckdb.DuckDBPyConnection, metrics: list[str], up_to: dt.date, nights: int
) -> pl.DataFrame:
    """The stored rows of ``metrics`` for the ``nights`` calendar nights ending on ``up_to`` (inclusive).

    Columns as in HISTORY_SCHEMA (night, metric, value, model_version, recorded_at), sorted by metric then night.
    Nights without a row are simply absent; rows whose value is NULL are returned (value null).
    """
    if nights < 1:
        raise ValueError(f"nights must be at least 1, got {nights}")
    if not metrics:
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    first = up_to - dt.timedelta(days=nights - 1)
    frame = connection.execute(
        f"""select night, metric, value, model_version, recorded_at from {TABLE}
            where metric in (select unnest(?::varchar[])) and night between ? and ?
            order by metric, night""",
        [list(metrics), first, up_to],
    ).pl()
    return frame.with_columns(pl.col("recorded_at").dt.convert_time_zone("UTC")).cast(HISTORY_SCHEMA)


def metrics_on(connection: duckdb.DuckDBPyConnection, night: dt.date, prefix: str = "") -> dict[str, float]:
    """Every metric of ``night`` that has a value (NULLs left out), optionally only names starting with ``prefix``."""
    rows = connection.execute(
        f"select metric, value from {TABLE} "
        "where night = ? and value is not null and starts_with(metric, ?) order by metric",
        [night, prefix],
    ).fetchall()
    return {metric: float(value) for metric, value in rows}


def details_on(connection: duckdb.DuckDBPyConnection, night: dt.date) -> dict[str, dict[str, Any]]:
    """The details recorded with ``night``'s metrics, by metric name (metrics without details left out)."""
    rows = connection.execute(
        f"select metric, details::varchar from {TABLE} where night = ? and details is not null order by metric", [night]
    ).fetchall()
    return {metric: json.loads(text) for metric, text in rows}


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data: NaN and infinities become None, dates ISO text, numpy scalars Python ones."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _stored(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    if math.isinf(number):
        raise ValueError(f"metric {name!r} is {number}; store a finite number, or None for 'no value'")
    return None if math.isnan(number) else number
