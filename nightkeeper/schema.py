"""The warehouse's side tables: their names, their DDL as ordered, versioned migrations, and ``migrate``.

The one owner of every table the framework writes row by row (alerts, outbox, metrics, labels, registry, review,
lifecycle). The modules that read and write them import their names from here. Not covered: tables written whole
from a frame, whose columns are the frame's (the ``nightly`` partitions, ``warehouse.store_partition``; the
performance tables and the labeled history, built from their polars schemas; the backtest report).

A DuckLake warehouse (``storage.kind: ducklake``) enforces no keys: it refuses PRIMARY KEY and UNIQUE constraints
(and indexes, which no migration creates). ``migrate`` runs every statement through ``for_lake`` there, the one place
that knows, so the lake's tables have the same columns, types and NOT NULLs, without keys. No writer relies on a
key: a write that must not repeat a key is a MERGE on it (metrics, registry, labels) or reads what is stored first.
What no engine then checks is two writers inserting the same new key at the same moment.

``migrate`` runs when the warehouse is opened (``warehouse.connect`` and the commands' ``command_connection``): it
reads ``schema_migrations`` (one select) and applies, in one transaction, the migrations whose version is not there.
Migration 1 is the tables as the modules created them lazily before this module existed, every statement ``if not
exists``, so a warehouse made then migrates to version 1 without change. A later change of a table is a new
migration appended to ``MIGRATIONS``; a migration already released is never edited.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

MIGRATIONS_TABLE = "schema_migrations"

MONITORING = "monitoring"
REGISTRY = "registry"
REVIEW = "review"
LIFECYCLE = "lifecycle"

ALERTS = f"{MONITORING}.alerts"
ALERT_EVENTS = f"{MONITORING}.alert_events"
ALERT_OUTBOX = f"{MONITORING}.alert_outbox"
NIGHT_METRICS = f"{MONITORING}.night_metrics"
LABELS = f"{MONITORING}.labels"
LABELS_REJECTED = f"{MONITORING}.labels_rejected"
PERFORMANCE_LABEL_STATE = f"{MONITORING}.performance_label_state"
MODEL_VERSIONS = f"{REGISTRY}.model_versions"
MODEL_ALIASES = f"{REGISTRY}.model_aliases"
REVIEW_QUEUE = f"{REVIEW}.queue"
REVIEW_LABELS = f"{REVIEW}.labels"
REVIEW_REJECTS = f"{REVIEW}.rejects"
CANDIDATES = f"{LIFECYCLE}.candidates"


@dataclass(frozen=True)
class Migration:
    """One step of the warehouse's schema: applied once, in order, all its statements or none."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "side tables as created lazily by their modules before versioned migrations",
        (
            f"create schema if not exists {MONITORING}",
            f"create schema if not exists {REGISTRY}",
            f"create schema if not exists {REVIEW}",
            f"create schema if not exists {LIFECYCLE}",
            f"""create table if not exists {ALERTS} (
                alert_id varchar primary key,
                rule varchar not null,
                category varchar not null,
                severity varchar not null,
                metric varchar not null,
                opened_night date not null,
                closed_night date,
                status varchar not null,
                value double,
                threshold double not null,
                comparison varchar not null,
                message varchar not null,
                runbook varchar not null,
                payload json not null
            )""",
            # Acknowledgement columns were added to existing alert tables by the alerts module's own ALTERs.
            f"alter table {ALERTS} add column if not exists acknowledged_at timestamptz",
            f"alter table {ALERTS} add column if not exists acknowledged_by varchar",
            f"alter table {ALERTS} add column if not exists ack_reason varchar",
            f"""create table if not exists {ALERT_EVENTS} (
                alert_id varchar not null,
                night date not null,
                event varchar not null,
                recorded_at timestamptz not null,
                message varchar not null,
                primary key (alert_id, event)
            )""",
            f"""create table if not exists {ALERT_OUTBOX} (
                event_id varchar primary key,
                seq bigint not null,
                payload json not null,
                attempts integer not null,
                last_error varchar,
                delivered_at timestamptz,
                next_attempt_at timestamptz,
                enqueued_at timestamptz not null
            )""",
            f"""create table if not exists {NIGHT_METRICS} (
                night date not null,
                metric varchar not null,
                value double,
                model_version varchar,
                recorded_at timestamptz not null,
                primary key (night, metric)
            )""",
            f"alter table {NIGHT_METRICS} add column if not exists details json",
            f"""create table if not exists {LABELS} (
                entity_id varchar primary key,
                partition_date date not null,
                label tinyint not null,
                arrived_on date not null,
                source_file varchar not null,
                row_number bigint not null
            )""",
            f"""create table if not exists {LABELS_REJECTED} (
                source_file varchar not null,
                row_number bigint not null,
                entity_id varchar,
                value varchar,
                reason varchar not null,
                arrived_on date not null,
                primary key (source_file, row_number)
            )""",
            f"""create table if not exists {PERFORMANCE_LABEL_STATE} (
                partition_date date primary key,
                label_rows bigint not null,
                positives bigint not null
            )""",
            f"""create table if not exists {MODEL_VERSIONS} (
                version varchar primary key,
                project varchar not null,
                created_at timestamptz not null,
                registered_at timestamptz not null,
                model_path varchar not null,
                model_sha256 varchar not null,
                card_json varchar not null
            )""",
            f"""create table if not exists {MODEL_ALIASES} (
                seq bigint primary key,
                alias varchar not null,
                version varchar,
                effective_from date not null,
                set_at timestamptz not null,
                actor varchar not null,
                reason varchar not null,
                stage varchar
            )""",
            f"""create table if not exists {REVIEW_QUEUE} (
                partition_date date not null,
                entity_id varchar not null,
                source_file varchar not null,
                row_number bigint not null,
                score double,
                decision varchar,
                distance double,
                queue_reason varchar not null,
                priority bigint not null
            )""",
            f"""create table if not exists {REVIEW_LABELS} (
                entity_id varchar not null,
                partition_date date,
                label tinyint not null,
                reviewer varchar not null,
                note varchar,
                reviewed_at timestamptz not null,
                source_file varchar not null,
                row_number bigint,
                primary key (entity_id, label)
            )""",
            f"""create table if not exists {REVIEW_REJECTS} (
                source_file varchar not null,
                row_number bigint,
                entity_id varchar,
                label varchar,
                reviewer varchar,
                note varchar,
                reason varchar not null,
                rejected_at timestamptz not null
            )""",
            f"""create table if not exists {CANDIDATES} (
                version varchar,
                as_of date,
                trigger varchar,
                status varchar,
                reasons varchar,
                recorded_at timestamptz
            )""",
        ),
    ),
)


_TABLE_KEY = re.compile(r",\s*(primary key|unique)\s*\([^)]*\)", re.IGNORECASE)
_COLUMN_PRIMARY_KEY = re.compile(r"\s+primary key\b", re.IGNORECASE)
_COLUMN_UNIQUE = re.compile(r"\s+unique\b", re.IGNORECASE)


def for_lake(statement: str) -> str:
    """``statement`` as a DuckLake runs it: its PRIMARY KEY and UNIQUE constraints left out, a column's PRIMARY KEY
    kept as the NOT NULL it implies (the columns of a table's key are declared NOT NULL in the migrations)."""
    statement = _TABLE_KEY.sub("", statement)
    return _COLUMN_UNIQUE.sub("", _COLUMN_PRIMARY_KEY.sub(" not null", statement))


def is_lake(connection: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``connection``'s default database is a DuckLake."""
    row = connection.execute("select type from duckdb_databases() where database_name = current_database()").fetchone()
    return row is not None and row[0] == "ducklake"


def rollback_open(connection: duckdb.DuckDBPyConnection) -> None:
    """Roll back ``connection``'s transaction if one is still open (a failed commit has already ended it, and rolling
    back then would raise over the commit's own error)."""
    try:
        connection.rollback()
    except duckdb.TransactionException as exc:
        if "no transaction is active" not in str(exc):
            raise


def _missing(connection: duckdb.DuckDBPyConnection, migrations: Sequence[Migration]) -> list[Migration]:
    applied = applied_versions(connection)
    return [migration for migration in migrations if migration.version not in applied]


def applied_versions(connection: duckdb.DuckDBPyConnection) -> set[int]:
    """The migration versions recorded in ``schema_migrations``; empty when the table does not exist yet."""
    try:
        rows = connection.execute(f"select version from {MIGRATIONS_TABLE}").fetchall()
    except duckdb.CatalogException:  # a warehouse older than this module, or a new file
        return set()
    return {version for (version,) in rows}


def migrate(connection: duckdb.DuckDBPyConnection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring the warehouse's side tables to the latest of ``migrations`` (the project's by default); returns the
    versions applied now, in order.

    Idempotent and cheap when up to date (one select). The missing migrations and their ``schema_migrations`` rows
    are written in one transaction: on an error nothing of them is kept and the error is raised. The caller must not
    hold an open transaction. On a DuckLake the statements go through ``for_lake``; a writer migrating the same
    lake at the same moment makes this one's commit fail with a conflict, which ``warehouse.connect`` retries.
    What is missing is decided again inside the transaction, on its own snapshot: a writer that committed the same
    migrations between the first look and ``begin`` is seen there (a lake has no primary key to refuse its version
    twice; without the second look, four processes opening a new lake under load recorded version 1 three times).
    """
    if not _missing(connection, migrations):
        return []
    adapt = for_lake if is_lake(connection) else str
    connection.begin()
    try:
        missing = _missing(connection, migrations)
        connection.execute(
            adapt(
                f"create table if not exists {MIGRATIONS_TABLE} "
                "(version integer primary key, description varchar not null, applied_at timestamptz not null)"
            )
        )
        for migration in missing:
            for statement in migration.statements:
                connection.execute(adapt(statement))
            connection.execute(
                f"insert into {MIGRATIONS_TABLE} values (?, ?, now())", [migration.version, migration.description]
            )
        connection.commit()
    except BaseException:
        rollback_open(connection)
        raise
    return [migration.version for migration in missing]
