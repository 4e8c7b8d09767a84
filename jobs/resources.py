"""Resources: the project config, the warehouse connection and the warehouse IO manager."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
from dagster import ConfigurableResource, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsTypeHandler
from pydantic import Field

from nightkeeper import warehouse
from nightkeeper.config import ProjectConfig, load_config
from nightkeeper.warehouse import NIGHTLY_SCHEMA, store_partition

WAREHOUSE_POOL = "warehouse"
__all__ = ["NIGHTLY_SCHEMA", "WAREHOUSE_POOL", "ProjectResource", "WarehouseResource", "WarehouseIOManager"]


class ProjectResource(ConfigurableResource):
    """The project config file (nightkeeper.yaml); read fresh by each step so an edit applies to the next run."""

    config_path: str = Field(description="Path to the project config YAML.")

    def load(self) -> ProjectConfig:
        return load_config(self.config_path)


class WarehouseResource(ConfigurableResource):
    """The DuckDB warehouse file, opened per statement group and closed at once (DuckDB locks the file per process)."""

    database: str = Field(description="Path to the DuckDB warehouse file.")

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(Path(self.database)) as connection:
            yield connection


class _PartitionDuckDbClient(DuckDbClient):
    """dagster-duckdb's client, except that the partition is not deleted here: ``store_partition`` deletes and inserts
    in one transaction, so a failed write leaves the old partition in place."""

    @staticmethod
    def delete_table_slice(
        context: OutputContext, table_slice: TableSlice, connection: duckdb.DuckDBPyConnection
    ) -> None:
        return None


class _PolarsPartitionTypeHandler(DuckDBPolarsTypeHandler):
    """Stores a daily partition through ``nightkeeper.warehouse.store_partition`` (the function the backtest uses), so
    empty nights are real, empty partitions and columns are inserted by name."""

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pl.DataFrame, connection) -> None:
        night = dt.date.fromisoformat(context.asset_partition_key)
        store_partition(connection, table_slice.schema, table_slice.table, night, obj)
        context.add_output_metadata({"stored_rows": obj.height, "table": f"{table_slice.schema}.{table_slice.table}"})


class WarehouseIOManager(DuckDBIOManager):
    """dagster-duckdb's polars IO manager with transactional, idempotent partition writes."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [_PolarsPartitionTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pl.DataFrame

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(
            db_client=_PartitionDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseIOManager",
        )
