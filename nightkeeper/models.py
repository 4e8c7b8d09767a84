"""Publishing models: write the artifact, register it in the warehouse and point an alias at it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import polars as pl

from nightkeeper import registry, warehouse
from nightkeeper.artifacts import save_artifact
from nightkeeper.batch_checks import CheckOutcome
from nightkeeper.behaviour import behaviour_tests
from nightkeeper.config import ProjectConfig
from nightkeeper.frames import day
from nightkeeper.registry import ModelRecord
from nightkeeper.training import TrainedModel, train_model, training_frame
from nightkeeper.training_data import LabeledHistoryFile, store_history


def publish(trained: TrainedModel, config: ProjectConfig) -> ModelRecord:
    """Save ``trained`` under the models folder and register it (idempotent: same model, same version)."""
    with warehouse.connect(config.warehouse) as connection:
        return register_trained(connection, trained, config)


def register_trained(
    connection: duckdb.DuckDBPyConnection, trained: TrainedModel, config: ProjectConfig
) -> ModelRecord:
    """``publish`` through an open warehouse connection (a pipeline step holds one already)."""
    return registry.register(connection, trained.card, save_artifact(trained, config.models_path))


def bootstrap_champion(
    config: ProjectConfig, history: pl.DataFrame, effective_from: dt.date, actor: str = "bootstrap"
) -> ModelRecord:
    """Train the first model on labeled ``history``, register it and make it champion from ``effective_from`` on,
    opening the warehouse itself (``register_bootstrap_champion`` through a connection the caller holds)."""
    trained = train_model(history, config)
    with warehouse.connect(config.warehouse) as connection:
        return register_bootstrap_champion(connection, trained, config, effective_from, actor)


def register_bootstrap_champion(
    connection: duckdb.DuckDBPyConnection,
    trained: TrainedModel,
    config: ProjectConfig,
    effective_from: dt.date,
    actor: str = "bootstrap",
) -> ModelRecord:
    """Register ``trained`` and make it champion from ``effective_from`` on, through an open warehouse connection
    (a command waits for the warehouse only once the model is trained, so training never holds it)."""
    record = register_trained(connection, trained, config)
    registry.set_alias(
        connection,
        registry.CHAMPION,
        record.version,
        effective_from,
        actor,
        f"bootstrap champion trained on {record.card.training_window.rows} rows",
    )
    return record


@dataclass(frozen=True)
class FirstChampion:
    """What ``train_first_champion`` did: the registered champion (None when a behaviour test failed) and every
    behaviour test's outcome."""

    record: ModelRecord | None
    checks: dict[str, CheckOutcome]


def train_first_champion(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, history: LabeledHistoryFile, actor: str = "train"
) -> FirstChampion:
    """Train the first champion on the user's labeled ``history`` and gate it with the behaviour tests.

    When every test passes: the model is registered, is champion from ``schedule.start_date`` on, and the history is
    stored in the warehouse, where every later retrain window includes it. When one fails nothing is registered or
    stored. Raises ValueError (from training) when the history cannot train a model (too few rows, one class).
    """
    frame = history.rows.rename(
        {
            "label": config.contract.target,
            "entity_id": config.contract.entity_id,
            **({"event_time": config.contract.event_time} if config.contract.event_time else {}),
        }
    )
    trained = train_model(frame, config)
    checks = behaviour_tests(
        trained.booster, trained.card, training_frame(frame, config), config.contract, config.lifecycle.behaviour
    )
    if not all(outcome.passed for outcome in checks.values()):
        return FirstChampion(None, checks)
    record = register_trained(connection, trained, config)
    store_history(connection, history.rows)
    rows, dates = history.rows.height, history.rows["partition_date"]
    registry.set_alias(
        connection,
        registry.CHAMPION,
        record.version,
        config.schedule.start_date,
        actor,
        f"first champion trained on the labeled history ({rows} rows, {day(dates.min())} .. {day(dates.max())})",
    )
    return FirstChampion(record, checks)
