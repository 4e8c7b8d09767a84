"""Resources: the project config, the warehouse connection and the warehouse IO manager."""

from __future__ import annotations

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

WAREHOUSE_POOL = "warehouse"
NIGHTLY_SCHEMA = "nightly"


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


class _TransactionalDuckDbClient(DuckDbClient):
    """Writes a partition as one transaction: the old rows are deleted and the new ones inserted, or neither."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice: TableSlice) -> Iterator[duckdb.DuckDBPyConnection]:
        with DuckDbClient.connect(context, table_slice) as connection:
            connection.begin()
            try:
                yield connection
            except BaseException:
                connection.rollback()
                connection.close()
                raise
            connection.commit()


class _PolarsByNameTypeHandler(DuckDBPolarsTypeHandler):
    """Like dagster-duckdb-polars' handler, but also stores empty frames (so an empty night is a real, empty
    partition whose table exists) and inserts columns by name rather than by position."""

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pl.DataFrame, connection) -> None:
        frame_arrow = obj.to_arrow()  # noqa: F841  (DuckDB reads the local variable by name)
        table = f"{table_slice.schema}.{table_slice.table}"
        connection.execute(f"create schema if not exists {table_slice.schema}")
        connection.execute(f"create table if not exists {table} as select * from frame_arrow limit 0")
        connection.execute(f"insert into {table} by name select * from frame_arrow")
        context.add_output_metadata({"stored_rows": obj.height, "table": table})


class WarehouseIOManager(DuckDBIOManager):
    """dagster-duckdb's polars IO manager with transactional, idempotent partition writes."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [_PolarsByNameTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pl.DataFrame

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(
            db_client=_TransactionalDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseIOManager",
        )
