"""The model registry in the warehouse: registered versions and an append-only alias log.

``registry.model_versions`` holds one row per version (artifact path, its sha256, the card as JSON).
``registry.model_aliases`` is append-only: each row points an alias (``champion``, ``challenger``) at a version
from a night on, with who and why. The alias in force on night D is the latest row with ``effective_from <= D``,
so re-running a past night uses the model that served it, and rollback is one more row.

``model_path`` is stored relative to the warehouse file's folder (``models/<version>/model.txt`` in the default
layout, where both live under the project's ``data/``) and resolved against that folder when read, so a project
folder that is copied or moved serves its own artifacts, never the original folder's. The registry is reached
through a connection only, and the warehouse file is the one thing every reader holds that moves with the models.
Rows written as absolute paths (before this rule, or from an in-memory warehouse) are read as they are.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from nightkeeper.card import ModelCard
from nightkeeper.schema import MODEL_ALIASES, MODEL_VERSIONS

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ModelRecord:
    """A registered version: where its artifact is, the checksum it must match, and its card."""

    version: str
    model_path: Path
    model_sha256: str
    card: ModelCard


def register(connection: duckdb.DuckDBPyConnection, card: ModelCard, model_path: Path) -> ModelRecord:
    """Record a version; registering the same version again is a no-op (versions are content addresses)."""
    connection.execute(
        # a MERGE rather than an insert on the key: a DuckLake warehouse has no keys
        f"""merge into {MODEL_VERSIONS} as stored
            using (select ?::varchar as version, ?::varchar as project, ?::timestamptz as created_at,
                   now() as registered_at, ?::varchar as model_path, ?::varchar as model_sha256,
                   ?::varchar as card_json) as new
            on stored.version = new.version
            when not matched then insert by name""",
        [
            card.version,
            card.project,
            card.created_at,
            _stored_path(connection, model_path),
            card.model_sha256,
            card.model_dump_json(),
        ],
    )
    return get_version(connection, card.version)


def _warehouse_folder(connection: duckdb.DuckDBPyConnection) -> Path | None:
    """The folder of the warehouse file behind ``connection``; None for an in-memory database or a DuckLake (whose
    writers may be on other machines: they store models at absolute paths of a shared volume)."""
    row = connection.execute(
        "select path from duckdb_databases() where database_name = current_database() and type = 'duckdb'"
    ).fetchone()
    return Path(row[0]).resolve().parent if row and row[0] else None


def _stored_path(connection: duckdb.DuckDBPyConnection, model_path: Path) -> str:
    """``model_path`` as stored: relative to the warehouse's folder (posix separators), absolute without a file."""
    folder = _warehouse_folder(connection)
    absolute = Path(model_path).resolve()
    return Path(os.path.relpath(absolute, folder)).as_posix() if folder is not None else str(absolute)


def _resolved_path(connection: duckdb.DuckDBPyConnection, stored: str) -> Path:
    """A stored ``model_path`` as an absolute path: relative ones against the warehouse's folder, absolute ones as
    they are."""
    path = Path(stored)
    folder = _warehouse_folder(connection)
    if path.is_absolute() or folder is None:
        return path
    return Path(os.path.normpath(folder / path))


def get_version(connection: duckdb.DuckDBPyConnection, version: str) -> ModelRecord:
    """The registered version; raises KeyError naming it when unknown."""
    row = connection.execute(
        f"select version, model_path, model_sha256, card_json from {MODEL_VERSIONS} where version = ?", [version]
    ).fetchone()
    if row is None:
        raise KeyError(f"model version {version!r} is not registered")
    return ModelRecord(row[0], _resolved_path(connection, row[1]), row[2], ModelCard.model_validate_json(row[3]))


def set_alias(
    connection: duckdb.DuckDBPyConnection,
    alias: str,
    version: str | None,
    effective_from: dt.date,
    actor: str,
    reason: str,
    stage: str | None = None,
) -> None:
    """Append an alias row (``version=None`` clears the alias). The version must be registered.

    ``stage`` qualifies a challenger: ``shadow`` or ``canary:<percent>``.
    """
    if version is not None:
        get_version(connection, version)
    connection.execute(
        f"""insert into {MODEL_ALIASES} (seq, alias, version, effective_from, set_at, actor, reason, stage)
            select coalesce(max(seq), 0) + 1, ?, ?, ?, now(), ?, ?, ? from {MODEL_ALIASES}""",
        [alias, version, effective_from, actor, reason, stage],
    )


def alias_version(connection: duckdb.DuckDBPyConnection, alias: str, night: dt.date) -> str | None:
    """The version an alias pointed at on ``night`` (None if it pointed nowhere)."""
    row = connection.execute(
        f"""select version from {MODEL_ALIASES} where alias = ? and effective_from <= ?
            order by effective_from desc, seq desc limit 1""",
        [alias, night],
    ).fetchone()
    return row[0] if row else None


def alias_record(connection: duckdb.DuckDBPyConnection, alias: str, night: dt.date) -> ModelRecord | None:
    version = alias_version(connection, alias, night)
    return get_version(connection, version) if version else None


@dataclass(frozen=True)
class AliasState:
    """Where an alias pointed on a night, in which stage, and since which night."""

    version: str | None
    stage: str | None
    effective_from: dt.date | None


def alias_state(connection: duckdb.DuckDBPyConnection, alias: str, night: dt.date) -> AliasState:
    """The alias log row in force on ``night`` (all None when the alias never pointed anywhere by then)."""
    row = connection.execute(
        f"""select version, stage, effective_from from {MODEL_ALIASES} where alias = ? and effective_from <= ?
            order by effective_from desc, seq desc limit 1""",
        [alias, night],
    ).fetchone()
    return AliasState(*row) if row else AliasState(None, None, None)


def alias_log(connection: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The whole alias log, oldest first."""
    return connection.execute(f"select * from {MODEL_ALIASES} order by seq").pl()


def versions(connection: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Registered versions, newest first, with their headline holdout metrics and training window.

    ``model_path`` is as stored: relative to the warehouse file's folder (or absolute for old rows).
    """
    return connection.execute(
        f"""select version, created_at, registered_at,
                   cast(json_extract(card_json, '$.holdout_metrics.auc') as double) as holdout_auc,
                   json_extract_string(card_json, '$.training_window.start') as window_start,
                   json_extract_string(card_json, '$.training_window.end') as window_end,
                   cast(json_extract(card_json, '$.training_window.rows') as bigint) as training_rows,
                   model_path
            from {MODEL_VERSIONS} order by registered_at desc"""
    ).pl()
