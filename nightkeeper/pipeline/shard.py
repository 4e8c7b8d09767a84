"""A night in shards: the row-level steps for the rows of one shard (validate, score, shadow, answer), and the
night's judgement from its shards.

A night split into ``config.scale.shards`` shards (``nightkeeper.sharding``: a stable hash of the entity id) is
answered shard by shard, each independently of the others (another process or machine may run it), and the union
of the shards' tables is the night's: every row-level rule, prediction, canary route and fallback answer depends on
the row alone or on rows of the same id (duplicate ids), which share a shard. What judges the night as a whole
(batch checks, the night's metrics, rollout health and decisions, drift from the shards' merged summaries) runs
once per night, after every shard (``judge_shards``), through the same functions the unsharded steps call
(``nightkeeper.pipeline.nightly.judge_*``), so its metadata, checks and metrics are the unsharded night's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import duckdb
import polars as pl

from nightkeeper import batch_checks, drift, registry
from nightkeeper.config import DecisionConfig, ProjectConfig
from nightkeeper.ingest import RawBatch, read_night
from nightkeeper.outcomes import Fallback, assemble_outcomes
from nightkeeper.pipeline import chunked, monitoring, nightly
from nightkeeper.pipeline.step import StepResult
from nightkeeper.serving import ServingModel, serving_decision, serving_model
from nightkeeper.sharding import shard_rows
from nightkeeper.summaries import DriftSummary
from nightkeeper.validation import ROW_KEY, null_rates_of, validate
from nightkeeper.warehouse import NIGHTLY_SCHEMA, PARTITION_COLUMN, SHARD_COLUMN, Location, connect, store_shard

SHARD_TABLES = ("raw_batch", "validated_batch", "quarantine", "scored_batch", "shadow_scores", "outcomes")
"""The row-level tables a shard stores its own rows of (column ``warehouse.SHARD_COLUMN``)."""


@dataclass(frozen=True)
class Serving:
    """What answers a night, read from the registry once: the serving champion and challenger, and the decision
    the champion was judged with (``serving.serving_decision``)."""

    champion: ServingModel
    challenger: ServingModel
    decision: DecisionConfig


def serving_of(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> Serving:
    """The models and decision serving ``night``, as the nightly steps read them."""
    return Serving(
        serving_model(connection, registry.CHAMPION, night),
        serving_model(connection, registry.CHALLENGER, night),
        serving_decision(config, connection, night),
    )


@dataclass(frozen=True)
class ShardAnswers:
    """One shard's tables, with the schemas of the night's tables of the same names. ``champion_error``: why the
    champion answered no row of the shard (the fallback answers them), None when it answered. ``null_counts`` /
    ``judged_rows``: the shard's empty values per feature over its rows (``ValidationResult``)."""

    raw_batch: pl.DataFrame
    validated_batch: pl.DataFrame
    quarantine: pl.DataFrame
    scored_batch: pl.DataFrame
    shadow_scores: pl.DataFrame
    outcomes: pl.DataFrame
    champion_error: str | None
    null_counts: dict[str, int]
    judged_rows: int

    def tables(self) -> dict[str, pl.DataFrame]:
        """The shard's rows of each of ``SHARD_TABLES``."""
        return {table: getattr(self, table) for table in SHARD_TABLES}


def answer_shard(
    config: ProjectConfig, serving: Serving, night: dt.date, raw_batch: pl.DataFrame, shard: int
) -> ShardAnswers:
    """Validate, score (serving champion), shadow (serving challenger, ``in_canary`` marking the rows it serves) and
    answer the rows of ``raw_batch`` in ``shard`` of ``config.scale.shards``, as the nightly steps do for the whole
    night (``nightkeeper.pipeline.nightly``: validate_night, score_night, shadow_night, answer_night). Every raw row
    of the shard ends in exactly one outcome row. Reads nothing from the warehouse (``serving`` was read before)."""
    rows = shard_rows(raw_batch, shard, config.scale.shards)
    validation = validate(rows, config.contract)
    scored, error = nightly.champion_scores(config, serving.champion, validation.valid)
    shadow = nightly.challenger_scores(config, serving.challenger, validation.valid)
    champion = serving.champion.record
    fallback = Fallback(champion.card.fallback, champion.version) if champion else Fallback(None, None)
    canary = shadow.filter(pl.col("in_canary")).drop("in_canary") if shadow.height else None
    outcomes = assemble_outcomes(
        rows,
        validation.quarantine,
        scored,
        fallback,
        serving.decision,
        config.fallback.answer_quarantined,
        canary,
    )
    return ShardAnswers(
        rows,
        validation.valid,
        validation.quarantine,
        scored,
        shadow,
        outcomes,
        error,
        validation.null_counts,
        validation.judged_rows,
    )


@dataclass(frozen=True)
class ShardReport:
    """What the night's judgement needs of one stored shard, small whatever the night's size: the files read
    (``files``: the night's ``RawBatch`` without its rows; every shard reads the same files), the shard's raw
    ``rows``, the rows of its ids that repeat (``repeated_ids``: ``entity_id`` of every copy), its empty values per
    feature over ``judged_rows``, its validated row count, why the champion did not answer it, its drift summary
    (None without a champion) and the first rows of its raw and validated tables for previews."""

    shard: int
    files: RawBatch
    rows: int
    repeated_ids: pl.DataFrame
    null_counts: dict[str, int]
    judged_rows: int
    validated_rows: int
    champion_error: str | None
    drift: DriftSummary | None
    raw_preview: pl.DataFrame
    validated_preview: pl.DataFrame


def run_shard(config: ProjectConfig, location: Location, night: dt.date, shard: int) -> ShardReport:
    """Answer shard ``shard`` of ``night`` and store its rows of every ``SHARD_TABLES`` table in one transaction
    (``warehouse.store_shard``): a re-run replaces only this shard's rows.

    The warehouse is open only to read what serves the night (models, decision, drift reference) and then to store:
    never while the shard reads the landed files and computes, so shards on one DuckDB file compute at once and take
    turns only to write (``warehouse.connect`` waits for the file's lock); on a DuckLake they also write at once.
    """
    with connect(location) as connection:
        serving = serving_of(config, connection, night)
        reference = drift.serving_reference(connection, night, config.monitoring.drift.thresholds)
    batch = read_night(config.landing_path, config.source.pattern, night, config.contract, config.root)
    answers = answer_shard(config, serving, night, batch.frame, shard)
    summary = (
        None
        if reference is None
        else monitoring.summarise_shard_drift(config, reference, answers.validated_batch, answers.scored_batch)
    )
    with connect(location) as connection:
        store_shard(connection, NIGHTLY_SCHEMA, night, shard, config.scale.shards, answers.tables())
    raw = answers.raw_batch
    return ShardReport(
        shard=shard,
        files=replace(batch, frame=batch.frame.clear()),
        rows=raw.height,
        repeated_ids=raw.select("entity_id").filter(
            pl.col("entity_id").is_not_null() & pl.col("entity_id").is_duplicated()
        ),
        null_counts=answers.null_counts,
        judged_rows=answers.judged_rows,
        validated_rows=answers.validated_batch.height,
        champion_error=answers.champion_error,
        drift=summary,
        raw_preview=raw.drop("record").head(nightly.PREVIEW_ROWS),
        validated_preview=answers.validated_batch.head(nightly.PREVIEW_ROWS),
    )


def judge_shards(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, reports: list[ShardReport]
) -> dict[str, StepResult]:
    """The night's judgement once every shard is stored, by step (``ingest``, ``validate``, ``score``, ``shadow``,
    ``answer``, ``drift``): the metadata, checks and night metrics the unsharded steps give, from the shards' reports
    and the night's stored tables (every shard's rows), and the ``drift_metrics`` partition from the shards' merged
    drift summaries. Only ``drift`` carries a table; the row-level tables are stored already."""
    if sorted(r.shard for r in reports) != list(range(config.scale.shards)):
        raise ValueError(
            f"{night}: reports of shards {sorted(r.shard for r in reports)}; expected every shard of "
            f"{config.scale.shards}"
        )
    reports = sorted(reports, key=lambda r: r.shard)
    rows = sum(r.rows for r in reports)
    ingest = nightly.judge_ingest(
        config,
        connection,
        night,
        reports[0].files,
        rows,
        batch_checks.entity_ids_unique(pl.concat([r.repeated_ids for r in reports])),
        _preview(pl.concat([r.raw_preview for r in reports])),
    )
    null_counts = {name: sum(r.null_counts[name] for r in reports) for name in reports[0].null_counts}
    validation = nightly.judge_validation(
        config,
        connection,
        night,
        rows,
        null_rates_of(null_counts, sum(r.judged_rows for r in reports)),
        chunked.stored_quarantine(connection, night),
        sum(r.validated_rows for r in reports),
        _preview(pl.concat([r.validated_preview for r in reports])),
    )
    errors = [r.champion_error for r in reports if r.champion_error is not None]
    scoring = nightly.judge_scoring(
        connection, night, chunked.stored_scores(connection, night), errors[0] if errors else None
    )
    shadow = nightly.judge_shadow(config, connection, night, chunked.stored_shadow_tally(config, connection, night))
    answers = nightly.judge_answers(config, connection, night, chunked.stored_answers(config, connection, night))
    summaries = [r.drift for r in reports if r.drift is not None]
    drifted = monitoring.drift_shards_night(config, connection, night, summaries)
    return {
        "ingest": ingest,
        "validate": validation,
        "score": scoring,
        "shadow": shadow,
        "answer": answers,
        "drift": drifted,
    }


def _stored(connection: duckdb.DuckDBPyConnection, table: str, night: dt.date, order: list[str]) -> pl.DataFrame:
    """The night's rows of ``table`` as every shard stored them, without the shard column, in ``order``."""
    return (
        connection.execute(f"select * from {NIGHTLY_SCHEMA}.{table} where {PARTITION_COLUMN} = ?", [night])
        .pl()
        .drop(SHARD_COLUMN)
        .sort(order)
    )


def _preview(firsts: pl.DataFrame) -> pl.DataFrame:
    """The night's first rows (by file and row number) from each shard's first rows."""
    return firsts.sort(ROW_KEY).head(nightly.PREVIEW_ROWS)
