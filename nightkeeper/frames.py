"""Small helpers for frames with a fixed schema."""

from __future__ import annotations

import polars as pl


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """``frame`` with exactly the columns of ``schema``, in its order and types (raises if a column is absent)."""
    return frame.select(list(schema)).cast(schema)
