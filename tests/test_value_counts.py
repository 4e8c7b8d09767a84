"""Counts of distinct values (``summaries.ValueCounts``) merged from parts are the counts of every value together."""

from __future__ import annotations

import numpy as np
import pytest

from nightkeeper.summaries import EXACT_UP_TO, SIGNIFICANT_BITS, ValueCounts, rounded


@pytest.mark.parametrize("parts", [2, 3])
def test_merged_parts_count_every_value_of_the_parts(parts: int) -> None:
    rng = np.random.default_rng(5)
    # amounts on a coarse grid, so parts share values; one part much smaller, as a running total and a chunk
    chunks = [np.round(rng.lognormal(3, 1, size), 1) for size in [5_000, 300, 2_000][:parts]]

    merged = ValueCounts.merge([ValueCounts.of(chunk) for chunk in chunks])
    whole = ValueCounts.of(np.concatenate(chunks))

    assert np.array_equal(merged.values, whole.values)
    assert np.array_equal(merged.counts, whole.counts)
    assert merged.counts.dtype == np.int64


def test_a_merge_leaves_its_parts_as_they_were() -> None:
    running, chunk = ValueCounts.of(np.array([1.0, 2.0, 2.0])), ValueCounts.of(np.array([2.0, 3.0]))

    merged = ValueCounts.merge([running, chunk])

    assert merged.values.tolist() == [1.0, 2.0, 3.0] and merged.counts.tolist() == [1, 3, 1]
    assert running.counts.tolist() == [1, 2] and chunk.counts.tolist() == [1, 1]


def test_a_merge_of_an_empty_part_is_the_other_part() -> None:
    counts = ValueCounts.of(np.array([0.5, 0.5, 0.25]))
    empty = ValueCounts.of(np.array([]))

    for parts in ([counts, empty], [empty, counts]):
        merged = ValueCounts.merge(parts)
        assert merged.values.tolist() == [0.25, 0.5] and merged.counts.tolist() == [1, 2]


def test_rounding_keeps_a_bounded_number_of_significant_bits() -> None:
    rng = np.random.default_rng(3)
    values = np.r_[rng.lognormal(0, 3, 50_000), -rng.lognormal(0, 3, 50_000)]

    moved = np.abs(rounded(values) - values)

    assert np.all(moved <= np.abs(values) * 2.0**-SIGNIFICANT_BITS)
    assert np.all(np.diff(rounded(np.sort(values))) >= 0)  # order kept: rounded sorted values stay sorted
    assert np.array_equal(rounded(rounded(values)), rounded(values))


def test_rounding_leaves_small_integers_zero_and_non_finite_values_and_keeps_the_largest_finite() -> None:
    integers = np.arange(-(2.0**SIGNIFICANT_BITS) + 1, 2.0**SIGNIFICANT_BITS)
    special = np.array([0.0, np.nan, np.inf, -np.inf])
    largest = np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max])

    assert np.array_equal(rounded(integers), integers)
    assert np.array_equal(rounded(special), special, equal_nan=True)
    assert np.all(np.isfinite(rounded(largest)))


def test_bounded_counts_of_more_than_the_exact_limit_hold_few_distinct_values() -> None:
    values = np.random.default_rng(4).lognormal(0, 0.5, 3 * EXACT_UP_TO)
    powers_of_two = len(np.unique(np.frexp(values)[1])) + 1  # the largest may round up into the next

    bounded, exact = ValueCounts.of(values, bounded=True), ValueCounts.of(values)

    assert bounded.is_rounded and not exact.is_rounded
    assert len(exact.values) == 3 * EXACT_UP_TO
    assert len(bounded.values) <= 2 ** (SIGNIFICANT_BITS - 1) * powers_of_two < len(exact.values) / 2
    assert bounded.total == exact.total


def test_bounded_counts_of_up_to_the_exact_limit_keep_every_value() -> None:
    values = np.random.default_rng(5).lognormal(0, 1, EXACT_UP_TO)

    bounded = ValueCounts.of(values, bounded=True)

    assert not bounded.is_rounded
    assert np.array_equal(bounded.values, np.sort(values))


@pytest.mark.parametrize("sizes", [[60_000, 60_000], [EXACT_UP_TO + 1, 10], [10, 30_000, 90_000, 5]])
def test_bounded_counts_merged_from_any_split_are_those_of_the_whole(sizes: list[int]) -> None:
    # parts below the exact limit keep exact values, parts above are rounded: the merge rounds alike
    rng = np.random.default_rng(6)
    chunks = [np.round(rng.lognormal(0, 1, size), 9) for size in sizes]

    merged = ValueCounts.of(np.array([]), bounded=True)
    for chunk in chunks:
        merged = ValueCounts.merge([merged, ValueCounts.of(chunk, bounded=True)])
    whole = ValueCounts.of(np.concatenate(chunks), bounded=True)

    assert np.array_equal(merged.values, whole.values)
    assert np.array_equal(merged.counts, whole.counts)


def test_bounded_and_unbounded_counts_do_not_merge() -> None:
    with pytest.raises(ValueError, match="bounded and unbounded"):
        ValueCounts.merge([ValueCounts.of(np.array([1.0]), bounded=True), ValueCounts.of(np.array([1.0]))])


def test_a_value_equal_to_a_point_is_counted_on_its_side_when_rounded() -> None:
    # 0.1 is not a float of few significant bits: rounded, it moves, and the point 0.1 moves with it
    values = np.r_[np.full(EXACT_UP_TO, 0.1), np.full(10, 0.3)]
    counts = ValueCounts.of(values, bounded=True)

    assert counts.is_rounded and counts.values[0] != 0.1
    assert counts.counted_up_to(np.array([0.1]), inclusive=True).tolist() == [EXACT_UP_TO]
    assert counts.counted_up_to(np.array([0.1]), inclusive=False).tolist() == [0]
