"""Canary routing: a stable CRC-32 bucket per entity id decides who the challenger serves, night after night."""

from __future__ import annotations

import zlib

import polars as pl
import pytest

from nightkeeper.routing import BUCKETS, buckets, entity_crc32, in_canary

# The standard CRC-32 check value: crc32(b"123456789") = 0xCBF43926 = 3421780262, so bucket 62.
CHECK_ID, CHECK_BUCKET = "123456789", 3421780262 % 100


@pytest.fixture(scope="module")
def ids() -> pl.Series:
    """100 000 ids shaped like the simulator's application ids."""
    return ("A20260101-" + pl.int_range(100_000, eager=True).cast(pl.String).str.zfill(6)).alias("entity_id")


def test_known_crc32_bucket_for_a_fixed_id():
    assert CHECK_BUCKET == 62
    assert buckets(pl.Series([CHECK_ID])).to_list() == [CHECK_BUCKET]


def test_buckets_are_the_same_across_calls(ids):
    first = buckets(ids)
    second = buckets(ids.clone())

    assert first.equals(second)


def test_an_id_keeps_its_bucket_whatever_the_other_ids_and_their_order(ids):
    alone = buckets(pl.Series(["A20260101-000042"])).item()
    shuffled = pl.DataFrame({"id": ids, "bucket": buckets(ids)}).sample(fraction=1.0, shuffle=True, seed=3)

    assert shuffled.filter(pl.col("id") == "A20260101-000042")["bucket"].item() == alone
    assert buckets(shuffled["id"]).equals(shuffled["bucket"].alias("bucket"))


def test_buckets_are_int32_in_range(ids):
    result = buckets(ids)

    assert result.dtype == pl.Int32
    assert result.name == "bucket"
    assert result.min() >= 0 and result.max() < BUCKETS
    assert result.n_unique() == BUCKETS


def test_a_5_percent_canary_serves_about_5_percent_of_ids(ids):
    share = in_canary(ids, 5).mean()

    assert 0.04 <= share <= 0.06


@pytest.mark.parametrize("percent", [1, 20, 50])
def test_canary_share_matches_its_percent_within_one_point(ids, percent):
    assert abs(in_canary(ids, percent).mean() - percent / 100) <= 0.01


def test_canary_membership_is_monotone_in_the_percent(ids):
    one, five, twenty = in_canary(ids, 1), in_canary(ids, 5), in_canary(ids, 20)

    assert one.sum() > 0
    assert not (one & ~five).any()  # everyone in the 1 % canary is in the 5 % canary
    assert not (five & ~twenty).any()


def test_zero_percent_serves_no_one(ids):
    assert not in_canary(ids, 0).any()


def test_hundred_percent_serves_everyone(ids):
    assert in_canary(ids, 100).all()


def test_in_canary_is_a_named_boolean_series_of_the_same_length(ids):
    result = in_canary(ids, 5)

    assert result.name == "in_canary"
    assert result.dtype == pl.Boolean
    assert result.len() == ids.len()


def test_null_ids_get_a_bucket_like_the_empty_id():
    result = buckets(pl.Series([None, "", "x"], dtype=pl.String))

    assert result.null_count() == 0
    assert result[0] == result[1] == 0  # crc32(b"") == 0
    assert in_canary(pl.Series([None], dtype=pl.String), 0).to_list() == [False]


def test_non_string_ids_are_bucketed_by_their_text():
    assert buckets(pl.Series([123456789])).to_list() == buckets(pl.Series([CHECK_ID])).to_list()


def test_an_empty_series_gives_no_buckets():
    assert buckets(pl.Series([], dtype=pl.String)).len() == 0
    assert in_canary(pl.Series([], dtype=pl.String), 5).len() == 0


@pytest.mark.parametrize(
    "entity_ids",
    [
        pl.Series(["a", "", "Zürich-€", None, "A20260101-000042"]),
        pl.Series([1, -5, None, 10**12]),
        pl.Series([True, None, False]),
        pl.concat([pl.Series(["x", None]), pl.Series(["yy"])], rechunk=False),
        pl.Series(["skip", "skip", "kept", "kept too"]).slice(2),
    ],
    ids=["text", "integers", "booleans", "two-chunks", "slice"],
)
def test_entity_crc32_equals_zlib_of_each_ids_text(entity_ids):
    expected = [zlib.crc32(("" if v is None else str(v)).encode()) for v in entity_ids.to_list()]

    assert entity_crc32(entity_ids).tolist() == expected
