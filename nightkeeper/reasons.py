"""Reason codes: why the model scored a row as it did, as exact path-dependent TreeSHAP contributions.

Contributions are LightGBM's ``booster.predict(X, pred_contrib=True)`` values, computed by ``nightkeeper.treeshap``
(the same exact TreeSHAP, equal to LightGBM's to ~1e-14, categorical splits included, ~20x faster; see
``benchmarks/reason_codes_engines.py``); a model that engine cannot read (multiclass, linear trees) is explained by
LightGBM's ``pred_contrib`` itself. They are in the model's raw-score units, i.e. log-odds of the positive class for a
binary model: for every row, ``shap_base_value + sum(contributions over all features) == raw score``. A caller's rows
under ``ENGINE_MIN_ROWS`` in all are explained by ``pred_contrib`` too, as compiling the model would cost more; a
caller that explains its rows in several calls builds one ``Explainer`` for all of them.

Exact TreeSHAP still costs ~5 predictions per row for the example model (``benchmarks/reason_codes_engines.py``), so
callers pass only the rows that need reasons (declined, referred and reviewed answers), never a whole night by default.

Values shown to people are those the model saw, decoded: a category's level name (not its integer code), numbers
formatted for reading, and ``missing`` where the model saw NaN (a null, or a category level it does not know).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import polars as pl

from nightkeeper.encoding import FeatureCard, feature_matrix
from nightkeeper.treeshap import CompiledForest, UnsupportedModel, compile_forest, contributions_of

REASON_STRUCT = pl.Struct({"feature": pl.String(), "value": pl.String(), "contribution": pl.Float64()})
REASON_SCHEMA: dict[str, pl.DataType] = {
    "reason_codes": pl.List(REASON_STRUCT),
    "shap_base_value": pl.Float64(),
    "reason_text": pl.String(),
}
# the ``reason_codes`` table: one row per explained answer (a model or canary answer due for reasons), by row key
REASON_CODES_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "entity_id": pl.String(),
    "source": pl.String(),
    "model_version": pl.String(),
    "reason_codes": pl.List(REASON_STRUCT),
    "reason_text": pl.String(),
}
MISSING = "missing"
# Compiling a model for nightkeeper.treeshap takes ~1 s (200 trees), what LightGBM's pred_contrib needs for ~1-2k
# rows on 2 cores: smaller batches (a 2,000-row night has ~300 due rows) are explained by LightGBM directly.
ENGINE_MIN_ROWS = 2_000


@dataclass(frozen=True)
class Explainer:
    """A model ready to explain rows (``explain``): its booster, its feature cards and the compiled forest of
    ``nightkeeper.treeshap`` that explains them (None: LightGBM's own ``pred_contrib``). Built once for every row a
    caller explains with the model (``for_rows``), so the engine, and so each value to the last bit, does not depend
    on how those rows are cut into calls."""

    booster: lgb.Booster
    features: list[FeatureCard]
    forest: CompiledForest | None

    @classmethod
    def for_rows(cls, booster: lgb.Booster, features: list[FeatureCard], rows: int) -> Explainer:
        """The explainer of ``rows`` rows in all: the model compiled here (once) from ``ENGINE_MIN_ROWS`` rows on,
        unless the engine cannot read it (e.g. linear trees). Raises ValueError when ``features`` do not match the
        booster's features."""
        _check_features(booster, features)
        forest = None
        if rows >= ENGINE_MIN_ROWS:
            with contextlib.suppress(UnsupportedModel):  # e.g. linear trees: LightGBM's own pred_contrib explains them
                forest = compile_forest(booster)
        return cls(booster, features, forest)


def reason_codes(
    frame: pl.DataFrame,
    booster: lgb.Booster,
    features: list[FeatureCard],
    top_k: int = 3,
    chunk_rows: int = 40_000,
    *,
    num_threads: int = 0,
) -> pl.DataFrame:
    """The ``top_k`` strongest reasons behind each row's score, one output row per input row, in input order.

    Columns (``REASON_SCHEMA``):

    * ``reason_codes``: list of ``{feature, value, contribution}`` structs, the ``min(top_k, len(features))``
      features with the largest ``|contribution|``, largest first (ties keep card order). ``contribution`` is
      signed, in raw-score (log-odds) units: positive raises the score (risk of the positive class).
      ``value`` is the value the model saw, decoded for a person (see ``format_value``).
    * ``shap_base_value``: the model's expected raw score; base + all contributions = the row's raw score.
    * ``reason_text``: the reasons as one sentence, e.g.
      ``"income 18,000 raised risk by 0.21; credit_score 540 raised risk by 0.17; age 44 lowered risk by 0.05"``.

    Rows are encoded with ``feature_matrix`` exactly as at scoring time and explained ``chunk_rows`` at a time, so
    memory stays bounded; results do not depend on ``chunk_rows``. ``num_threads`` caps the threads of the TreeSHAP
    engine (0 = one per core, as in scoring). Raises ValueError when ``features`` do not match the booster's
    features, or when ``top_k``/``chunk_rows`` are below 1. An empty ``frame`` gives an empty frame with the schema.
    """
    _check_top_k(top_k)
    return explain(
        frame, Explainer.for_rows(booster, features, frame.height), top_k, chunk_rows, num_threads=num_threads
    )


def explain(
    frame: pl.DataFrame, explainer: Explainer, top_k: int = 3, chunk_rows: int = 40_000, *, num_threads: int = 0
) -> pl.DataFrame:
    """``reason_codes`` of ``frame``'s rows with an ``explainer`` built for them (and maybe for more rows, explained
    in other calls): the same rows as one call on all of them gives."""
    _check_top_k(top_k)
    features = explainer.features
    names = np.array([feature.name for feature in features], dtype=object)
    k = min(top_k, len(features))
    parts: list[pl.DataFrame] = []
    for matrix, contributions in _explained_chunks(frame, explainer, chunk_rows, num_threads):
        per_feature = contributions[:, :-1]
        order = np.argsort(-np.abs(per_feature), axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(per_feature, order, axis=1).ravel()
        flat = pl.DataFrame(
            {
                "feature": names[order.ravel()].tolist(),
                "value": _formatted_values(features, order.ravel(), np.take_along_axis(matrix, order, axis=1).ravel()),
                "contribution": top,
            },
            schema=REASON_STRUCT.to_schema(),
        )
        rows = len(per_feature)
        codes = flat.to_struct("reason_codes").reshape((rows, k)).cast(pl.List(REASON_STRUCT))
        texts = flat.select(_phrases(_amounts(top))).to_series().reshape((rows, k)).arr.join("; ")
        parts.append(
            pl.DataFrame(
                {
                    "reason_codes": codes,
                    "shap_base_value": pl.Series(contributions[:, -1], dtype=pl.Float64),
                    "reason_text": texts,
                }
            )
        )
    if not parts:
        return pl.DataFrame(schema=REASON_SCHEMA)
    return pl.concat(parts).cast(REASON_SCHEMA)  # type: ignore[arg-type]


def format_value(feature: FeatureCard, value: float) -> str:
    """A model input value as a person reads it: NaN -> ``missing``; a category code -> its level name; a bool ->
    ``true``/``false``; an int -> digits with thousands separators; a float -> thousands separators and no decimals
    from 100 up, else three significant digits (``0.452``, ``3.7``)."""
    if math.isnan(value):
        return MISSING
    if feature.dtype == "category":
        levels = feature.categories or []
        code = int(value)
        return levels[code] if code == value and 0 <= code < len(levels) else MISSING
    if feature.dtype == "bool":
        return "true" if value else "false"
    if feature.dtype == "int" or (value.is_integer() and abs(value) < 1e15) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _formatted_values(features: list[FeatureCard], columns: np.ndarray, values: np.ndarray) -> list[str]:
    """``format_value(features[columns[i]], values[i])`` for every i, formatting each feature's distinct values once
    (distinct by their bits, so -0.0 and 0.0 stay apart; categories, ints and flags repeat a lot)."""
    shown = np.empty(len(values), dtype=object)
    for column in np.unique(columns).tolist():
        at = np.flatnonzero(columns == column)
        _, first, inverse = np.unique(values[at].view(np.int64), return_index=True, return_inverse=True)
        texts = [format_value(features[column], value) for value in values[at][first].tolist()]
        shown[at] = np.array(texts, dtype=object)[inverse]
    return shown.tolist()


def _amounts(contributions: np.ndarray) -> list[str]:
    """Each contribution's size as a reason states it: two decimals, one significant digit below 0.01."""
    return [f"{size:.2f}" if size >= 0.01 else f"{size:.1g}" for size in np.abs(contributions).tolist()]


def _phrases(amounts: list[str]) -> pl.Expr:
    """One phrase per (feature, value, contribution) row: ``income 18,000 raised risk by 0.21``, ``... lowered ...``,
    or ``... did not change risk`` for a zero (or NaN) contribution."""
    contribution = pl.col("contribution")
    named = pl.concat_str(pl.col("feature"), pl.lit(" "), pl.col("value"))
    change = pl.concat_str(
        named,
        pl.when(contribution > 0).then(pl.lit(" raised risk by ")).otherwise(pl.lit(" lowered risk by ")),
        pl.Series(amounts, dtype=pl.String),
    )
    changed = (contribution != 0) & contribution.is_not_nan()
    return pl.when(changed).then(change).otherwise(pl.concat_str(named, pl.lit(" did not change risk")))


def _check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")


def _check_features(booster: lgb.Booster, features: list[FeatureCard]) -> None:
    names = [feature.name for feature in features]
    if booster.feature_name() != names:
        raise ValueError(f"the feature cards {names} do not match the booster's features {booster.feature_name()}")


def _explained_chunks(
    frame: pl.DataFrame, explainer: Explainer, chunk_rows: int, num_threads: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(encoded matrix, contributions with the base value as last column) per chunk of ``chunk_rows`` rows."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    width = len(explainer.features) + 1
    for start in range(0, frame.height, chunk_rows):
        matrix = feature_matrix(frame.slice(start, chunk_rows), explainer.features)
        if explainer.forest is None:
            contributions = np.asarray(explainer.booster.predict(matrix, pred_contrib=True, num_threads=num_threads))
        else:
            contributions = contributions_of(explainer.forest, matrix, num_threads)
        if contributions.shape != (len(matrix), width):
            raise ValueError(
                f"expected contributions of shape {(len(matrix), width)} from a binary model, got {contributions.shape}"
            )
        yield matrix, contributions
