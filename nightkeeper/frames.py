"""Small helpers for frames with a fixed schema, and for the scalars polars aggregates return."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal

import polars as pl


def conform(frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """``frame`` with exactly the columns of ``schema``, in its order and types (raises if a column is absent)."""
    return frame.select(list(schema)).cast(pl.Schema(schema))


def number(value: object) -> float:
    """A scalar from polars (``Series.mean()``, ``.max()``, ``DataFrame.item()``, a row's field) that must be a
    number, as a float. Raises TypeError naming what was found instead (a null: the aggregate of no rows)."""
    if not isinstance(value, int | float | Decimal):
        raise TypeError(f"expected a number, found {value!r}")
    return float(value)


def day(value: object) -> dt.date:
    """A scalar from polars that must be a date (a datetime counts as its date). Raises TypeError otherwise."""
    if isinstance(value, dt.datetime):
        return value.date()
    if not isinstance(value, dt.date):
        raise TypeError(f"expected a date, found {value!r}")
    return value
