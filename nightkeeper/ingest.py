"""Read one night's landed files into the raw batch: every row kept, typed per the contract, whatever the file's schema.

A raw row is typed and columnar: ``(partition_date, source_file, row_number, entity_id)``, then each of the
contract's columns (``event_time``, the features) typed per the contract (``nightkeeper.contract_types``), then
``record``. A value is typed from its text, stripped, empty text as null, so a CSV (read as text) and a Parquet file
(its values cast to text) type alike. Typing loses nothing for a row whose every contract value parses: its
``record`` is null. A row that fails typing — a value present but not of the contract's type (``12k`` for a number, an
unknown category level, a nested value), or its file lacks a required column — keeps what was received in
``record``: a JSON object of the file's columns with every value as text (or null), so quarantine can show what was
found. A night whose columns are retyped, extra or missing therefore lands in the same table as every other night;
judging the values is validation's job. Columns the contract does not name are kept only in a failed row's record.

``source_file`` is the file's path relative to the project root (posix separators) when a root is given, so a
copied or moved project's tables name its own files.

Hostile or broken input never fails the night:

* Which files: those under the landing folder that match ``source.pattern`` (``{date}`` = YYYY-MM-DD), compared
  case-insensitively (``x.PARQUET`` matches ``*.parquet``), with a ``.parquet`` or ``.csv`` suffix. A file that
  resolves outside the landing folder (a symlink to ``/etc/passwd``) is refused, never opened. Files of the night
  that look like data but are not read (a ``.csv`` beside ``*.parquet``, ``.csv.gz``) are reported, not silently
  skipped: ``RawBatch.skipped`` lists every refused or unread file with the reason.
* An unreadable file (truncated, zero-byte, not UTF-8, ragged CSV rows, a repeated CSV header) is one raw row:
  ``row_number = FILE_ROW`` (0; data rows count from 1), no entity id, no values and ``record = {"error": <why>}``.
  Validation quarantines that row with rule ``unreadable_file`` and the reason, so the night's other files are
  answered and row conservation (every raw row, one outcome) still holds.
* A nested (list or struct) column is received as its JSON text, so its rows fail typing and the contract's type
  rule quarantines those values naming the column, and the file's column type (e.g. ``List(Int64)``) shows in the
  schema check.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import polars as pl

from nightkeeper.config import Contract
from nightkeeper.contract_types import (
    clean_text,
    parse_column,
    parse_native,
    text_column,
    typed_columns,
    valid_schema,
)

RECORD = "record"
"""The raw column holding what was received, as JSON text, for the rows that failed typing (null otherwise)."""
TYPING_SLICE_ROWS = 100_000
"""Rows of a file typed at a time: bounds the text intermediates of a large file."""

FILE_ROW = 0
"""``row_number`` of the one raw row that stands for an unreadable file (data rows count from 1)."""
FILE_ERROR_KEY = "error"
"""The key of an unreadable file's raw ``record`` holding why it could not be read."""
READ_SUFFIXES = (".parquet", ".csv")
# Names that look like a data drop; such a file of the night that is not read is reported, not skipped silently.
DATA_LIKE_SUFFIXES = (
    ".parquet",
    ".csv",
    ".csv.gz",
    ".parquet.gz",
    ".pq",
    ".tsv",
    ".tsv.gz",
    ".json",
    ".jsonl",
    ".gz",
    ".zip",
    ".xlsx",
    ".xls",
)


@dataclass(frozen=True)
class LandedFile:
    """One file read for a night: its ``source_file``, how many rows it had and its column types as found.

    ``error``: why the file could not be read (then ``rows`` is 0, ``columns`` is empty and the file stands in the
    raw batch as one ``FILE_ROW`` row); None for a file that was read.
    """

    path: str
    rows: int
    columns: dict[str, str]
    error: str | None = None


@dataclass(frozen=True)
class SkippedFile:
    """A file of the night that was not read, and why (refused link, not matching the pattern, unread format)."""

    path: str
    reason: str


@dataclass(frozen=True)
class Landing:
    """What the landing folder holds for a night: the files to read, sorted, and the data-like files not read."""

    files: list[Path]
    skipped: list[SkippedFile] = field(default_factory=list)


@dataclass(frozen=True)
class RawBatch:
    frame: pl.DataFrame
    files: list[LandedFile]
    skipped: list[SkippedFile] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """One sentence per file problem of the night: unreadable files, nested columns, files not read."""
        return [
            *(f"{f.path}: unreadable, its content is quarantined: {f.error}" for f in self.files if f.error),
            *self.nested,
            *(f"{s.path}: not read: {s.reason}" for s in self.skipped),
        ]


def scan_landing(landing: Path, pattern: str, night: dt.date) -> Landing:
    """The files for ``night`` under ``landing`` matching ``pattern`` (``{date}`` as YYYY-MM-DD), and those not read.

    Matching is case-insensitive, part by part (``*`` stays within a folder, ``**`` spans folders). A matching file
    is read when its suffix is .parquet or .csv (any case) and it resolves inside ``landing``. Reported in
    ``skipped``: matching files that resolve outside ``landing`` (links), matching files of another format, and
    data-like files (DATA_LIKE_SUFFIXES) whose path names the night but that the pattern does not match.
    """
    glob = pattern.format(date=night.isoformat())
    wanted = [part.lower() for part in PurePosixPath(glob).parts]
    if not landing.is_dir() or PurePosixPath(glob).is_absolute() or ".." in wanted:
        return Landing([])
    fixed = 0
    while fixed < len(wanted) - 1 and not any(c in wanted[fixed] for c in "*?["):
        fixed += 1
    base = landing.joinpath(*PurePosixPath(glob).parts[:fixed])
    depth = None if "**" in wanted else len(wanted) - fixed
    inside = landing.resolve()
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    for path in _walk(base, depth):
        relative = path.relative_to(landing).as_posix()
        name = path.name.lower()
        if _matches([part.lower() for part in PurePosixPath(relative).parts], wanted):
            if not path.resolve().is_relative_to(inside):
                skipped.append(SkippedFile(relative, f"resolves outside the landing folder {landing}; refused"))
            elif name.endswith(READ_SUFFIXES):
                files.append(path)
            elif name.endswith(DATA_LIKE_SUFFIXES):
                skipped.append(
                    SkippedFile(relative, f"matches {pattern!r} but only {', '.join(READ_SUFFIXES)} files are read")
                )
        elif name.endswith(DATA_LIKE_SUFFIXES) and night.isoformat() in relative:
            skipped.append(
                SkippedFile(relative, f"looks like data for {night} but does not match source.pattern {pattern!r}")
            )
    return Landing(sorted(files), sorted(skipped, key=lambda s: s.path))


def landed_files(landing: Path, pattern: str, night: dt.date) -> list[Path]:
    """The files read for ``night`` (see ``scan_landing``), sorted."""
    return scan_landing(landing, pattern, night).files


def raw_schema(contract: Contract, text_columns: tuple[str, ...] = ()) -> pl.Schema:
    """The raw batch's columns for ``contract``: the typed row (``contract_types.valid_schema``), the received text
    of each of ``text_columns`` (``__text_<column>``, for readers needing a column the contract does not type), then
    RECORD."""
    return pl.Schema(
        {
            **valid_schema(contract),
            **{text_column(name): pl.String() for name in dict.fromkeys(text_columns)},
            RECORD: pl.String(),
        }
    )


def read_night(landing: Path, pattern: str, night: dt.date, contract: Contract, root: Path | None = None) -> RawBatch:
    """Scan the landing folder for ``night`` and read what it holds; ``skipped`` carries the files not read.

    Every path (``source_file``, ``files``, ``skipped``) is relative to ``root`` when given.
    """
    found = scan_landing(landing, pattern, night)
    batch = read_raw_batch(found.files, night, contract, root)
    return RawBatch(batch.frame, batch.files, skipped_files(landing, found, root), batch.nested)


def skipped_files(landing: Path, found: Landing, root: Path | None) -> list[SkippedFile]:
    """The files of ``found`` not read, named relative to ``root`` when given."""
    return [SkippedFile(_source_name(landing / s.path, root), s.reason) for s in found.skipped]


def read_raw_batch(
    paths: list[Path],
    night: dt.date,
    contract: Contract,
    root: Path | None = None,
    text_columns: tuple[str, ...] = (),
    slice_rows: int = TYPING_SLICE_ROWS,
) -> RawBatch:
    """Read ``paths`` into one raw frame of ``raw_schema(contract, text_columns)``, typed per ``contract`` (see the
    module docstring); row_number counts from 1 within each file, rows in file order.

    ``source_file`` is each path relative to ``root`` when given (and the file is under it), else the path as
    given. Never raises for a file's content: an unreadable file becomes one ``FILE_ROW`` row (see the module
    docstring) and its LandedFile carries the error. A file is read and typed ``slice_rows`` rows at a time
    (``open_raw``); the result does not depend on it.
    """
    schema = raw_schema(contract, text_columns)
    frames: list[pl.DataFrame] = []
    files: list[LandedFile] = []
    nested: list[str] = []
    for path in paths:
        opened = open_raw(path, night, contract, root, text_columns, slice_rows)
        try:
            parts = list(opened.slices)
        except ValueError as exc:  # unreadable part-way through: the whole file is one unreadable row
            opened = open_raw(path, night, contract, root, text_columns, slice_rows, error=str(exc))
            parts = list(opened.slices)
        files.append(opened.landed)
        nested += opened.nested
        frames += parts
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    return RawBatch(frame, files, nested=nested)


@dataclass(frozen=True)
class RawFile:
    """One landed file opened for reading: what was found (``landed``), a warning per nested column, and its raw
    rows (``raw_schema``), typed a slice at a time as ``slices`` is iterated (each slice read from the file only
    then). Iterating raises ValueError when the file turns out unreadable part-way through (its rows read so far
    must then be dropped and the file opened again with that error: one unreadable row)."""

    landed: LandedFile
    nested: list[str]
    slices: Iterator[pl.DataFrame]


def open_raw(
    path: Path,
    night: dt.date,
    contract: Contract,
    root: Path | None = None,
    text_columns: tuple[str, ...] = (),
    slice_rows: int = TYPING_SLICE_ROWS,
    error: str | None = None,
) -> RawFile:
    """Open ``path`` for reading into raw rows (``RawFile``), ``slice_rows`` rows a slice. A file that cannot be
    opened, or that is known unreadable (``error``: why), is one ``FILE_ROW`` row carrying the reason. A file is
    read a slice at a time; a CSV file (text, which cannot be cut without reading it) is first streamed into a
    temporary Parquet file of its text, removed once its slices are read."""
    source = _source_name(path, root)
    schema = raw_schema(contract, text_columns)
    try:
        if error is not None:
            raise ValueError(error)
        columns, rows, tables = _open_table(path, slice_rows)
    except ValueError as exc:
        return RawFile(
            LandedFile(source, 0, {}, str(exc)), [], iter([_unreadable_row(night, source, str(exc), schema)])
        )
    nested = [
        f"{source}: column {name!r} holds nested values ({dtype}); kept as JSON text, so the contract's rules "
        "quarantine them"
        for name, dtype in columns.items()
        if dtype.is_nested()
    ]

    def typed() -> Iterator[pl.DataFrame]:
        for offset, table in tables:
            rows_typed = type_rows(table, offset + 1, contract, text_columns)
            yield (
                rows_typed.with_columns(
                    pl.lit(night, dtype=pl.Date).alias("partition_date"), pl.lit(source).alias("source_file")
                )
                .select(schema.names())
                .cast(schema)
            )

    landed = LandedFile(source, rows, {name: str(dtype) for name, dtype in columns.items()})
    return RawFile(landed, nested, typed())


def type_rows(
    table: pl.DataFrame, first_row: int, contract: Contract, text_columns: tuple[str, ...] = ()
) -> pl.DataFrame:
    """``table`` (rows of one file, as read) typed per ``contract``: ``row_number`` from ``first_row``, ``entity_id``
    as text, each typed column, each of ``text_columns`` as received text, and RECORD — the row's columns as JSON text
    for a row that failed typing, null for every other row. Rows stay in the file's order.

    A number or boolean the file already holds natively is typed without a text round trip (``parse_native``); every
    other value is typed from its text (``parse_column``); both give the same value.
    """
    typed = typed_columns(contract)
    native = {
        name: expr
        for name, source in typed.items()
        if source in table.columns and (expr := parse_native(name, contract, table.schema[source])) is not None
    }
    from_text = {name: source for name, source in typed.items() if name not in native}
    texts = [*dict.fromkeys([*from_text.values(), *text_columns])]
    absent_required = [name for name, spec in contract.features.items() if spec.required and name not in table.columns]

    def text_of(name: str) -> pl.Expr:
        if name not in table.columns:
            return pl.lit(None, dtype=pl.String)
        return _as_text(name, table.schema[name])

    work = table.select(
        pl.int_range(first_row, first_row + pl.len(), dtype=pl.Int64).alias("row_number"),
        text_of(contract.entity_id).alias("entity_id"),
        *(clean_text(text_of(name)).alias(text_column(name)) for name in texts),
        *(expr.alias(name) for name, expr in native.items()),
        *(
            (pl.col(typed[name]).is_not_null() & expr.is_null()).alias(f"__untyped_{name}")
            for name, expr in native.items()
        ),
    ).with_columns(parse_column(name, contract).alias(name) for name in from_text)
    untyped = [
        *(pl.col(f"__untyped_{name}") for name in native),
        *(pl.col(text_column(source)).is_not_null() & pl.col(name).is_null() for name, source in from_text.items()),
    ]
    failed = work.select(pl.lit(bool(absent_required)) | pl.any_horizontal(untyped)).to_series()
    keep = ["row_number", "entity_id", *typed, *(text_column(name) for name in dict.fromkeys(text_columns))]
    if not failed.any():
        return work.select(*keep, pl.lit(None, dtype=pl.String).alias(RECORD))
    received = table.filter(failed).select(_as_text(name, dtype) for name, dtype in table.schema.items())
    broken = (
        work.filter(failed)
        .select(keep)
        .with_columns(received.select(pl.struct(received.columns).struct.json_encode()).to_series().alias(RECORD))
    )
    clean = work.filter(~failed).select(*keep, pl.lit(None, dtype=pl.String).alias(RECORD))
    return pl.concat([clean, broken]).sort("row_number")


def file_errors(raw: pl.DataFrame) -> pl.DataFrame:
    """The ``FILE_ROW`` rows of a raw batch with their ``error`` text (why the file could not be read)."""
    return raw.filter(pl.col("row_number") == FILE_ROW).with_columns(
        pl.col(RECORD).str.json_path_match(f"$.{FILE_ERROR_KEY}").alias(FILE_ERROR_KEY)
    )


def record_columns(raw: pl.DataFrame) -> dict[str, set[str]]:
    """The column names received in each file that has rows which failed typing (every record of a file has the
    same keys). Files none of whose rows failed typing, and unreadable files (their ``FILE_ROW`` row), are left out.
    """
    firsts = (
        raw.filter((pl.col("row_number") != FILE_ROW) & pl.col(RECORD).is_not_null())
        .group_by("source_file")
        .agg(pl.col(RECORD).first())
    )
    return {row["source_file"]: set(json.loads(row[RECORD])) for row in firsts.iter_rows(named=True)}


def _source_name(path: Path, root: Path | None) -> str:
    if root is not None:
        absolute, anchor = Path(os.path.abspath(path)), Path(os.path.abspath(root))
        if absolute.is_relative_to(anchor):
            return absolute.relative_to(anchor).as_posix()
    return str(path)


def _unreadable_row(night: dt.date, source: str, error: str, schema: pl.Schema) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "partition_date": night,
                "source_file": source,
                "row_number": FILE_ROW,
                RECORD: json.dumps({FILE_ERROR_KEY: error}),
            }
        ],
        schema=schema,
    )


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """Column ``name`` as text; a nested value (list, struct, array) as its JSON text."""
    if not dtype.is_nested():
        return pl.col(name).cast(pl.String)
    wrapped = pl.struct(pl.col(name).alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
    return pl.when(pl.col(name).is_not_null()).then(wrapped).alias(name)


def _open_table(path: Path, slice_rows: int) -> tuple[pl.Schema, int, Iterator[tuple[int, pl.DataFrame]]]:
    """The file's column types, its row count and its rows ``slice_rows`` at a time (with each slice's offset);
    ValueError saying why it cannot be read, on opening or while reading a slice (the message never repeats the
    file's content)."""
    suffix = path.suffix.lower().lstrip(".") or "data"
    with _read_errors(suffix):
        if path.stat().st_size == 0:
            raise ValueError("the file is empty (0 bytes)")
        spooled = None
        if path.name.lower().endswith(".csv"):
            _check_csv_header(path)
            # Text cannot be cut into rows without reading it: the CSV is streamed once into a Parquet file of its
            # text (bounded memory; a ragged row or bad UTF-8 fails here, before any slice), read a slice at a time.
            spooled = tempfile.TemporaryDirectory(prefix="nightkeeper-csv-")
            text = Path(spooled.name) / "text.parquet"
            try:
                pl.scan_csv(path, infer_schema=False).sink_parquet(text, compression="lz4", statistics=False)
            except BaseException:
                spooled.cleanup()
                raise
            path = text
        lazy = pl.scan_parquet(path)
        columns = lazy.collect_schema()
        rows = int(lazy.select(pl.len()).collect().item())

    def parquet_slices() -> Iterator[tuple[int, pl.DataFrame]]:
        try:
            for offset in range(0, rows, slice_rows):
                with _read_errors(suffix):
                    yield offset, lazy.slice(offset, slice_rows).collect()
        finally:
            if spooled is not None:
                spooled.cleanup()

    return columns, rows, parquet_slices()


@contextmanager
def _read_errors(suffix: str) -> Iterator[None]:
    """Any error reading the file as a ValueError in one line: polars/OS raise format-specific errors and the
    operator needs the reason."""
    try:
        yield
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot be read as {suffix}: {type(exc).__name__}: {_first_line(exc)}") from exc


def _check_csv_header(path: Path) -> None:
    """ValueError when the CSV's first line is not UTF-8 or names a column twice (polars would rename it silently)."""
    with path.open("rb") as handle:
        first = handle.readline(1 << 20)
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text ({exc.reason} at byte {exc.start} of the header)") from None
    header = next(csv.reader(io.StringIO(text)), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(f"its CSV header repeats column(s) {repeated}; each column must be named once")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _matches(parts: list[str], wanted: list[str]) -> bool:
    """Whether path ``parts`` match glob ``wanted`` part by part (``**``: any number of folders)."""
    if not wanted:
        return not parts
    if wanted[0] == "**":
        return any(_matches(parts[i:], wanted[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], wanted[0]) and _matches(parts[1:], wanted[1:])


def _walk(folder: Path, depth: int | None) -> list[Path]:
    """Files under ``folder`` down to ``depth`` levels (None: all), links included as found, each real folder once."""
    found: list[Path] = []
    seen: set[Path] = set()
    stack = [(folder, 1)]
    while stack:
        current, level = stack.pop()
        try:
            real = current.resolve()
            if real in seen or not current.is_dir():
                continue
            seen.add(real)
            entries = list(current.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir():
                if depth is None or level < depth:
                    stack.append((entry, level + 1))
            elif entry.is_file() or entry.is_symlink():
                found.append(entry)
    return found
