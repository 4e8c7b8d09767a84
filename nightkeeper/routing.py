"""Canary routing: a stable hash of the entity id decides who the challenger serves, night after night."""

from __future__ import annotations

import zlib

import polars as pl

BUCKETS = 100


def buckets(entity_ids: pl.Series) -> pl.Series:
    """A bucket in [0, 100) per id: CRC-32 of its UTF-8 text, so the same on every night, machine and library version.

    (polars' own hash is not promised to be stable across versions, and a customer must stay on one model.)
    """
    values = [zlib.crc32(("" if v is None else str(v)).encode()) % BUCKETS for v in entity_ids.to_list()]
    return pl.Series("bucket", values, dtype=pl.Int32)


def in_canary(entity_ids: pl.Series, percent: int) -> pl.Series:
    """True for the ids whose bucket is below ``percent`` (0 → none, 100 → all)."""
    return (buckets(entity_ids) < percent).alias("in_canary")
