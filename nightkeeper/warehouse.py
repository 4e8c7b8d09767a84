"""Short-lived connections to the warehouse: one embedded DuckDB file (the default) or a DuckLake.

DuckDB lets one process open a file at a time, reads included, so every caller holds a connection only for the
statements it needs and waits (bounded) for another process's lock to go.

A DuckLake (``storage.kind: ducklake``) keeps its catalog in PostgreSQL and its tables' data as Parquet files, so
several processes and machines read and write it at once. Each process attaches it once to an in-memory DuckDB
database (loading the extensions and attaching costs about a second) and every ``connect`` is a new connection to
that database, with its own transactions. Two writers whose transactions touch the same table conflict at commit;
``store_partition`` and the migrations retry such a transaction whole (``retry_conflicts``). The DuckDB extensions
come from PyPI packages (``nightkeeper[lake]``), so nothing is downloaded at run time.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl

from nightkeeper.allocator import release_freed_memory
from nightkeeper.schema import migrate, rollback_open

NIGHTLY_SCHEMA = "nightly"
PARTITION_COLUMN = "partition_date"
SHARD_COLUMN = "shard"
"""The column of a row-level nightly table stored by shards (``store_shard``): which shard of its night a row is in;
absent (NULL) in a night stored whole."""
FILE_MEMORY_LIMIT = "128MB"
"""DuckDB's memory limit for a warehouse file outside a write (``WRITE_MEMORY_LIMIT`` within one): its cache of the
file's blocks and its working memory (sorts, joins and aggregates spill to ``<file>.tmp`` beyond it). DuckDB keeps
every block a step reads or writes cached until the limit forces it out, so a step's DuckDB memory grows with the
night up to its limit: a 1M-row night's tables fit in ~130 MB, a 10M-row night's filled a 512 MB limit (each step's
RSS ~300-400 MB above the 1M night's). Reading a block needs little of it; DuckDB's default, 80 % of the machine,
would let every block read stay cached."""
WRITE_MEMORY_LIMIT = "512MB"
"""DuckDB's memory limit for a warehouse file while a transaction of ``run_transaction`` writes it; set back to
``FILE_MEMORY_LIMIT`` after, which evicts the blocks it cached beyond that. Inserts work in this memory: measured
quietly at 1M rows with one limit for everything (benchmarks/README.md), the answers were stored after 24.6 s at
512 MB, 29.2 s at 256 MB and 39.5 s at 128 MB against a 14 s floor."""
FILE_CONFIG: dict[str, str | bool | int | float | list[str]] = {"memory_limit": FILE_MEMORY_LIMIT}
"""The configuration every connection to a warehouse file is opened with: DuckDB refuses a second connection to a
file a process has open with another configuration."""
LAKE_ALIAS = "lake"
"""The name a DuckLake is attached under; every connection to it uses it as its default database."""

LAKE_EXTENSIONS = (("duckdb_extension_ducklake", "ducklake"), ("duckdb_extension_postgres_scanner", "postgres_scanner"))
"""The DuckDB extensions a DuckLake with a PostgreSQL catalog needs: (the PyPI package shipping it, its name)."""
OBJECT_STORE_EXTENSIONS = (("duckdb_extension_httpfs", "httpfs"), ("duckdb_extension_aws", "aws"))
"""Also needed when the lake's data files are on object storage (s3://...): reading them, and AWS credentials."""

T = TypeVar("T")


@dataclass(frozen=True)
class Lake:
    """A DuckLake warehouse: its catalog in the PostgreSQL database ``catalog`` (a libpq connection string; what it
    leaves out, the password included, libpq takes from its environment) and its tables' data as Parquet files under
    ``data_path`` (an absolute folder or an object-storage URL such as ``s3://bucket/prefix/``)."""

    catalog: str
    data_path: str

    def __str__(self) -> str:
        return f"DuckLake (catalog {self.catalog!r}, data {self.data_path})"


Location = Path | Lake
"""Where a warehouse is: the DuckDB file's path, or a DuckLake."""


@contextmanager
def connect(location: Location, wait_seconds: float = 100.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, with its side tables migrated to the latest version (``nightkeeper.schema.migrate``);
    always closed on exit. A file is retried while another process holds its lock, for up to ``wait_seconds``;
    a lake has no lock (its writers' conflicting transactions are retried instead, for as long)."""
    connection = lake_connection(location) if isinstance(location, Lake) else _open_file(location, wait_seconds)
    try:
        retry_conflicts(lambda: migrate(connection), wait_seconds)
        yield connection
    finally:
        connection.close()


def _open_file(path: Path, wait_seconds: float) -> duckdb.DuckDBPyConnection:
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    delay = 0.1
    while True:
        try:
            return duckdb.connect(str(path), config=FILE_CONFIG)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            # polled at least every second: shards of a night take turns on the file, each turn a second or so
            delay = min(delay * 2, 1.0)


# One in-memory database per (process, lake) holds the attached lake; the process id is in the key so a forked child
# attaches its own instead of sharing its parent's connections to PostgreSQL.
_ATTACHED: dict[tuple[int, Lake], duckdb.DuckDBPyConnection] = {}
_ATTACHING = threading.Lock()


def lake_connection(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A new connection to ``lake`` (its default database), with its own transactions; the caller closes it. The
    side tables are not migrated here (``connect`` does that)."""
    key = (os.getpid(), lake)
    with _ATTACHING:
        database = _ATTACHED.get(key)
        if database is None:
            database = _attach(lake)
            _ATTACHED[key] = database
    connection = database.cursor()
    connection.execute(f"use {LAKE_ALIAS}")
    return connection


def _attach(lake: Lake) -> duckdb.DuckDBPyConnection:
    database = duckdb.connect()
    object_store = "://" in lake.data_path
    for package, name in LAKE_EXTENSIONS + (OBJECT_STORE_EXTENSIONS if object_store else ()):
        database.execute(f"load {_quoted(str(extension_file(package, name)))}")
    if object_store:
        # credentials as the AWS SDK finds them: environment, profile, or the pod's web identity on Kubernetes
        database.execute("create or replace secret nightkeeper_lake (type s3, provider credential_chain)")
    else:
        Path(lake.data_path).mkdir(parents=True, exist_ok=True)
    statement = (
        f"attach {_quoted('ducklake:postgres:' + lake.catalog)} as {LAKE_ALIAS} (data_path {_quoted(lake.data_path)})"
    )
    # The first attach of an empty catalog creates DuckLake's tables in it; processes doing that at once collide in
    # PostgreSQL and all but one fail: the others attach again and find the tables made.
    attempts = 1
    while True:
        try:
            database.execute(statement)
            return database
        except duckdb.Error as exc:
            if "Failed to initialize DuckLake" not in str(exc) or attempts == 5:
                database.close()
                raise
        attempts += 1
        time.sleep(0.2 + random.random())


def extension_file(package: str, name: str) -> Path:
    """The file of DuckDB extension ``name`` for the installed DuckDB's version, as shipped by the PyPI ``package``.
    Raises RuntimeError saying what to install when it is not there."""
    spec = importlib.util.find_spec(package)
    wanted = f"v{duckdb.__version__}"
    if spec is not None and spec.origin is not None:
        found = Path(spec.origin).parent / "extensions" / wanted / f"{name}.duckdb_extension"
        if found.is_file():
            return found
        shipped = sorted(p.name for p in (Path(spec.origin).parent / "extensions").glob("v*"))
        problem = f"{package} ships it for DuckDB {', '.join(shipped) or 'no version'}, not {wanted}"
    else:
        problem = f"the package {package} is not installed"
    raise RuntimeError(
        f"storage.kind ducklake needs DuckDB's {name!r} extension for DuckDB {duckdb.__version__}: {problem}. "
        "Install nightkeeper's lake extra (pip install 'nightkeeper[lake]'), which pins DuckDB and the extensions "
        "to one version."
    )


def retry_conflicts(transaction: Callable[[], T], wait_seconds: float = 100.0) -> T:
    """``transaction()``, run again while it fails on a DuckLake write conflict (another writer committed a change to
    the same table or schema first), for up to ``wait_seconds``; other errors are raised at once. ``transaction``
    must be all-or-nothing (a failed attempt leaves nothing behind), so running it again is safe."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    while True:
        try:
            return transaction()
        except duckdb.TransactionException as exc:
            if not is_lake_conflict(exc) or time.monotonic() + delay > deadline:
                raise
        # jitter, so writers that collided do not collide again in step
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 2.0)


def run_transaction(connection: duckdb.DuckDBPyConnection, body: Callable[[], T], wait_seconds: float = 100.0) -> T:
    """``body()`` in one transaction of ``connection``: committed, or rolled back and its error raised. On a DuckLake,
    run again whole while its commit conflicts with another writer's (``retry_conflicts``). The caller must not hold
    an open transaction."""

    def attempt() -> T:
        with _write_memory(connection):
            connection.begin()
            try:
                result = body()
                connection.commit()
            except BaseException:
                rollback_open(connection)
                raise
        return result

    return retry_conflicts(attempt, wait_seconds)


@contextmanager
def _write_memory(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Within: a warehouse file's memory limit is ``WRITE_MEMORY_LIMIT``; after, ``FILE_MEMORY_LIMIT`` again, so the
    blocks the write left cached beyond it are let go. The limit is the process's database's, not the connection's:
    the steps of a process write one at a time. A DuckLake's in-memory database keeps DuckDB's default."""
    row = connection.execute("select path from duckdb_databases() where database_name = current_database()").fetchone()
    if not (row and row[0]):
        yield
        return
    connection.execute(f"set memory_limit = '{WRITE_MEMORY_LIMIT}'")
    try:
        yield
    finally:
        # what another cursor's open result holds cannot be let go (DuckDB refuses the lower limit, e.g. while a
        # 10M-row sort begun under the write's limit is being read): the higher limit stays until a write ends
        with suppress(duckdb.OutOfMemoryException):
            connection.execute(f"set memory_limit = '{FILE_MEMORY_LIMIT}'")


def is_lake_conflict(error: Exception) -> bool:
    """Whether ``error`` is a DuckLake commit that lost to another writer's (it is worth running again)."""
    text = str(error)
    return "DuckLake transaction" in text and "conflict" in text.lower()


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_table_if_missing(connection: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Create ``table`` (``schema.name``, its schema existing) with ``frame``'s columns and types, empty, unless it
    exists. On a DuckLake, when another writer creates it at the same moment, this one finds it made."""
    view = "__nightkeeper_columns"
    connection.register(view, frame.head(0).to_arrow())
    try:
        retry_conflicts(lambda: connection.execute(f"create table if not exists {table} as select * from {view}"))
    finally:
        connection.unregister(view)


def table_exists(connection: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists in the warehouse."""
    row = connection.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, table]
    ).fetchone()
    return row is not None and row[0] > 0


def read_rows(
    connection: duckdb.DuckDBPyConnection, schema: str, table: str, night: dt.date, keys: pl.DataFrame
) -> pl.DataFrame:
    """The rows of ``night``'s partition of ``schema.table`` that match a row of ``keys`` on all of ``keys``' columns
    (a semi join DuckDB runs, so the other rows never leave the warehouse), in no particular order."""
    view = "__nightkeeper_keys"
    using = ", ".join(f'"{column}"' for column in keys.columns)
    connection.register(view, keys.to_arrow())
    try:
        return connection.execute(
            f'select * from "{schema}"."{table}" semi join {view} using ({using}) where {PARTITION_COLUMN} = $night',
            {"night": night},
        ).pl()
    finally:
        connection.unregister(view)


def count_rows(connection: duckdb.DuckDBPyConnection, query: str, parameters: dict[str, Any]) -> int:
    """How many rows ``query`` (with its named ``parameters``) returns, counted by DuckDB."""
    row = connection.execute(f"select count(*) from ({query})", parameters).fetchone()
    return int(row[0]) if row else 0


def read_chunks(
    connection: duckdb.DuckDBPyConnection, query: str, parameters: dict[str, Any], chunk_rows: int
) -> Iterator[pl.DataFrame]:
    """The rows of ``query`` (with its named ``parameters``) streamed from the warehouse, ``chunk_rows`` rows a
    chunk, so no more than a chunk is held at once; at least one chunk (empty when there is no row). The query runs
    when the first chunk is asked for; read one stream at a time per connection."""
    reader = connection.execute(query, parameters).to_arrow_reader(chunk_rows)
    chunks = 0
    for batch in reader:
        chunks += 1
        yield pl.DataFrame(pl.from_arrow(batch))
        release_freed_memory()  # what the chunk's work freed (allocator)
    if not chunks:
        yield pl.DataFrame(pl.from_arrow(reader.schema.empty_table()))


def store_partition(
    connection: duckdb.DuckDBPyConnection, schema: str, table: str, night: dt.date, frame: pl.DataFrame
) -> None:
    """Replace ``night``'s partition of ``schema.table`` with ``frame``, in one transaction (all of it or nothing).

    Idempotent: storing a night again leaves exactly ``frame``'s rows for that night; other nights are untouched.
    The table (and schema) is created from ``frame``'s columns when missing, even when ``frame`` is empty, so an empty
    night is a real, empty partition. Columns are inserted by name; a column the table lacks is added to it (a
    contract that gained a feature: earlier nights hold NULL there), one it has and ``frame`` lacks is NULL for
    ``night``. ``frame`` must have a ``partition_date`` column
    whose every value is ``night`` (ValueError otherwise). The caller must not hold an open transaction. On a DuckLake
    the transaction is run again while another writer's commit to the same table conflicts with it. Both the
    Dagster IO manager and the backtest store through this function, so both produce identical tables.
    """
    _check_night(schema, table, night, frame)
    view = "__nightkeeper_partition"
    connection.register(view, frame.to_arrow())
    try:
        run_transaction(
            connection,
            lambda: _replace_rows(connection, schema, table, view, f"{PARTITION_COLUMN} = $night", {"night": night}),
        )
    finally:
        connection.unregister(view)


def store_shard(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    night: dt.date,
    shard: int,
    shards: int,
    tables: dict[str, pl.DataFrame],
) -> None:
    """Replace the rows of shard ``shard`` (of ``shards``) of ``night`` in each of ``tables`` (table name -> the
    shard's rows, ``partition_date`` all ``night``), in one transaction for all of them: all stored or none.

    Each frame is stored with ``SHARD_COLUMN`` = ``shard``; the rows replaced are the night's rows of this shard and
    those no shard of ``shards`` owns (stored whole, or under another shard count), so storing every shard again
    leaves each row once and a re-run of one shard replaces only its own rows. Otherwise as ``store_partition``
    (tables created, columns added, inserted by name; on a DuckLake, run again while a commit conflicts: shards of a
    night write the same tables at once there, each its own rows).
    """
    views = {}
    for table, frame in tables.items():
        _check_night(schema, table, night, frame)
        views[table] = f"__nightkeeper_shard_{table}"
        connection.register(views[table], frame.with_columns(pl.lit(shard, pl.Int32).alias(SHARD_COLUMN)).to_arrow())
    condition = (
        f"{PARTITION_COLUMN} = $night and ({SHARD_COLUMN} = $shard or {SHARD_COLUMN} is null "
        f"or {SHARD_COLUMN} >= $shards)"
    )

    def replace_shard() -> None:
        for table, view in views.items():
            _replace_rows(
                connection, schema, table, view, condition, {"night": night, "shard": shard, "shards": shards}
            )

    try:
        run_transaction(connection, replace_shard)
    finally:
        for view in views.values():
            connection.unregister(view)


def _check_night(schema: str, table: str, night: dt.date, frame: pl.DataFrame) -> None:
    if PARTITION_COLUMN not in frame.columns:
        raise ValueError(f"{schema}.{table}: the frame has no {PARTITION_COLUMN!r} column; found {frame.columns}")
    others = frame.filter(pl.col(PARTITION_COLUMN).ne_missing(night))[PARTITION_COLUMN].unique().to_list()
    if others:
        raise ValueError(
            f"{schema}.{table}: rows for night(s) {others} in the partition of {night}; expected only {night}"
        )


def _replace_rows(
    connection: duckdb.DuckDBPyConnection, schema: str, table: str, view: str, where: str, params: dict
) -> None:
    """Inside the caller's transaction: delete the rows of ``schema.table`` matching ``where`` and insert the rows of
    the registered ``view`` by name, creating the table (or adding its new columns) from the view's first."""
    name = f'"{schema}"."{table}"'
    _prepare_table(connection, schema, table, view)
    connection.execute(f"delete from {name} where {where}", params)
    connection.execute(f"insert into {name} by name select * from {view}")


def _prepare_table(connection: duckdb.DuckDBPyConnection, schema: str, table: str, view: str) -> None:
    """Inside the caller's transaction: create ``schema.table`` with the columns of the registered ``view`` when
    missing, or add the view's columns it lacks."""
    name = f'"{schema}"."{table}"'
    connection.execute(f'create schema if not exists "{schema}"')
    connection.execute(f"create table if not exists {name} as select * from {view} limit 0")
    stored = {row[0] for row in connection.execute(f"describe {name}").fetchall()}
    for column, column_type, *_ in connection.execute(f"describe {view}").fetchall():
        if column not in stored:  # the contract gained a column (or the night is now sharded): earlier rows are NULL
            connection.execute(f'alter table {name} add column "{column}" {column_type}')


@dataclass(frozen=True)
class RowBlock:
    """A run of a night's rows in row-key order, from row ``first_row`` of ``first_file`` to row ``last_row`` of
    ``last_file``, both included (``source_file``, then ``row_number``): the unit a night is read, computed and
    stored in, so working memory is a block's whatever the night's size."""

    first_file: str
    first_row: int
    last_file: str
    last_row: int


def row_blocks(
    connection: duckdb.DuckDBPyConnection, schema: str, table: str, night: dt.date, chunk_rows: int
) -> list[RowBlock]:
    """Blocks covering every row of ``night``'s partition of ``schema.table`` (by ``source_file`` and
    ``row_number``), in key order, each of at most ``chunk_rows`` rows: a file's rows are cut into runs of
    ``chunk_rows`` row numbers, and runs of small files are joined while they fit. Every row of another table of the
    night keyed alike (``source_file``, ``row_number``) within the same bounds falls in exactly one block too."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    files = connection.execute(
        f"""select source_file, min(row_number), max(row_number) from "{schema}"."{table}"
            where {PARTITION_COLUMN} = $night group by source_file order by source_file""",
        {"night": night},
    ).fetchall()
    runs = [
        (name, start, min(start + chunk_rows - 1, last))
        for name, first, last in files
        for start in range(first, last + 1, chunk_rows)
    ]
    blocks: list[RowBlock] = []
    rows = 0
    for name, start, end in runs:
        width = end - start + 1  # row numbers are contiguous within a file: at least the run's row count
        if blocks and rows + width <= chunk_rows:
            blocks[-1] = replace(blocks[-1], last_file=name, last_row=end)
            rows += width
        else:
            blocks.append(RowBlock(name, start, name, end))
            rows = width
    return blocks


def read_block(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    table: str,
    night: dt.date,
    block: RowBlock,
    columns: list[str] | None = None,
    order: list[str] | None = None,
) -> pl.DataFrame:
    """The rows of ``night``'s partition of ``schema.table`` in ``block`` (``columns`` of them, every column but
    ``SHARD_COLUMN`` when None), sorted by ``order`` (default ``source_file``, ``row_number``).

    A block within one file is read by its row-number range, which DuckDB checks against each stored row group's
    range and skips the groups outside it (the tables are stored in key order), so such a block costs about its own
    rows; a block of several (small) files is filtered row by row. The rows come back in stored order, sorted only
    when that is not already ``order`` (DuckDB would sort every column of the block)."""
    selected = ", ".join(f'"{column}"' for column in columns) if columns else f"* exclude ({SHARD_COLUMN})"
    if columns is None and SHARD_COLUMN not in {
        row[0] for row in connection.execute(f'describe "{schema}"."{table}"').fetchall()
    }:
        selected = "*"
    bounds = {"first_file": block.first_file, "first_row": block.first_row, "last_row": block.last_row}
    if block.first_file == block.last_file:
        within = "source_file = $first_file and row_number between $first_row and $last_row"
    else:
        bounds["last_file"] = block.last_file
        within = """source_file between $first_file and $last_file
              and (source_file <> $first_file or row_number >= $first_row)
              and (source_file <> $last_file or row_number <= $last_row)"""
    rows = connection.execute(
        f'select {selected} from "{schema}"."{table}" where {PARTITION_COLUMN} = $night and {within}',
        {"night": night, **bounds},
    ).pl()
    ordered = order or ["source_file", "row_number"]
    rows = rows if in_order(rows, ordered) else rows.sort(ordered, nulls_last=True)
    release_freed_memory()  # what the query and the blocks before this one freed (allocator)
    return rows


def in_order(frame: pl.DataFrame, columns: list[str]) -> bool:
    """Whether ``frame``'s rows are sorted by ``columns`` (ascending, lexicographically); False when a compared value
    is null (the caller sorts, nulls last, as SQL's ``order by`` does)."""
    if frame.height < 2:
        return True
    ordered = pl.lit(True)
    for column in reversed(columns):  # (a, b) <= (a', b'): a < a', or a == a' and b <= b'
        now, before = pl.col(column), pl.col(column).shift(1)
        ordered = (before < now) | ((before == now) & ordered)
    return bool(frame.select(ordered.slice(1).fill_null(False).all()).item())


def store_chunks(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    night: dt.date,
    empty: dict[str, pl.DataFrame],
    chunks: Callable[[], Iterator[dict[str, pl.DataFrame]]],
) -> None:
    """Replace ``night``'s partition of each table of ``empty`` (table name -> an empty frame of its columns) with
    the union of the frames ``chunks()`` yields for it (table name -> rows, ``partition_date`` all ``night``), in
    the order yielded: all of it or nothing, as ``store_partition`` does for one frame (tables created from
    ``empty``, columns added and inserted by name). Only a chunk is held at a time; ``chunks`` may read the
    warehouse through ``connection`` between chunks.

    The chunks are first spooled to Parquet files (``spool_folder``), then one transaction replaces the night's
    partitions with one insert per table from its files. Why not insert each chunk into the table in that
    transaction: DuckDB holds a transaction's rows appended statement by statement in memory until it commits
    (memory would grow with the night), whereas one insert from Parquet files is written to the database file as it
    goes; and the files cost less than a staging table (written, committed and copied again). A failure before that
    transaction leaves the stored tables as they were. On a DuckLake that transaction is run again while its commit
    conflicts with another writer's. An error raised by ``chunks()`` is raised."""
    with tempfile.TemporaryDirectory(prefix="nightkeeper-chunks-", dir=spool_folder(connection)) as folder:
        files: dict[str, list[str]] = {table: [] for table in empty}
        for chunk in chunks():
            for table, frame in chunk.items():
                if table not in empty:
                    raise ValueError(f"{schema}.{table}: a chunk of a table not stored here ({sorted(empty)})")
                _check_night(schema, table, night, frame)
                if frame.height:
                    files[table].append(str(Path(folder) / f"{table}-{len(files[table]):06d}.parquet"))
                    # one row group a file: DuckDB inserts a row group of the file at a time, and the partial row
                    # groups of many small ones would be merged again (rewritten) by its next checkpoint
                    frame.write_parquet(
                        files[table][-1], compression="lz4", statistics=False, row_group_size=frame.height
                    )
            release_freed_memory()  # what the chunk's work freed: else the process grows with the night's blocks

        def replace_night() -> None:
            for table, frame in empty.items():
                view = f"__nightkeeper_chunk_{table}"
                connection.register(view, frame.head(0).to_arrow())
                try:
                    _prepare_table(connection, schema, table, view)
                finally:
                    connection.unregister(view)
                target = f'"{schema}"."{table}"'
                connection.execute(f"delete from {target} where {PARTITION_COLUMN} = $night", {"night": night})
                if files[table]:
                    # the files in the order written: the table keeps the chunks' order (DuckDB preserves it)
                    connection.execute(
                        f"insert into {target} by name select * from read_parquet($files)", {"files": files[table]}
                    )

        run_transaction(connection, replace_night)


def spool_folder(connection: duckdb.DuckDBPyConnection) -> Path | None:
    """Where ``store_chunks`` spools a night's chunks: DuckDB's own folder for spilling to disk (``<file>.tmp`` beside
    a warehouse file), created if needed; None (the system's temporary folder) when that is not an absolute path
    (an in-memory database, such as the one a DuckLake is attached to)."""
    row = connection.execute("select current_setting('temp_directory')").fetchone()
    folder = Path(row[0]) if row and row[0] else None
    if folder is None or not folder.is_absolute():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return folder
