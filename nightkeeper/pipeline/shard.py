"""The row-level steps of a night for the rows of one shard: validate, score, shadow, answer.

A night split into ``config.scale.shards`` shards (``nightkeeper.sharding``: a stable hash of the entity id) is
answered shard by shard, each independently of the others (another process or machine may run it), and the union
of the shards' tables is the night's: every row-level rule, prediction, canary route and fallback answer depends on
the row alone or on rows of the same id (duplicate ids), which share a shard. What judges the night as a whole
(batch checks, the night's metrics, rollout health and decisions, drift and performance from the shards' merged
summaries) is not done here: it runs once per night, after every shard.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import polars as pl

from nightkeeper import registry
from nightkeeper.config import ProjectConfig
from nightkeeper.outcomes import Fallback, assemble_outcomes
from nightkeeper.pipeline.nightly import challenger_scores, champion_scores
from nightkeeper.serving import serving_decision, serving_model
from nightkeeper.sharding import shard_rows
from nightkeeper.validation import validate


@dataclass(frozen=True)
class ShardAnswers:
    """One shard's tables, with the schemas of the night's tables of the same names. ``champion_error``: why the
    champion answered no row of the shard (the fallback answers them), None when it answered."""

    validated_batch: pl.DataFrame
    quarantine: pl.DataFrame
    scored_batch: pl.DataFrame
    shadow_scores: pl.DataFrame
    outcomes: pl.DataFrame
    champion_error: str | None


def answer_shard(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, raw_batch: pl.DataFrame, shard: int
) -> ShardAnswers:
    """Validate, score (serving champion), shadow (serving challenger, ``in_canary`` marking the rows it serves) and
    answer the rows of ``raw_batch`` in ``shard`` of ``config.scale.shards``, as the nightly steps do for the whole
    night (``nightkeeper.pipeline.nightly``: validate_night, score_night, shadow_night, answer_night). Every raw row
    of the shard ends in exactly one outcome row. Reads the registry through ``connection``; writes nothing."""
    rows = shard_rows(raw_batch, shard, config.scale.shards)
    validation = validate(rows, config.contract)
    scored, error = champion_scores(config, connection, night, validation.valid)
    shadow = challenger_scores(config, connection, night, validation.valid)
    champion = serving_model(connection, registry.CHAMPION, night).record
    fallback = Fallback(champion.card.fallback, champion.version) if champion else Fallback(None, None)
    canary = shadow.filter(pl.col("in_canary")).drop("in_canary") if shadow.height else None
    outcomes = assemble_outcomes(
        rows,
        validation.quarantine,
        scored,
        fallback,
        serving_decision(config, connection, night),
        config.fallback.answer_quarantined,
        canary,
    )
    return ShardAnswers(validation.valid, validation.quarantine, scored, shadow, outcomes, error)
