"""Shard assignment: `scale.shards` in the config, and a stable hash of the entity id that puts every row of an id
in the same shard on every night, process, machine and library version."""

from __future__ import annotations

import copy
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from nightkeeper.config import ConfigError, parse_config
from nightkeeper.routing import buckets
from nightkeeper.sharding import entity_hash, shard_of, shard_rows, split_by_shard

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
SHIPPED: dict[str, Any] = yaml.safe_load(CONFIG_PATH.read_text())
MASK = (1 << 64) - 1


def fmix64_of_crc32(text: str) -> int:
    """The documented hash in plain Python integers: MurmurHash3's fmix64 of the CRC-32 of the UTF-8 text."""
    k = zlib.crc32(text.encode())
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & MASK
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & MASK
    return k ^ (k >> 33)


@pytest.fixture(scope="module")
def ids() -> pl.Series:
    """100 000 ids shaped like the simulator's application ids."""
    return ("A20260101-" + pl.int_range(100_000, eager=True).cast(pl.String).str.zfill(6)).alias("entity_id")


# ------------------------------------------------------------------------------------------------------- config


def test_scale_shards_defaults_to_one_night_whole() -> None:
    raw = copy.deepcopy(SHIPPED)
    del raw["scale"]

    assert parse_config(raw, root=CONFIG_PATH.parent).scale.shards == 1


def test_scale_shards_reads_the_configured_count() -> None:
    raw = copy.deepcopy(SHIPPED)
    raw["scale"] = {"shards": 4}

    assert parse_config(raw, root=CONFIG_PATH.parent).scale.shards == 4


@pytest.mark.parametrize(("value", "expected"), [(0, "greater than or equal to 1"), (2.5, "valid integer")])
def test_a_bad_shard_count_names_the_field_and_the_value(value: object, expected: str) -> None:
    raw = copy.deepcopy(SHIPPED)
    raw["scale"] = {"shards": value}

    with pytest.raises(ConfigError) as caught:
        parse_config(raw, root=CONFIG_PATH.parent, source="nightkeeper.yaml")

    assert f"scale.shards: found {value!r}" in str(caught.value) and expected in str(caught.value)


# ---------------------------------------------------------------------------------------------------- the hash


def test_the_hash_is_fmix64_of_the_crc32_of_the_id(ids: pl.Series) -> None:
    sample = ids.head(2_000)

    assert entity_hash(sample).to_list() == [fmix64_of_crc32(v) for v in sample.to_list()]


def test_a_null_id_hashes_as_the_empty_text() -> None:
    assert entity_hash(pl.Series([None, ""], dtype=pl.String)).to_list() == [fmix64_of_crc32("")] * 2


def test_shards_are_the_hash_modulo_the_count(ids: pl.Series) -> None:
    sample = ids.head(2_000)

    assert shard_of(sample, 7).to_list() == [fmix64_of_crc32(v) % 7 for v in sample.to_list()]
    assert shard_of(sample, 7).dtype == pl.Int32


def test_another_process_with_another_hash_seed_assigns_the_same_shards(ids: pl.Series) -> None:
    sample = ids.head(1_000)
    program = (
        "import sys, polars as pl; from nightkeeper.sharding import shard_of; "
        "print(','.join(map(str, shard_of(pl.Series(sys.stdin.read().split()), 5).to_list())))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", program],
        input="\n".join(sample.to_list()),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout.strip()

    assert [int(v) for v in shown.split(",")] == shard_of(sample, 5).to_list()


def test_an_id_keeps_its_shard_whatever_the_other_ids_and_their_order(ids: pl.Series) -> None:
    alone = shard_of(pl.Series(["A20260101-000042"]), 8).item()
    shuffled = ids.sample(fraction=1.0, shuffle=True, seed=3)

    assert shard_of(shuffled, 8).filter(shuffled == "A20260101-000042").item() == alone


def test_shards_hold_about_equal_shares_of_the_ids(ids: pl.Series) -> None:
    shares = shard_of(ids, 4).value_counts(normalize=True)["proportion"]

    assert shares.len() == 4 and ((shares - 0.25).abs() < 0.01).all()


def test_a_canary_bucket_is_spread_over_every_shard(ids: pl.Series) -> None:
    """Canary routing buckets ids by CRC-32 modulo 100; the shards must cut across those buckets, not follow them."""
    canary = ids.filter(buckets(ids) < 5)

    shares = shard_of(canary, 4).value_counts(normalize=True)["proportion"]

    assert shares.len() == 4 and ((shares - 0.25).abs() < 0.03).all()


# ------------------------------------------------------------------------------------------------- the split


def test_a_split_night_holds_every_row_exactly_once_in_its_ids_shard(ids: pl.Series) -> None:
    frame = pl.DataFrame({"entity_id": ids.head(5_000), "row_number": range(5_000)})

    parts = split_by_shard(frame, 3)

    assert pl.concat(parts).sort("row_number").equals(frame)
    for shard, part in enumerate(parts):
        assert part.equals(shard_rows(frame, shard, 3))
        assert (shard_of(part["entity_id"], 3) == shard).all()


def test_rows_sharing_an_id_share_a_shard() -> None:
    frame = pl.DataFrame({"entity_id": ["a", "b", "a", "c", "a"], "row_number": range(5)})

    parts = split_by_shard(frame, 4)

    assert sum("a" in part["entity_id"].to_list() for part in parts) == 1


def test_a_shard_outside_the_count_or_a_missing_id_column_is_refused() -> None:
    frame = pl.DataFrame({"entity_id": ["a"]})

    with pytest.raises(ValueError, match=r"shard must be in \[0, 2\), got 2"):
        shard_rows(frame, 2, 2)
    with pytest.raises(ValueError, match="lacks the entity id column 'customer'"):
        split_by_shard(frame, 2, id_column="customer")
    with pytest.raises(ValueError, match="shards must be at least 1, got 0"):
        shard_of(frame["entity_id"], 0)
