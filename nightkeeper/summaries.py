"""Mergeable summaries of a night's rows: what drift is computed from, so that a night split into shards
(``nightkeeper.sharding``) gives exactly the figures of the whole night.

Each shard summarises its own rows; ``merge_drift_summaries`` combines the shards' summaries into the one the whole
night would have given, field by field and bit for bit (integer counts add; no float is ever summed in a
different order), and ``nightkeeper.drift.drift_of_summary`` computes every statistic from a summary. The unsharded
night is the one-shard case of the same code.

* ``ValueCounts``: the distinct finite values of a number with their counts. PSI bins, the KS statistic at the
  reference's quantiles, the Wasserstein distance and the mean all derive from it. A bounded one (drift's, the
  shadow tally's and the performance estimate's) counts up to EXACT_UP_TO values exactly; beyond, every value is
  rounded to SIGNIFICANT_BITS significant bits (relative error at most 2**-SIGNIFICANT_BITS), so it holds at most
  2**(SIGNIFICANT_BITS - 1) distinct values per power of two whatever the night's size: memory stays flat from 1M
  to 10M rows. Whether it is rounded depends only on how many values it counts, so the parts of any split round
  alike and merge into exactly the whole's counts; points compared with rounded values (bin edges, quantiles, the
  decision threshold) are rounded alike (``ValueCounts.comparable``), so a value equal to a point stays on its side
  and only values within the rounding of a point, above or below it, can be counted on the other side.
* Category counts: per level of the contract, plus one last "other" count (``profile.category_counts``).
* The domain sample: the ``domain_rows`` rows with the smallest stable entity hash (``sharding.entity_hash``),
  ordered by it. The smallest k of a union are the smallest k of the parts' smallest k, so it merges exactly, and it
  is a uniform random sample of the night whatever the shards (the multivariate drift check trains on it).

A shard stores its summary as two tables: ``drift_summary_table`` (every count, DRIFT_COUNTS_SCHEMA) and the domain
sample; ``drift_summary_of`` reads them back. The performance counts (``nightkeeper.performance.realized_counts``,
``estimated_counts``, ``merge_counts``) are tables already.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from nightkeeper.encoding import FeatureCard
from nightkeeper.frames import conform
from nightkeeper.profile import category_counts, sorted_numeric_values
from nightkeeper.sharding import ENTITY_COLUMN, entity_hash
from nightkeeper.validation import ROW_KEY

HASH_COLUMN = "entity_hash"
CHUNK_ROWS = 500_000  # rows summarised at once: bounds the sorts' working memory whatever the night's size
EXACT_UP_TO = 100_000  # values a bounded ValueCounts counts exactly (at most 1.6 MB of distinct values)
SIGNIFICANT_BITS = 15  # kept of each value beyond: 16,384 distinct values per power of two, 3e-5 relative error
_DROPPED_BITS = 53 - SIGNIFICANT_BITS  # of a float64's 53 significant bits
# A DriftSummary as a table (``drift_summary_table``), one row per count: ``part`` says what is counted. "rows",
# "domain_rows" and "scored" (1 or 0) hold the summary's scalars in ``count``; "number" rows a feature's value and
# its count, "category" rows a feature's level index (the last is "other") and its count, "score" rows a score and
# its count.
DRIFT_COUNTS_SCHEMA: dict[str, pl.DataType] = {
    "part": pl.String(),
    "feature": pl.String(),
    "level": pl.Int32(),
    "value": pl.Float64(),
    "count": pl.Int64(),
}


def rounded(values: np.ndarray) -> np.ndarray:
    """``values`` (float64) each rounded to SIGNIFICANT_BITS significant bits, to nearest (halves away from zero):
    non-decreasing in the value, so sorted values stay sorted and equal values stay equal; integers below
    2**SIGNIFICANT_BITS and zero are unchanged; NaN and infinities pass through; a finite value never becomes
    infinite (the largest magnitudes round down)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    bits = values.view(np.uint64)
    step = np.uint64(1 << _DROPPED_BITS)
    near = ((bits + (step >> np.uint64(1))) & ~(step - np.uint64(1))).view(np.float64)
    finite = np.isfinite(values)
    largest = np.float64(np.uint64(0x7FEFFFFFFFFFFFFF) & ~(step - np.uint64(1)))  # the largest finite rounded value
    return np.where(finite & np.isinf(near), np.copysign(largest, values), np.where(finite, near, values))


@dataclass(frozen=True)
class ValueCounts:
    """The distinct values of a number (``values``, ascending float64; finite when made by ``of``) and how often
    each occurs (``counts``, int64, all > 0). ``bounded``: once it counts more than EXACT_UP_TO values, its values
    are ``rounded`` (see the module docstring); an unbounded one keeps every distinct value exactly."""

    values: np.ndarray
    counts: np.ndarray
    bounded: bool = False

    @classmethod
    def of(cls, values: np.ndarray, bounded: bool = False) -> ValueCounts:
        """The counts of the finite entries of ``values`` (NaN and infinities are missing, not counted)."""
        array = np.asarray(values, dtype=np.float64)
        return cls.of_sorted(np.sort(array[np.isfinite(array)]), bounded)

    @classmethod
    def of_sorted(cls, values: np.ndarray, bounded: bool = False) -> ValueCounts:
        """The counts of ``values``, already sorted ascending (run lengths, no sort; each NaN, sorted last, counts
        apart)."""
        if len(values) == 0:
            return cls(np.array([], dtype=np.float64), np.array([], dtype=np.int64), bounded)
        if bounded and len(values) > EXACT_UP_TO:
            values = rounded(values)
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        return cls(values[starts], np.diff(np.r_[starts, len(values)]).astype(np.int64), bounded)

    @classmethod
    def merge(cls, parts: Sequence[ValueCounts]) -> ValueCounts:
        """The counts of all ``parts`` together: equal values add their counts (each NaN counts apart, in the parts'
        order); bounded parts (all or none) give the bounded counts of the whole, rounded when it counts more than
        EXACT_UP_TO values, whichever parts were. Two parts of distinct ascending values (a running total and the
        next chunk's counts) are merged by inserting the second's new values into the first: about twice the
        result's memory, where sorting every value with its count takes about four times. Raises ValueError on
        bounded and unbounded parts together."""
        bounded = {part.bounded for part in parts}
        if len(bounded) > 1:
            raise ValueError("bounded and unbounded ValueCounts do not merge: their values are not comparable")
        if bounded == {True} and sum(part.total for part in parts) > EXACT_UP_TO:
            parts = [part._rounded() for part in parts]
        if len(parts) == 2 and all(part._distinct_ascending() for part in parts):
            return parts[0]._merged_with(parts[1])
        values = np.concatenate([np.array([], dtype=np.float64), *(p.values for p in parts)])
        counts = np.concatenate([np.array([], dtype=np.int64), *(p.counts for p in parts)])
        if len(values) == 0:
            return cls(values, counts, bounded == {True})
        order = np.argsort(values, kind="stable")
        values, counts = values[order], counts[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        return cls(values[starts], np.add.reduceat(counts, starts), bounded == {True})

    @property
    def is_rounded(self) -> bool:
        """Whether the values are rounded (a bounded ValueCounts of more than EXACT_UP_TO values)."""
        return self.bounded and self.total > EXACT_UP_TO

    def comparable(self, points: np.ndarray) -> np.ndarray:
        """``points`` (float64) as these values compare with them: rounded alike when the values are, so a value
        equal to a point compares equal to it."""
        points = np.asarray(points, dtype=np.float64)
        return rounded(points) if self.is_rounded else points

    @functools.cached_property
    def cumulative(self) -> np.ndarray:
        """How many values are counted below each distinct value, then in all: ``r_[0, cumsum(counts)]`` (int64)."""
        return np.r_[np.int64(0), np.cumsum(self.counts, dtype=np.int64)]

    def counted_up_to(self, points: np.ndarray, inclusive: bool) -> np.ndarray:
        """How many counted values lie below each of ``points`` (at or below it when ``inclusive``), the points
        compared as ``comparable`` (int64, one per point)."""
        at = np.searchsorted(self.values, self.comparable(points), side="right" if inclusive else "left")
        return self.cumulative[at]

    def mean(self) -> float:
        """The mean of the counted values (NaN when none)."""
        total = self.total
        return float(np.dot(self.values, self.counts) / total) if total else float("nan")

    def _rounded(self) -> ValueCounts:
        """These counts with every value rounded (equal rounded values add their counts; rounding twice changes
        nothing)."""
        values = rounded(self.values)
        if len(values) == 0:
            return self
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        return ValueCounts(values[starts], np.add.reduceat(self.counts, starts), self.bounded)

    def _distinct_ascending(self) -> bool:
        return bool(np.all(self.values[1:] > self.values[:-1]))

    def _merged_with(self, other: ValueCounts) -> ValueCounts:
        """These counts and ``other``'s (both of distinct ascending values): ``other``'s values found here add
        their counts; the others are inserted in order."""
        values = np.asarray(self.values, dtype=np.float64)
        at = np.searchsorted(values, other.values, side="left")
        found = at < len(values)
        found[found] = values[at[found]] == other.values[found]
        counts = self.counts.astype(np.int64)  # a copy: the parts are left as they were
        counts[at[found]] += other.counts[found]  # distinct values: each index once
        new = ~found
        into = np.searchsorted(values, other.values[new], side="right")
        return ValueCounts(
            np.insert(values, into, other.values[new]), np.insert(counts, into, other.counts[new]), self.bounded
        )

    @property
    def total(self) -> int:
        return int(self.counts.sum())


@dataclass(frozen=True)
class DriftSummary:
    """What drift needs to know of a night's rows (see the module docstring).

    ``rows``: the rows summarised. ``numbers``: per numeric or bool feature, its bounded ``ValueCounts``.
    ``categories``: per category feature, int64 counts per contract level plus a last "other" count. ``scores``: the
    finite scores' bounded ``ValueCounts``, None when the night was not scored. ``domain_sample``: up to
    ``domain_rows`` rows (the entity id, ``entity_hash`` and the feature columns) with the smallest entity hash,
    ascending (ties by id).
    """

    rows: int
    numbers: dict[str, ValueCounts]
    categories: dict[str, np.ndarray]
    scores: ValueCounts | None
    domain_rows: int
    domain_sample: pl.DataFrame


def summarise_drift(
    current: pl.DataFrame,
    scores: np.ndarray | None,
    features: list[FeatureCard],
    domain_rows: int,
    id_column: str = ENTITY_COLUMN,
) -> DriftSummary:
    """Summarise tonight's rows ``current`` (typed as the validated frame) and their ``scores`` (one per row, NaN =
    unscored; None = not scored tonight), CHUNK_ROWS rows at a time (``summarise_drift_chunks``: the same summary
    whatever the chunks, in bounded working memory). The domain sample keeps ``domain_rows`` rows (0: none, and then
    ``id_column`` need not exist). Raises ValueError when a feature column or, with ``domain_rows`` > 0, the id
    column is missing, or when the scores are not one per row."""
    if scores is not None and np.shape(scores) != (current.height,):
        raise ValueError(f"current_scores must be one per row ({current.height}), got shape {np.shape(scores)}")
    starts = range(0, max(current.height, 1), CHUNK_ROWS)
    return summarise_drift_chunks(
        (current.slice(start, CHUNK_ROWS) for start in starts),
        None if scores is None else (scores[start : start + CHUNK_ROWS] for start in starts),
        features,
        domain_rows,
        id_column,
    )


def summarise_drift_chunks(
    rows: Iterable[pl.DataFrame],
    scores: Iterable[np.ndarray] | None,
    features: list[FeatureCard],
    domain_rows: int,
    id_column: str = ENTITY_COLUMN,
) -> DriftSummary:
    """The summary of the union of the ``rows`` chunks (at least one; frames as ``summarise_drift`` takes them) and
    of the ``scores`` chunks (the rows' scores, NaN = unscored, in any chunks and order: their counts are all the
    summary keeps of them; None = not scored tonight). Each chunk is summarised in turn and merged into a running
    summary, so working memory is one chunk's plus the summary's; the result is the same for any split of the rows
    into chunks in any order (counts add; the domain sample's ties on hash and id are broken by the row key
    ``ROW_KEY`` when the frames hold it, else by the rows' order). Raises ValueError as ``summarise_drift`` does."""
    running: DriftSummary | None = None
    for frame in rows:
        part = _summarise_rows(frame, features, domain_rows, id_column)
        running = part if running is None else merge_drift_summaries([running, part])
    if running is None:
        raise ValueError("summarise_drift_chunks needs at least one chunk of rows")
    counted = None
    if scores is not None:
        counted = ValueCounts.of(np.array([], dtype=np.float64), bounded=True)
        for chunk in scores:
            counted = ValueCounts.merge([counted, ValueCounts.of(chunk, bounded=True)])
    return replace(running, scores=counted, domain_sample=running.domain_sample.drop(ROW_KEY, strict=False))


def _summarise_rows(
    current: pl.DataFrame, features: list[FeatureCard], domain_rows: int, id_column: str
) -> DriftSummary:
    """``summarise_drift`` of one chunk of rows, without scores; its domain sample keeps the ROW_KEY columns the
    frame holds (tie-breakers for the merges)."""
    missing = [f.name for f in features if f.name not in current.columns]
    if missing:
        raise ValueError(f"tonight's frame lacks feature column(s) {missing}; it has {current.columns}")
    numeric = [f.name for f in features if f.dtype != "category"]
    sorted_values = sorted_numeric_values(current, numeric)
    return DriftSummary(
        rows=current.height,
        numbers={name: ValueCounts.of_sorted(sorted_values.pop(name), bounded=True) for name in numeric},
        categories={
            name: counts.astype(np.int64)
            for name, counts in category_counts(current, [f for f in features if f.dtype == "category"]).items()
        },
        scores=None,
        domain_rows=domain_rows,
        domain_sample=_owning(_smallest_hashes(current, features, domain_rows, id_column)),
    )


def _owning(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of ``frame`` that owns its data: the strings of rows filtered from a chunk still point into the whole
    chunk's buffers, so a running sample would keep every chunk of the night alive."""
    return pl.DataFrame(pl.from_arrow(frame.to_arrow(compat_level=pl.CompatLevel.oldest())))


def merge_drift_summaries(parts: Sequence[DriftSummary]) -> DriftSummary:
    """The summary of the union of the parts' rows (each row summarised in exactly one part). Raises ValueError on
    no parts, or on parts that disagree on features, levels, ``domain_rows`` or whether the night was scored."""
    if not parts:
        raise ValueError("merge_drift_summaries needs at least one summary")
    first = parts[0]
    for part in parts[1:]:
        if (
            part.numbers.keys() != first.numbers.keys()
            or part.domain_rows != first.domain_rows
            or (part.scores is None) != (first.scores is None)
            or {k: len(v) for k, v in part.categories.items()} != {k: len(v) for k, v in first.categories.items()}
        ):
            raise ValueError("drift summaries of one night must share features, levels, domain_rows and scoring")
    samples = pl.concat([p.domain_sample for p in parts])
    return DriftSummary(
        rows=sum(p.rows for p in parts),
        numbers={name: ValueCounts.merge([p.numbers[name] for p in parts]) for name in first.numbers},
        categories={
            name: sum((p.categories[name] for p in parts), np.zeros_like(c)) for name, c in first.categories.items()
        },
        scores=None if first.scores is None else ValueCounts.merge([p.scores for p in parts if p.scores is not None]),
        domain_rows=first.domain_rows,
        domain_sample=_first_by_hash(samples, first.domain_rows),
    )


def drift_summary_table(summary: DriftSummary) -> pl.DataFrame:
    """``summary``'s counts as one table (DRIFT_COUNTS_SCHEMA), for a shard to store; its domain sample is a table
    already. ``drift_summary_of`` reads them back."""
    scalars = [
        ("rows", summary.rows),
        ("domain_rows", summary.domain_rows),
        ("scored", int(summary.scores is not None)),
    ]
    parts = [
        pl.DataFrame(
            {"part": [p for p, _ in scalars], "count": [c for _, c in scalars]},
            schema={"part": pl.String(), "count": pl.Int64()},
        ),
        *(
            pl.DataFrame({"part": "number", "feature": name, "value": c.values, "count": c.counts})
            for name, c in summary.numbers.items()
        ),
        *(
            pl.DataFrame({"part": "category", "feature": name, "level": np.arange(len(c), dtype=np.int32), "count": c})
            for name, c in summary.categories.items()
        ),
    ]
    if summary.scores is not None:
        parts.append(pl.DataFrame({"part": "score", "value": summary.scores.values, "count": summary.scores.counts}))
    return conform(
        pl.concat([pl.DataFrame(schema=DRIFT_COUNTS_SCHEMA), *parts], how="diagonal_relaxed"), DRIFT_COUNTS_SCHEMA
    )


def drift_summary_of(counts: pl.DataFrame, domain_sample: pl.DataFrame, features: list[FeatureCard]) -> DriftSummary:
    """The DriftSummary stored as ``drift_summary_table`` (``counts``) and its ``domain_sample``, for ``features``
    (the features it was made for: a feature without counts had no value). Raises ValueError when ``counts`` lacks
    its scalars."""
    scalars = dict(
        counts.filter(pl.col("part").is_in(["rows", "domain_rows", "scored"])).select("part", "count").iter_rows()
    )
    if scalars.keys() != {"rows", "domain_rows", "scored"}:
        raise ValueError(f"drift counts must hold the rows, domain_rows and scored parts, found {sorted(scalars)}")

    def value_counts(part: pl.DataFrame) -> ValueCounts:
        ordered = part.sort("value")
        return ValueCounts(ordered["value"].to_numpy(), ordered["count"].to_numpy(), bounded=True)

    numbers = counts.filter(pl.col("part") == "number")
    categories = counts.filter(pl.col("part") == "category")
    category_sizes = {f.name: len(f.categories or []) + 1 for f in features if f.dtype == "category"}
    by_level = {name: np.zeros(size, dtype=np.int64) for name, size in category_sizes.items()}
    for name, level, count in categories.select("feature", "level", "count").iter_rows():
        by_level[name][level] = count
    return DriftSummary(
        rows=int(scalars["rows"]),
        numbers={
            f.name: value_counts(numbers.filter(pl.col("feature") == f.name)) for f in features if f.dtype != "category"
        },
        categories=by_level,
        scores=value_counts(counts.filter(pl.col("part") == "score")) if scalars["scored"] else None,
        domain_rows=int(scalars["domain_rows"]),
        domain_sample=domain_sample,
    )


def _smallest_hashes(frame: pl.DataFrame, features: list[FeatureCard], rows: int, id_column: str) -> pl.DataFrame:
    columns = [f.name for f in features]
    if rows <= 0:
        return frame.select(
            pl.lit(None, dtype=pl.String).alias(ENTITY_COLUMN), pl.lit(0, dtype=pl.UInt64).alias(HASH_COLUMN), *columns
        ).clear()
    if id_column not in frame.columns:
        raise ValueError(
            f"tonight's frame lacks the entity id column {id_column!r} the domain sample is drawn by; it has "
            f"{frame.columns}"
        )
    hashes = entity_hash(frame[id_column])
    # the rows at or below the rows-th smallest hash (O(n)); only they are sorted (ties at the cut all kept)
    if hashes.len() > rows:
        keep = hashes <= np.partition(hashes.to_numpy(), rows - 1)[rows - 1]
        frame, hashes = frame.filter(keep), hashes.filter(keep)
    keys = [key for key in ROW_KEY if key in frame.columns and key not in columns]
    keyed = frame.select(
        pl.col(id_column).cast(pl.String).alias(ENTITY_COLUMN), hashes.alias(HASH_COLUMN), *columns, *keys
    )
    return _first_by_hash(keyed, rows)


def _first_by_hash(sample: pl.DataFrame, rows: int) -> pl.DataFrame:
    """The ``rows`` rows of smallest hash, ascending; ties by id, then by the ROW_KEY columns the sample holds (a
    chunk's running sample), then by their order."""
    keys = [key for key in ROW_KEY if key in sample.columns]
    return sample.sort(HASH_COLUMN, ENTITY_COLUMN, *keys, maintain_order=True, nulls_last=True).head(rows)
