"""Resources: the project config, the warehouse connection and the warehouse IO manager (Dagster's public API only)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
from dagster import ConfigurableIOManager, ConfigurableResource, InputContext, OutputContext
from pydantic import Field

from nightkeeper import warehouse
from nightkeeper.config import ProjectConfig, load_config
from nightkeeper.warehouse import NIGHTLY_SCHEMA, PARTITION_COLUMN, store_partition

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


class WarehouseIOManager(ConfigurableIOManager):
    """The nightly assets' tables in the warehouse: asset ``name`` is table ``<schema>.<name>``, one partition per
    night (column ``partition_date``).

    A partition is stored through ``nightkeeper.warehouse.store_partition`` (the function the backtest uses): delete
    and insert in one transaction, so a failed write leaves the old partition in place, an empty night is a real,
    empty partition and columns are inserted by name. An input is the rows of its partitions' time window.
    """

    database: str = Field(description="Path to the DuckDB warehouse file.")
    schema_: str = Field(alias="schema", description="The schema holding the assets' tables.")

    def handle_output(self, context: OutputContext, obj: pl.DataFrame) -> None:
        night = dt.date.fromisoformat(context.asset_partition_key)
        table = context.asset_key.path[-1]
        with warehouse.connect(Path(self.database)) as connection:
            store_partition(connection, self.schema_, table, night, obj)
        name = f"{self.schema_}.{table}"
        context.add_output_metadata({"stored_rows": obj.height, "table": name, "dagster/table_name": name})

    def load_input(self, context: InputContext) -> pl.DataFrame:
        window = context.asset_partitions_time_window
        with warehouse.connect(Path(self.database)) as connection:
            return connection.execute(
                f"select * from {self.schema_}.{context.asset_key.path[-1]} "
                f"where {PARTITION_COLUMN} >= ? and {PARTITION_COLUMN} < ?",
                [window.start.date(), window.end.date()],
            ).pl()
