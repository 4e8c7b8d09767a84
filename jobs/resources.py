"""Resources: the project config, the warehouse connection and the warehouse IO manager (Dagster's public API only)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
from dagster import ConfigurableIOManager, ConfigurableResource, InputContext, OutputContext
from pydantic import Field

from nightkeeper import warehouse
from nightkeeper.config import ProjectConfig, load_config
from nightkeeper.warehouse import NIGHTLY_SCHEMA, PARTITION_COLUMN, Lake, Location, store_partition

WAREHOUSE_POOL = "warehouse"
INPUT_COLUMNS = "columns"
"""An input's metadata key naming the only columns the step reads (``AssetIn(metadata={INPUT_COLUMNS: [...]})``):
the IO manager loads just those, as dagster-duckdb's IO managers do; without it, every column."""
__all__ = [
    "INPUT_COLUMNS",
    "NIGHTLY_SCHEMA",
    "WAREHOUSE_POOL",
    "ProjectResource",
    "StoredPartition",
    "WarehouseResource",
    "WarehouseIOManager",
]


@dataclass(frozen=True)
class StoredPartition:
    """An asset output whose partition is in the warehouse already: ``table`` (``schema.name``) holds the rows of
    ``night`` (a sharded night's shards each stored their own rows). The IO manager records it and writes nothing."""

    table: str
    night: dt.date


class ProjectResource(ConfigurableResource):
    """The project config file (nightkeeper.yaml); read fresh by each step so an edit applies to the next run."""

    config_path: str = Field(description="Path to the project config YAML.")

    def load(self) -> ProjectConfig:
        return load_config(self.config_path)


def warehouse_location(database: str, lake_catalog: str | None, lake_data_path: str | None) -> Location:
    """The warehouse a resource's fields name: the DuckLake when ``lake_catalog`` is set, else the DuckDB file."""
    if lake_catalog is None:
        return Path(database)
    if lake_data_path is None:
        raise ValueError("lake_catalog is set without lake_data_path: a DuckLake needs both")
    return Lake(catalog=lake_catalog, data_path=lake_data_path)


class WarehouseResource(ConfigurableResource):
    """The warehouse, opened per statement group and closed at once (DuckDB locks a file per process): the DuckDB
    file ``database``, or the DuckLake ``lake_catalog`` / ``lake_data_path`` when those are set (``storage.kind``)."""

    database: str = Field(description="Path to the DuckDB warehouse file (storage.kind duckdb_file).")
    lake_catalog: str | None = Field(
        None, description="libpq connection string of the DuckLake's PostgreSQL catalog (storage.kind ducklake)."
    )
    lake_data_path: str | None = Field(
        None, description="Folder or object-storage URL of the DuckLake's Parquet files (storage.kind ducklake)."
    )

    @property
    def location(self) -> Location:
        return warehouse_location(self.database, self.lake_catalog, self.lake_data_path)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.location) as connection:
            yield connection


class WarehouseIOManager(ConfigurableIOManager):
    """The nightly assets' tables in the warehouse: asset ``name`` is table ``<schema>.<name>``, one partition per
    night (column ``partition_date``).

    A partition is stored through ``nightkeeper.warehouse.store_partition`` (the function the backtest uses): delete
    and insert in one transaction, so a failed write leaves the old partition in place, an empty night is a real,
    empty partition and columns are inserted by name. An input is the rows of its partitions' time window, only the
    columns its ``INPUT_COLUMNS`` metadata names when it has that key. On a
    DuckLake, nights stored at once by several processes or machines each replace their own partition. An output
    that is a ``StoredPartition`` (a sharded night's row-level tables, which its shard ops stored) is recorded with
    its stored row count and not written.
    """

    database: str = Field(description="Path to the DuckDB warehouse file (storage.kind duckdb_file).")
    lake_catalog: str | None = Field(
        None, description="libpq connection string of the DuckLake's PostgreSQL catalog (storage.kind ducklake)."
    )
    lake_data_path: str | None = Field(
        None, description="Folder or object-storage URL of the DuckLake's Parquet files (storage.kind ducklake)."
    )
    schema_: str = Field(alias="schema", description="The schema holding the assets' tables.")

    @property
    def location(self) -> Location:
        return warehouse_location(self.database, self.lake_catalog, self.lake_data_path)

    def handle_output(self, context: OutputContext, obj: pl.DataFrame | StoredPartition) -> None:
        night = dt.date.fromisoformat(context.asset_partition_key)
        table = context.asset_key.path[-1]
        name = f"{self.schema_}.{table}"
        if isinstance(obj, StoredPartition):
            if (obj.table, obj.night) != (name, night):
                raise ValueError(f"{context.asset_key.to_user_string()} [{night}]: the output is {obj}, not {name}")
            with warehouse.connect(self.location) as connection:
                row = connection.execute(
                    f"select count(*) from {name} where {PARTITION_COLUMN} = ?", [night]
                ).fetchone()
            rows = row[0] if row else 0
        else:
            with warehouse.connect(self.location) as connection:
                store_partition(connection, self.schema_, table, night, obj)
            rows = obj.height
        context.add_output_metadata({"stored_rows": rows, "table": name, "dagster/table_name": name})

    def load_input(self, context: InputContext) -> pl.DataFrame:
        window = context.asset_partitions_time_window
        columns = context.definition_metadata.get(INPUT_COLUMNS)
        selected = ", ".join(f'"{column}"' for column in columns) if columns else "*"
        with warehouse.connect(self.location) as connection:
            return connection.execute(
                f"select {selected} from {self.schema_}.{context.asset_key.path[-1]} "
                f"where {PARTITION_COLUMN} >= ? and {PARTITION_COLUMN} < ?",
                [window.start.date(), window.end.date()],
            ).pl()
