"""The warehouse schema: opening a warehouse migrates its side tables to the latest version, once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from nightkeeper import schema, warehouse

# Every side table and its columns, in order: the contract the modules read and write.
EXPECTED_COLUMNS: dict[str, list[str]] = {
    schema.ALERTS: [
        "alert_id",
        "rule",
        "category",
        "severity",
        "metric",
        "opened_night",
        "closed_night",
        "status",
        "value",
        "threshold",
        "comparison",
        "message",
        "runbook",
        "payload",
        "acknowledged_at",
        "acknowledged_by",
        "ack_reason",
    ],
    schema.ALERT_EVENTS: ["alert_id", "night", "event", "recorded_at", "message"],
    schema.ALERT_OUTBOX: [
        "event_id",
        "seq",
        "payload",
        "attempts",
        "last_error",
        "delivered_at",
        "next_attempt_at",
        "enqueued_at",
    ],
    schema.NIGHT_METRICS: ["night", "metric", "value", "model_version", "recorded_at", "details"],
    schema.LABELS: ["entity_id", "partition_date", "label", "arrived_on", "source_file", "row_number"],
    schema.LABELS_REJECTED: ["source_file", "row_number", "entity_id", "value", "reason", "arrived_on"],
    schema.PERFORMANCE_LABEL_STATE: ["partition_date", "label_rows", "positives"],
    schema.MODEL_VERSIONS: [
        "version",
        "project",
        "created_at",
        "registered_at",
        "model_path",
        "model_sha256",
        "card_json",
    ],
    schema.MODEL_ALIASES: ["seq", "alias", "version", "effective_from", "set_at", "actor", "reason", "stage"],
    schema.REVIEW_QUEUE: [
        "partition_date",
        "entity_id",
        "source_file",
        "row_number",
        "score",
        "decision",
        "distance",
        "queue_reason",
        "priority",
    ],
    schema.REVIEW_LABELS: [
        "entity_id",
        "partition_date",
        "label",
        "reviewer",
        "note",
        "reviewed_at",
        "source_file",
        "row_number",
    ],
    schema.REVIEW_REJECTS: [
        "source_file",
        "row_number",
        "entity_id",
        "label",
        "reviewer",
        "note",
        "reason",
        "rejected_at",
    ],
    schema.CANDIDATES: ["version", "as_of", "trigger", "status", "reasons", "recorded_at"],
}
LATEST = max(migration.version for migration in schema.MIGRATIONS)


def _columns(connection: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    rows = connection.execute(
        "select table_schema || '.' || table_name, column_name from information_schema.columns "
        "where table_schema not in ('main', 'nightly') order by table_schema, table_name, ordinal_position"
    ).fetchall()
    found: dict[str, list[str]] = {}
    for table, column in rows:
        found.setdefault(table, []).append(column)
    return found


def _applied(connection: duckdb.DuckDBPyConnection) -> list[tuple[int, dt.datetime]]:
    return connection.execute(f"select version, applied_at from {schema.MIGRATIONS_TABLE} order by version").fetchall()


def test_opening_a_new_warehouse_creates_every_side_table_with_its_columns(tmp_path: Path) -> None:
    with warehouse.connect(tmp_path / "warehouse.duckdb") as connection:
        assert _columns(connection) == EXPECTED_COLUMNS
        assert [version for version, _ in _applied(connection)] == [m.version for m in schema.MIGRATIONS]


def test_migrating_an_up_to_date_warehouse_changes_nothing(tmp_path: Path) -> None:
    with warehouse.connect(tmp_path / "warehouse.duckdb") as connection:
        before = _applied(connection)

    with warehouse.connect(tmp_path / "warehouse.duckdb") as connection:
        assert schema.migrate(connection) == []
        assert _applied(connection) == before
        assert _columns(connection) == EXPECTED_COLUMNS


def test_migrations_are_numbered_one_to_latest_in_order() -> None:
    assert [migration.version for migration in schema.MIGRATIONS] == list(range(1, LATEST + 1))


def test_a_warehouse_made_before_migrations_keeps_its_rows_and_gains_the_later_columns(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as old:  # as the modules created these tables lazily, before ack and details
        old.execute(
            """create schema monitoring;
            create table monitoring.night_metrics (night date not null, metric varchar not null, value double,
                model_version varchar, recorded_at timestamptz not null, primary key (night, metric));
            insert into monitoring.night_metrics values ('2026-01-05', 'auc', 0.71, 'v1', now());
            create table monitoring.alerts (alert_id varchar primary key, rule varchar not null,
                category varchar not null, severity varchar not null, metric varchar not null,
                opened_night date not null, closed_night date, status varchar not null, value double,
                threshold double not null, comparison varchar not null, message varchar not null,
                runbook varchar not null, payload json not null);
            insert into monitoring.alerts values ('a1', 'auc_drop', 'performance', 'critical', 'auc',
                '2026-01-05', null, 'open', 0.71, 0.75, '<', 'AUC fell', 'docs/runbook.md', '{}');"""
        )

    with warehouse.connect(path) as connection:
        assert _columns(connection) == EXPECTED_COLUMNS
        assert [version for version, _ in _applied(connection)] == [m.version for m in schema.MIGRATIONS]
        assert connection.execute("select metric, value, details from monitoring.night_metrics").fetchall() == [
            ("auc", 0.71, None)
        ]
        assert connection.execute("select alert_id, status, acknowledged_by from monitoring.alerts").fetchall() == [
            ("a1", "open", None)
        ]


def test_a_failing_migration_leaves_the_warehouse_as_it_was(tmp_path: Path) -> None:
    good = schema.Migration(LATEST + 1, "a new table", (f"create table {schema.MONITORING}.extra (x int)",))
    broken = schema.Migration(LATEST + 2, "a table that exists", (f"create table {schema.ALERTS} (x int)",))
    with warehouse.connect(tmp_path / "warehouse.duckdb") as connection:
        before = _applied(connection)

        with pytest.raises(duckdb.CatalogException, match="already exists"):
            schema.migrate(connection, (*schema.MIGRATIONS, good, broken))

        assert _applied(connection) == before
        assert _columns(connection) == EXPECTED_COLUMNS
