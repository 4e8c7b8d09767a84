"""Counts of distinct values (``summaries.ValueCounts``) merged from parts are the counts of every value together."""

from __future__ import annotations

import numpy as np
import pytest

from nightkeeper.summaries import ValueCounts


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
