"""The nightly metrics table: one number per (night, metric), long format, in the warehouse.

``monitoring.night_metrics`` is what every monitoring figure ends up as (quarantine and fallback rates, drift
scores, estimated and realized performance) and what alert rules read. Metric names are dotted strings whose first
part is the family: ``validation.quarantine_rate``, ``outcomes.fallback_rate``, ``drift.drifted_share``,
``drift.multivariate_auc``, ``performance.estimated_auc``, ``performance.realized_auc``...

Recording a night again replaces that night's values for the metric names given and leaves its other metrics alone,
so re-running a night is idempotent. A value of None (or NaN) is stored as NULL: "measured, but no value tonight"
(e.g. realized AUC before labels land); readers treat it like a missing night.
"""

from __future__ import annotations

import datetime as dt
import math

import duckdb
import polars as pl

SCHEMA = "monitoring"
TABLE = f"{SCHEMA}.night_metrics"

HISTORY_SCHEMA: dict[str, pl.DataType] = {
    "night": pl.Date(),
    "metric": pl.String(),
    "value": pl.Float64(),
    "model_version": pl.String(),
    "recorded_at": pl.Datetime("us", "UTC"),
}

_DDL = f"""
create schema if not exists {SCHEMA};
create table if not exists {TABLE} (
    night date not null,
    metric varchar not null,
    value double,
    model_version varchar,
    recorded_at timestamptz not null,
    primary key (night, metric)
);
"""


def ensure_metrics_table(connection: duckdb.DuckDBPyConnection) -> None:
    """Create ``monitoring.night_metrics`` if it does not exist."""
    connection.execute(_DDL)


def record_metrics(
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    metrics: dict[str, float | None],
    model_version: str | None,
) -> int:
    """Store ``metrics`` for ``night``, replacing earlier values of the same names that night; returns rows written.

    Metrics of ``night`` not named in ``metrics`` are kept. None and NaN are stored as NULL (no value). Raises
    ValueError for an empty or non-string metric name or an infinite value (nothing is written then). All rows are
    written in one transaction.
    """
    for name in metrics:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"metric names must be non-empty strings, got {name!r}")
    if not metrics:
        return 0
    values = [_stored(name, value) for name, value in metrics.items()]
    ensure_metrics_table(connection)
    connection.begin()
    try:
        # one statement for all rows: DuckDB's executemany costs ~5 ms a row, a night records ~60 metrics
        connection.execute(
            f"""insert into {TABLE} select ?, unnest(?::varchar[]), unnest(?::double[]), ?, now()
                on conflict (night, metric) do update set
                    value = excluded.value, model_version = excluded.model_version, recorded_at = excluded.recorded_at""",
            [night, list(metrics), values, model_version],
        )
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
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
    ensure_metrics_table(connection)
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
    ensure_metrics_table(connection)
    rows = connection.execute(
        f"select metric, value from {TABLE} where night = ? and value is not null and starts_with(metric, ?) order by metric",
        [night, prefix],
    ).fetchall()
    return {metric: float(value) for metric, value in rows}


def _stored(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    if math.isinf(number):
        raise ValueError(f"metric {name!r} is {number}; store a finite number, or None for 'no value'")
    return None if math.isnan(number) else number
