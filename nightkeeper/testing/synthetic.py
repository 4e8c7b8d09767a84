"""Valid synthetic rows for any data contract: the framework's test data, knowing nothing about a domain.

``synthesize(contract, rows, seed)`` returns a labeled frame that passes every rule of ``contract``:

* ``contract.entity_id``: unique String ids ``f"{id_prefix}{i:08d}"``.
* ``contract.event_time`` (when configured): Datetime("us") inside the day ``event_date`` (2024-01-01 by default).
* every feature with its contract dtype (float -> Float64, int -> Int64, category -> String, bool -> Boolean):
  numbers inside [min, max] (bounds inclusive; a bound left open defaults to a width of 1000 for floats and 100 for
  ints from the other bound, or to [0, 1000] / [0, 100] without bounds), drawn from a skewed Beta(2, 5) over the
  range with about 1% of values exactly on each bound; category levels with random (seeded) frequencies; bools
  with a random rate. Optional features are null in about 3% of rows; required features never.
* ``contract.target``: Int8 0/1 drawn from the logistic of a random (seeded) weighted sum of the standardized
  numeric features, bool effects and per-level category effects, with the intercept solved so that the positive
  rate is about 20%. The signal is strong enough for a model to learn (log-odds standard deviation 1.5).

Cross-field rules (``contract.rules``) are enforced by rejection sampling: rows are drawn in batches, rows for which
any rule is not true (false or null) are dropped, and more batches are drawn, sized from the acceptance rate seen
so far, until ``rows`` rows are kept. Dropping instead of repairing keeps every column's own distribution inside its
bounds and works for any SQL expression. A row whose rule evaluates to null is dropped too, so rows are valid under
either reading of null (pass or fail). It terminates: after ``MAX_BATCHES`` batches, or when the first batches accept
fewer than ``MIN_ACCEPTANCE`` of the rows, ``synthesize`` raises ValueError naming the rules.

Deterministic: the same (contract, rows, seed, id_prefix, event_date) gives an identical frame.
"""

from __future__ import annotations

import math
from datetime import date, datetime

import numpy as np
import polars as pl

from nightkeeper.config import Contract, FeatureSpec

OPTIONAL_NULL_RATE = 0.03
BOUND_RATE = 0.01  # share of numeric values put exactly on each bound, to exercise inclusive range checks
POSITIVE_RATE = 0.20
SIGNAL_STD = 1.5
MAX_BATCHES = 20
MIN_ACCEPTANCE = 0.001
_DEFAULT_WIDTH = {"float": 1000.0, "int": 100.0}
_DTYPES: dict[str, pl.DataType] = {
    "float": pl.Float64(),
    "int": pl.Int64(),
    "category": pl.String(),
    "bool": pl.Boolean(),
}


def synthesize(
    contract: Contract,
    rows: int,
    seed: int,
    id_prefix: str = "R",
    event_date: date = date(2024, 1, 1),
) -> pl.DataFrame:
    """``rows`` labeled rows valid under ``contract``: id, event time (if configured), features, target."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    rng = np.random.default_rng(seed)
    bounds = {name: feature_bounds(spec) for name, spec in contract.features.items() if spec.dtype in _DEFAULT_WIDTH}
    shapes = _feature_shapes(contract, rng)
    features = _draw_valid_rows(contract, rows, rng, bounds, shapes)

    numbers = pl.int_range(rows, eager=True).cast(pl.String).str.zfill(8)
    columns: list[pl.Series] = [(id_prefix + numbers).alias(contract.entity_id)]
    if contract.event_time:
        midnight = datetime.combine(event_date, datetime.min.time())
        start_us = int((midnight - datetime(1970, 1, 1)).total_seconds()) * 10**6
        offsets = np.sort(rng.integers(0, 86_400 * 10**6, rows))
        columns.append(pl.Series(contract.event_time, start_us + offsets, dtype=pl.Int64).cast(pl.Datetime("us")))
    columns.extend(features.get_column(name) for name in contract.features)
    columns.append(pl.Series(contract.target, _draw_target(contract, features, rng), dtype=pl.Int8))
    return pl.DataFrame(columns)


def feature_bounds(spec: FeatureSpec) -> tuple[float, float]:
    """The [low, high] range values of a numeric feature are drawn from: the contract's bounds, open ones filled in.
    For ints the range is shrunk to whole numbers; raises ValueError when it holds none."""
    width = _DEFAULT_WIDTH[spec.dtype]
    if spec.min is not None and spec.max is not None:
        low, high = spec.min, spec.max
    elif spec.min is not None:
        low, high = spec.min, spec.min + width
    elif spec.max is not None:
        low, high = spec.max - width, spec.max
    else:
        low, high = 0.0, width
    if spec.dtype == "int":
        low, high = float(math.ceil(low)), float(math.floor(high))
        if low > high:
            raise ValueError(f"int feature with min {spec.min} and max {spec.max} admits no whole number")
    return low, high


def _feature_shapes(contract: Contract, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-feature random distribution parameters: category level probabilities and bool rates."""
    shapes: dict[str, np.ndarray] = {}
    for name, spec in contract.features.items():
        if spec.dtype == "category":
            shapes[name] = rng.dirichlet(np.full(len(spec.categories or []), 2.0))
        elif spec.dtype == "bool":
            shapes[name] = np.array([rng.uniform(0.2, 0.8)])
    return shapes


def _draw_valid_rows(
    contract: Contract,
    rows: int,
    rng: np.random.Generator,
    bounds: dict[str, tuple[float, float]],
    shapes: dict[str, np.ndarray],
) -> pl.DataFrame:
    """Feature rows satisfying every cross-field rule, by drawing batches and dropping rows that break a rule."""
    if not contract.rules:
        return _draw_features(contract, rows, rng, bounds, shapes)
    valid = pl.lit(True)
    for rule in contract.rules:
        valid = valid & pl.sql_expr(rule.expression).fill_null(False)
    kept: list[pl.DataFrame] = []
    have = drawn = accepted = 0
    for _ in range(MAX_BATCHES):
        acceptance = max(accepted / drawn, MIN_ACCEPTANCE) if drawn else 1.0
        batch_rows = min(int((rows - have) / acceptance * 1.2) + 16, 50 * rows + 1000)
        batch = _draw_features(contract, batch_rows, rng, bounds, shapes)
        good = batch.filter(valid)
        drawn += batch_rows
        accepted += good.height
        kept.append(good.head(rows - have))
        have += kept[-1].height
        if have == rows:
            return pl.concat(kept)
        if drawn >= 10_000 and accepted / drawn < MIN_ACCEPTANCE:
            break
    rules = [f"{rule.name}: {rule.expression}" for rule in contract.rules]
    raise ValueError(
        f"could not synthesize {rows} rows satisfying the rules {rules}: only {accepted} of {drawn} drawn rows "
        f"satisfied them; check that the rules are compatible with the features' bounds and categories"
    )


def _draw_features(
    contract: Contract,
    n: int,
    rng: np.random.Generator,
    bounds: dict[str, tuple[float, float]],
    shapes: dict[str, np.ndarray],
) -> pl.DataFrame:
    columns = []
    for name, spec in contract.features.items():
        if spec.dtype == "category":
            levels = pl.Series(spec.categories, dtype=pl.String)
            index = np.minimum(np.searchsorted(np.cumsum(shapes[name]), rng.random(n), side="right"), len(levels) - 1)
            column = levels.gather(index)
        elif spec.dtype == "bool":
            column = pl.Series(rng.random(n) < shapes[name][0])
        else:
            low, high = bounds[name]
            if spec.dtype == "int":
                values = np.floor(low + (high - low + 1) * rng.beta(2.0, 5.0, n))
            else:
                values = low + (high - low) * rng.beta(2.0, 5.0, n)
            edge = rng.random(n)
            values = np.clip(np.where(edge < BOUND_RATE, low, np.where(edge > 1 - BOUND_RATE, high, values)), low, high)
            column = pl.Series(values).cast(_DTYPES[spec.dtype])
        if not spec.required:
            column = column.scatter(np.flatnonzero(rng.random(n) < OPTIONAL_NULL_RATE), None)
        columns.append(column.alias(name).cast(_DTYPES[spec.dtype]))
    return pl.DataFrame(columns)


def _draw_target(contract: Contract, features: pl.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """0/1 labels from a seeded random logistic model of the features, positive in about POSITIVE_RATE of rows."""
    logit = np.zeros(features.height)
    for name, spec in contract.features.items():
        column = features.get_column(name)
        if spec.dtype == "category":
            effects = pl.Series(rng.normal(0.0, 1.0, len(spec.categories or [])))
            codes = column.cast(pl.Enum(spec.categories or [])).to_physical()
            logit += effects.gather(codes).fill_null(0.0).to_numpy()
        else:
            values = column.cast(pl.Float64)
            std = values.std()
            standardized = (values - values.mean()) / std if isinstance(std, float) and std > 0 else values * 0.0
            logit += rng.normal(0.0, 1.0) * standardized.fill_null(0.0).to_numpy()
    spread = logit.std()
    logit = (logit - logit.mean()) * (SIGNAL_STD / spread if spread > 0 else 0.0)
    low, high = -20.0, 20.0  # bisection for the intercept giving the wanted positive rate
    for _ in range(60):
        middle = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit + middle)))) < POSITIVE_RATE:
            low = middle
        else:
            high = middle
    probability = 1.0 / (1.0 + np.exp(-(logit + (low + high) / 2)))
    return (rng.random(features.height) < probability).astype(np.int8)
