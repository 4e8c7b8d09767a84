"""Model-specific tests as code: what a person expects of the model, checked on every candidate before it may serve.

* direction — as a feature grows, the score moves only the configured way (higher income never raises risk);
* invariance — shuffling a feature that must not matter changes scores by at most a configured mean amount;
* confidence range — every score is a probability and every confidence lies in [0, 1];
* edge rows — rows at every feature's bounds and every category level still get a finite score.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import polars as pl

from nightkeeper.batch_checks import CheckOutcome
from nightkeeper.card import ModelCard
from nightkeeper.config import BehaviourConfig, Contract
from nightkeeper.contract_types import polars_dtype
from nightkeeper.encoding import feature_matrix
from nightkeeper.scoring import confidence

_STEP = 0.2  # a direction is probed by growing the feature by 20 % of its spread in the sample


def behaviour_tests(
    booster: lgb.Booster,
    card: ModelCard,
    sample: pl.DataFrame,
    contract: Contract,
    config: BehaviourConfig,
    seed: int = 0,
) -> dict[str, CheckOutcome]:
    """Run every behaviour test on ``sample`` (typed feature rows); returns one CheckOutcome per test name."""
    rows = sample.sample(n=min(config.sample_rows, sample.height), seed=seed) if sample.height else sample
    return {
        "directions_hold": _directions(booster, card, rows, config),
        "invariant_features_do_not_matter": _invariance(booster, card, rows, config, seed),
        "scores_and_confidence_in_range": _ranges(booster, card, rows),
        "edge_rows_are_scored": _edges(booster, card, contract),
    }


def _predict(booster: lgb.Booster, card: ModelCard, frame: pl.DataFrame) -> np.ndarray:
    return np.asarray(booster.predict(feature_matrix(frame, card.features)))


def _directions(booster: lgb.Booster, card: ModelCard, rows: pl.DataFrame, config: BehaviourConfig) -> CheckOutcome:
    if not config.directions or rows.height == 0:
        return CheckOutcome(True, "no directions configured", "WARN")
    base = _predict(booster, card, rows)
    broken = {}
    for name, direction in config.directions.items():
        values = rows[name].cast(pl.Float64)
        spread = float((values.quantile(0.95) or 0) - (values.quantile(0.05) or 0)) or 1.0
        grown = rows.with_columns((values + _STEP * spread).cast(rows.schema[name]).alias(name))
        change = _predict(booster, card, grown) - base
        wrong = change > 1e-9 if direction == "decreasing" else change < -1e-9
        share = float(np.mean(wrong))
        if share > config.max_violation_share:
            broken[name] = share
    description = (
        "; ".join(f"{name}: {share:.1%} of rows move the wrong way" for name, share in broken.items())
        if broken
        else f"{len(config.directions)} direction(s) hold on {rows.height} rows"
    )
    return CheckOutcome(not broken, description, "ERROR", {"broken": len(broken)})


def _invariance(
    booster: lgb.Booster, card: ModelCard, rows: pl.DataFrame, config: BehaviourConfig, seed: int
) -> CheckOutcome:
    if not config.invariant or rows.height == 0:
        return CheckOutcome(True, "no invariant features configured", "WARN")
    base = _predict(booster, card, rows)
    changes = {}
    for name, limit in config.invariant.items():
        shuffled = rows.with_columns(rows[name].shuffle(seed=seed).alias(name))
        changes[name] = (float(np.mean(np.abs(_predict(booster, card, shuffled) - base))), limit)
    broken = {name: pair for name, pair in changes.items() if pair[0] > pair[1]}
    description = "; ".join(
        f"{name}: mean |score change| {change:.4f} (limit {limit})" for name, (change, limit) in changes.items()
    )
    return CheckOutcome(not broken, description, "ERROR", {"broken": len(broken)})


def _ranges(booster: lgb.Booster, card: ModelCard, rows: pl.DataFrame) -> CheckOutcome:
    if rows.height == 0:
        return CheckOutcome(True, "no rows to score", "WARN")
    scores = pl.Series(_predict(booster, card, rows))
    confidences = pl.DataFrame({"s": scores}).select(confidence(pl.col("s"), card.decision.threshold))["s"]
    bad_scores = int((~scores.is_between(0, 1) | scores.is_nan()).sum())
    bad_confidence = int((~confidences.is_between(0, 1) | confidences.is_nan()).sum())
    return CheckOutcome(
        bad_scores == 0 and bad_confidence == 0,
        f"{bad_scores} score(s) outside [0, 1], {bad_confidence} confidence(s) outside [0, 1] on {rows.height} rows",
        "ERROR",
    )


def edge_rows(contract: Contract) -> pl.DataFrame:
    """Rows at each numeric feature's configured bounds and at each category level, other features missing."""
    rows: list[dict[str, object]] = []
    for name, spec in contract.features.items():
        if spec.dtype == "category":
            rows += [{name: level} for level in spec.categories or []]
        elif spec.dtype == "bool":
            rows += [{name: True}, {name: False}]
        else:
            rows += [{name: bound} for bound in (spec.min, spec.max) if bound is not None]
    rows.append({})  # everything missing
    schema = {name: polars_dtype(spec) for name, spec in contract.features.items()}
    return pl.DataFrame([{name: row.get(name) for name in schema} for row in rows], schema=schema, strict=False)


def _edges(booster: lgb.Booster, card: ModelCard, contract: Contract) -> CheckOutcome:
    frame = edge_rows(contract)
    scores = _predict(booster, card, frame)
    bad = int(np.sum(~np.isfinite(scores) | (scores < 0) | (scores > 1)))
    return CheckOutcome(bad == 0, f"{frame.height - bad} of {frame.height} edge rows scored in [0, 1]", "ERROR")
