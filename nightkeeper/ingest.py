"""Read one night's landed files into the raw batch: every row kept as text, whatever the file's schema.

A raw row is ``(partition_date, source_file, row_number, entity_id, record)`` where ``record`` is a JSON object of
the file's columns with every value as text (or null). This fixed shape lets a night whose columns are retyped,
extra or missing land in the same table as every other night; interpreting the text is validation's job.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

RAW_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "entity_id": pl.String(),
    "record": pl.String(),
}


@dataclass(frozen=True)
class LandedFile:
    """One file read for a night: where it was, how many rows it had and its column types as found."""

    path: str
    rows: int
    columns: dict[str, str]


@dataclass(frozen=True)
class RawBatch:
    frame: pl.DataFrame
    files: list[LandedFile]


def landed_files(landing: Path, pattern: str, night: dt.date) -> list[Path]:
    """The files for ``night`` under ``landing`` matching ``pattern`` (with ``{date}`` as YYYY-MM-DD), sorted."""
    glob = pattern.format(date=night.isoformat())
    return sorted(path for path in landing.glob(glob) if path.is_file() and path.suffix in (".parquet", ".csv"))


def read_raw_batch(paths: list[Path], night: dt.date, entity_id: str) -> RawBatch:
    """Read ``paths`` into one raw frame of RAW_SCHEMA; row_number counts from 1 within each file.

    Raises ValueError naming the file when a file cannot be read at all (a corrupt file is an operator's
    problem, not a row-level one).
    """
    frames: list[pl.DataFrame] = []
    files: list[LandedFile] = []
    for path in paths:
        table = _read_file(path)
        files.append(LandedFile(str(path), table.height, {name: str(dtype) for name, dtype in table.schema.items()}))
        if table.height == 0:
            continue
        as_text = table.select(pl.col(name).cast(pl.String) for name in table.columns)
        id_column = pl.col(entity_id) if entity_id in as_text.columns else pl.lit(None, dtype=pl.String)
        frames.append(
            as_text.select(
                pl.lit(night, dtype=pl.Date).alias("partition_date"),
                pl.lit(str(path)).alias("source_file"),
                pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row_number"),
                id_column.alias("entity_id"),
                pl.struct(as_text.columns).struct.json_encode().alias("record"),
            )
        )
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=RAW_SCHEMA)
    return RawBatch(frame.cast(RAW_SCHEMA), files)


def _read_file(path: Path) -> pl.DataFrame:
    try:
        if path.suffix == ".csv":
            return pl.read_csv(path, infer_schema=False)
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises format-specific errors; the operator needs the file name
        raise ValueError(f"cannot read landed file {path}: {exc}") from exc


def record_columns(raw: pl.DataFrame) -> dict[str, set[str]]:
    """The column names present in each source file's records (every record of a file has the same keys)."""
    firsts = raw.group_by("source_file").agg(pl.col("record").first())
    return {row["source_file"]: set(json.loads(row["record"])) for row in firsts.iter_rows(named=True)}
