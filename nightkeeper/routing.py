"""Canary routing: a stable hash of the entity id decides who the challenger serves, night after night."""

from __future__ import annotations

import zlib

import numpy as np
import polars as pl

BUCKETS = 100


def entity_crc32(entity_ids: pl.Series) -> np.ndarray:
    """CRC-32 of each id's UTF-8 text (a null id as the empty text), as uint64: the same on every night, machine and
    library version (polars' own hash is not promised stable across versions, and a customer must stay on one
    model). Canary buckets and shards (``nightkeeper.sharding``) both start from it."""
    return np.fromiter(
        (zlib.crc32(("" if v is None else str(v)).encode()) for v in entity_ids.to_list()),
        dtype=np.uint64,
        count=entity_ids.len(),
    )


def buckets(entity_ids: pl.Series) -> pl.Series:
    """A bucket in [0, 100) per id: its ``entity_crc32`` modulo 100."""
    return pl.Series("bucket", entity_crc32(entity_ids) % BUCKETS, dtype=pl.Int32)


def in_canary(entity_ids: pl.Series, percent: int) -> pl.Series:
    """True for the ids whose bucket is below ``percent`` (0 → none, 100 → all)."""
    return (buckets(entity_ids) < percent).alias("in_canary")
