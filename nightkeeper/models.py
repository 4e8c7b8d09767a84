"""Publishing models: write the artifact, register it in the warehouse and point an alias at it."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

from nightkeeper import registry, warehouse
from nightkeeper.artifacts import save_artifact
from nightkeeper.config import ProjectConfig
from nightkeeper.registry import ModelRecord
from nightkeeper.training import TrainedModel, train_model


def publish(trained: TrainedModel, config: ProjectConfig) -> ModelRecord:
    """Save ``trained`` under the models folder and register it (idempotent: same model, same version)."""
    with warehouse.connect(config.warehouse_path) as connection:
        return register_trained(connection, trained, config)


def register_trained(connection: duckdb.DuckDBPyConnection, trained: TrainedModel, config: ProjectConfig) -> ModelRecord:
    """``publish`` through an open warehouse connection (a pipeline step holds one already)."""
    return registry.register(connection, trained.card, save_artifact(trained, config.models_path))


def bootstrap_champion(config: ProjectConfig, history: pl.DataFrame, effective_from: dt.date, actor: str = "bootstrap") -> ModelRecord:
    """Train the first model on labeled ``history``, register it and make it champion from ``effective_from`` on."""
    record = publish(train_model(history, config), config)
    with warehouse.connect(config.warehouse_path) as connection:
        registry.set_alias(
            connection, registry.CHAMPION, record.version, effective_from, actor,
            f"bootstrap champion trained on {record.card.training_window.rows} rows",
        )
    return record
