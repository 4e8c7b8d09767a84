"""Shard assignment: a stable hash of the entity id decides which part of a night a row belongs to.

``entity_hash(ids)`` is a 64-bit number per id: MurmurHash3's 64-bit finalizer (``fmix64``) applied to the CRC-32
of the id's UTF-8 text (a null id hashes as the empty text). Both steps are fixed arithmetic (CRC-32 as zlib
computes it, then multiplications and shifts modulo 2**64), so the value is the same in every process, on every
machine and with every Python, numpy or polars version; Python's ``hash()`` (salted per process) and polars' own
hash (not promised stable across versions) are not used for that reason.

``shard_of(ids, shards)`` = ``entity_hash(ids) % shards``: every row of one id lands in the same shard, night after
night, so a per-shard check of duplicate ids is exact and a customer's history stays in one shard. The finalizer
matters: canary routing (``nightkeeper.routing``) buckets ids by CRC-32 modulo 100, and CRC-32 modulo a divisor of
100 would put a whole canary bucket in one shard; mixed first, the shards cut across the canary buckets evenly.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from nightkeeper.routing import entity_crc32

ENTITY_COLUMN = "entity_id"  # the entity id column of every nightly frame (the contract's id column, renamed)
_MIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)


def entity_hash(entity_ids: pl.Series) -> pl.Series:
    """A stable 64-bit hash per id (UInt64, named ``entity_hash``): fmix64(CRC-32 of its UTF-8 text), see above."""
    crc = entity_crc32(entity_ids)
    with np.errstate(over="ignore"):  # multiplication modulo 2**64 is the point
        mixed = crc ^ (crc >> _SHIFT)
        mixed = mixed * _MIX_1
        mixed ^= mixed >> _SHIFT
        mixed = mixed * _MIX_2
        mixed ^= mixed >> _SHIFT
    return pl.Series("entity_hash", mixed, dtype=pl.UInt64)


def shard_of(entity_ids: pl.Series, shards: int) -> pl.Series:
    """The shard in [0, ``shards``) of each id (Int32, named ``shard``): ``entity_hash % shards``."""
    _check_shards(shards)
    return (entity_hash(entity_ids) % shards).cast(pl.Int32).alias("shard")


def shard_rows(frame: pl.DataFrame, shard: int, shards: int, id_column: str = ENTITY_COLUMN) -> pl.DataFrame:
    """The rows of ``frame`` whose ``id_column`` falls in ``shard`` of ``shards``, in their order."""
    _check_shards(shards)
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be in [0, {shards}), got {shard}")
    if id_column not in frame.columns:
        raise ValueError(f"frame lacks the entity id column {id_column!r}; it has {frame.columns}")
    return frame.filter(shard_of(frame[id_column], shards) == shard)


def split_by_shard(frame: pl.DataFrame, shards: int, id_column: str = ENTITY_COLUMN) -> list[pl.DataFrame]:
    """``frame`` cut into ``shards`` parts (part k = ``shard_rows(frame, k, shards)``); together they hold every row
    exactly once."""
    _check_shards(shards)
    if id_column not in frame.columns:
        raise ValueError(f"frame lacks the entity id column {id_column!r}; it has {frame.columns}")
    assigned = frame.with_columns(shard_of(frame[id_column], shards).alias("__shard"))
    return [assigned.filter(pl.col("__shard") == k).drop("__shard") for k in range(shards)]


def _check_shards(shards: int) -> None:
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
