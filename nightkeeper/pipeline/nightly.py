"""The nightly steps: ingest -> validate -> score (champion) -> shadow (challenger) -> answer (outcomes) -> explain
(reason codes of the answers due for them, after every row is answered).

Each step takes ``(config, connection, night, *input frames)`` and returns a StepResult: the partition tables of
the night (stored by the caller), plain metadata (frames in it are previews, already cut to the rows to show) and
check outcomes by check name. Side tables (the night's metrics
in ``monitoring.night_metrics``) are written through ``connection`` by the step itself.

Each row-level step is its row-level work followed by its judgement of the night (``judge_ingest``,
``judge_validation``, ``judge_scoring``, ``judge_shadow``, ``judge_answers``: metadata, checks and metrics, no
tables); a night answered in shards (``nightkeeper.pipeline.shard``) calls the same judgements once, after every
shard, so both give the same metadata, checks and metrics.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, replace

import duckdb
import polars as pl
from sklearn.metrics import roc_auc_score

from nightkeeper import batch_checks, lifecycle, metric_names, metrics_store, registry
from nightkeeper.artifacts import ModelUnavailable, load_verified
from nightkeeper.batch_checks import CheckOutcome
from nightkeeper.config import BusinessValue, ProjectConfig
from nightkeeper.frames import conform
from nightkeeper.ingest import RawBatch, read_night
from nightkeeper.labels import LABELS_TABLE
from nightkeeper.outcomes import AnswerSummary, Fallback, assemble_outcomes, summarise_answers
from nightkeeper.performance import estimate_from_counts
from nightkeeper.pipeline import metadata_keys as keys
from nightkeeper.pipeline.step import StepResult
from nightkeeper.reasons import REASON_CODES_SCHEMA, Explainer, explain
from nightkeeper.registry import ModelRecord
from nightkeeper.routing import in_canary
from nightkeeper.scoring import SCORED_SCHEMA, latency_percentiles, needs_reasons, score_batch, unscored
from nightkeeper.serving import ServingModel, serving_decision, serving_model
from nightkeeper.summaries import ValueCounts
from nightkeeper.validation import KEY_COLUMNS, ROW_KEY, quarantine_summary, validate
from nightkeeper.warehouse import NIGHTLY_SCHEMA, read_rows, table_exists

SHADOW_SCHEMA = {**SCORED_SCHEMA, "in_canary": pl.Boolean()}
JUDGED_SCORE_COLUMNS = [*ROW_KEY, "score", "decision", "model_error"]
"""The columns of the champion's ``scored_batch`` the shadow step judges the challenger against."""
# rows of a table shown in metadata: a preview of the night, a summary (by rule, by reason) in full up to a limit
PREVIEW_ROWS = 10
SUMMARY_ROWS = 50


def ingest_night(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> StepResult:
    """``raw_batch``: every row of the night's landed files; checks of schema, volume and id uniqueness.

    Metadata ``file_warnings`` lists what a person should know about the files (unreadable, not read, nested).
    """
    batch = read_night(config.landing_path, config.source.pattern, night, config.contract, config.root)
    result = judge_ingest(
        config,
        connection,
        night,
        batch,
        batch.frame.height,
        batch_checks.entity_ids_unique(batch.frame),
        batch.frame.drop("record").head(PREVIEW_ROWS),
    )
    return replace(result, tables={"raw_batch": batch.frame})


def judge_ingest(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    batch: RawBatch,
    rows: int,
    unique: CheckOutcome,
    preview: pl.DataFrame,
) -> StepResult:
    """The night's judgement of its raw rows (no tables): ``ingest_night``'s metadata, checks and metrics from what
    was read (``batch``'s files; its frame is not looked at), the night's ``rows`` and its ``entity_ids_unique``
    outcome. A sharded night passes its shards' totals (``nightkeeper.pipeline.shard``)."""
    history = recent_row_counts(connection, night, config.checks.volume_history_nights)
    schema = batch_checks.schema_matches_contract(batch.files, config.contract, night.isoformat())
    volume = batch_checks.volume_within_history(
        rows, history, config.checks.volume_tolerance, config.checks.volume_min_history_nights
    )
    record_night_metrics(
        connection,
        night,
        {
            "validation.rows": rows,
            "validation.schema_problems": schema.metadata.get("problems", 1),
            "validation.volume_deviation": volume.metadata.get("deviation"),
            "validation.duplicate_ids": unique.metadata["duplicated_ids"],
        },
    )
    return StepResult(
        metadata={
            "rows": rows,
            "files": [{"path": f.path, "rows": f.rows, "error": f.error} for f in batch.files],
            "files_not_read": [{"path": s.path, "reason": s.reason} for s in batch.skipped],
            "file_warnings": list(batch.warnings),
            "preview": preview,
        },
        checks={"schema_matches_contract": schema, "volume_within_history": volume, "entity_ids_unique": unique},
    )


def validate_night(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, raw_batch: pl.DataFrame
) -> StepResult:
    """``validated_batch`` (typed rows that passed every row rule) and ``quarantine`` (one row per broken rule).

    It stores two tables, so its metadata is keyed by table name. Check: null rates against the champion's
    training data.
    """
    result = validate(raw_batch, config.contract)
    judged = judge_validation(
        config,
        connection,
        night,
        raw_batch.height,
        result.null_rates,
        summarise_quarantine(result.quarantine),
        result.valid.height,
        result.valid.head(PREVIEW_ROWS),
    )
    return replace(judged, tables={"validated_batch": result.valid, "quarantine": result.quarantine})


def judge_validation(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    rows: int,
    null_rates: dict[str, float],
    quarantine: QuarantineSummary,
    valid_rows: int,
    valid_preview: pl.DataFrame,
) -> StepResult:
    """``validate_night``'s metadata, check and metrics (no tables) from the night's raw ``rows``, its features'
    ``null_rates``, the summary of its ``quarantine`` and how many rows passed."""
    quarantined = quarantine.rows
    champion = serving_model(connection, registry.CHAMPION, night).record
    reference = champion.card.missing_rates if champion else {}  # no usable champion: every empty value counts as new
    nulls = batch_checks.null_rates_stable(null_rates, reference, config.checks.null_rate_spike)
    quarantine_rate = quarantined / rows if rows else 0.0
    record_night_metrics(
        connection,
        night,
        {
            "validation.quarantine_rate": quarantine_rate,
            "validation.null_rate_spikes": nulls.metadata["spiking_features"],
        },
    )
    return StepResult(
        metadata={
            "validated_batch": {"rows": valid_rows, "rows_in": rows, "preview": valid_preview},
            "quarantine": {
                "quarantined_rows": quarantined,
                "quarantine_rate": quarantine_rate,
                "broken_rules": quarantine.broken_rules,
                "by_rule": quarantine.by_rule,
                "preview": quarantine.preview,
            },
        },
        checks={"null_rates_stable": nulls},
    )


@dataclass(frozen=True)
class QuarantineSummary:
    """What the night's judgement reads of its quarantine: the quarantined ``rows`` (distinct row keys), the
    ``broken_rules`` (quarantine rows), the counts by column and rule (``validation.quarantine_summary``, the first
    ``SUMMARY_ROWS``) and the first ``PREVIEW_ROWS`` quarantine rows (by row key, column, rule)."""

    rows: int
    broken_rules: int
    by_rule: pl.DataFrame
    preview: pl.DataFrame


def summarise_quarantine(quarantine: pl.DataFrame) -> QuarantineSummary:
    """The ``QuarantineSummary`` of a night's quarantine (QUARANTINE_SCHEMA, sorted)."""
    return QuarantineSummary(
        quarantine.select(ROW_KEY).unique().height,
        quarantine.height,
        quarantine_summary(quarantine).head(SUMMARY_ROWS),
        quarantine.head(PREVIEW_ROWS),
    )


def score_night(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, validated_batch: pl.DataFrame
) -> StepResult:
    """``scored_batch``: the champion's answer for every validated row, or (degraded night) why it has none.

    Metadata ``degraded`` / ``model_error`` say whether the fallback will answer for the model. Check:
    ``champion_answered``.
    """
    frame, error = champion_scores(config, serving_model(connection, registry.CHAMPION, night), validated_batch)
    summary = summarise_scores(frame)
    return replace(judge_scoring(connection, night, summary, error), tables={"scored_batch": frame})


@dataclass(frozen=True)
class ScoreSummary:
    """What the night's judgement reads of a night's scores: its rows, the p50 / p95 per-row latency
    (``scoring.latency_percentiles``), row counts by decision and its first rows by row key."""

    rows: int
    latency: dict[str, float | None]
    decisions: dict[str, int]
    preview: pl.DataFrame


def summarise_scores(scored: pl.DataFrame) -> ScoreSummary:
    """The ``ScoreSummary`` of a night's scores (SCORED_SCHEMA, sorted by row key)."""
    return ScoreSummary(scored.height, latency_percentiles(scored), _decision_counts(scored), scored.head(PREVIEW_ROWS))


def judge_scoring(
    connection: duckdb.DuckDBPyConnection, night: dt.date, scored: ScoreSummary, error: str | None
) -> StepResult:
    """``score_night``'s metadata, check and metrics (no tables) from the summary of the night's champion scores and
    why the champion did not answer (None when it did)."""
    version = serving_model(connection, registry.CHAMPION, night).version
    latency = scored.latency
    record_night_metrics(
        connection,
        night,
        {
            "scoring.model_failed": 1.0 if error else 0.0,
            "scoring.latency_p95_ms": latency["p95_ms"],
        },
        version,
    )
    return StepResult(
        metadata={
            "rows": scored.rows,
            "model_version": version or "none",
            "degraded": error is not None,
            "model_error": error or "",
            "latency_p50_ms": latency["p50_ms"],
            "latency_p95_ms": latency["p95_ms"],
            "decisions": scored.decisions,
            "preview": scored.preview,
        },
        checks={"champion_answered": batch_checks.model_answered(error, version)},
    )


def champion_scores(
    config: ProjectConfig, champion: ServingModel, validated: pl.DataFrame
) -> tuple[pl.DataFrame, str | None]:
    """The serving ``champion``'s answer for every row of ``validated`` (SCORED_SCHEMA), and why it has none (None
    when it answered): no champion, an unusable registry row or artifact, a model that raised or overran its
    budget."""
    if champion.record is None:
        reason = champion.error or "no champion model is registered for this night"
        return unscored(validated, champion.version, reason), reason
    try:
        booster = load_verified(champion.record)
    except ModelUnavailable as exc:
        return unscored(validated, champion.version, str(exc)), str(exc)
    result = score_batch(
        validated, booster, champion.record.card, config.model.chunk_rows, config.model.time_budget_seconds
    )
    return result.frame, result.error


def challenger_scores(config: ProjectConfig, challenger: ServingModel, validated: pl.DataFrame) -> pl.DataFrame:
    """The serving ``challenger``'s answer for every row of ``validated`` with ``in_canary`` (SHADOW_SCHEMA): the rows
    it serves at its stage's canary percent (``routing.in_canary``). Empty without a challenger; a challenger that
    cannot be loaded fails every row (its rollout health then rolls it back)."""
    if challenger.version is None:
        return pl.DataFrame(schema=SHADOW_SCHEMA)
    try:
        if challenger.record is None:
            raise ModelUnavailable(challenger.error)
        booster = load_verified(challenger.record)
        result = score_batch(
            validated, booster, challenger.record.card, config.model.chunk_rows, config.model.time_budget_seconds
        )
        frame = result.frame
    except ModelUnavailable as exc:
        frame = unscored(validated, challenger.version, str(exc))
    return frame.with_columns(in_canary(frame["entity_id"], lifecycle.canary_percent(challenger.stage)))


def shadow_night(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    validated_batch: pl.DataFrame,
    scored_batch: pl.DataFrame,
) -> StepResult:
    """``shadow_scores``: the challenger's answer for every validated row (``in_canary`` marks the rows it serves),
    its health against the champion tonight and the rollout decision (metadata ``keys.SHADOW_ROLLOUT_ACTION``: none /
    hold / advance / promote / rollback) the rollout sensor acts on. Check: ``challenger_healthy``.
    ``scored_batch`` needs only ``JUDGED_SCORE_COLUMNS``.
    """
    frame = challenger_scores(config, serving_model(connection, registry.CHALLENGER, night), validated_batch)
    tally = ShadowTally.of(frame, scored_batch)
    return replace(judge_shadow(config, connection, night, tally), tables={"shadow_scores": frame})


def judge_shadow(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, tally: ShadowTally
) -> StepResult:
    """``shadow_night``'s metadata, check and metrics (no tables) from the tally of the night's challenger scores
    against the champion's (``ShadowTally``): the challenger's health tonight and the rollout decision."""
    challenger = serving_model(connection, registry.CHALLENGER, night)
    if challenger.version is None:
        return StepResult(
            metadata={keys.SHADOW_CHALLENGER: keys.NONE, keys.SHADOW_ROLLOUT_ACTION: keys.NONE},
            checks={"challenger_healthy": CheckOutcome(True, "no challenger tonight", "WARN")},
        )
    history = metrics_store.metric_history(connection, ["rollout.healthy"], night - dt.timedelta(days=1), 400)
    percent = lifecycle.canary_percent(challenger.stage)
    rollout = config.lifecycle.rollout
    realized = realized_rollout_auc(connection, challenger.version, night, rollout.min_labeled_rows)
    health = tallied_health(
        night,
        tally,
        serving_decision(config, connection, night).threshold,
        realized,
        estimate_trusted(connection, night),
    )
    earlier_healthy = history.filter((pl.col("night") >= challenger.effective_from) & (pl.col("value") == 1.0)).height
    failures = health.failures(rollout)
    healthy = not failures
    decision = lifecycle.decide_rollout(
        challenger.stage or lifecycle.SHADOW, earlier_healthy + healthy, health, rollout
    )
    record_night_metrics(
        connection,
        night,
        {
            "rollout.healthy": float(healthy),
            "rollout.error_rate": health.error_rate,
            "rollout.fallback_rate_increase": health.fallback_rate_increase,
            "rollout.agreement": health.agreement,
            "rollout.estimated_auc_drop": health.estimated_auc_drop,
            "rollout.estimate_trusted": float(health.estimate_trusted),
            "rollout.realized_auc_drop": health.realized_auc_drop,
            "rollout.labeled_rows": health.labeled_rows,
            "rollout.canary_percent": percent,
        },
        challenger.version,
    )
    return StepResult(
        metadata={
            keys.SHADOW_NIGHT: night.isoformat(),
            keys.SHADOW_CHALLENGER: challenger.version,
            keys.SHADOW_STAGE: challenger.stage or "",
            "canary_percent": percent,
            "canary_rows": tally.canary_rows,
            "error_rate": health.error_rate,
            "fallback_rate_increase": health.fallback_rate_increase,
            "agreement": health.agreement,
            "estimated_auc_drop": health.estimated_auc_drop,
            "estimate_trusted": health.estimate_trusted,
            "labeled_rows": realized.rows,
            "realized_auc_challenger": realized.challenger,
            "realized_auc_champion": realized.champion,
            "realized_auc_drop": health.realized_auc_drop,
            "healthy_nights_in_stage": earlier_healthy + healthy,
            keys.SHADOW_ROLLOUT_ACTION: decision.action,
            keys.SHADOW_ROLLOUT_NEXT_STAGE: decision.next_stage or "",
            keys.SHADOW_ROLLOUT_REASON: decision.reason,
        },
        checks={
            "challenger_healthy": CheckOutcome(
                healthy,
                "; ".join(failures) or f"{challenger.stage}: healthy ({decision.reason})",
                "ERROR",
            )
        },
    )


def answer_night(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    raw_batch: pl.DataFrame,
    quarantine: pl.DataFrame,
    scored_batch: pl.DataFrame,
    shadow_scores: pl.DataFrame,
) -> StepResult:
    """``outcomes``: exactly one answer per raw row (model, canary, fallback or quarantine), fallback and undecided
    answers decided with the serving champion's decision (``serving_decision``).
    Check: ``fallback_rate_within_limit``."""
    champion = serving_model(connection, registry.CHAMPION, night).record
    fallback = Fallback(champion.card.fallback, champion.version) if champion else Fallback(None, None)
    canary = shadow_scores.filter(pl.col("in_canary")).drop("in_canary") if shadow_scores.height else None
    frame = assemble_outcomes(
        raw_batch,
        quarantine,
        scored_batch,
        fallback,
        serving_decision(config, connection, night),
        config.fallback.answer_quarantined,
        canary,
    )
    summary = summarise_answers([frame], PREVIEW_ROWS)
    return replace(judge_answers(config, connection, night, summary), tables={"outcomes": frame})


def judge_answers(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, summary: AnswerSummary
) -> StepResult:
    """``answer_night``'s metadata, check and metrics (no tables) from the summary of the night's outcomes
    (``outcomes.summarise_answers``)."""
    champion = serving_model(connection, registry.CHAMPION, night).record
    counts = summary.by_source
    total = summary.rows
    version = champion.version if champion else None
    record_night_metrics(
        connection,
        night,
        {
            "outcomes.rows": total,
            "outcomes.fallback_rate": counts["fallback"] / total if total else 0.0,
            "outcomes.undecided_rate": counts["quarantine"] / total if total else 0.0,
        },
        version,
    )
    return StepResult(
        metadata={
            "rows": total,
            **{f"{source}_rows": count for source, count in counts.items()},
            "fallback_rate": counts["fallback"] / total if total else 0.0,
            "quarantine_rate": counts["quarantine"] / total if total else 0.0,
            "not_model_by_reason": summary.not_model_by_reason.head(SUMMARY_ROWS),
            "decisions": summary.decisions,
            "model_version": version or "none",
            "preview": summary.preview,
        },
        checks={
            "fallback_rate_within_limit": batch_checks.fallback_rate_within_limit(
                counts, config.checks.max_fallback_rate
            )
        },
    )


EXPLAINED_OUTCOME_COLUMNS = [*KEY_COLUMNS, "source", "model_version", "score", "decision"]
"""The columns of ``outcomes`` the explain steps read (which answers are due, and by which model version)."""


def explain_night(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    validated_batch: pl.DataFrame,
    outcomes: pl.DataFrame,
) -> StepResult:
    """``reason_codes``: one row per answer due for reasons (REASON_CODES_SCHEMA), computed after the night's
    answers are stored so they never wait for it.

    Due: the model and canary answers selected by ``model.reason_codes`` (``needs_reasons``: 'scoped' = declined or
    within ``review.band`` of the threshold), each judged and explained (exact TreeSHAP, top
    ``model.reason_code_count``) with the model version that answered it. A version whose model cannot be loaded
    any more is left unexplained and named in metadata ``unexplained_versions``; its answers stand.
    ``outcomes`` needs at least ``EXPLAINED_OUTCOME_COLUMNS``.
    """
    started = time.perf_counter()
    due = due_for_reasons(config, connection, outcomes)
    return _explained(config, due, validated_batch, started)


def explain_stored_night(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, outcomes: pl.DataFrame
) -> StepResult:
    """``explain_night`` on the night's stored ``validated_batch``, of which DuckDB reads only the rows due for
    reasons (on a scoped night ~13 %), so the step never loads the rest of the night's rows into memory."""
    started = time.perf_counter()
    due = due_for_reasons(config, connection, outcomes)
    keys = pl.concat(
        [rows.select(ROW_KEY) for _, rows in due.by_version]
        or [pl.DataFrame(schema={"source_file": pl.String, "row_number": pl.Int64})]
    )
    return _explained(config, due, read_rows(connection, NIGHTLY_SCHEMA, "validated_batch", night, keys), started)


@dataclass(frozen=True)
class DueForReasons:
    """The night's answers due for reasons (or some of its rows'): per model version the registry knows (in version
    order), its record and its due answers (``KEY_COLUMNS``, source, model_version); ``answers``, the model and
    canary answers judged; ``unknown``, the versions the registry does not know (version -> why)."""

    by_version: list[tuple[ModelRecord, pl.DataFrame]]
    answers: int
    unknown: dict[str, str]


def due_for_reasons(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, outcomes: pl.DataFrame
) -> DueForReasons:
    """Which of the night's model and canary ``outcomes`` are due for reasons, per the version that answered them."""
    answered = outcomes.filter(pl.col("source").is_in(["model", "canary"]))
    by_version, unknown = [], {}
    for (version,) in answered.select("model_version").unique().sort("model_version").iter_rows():
        try:
            record = registry.get_version(connection, version)
        except KeyError as exc:
            unknown[version] = str(exc)
            continue
        due = answered.filter(
            (pl.col("model_version") == version)
            & needs_reasons(record.card.decision, config.model.reason_codes, config.review.band)
        ).select(*KEY_COLUMNS, "source", "model_version")
        if due.height:
            by_version.append((record, due))
    return DueForReasons(by_version, answered.height, unknown)


def night_explainers(due_rows: list[tuple[ModelRecord, int]]) -> tuple[dict[str, Explainer], dict[str, str]]:
    """Each model version's explainer of its ``int`` answers due tonight in all (``reasons.Explainer.for_rows``: its
    model loaded, and compiled when worth it, once for the night however its rows are cut), and the versions whose
    model cannot be loaded any more (version -> why)."""
    explainers: dict[str, Explainer] = {}
    unexplained: dict[str, str] = {}
    for record, rows in due_rows:
        try:
            explainers[record.version] = Explainer.for_rows(load_verified(record), record.card.features, rows)
        except ModelUnavailable as exc:
            unexplained[record.version] = str(exc)
    return explainers, unexplained


def explain_due(
    config: ProjectConfig, due: DueForReasons, validated_batch: pl.DataFrame, explainers: dict[str, Explainer]
) -> pl.DataFrame:
    """The ``reason_codes`` rows (REASON_CODES_SCHEMA, by row key) of the answers ``due``, explained from
    ``validated_batch`` (at least the due rows) by their version's explainer; a version without one is left out."""
    parts: list[pl.DataFrame] = []
    for record, rows_due in due.by_version:
        if record.version not in explainers:
            continue
        rows = rows_due.select(ROW_KEY).join(validated_batch, on=ROW_KEY, how="left", maintain_order="left")
        reasons = explain(rows, explainers[record.version], top_k=config.model.reason_code_count)
        parts.append(pl.concat([rows_due, reasons.select("reason_codes", "reason_text")], how="horizontal"))
    if not parts:
        return pl.DataFrame(schema=REASON_CODES_SCHEMA)
    return conform(pl.concat(parts), REASON_CODES_SCHEMA).sort(ROW_KEY)


def judge_reasons(
    rows: int,
    answers: int,
    by_version: dict[str, int],
    unexplained: dict[str, str],
    preview: pl.DataFrame,
    started: float,
) -> StepResult:
    """The ``reason_codes`` step's metadata (no tables): the explained ``rows`` (``by_version``), the model and
    canary ``answers`` judged, the versions left ``unexplained`` (version -> why), the first rows explained by row
    key (``preview``, without ``reason_codes``) and the step's seconds from ``started`` (``time.perf_counter``)."""
    return StepResult(
        metadata={
            "rows": rows,
            "answers": answers,
            "by_version": dict(sorted(by_version.items())),
            "unexplained_versions": dict(sorted(unexplained.items())),
            "seconds": time.perf_counter() - started,
            "preview": preview.head(PREVIEW_ROWS),
        },
    )


def _explained(config: ProjectConfig, due: DueForReasons, validated_batch: pl.DataFrame, started: float) -> StepResult:
    """The ``reason_codes`` step's result for ``due``, explained from ``validated_batch`` (at least the due rows)."""
    explainers, unloadable = night_explainers([(record, rows.height) for record, rows in due.by_version])
    frame = explain_due(config, due, validated_batch, explainers)
    judged = judge_reasons(
        frame.height,
        due.answers,
        {str(k): int(v) for k, v in frame.group_by("model_version").len().iter_rows()},
        due.unknown | unloadable,
        frame.drop("reason_codes").head(PREVIEW_ROWS),
        started,
    )
    return replace(judged, tables={"reason_codes": frame})


def outcomes_conserve_rows(connection: duckdb.DuckDBPyConnection) -> CheckOutcome:
    """Across all stored nights, every raw row has exactly one outcome row (none missing, none extra)."""
    if not (
        table_exists(connection, NIGHTLY_SCHEMA, "raw_batch") and table_exists(connection, NIGHTLY_SCHEMA, "outcomes")
    ):
        return batch_checks.rows_conserved([])
    nights = connection.execute(
        f"""with raw as (select partition_date, count(*) as rows_in from {NIGHTLY_SCHEMA}.raw_batch group by all),
                 answered as (select partition_date, sum(copies) as rows_out, count(*) as distinct_out
                              from (select partition_date, count(*) as copies from {NIGHTLY_SCHEMA}.outcomes
                                    group by partition_date, source_file, row_number)
                              group by all)
            select coalesce(raw.partition_date, answered.partition_date) as night,
                   coalesce(rows_in, 0), coalesce(rows_out, 0), coalesce(distinct_out, 0)
            from raw full join answered using (partition_date) order by night"""
    ).fetchall()
    return batch_checks.rows_conserved(nights)


@dataclass(frozen=True)
class RealizedAuc:
    """Realized AUC of the challenger and the champion on the same labeled rows (AUCs None while too few)."""

    rows: int
    challenger: float | None
    champion: float | None

    @property
    def drop(self) -> float | None:
        """Champion's minus challenger's AUC; None while either is unknown."""
        return None if self.challenger is None or self.champion is None else self.champion - self.challenger


def realized_rollout_auc(
    connection: duckdb.DuckDBPyConnection, version: str, night: dt.date, min_rows: int
) -> RealizedAuc:
    """The challenger ``version`` against the champion on every stored row both scored, of the nights before ``night``
    that the challenger scored (its rollout), whose label had arrived by ``night``.

    Paired on the same rows, so a night's mix or base rate cannot favour either. AUCs are None below ``min_rows``
    labeled rows or while only one class has landed.
    """
    if not all(
        table_exists(connection, *table.split("."))
        for table in (f"{NIGHTLY_SCHEMA}.shadow_scores", f"{NIGHTLY_SCHEMA}.scored_batch", LABELS_TABLE)
    ):
        return RealizedAuc(0, None, None)
    labeled = connection.execute(
        f"""select s.score as challenger, c.score as champion, l.label
            from {NIGHTLY_SCHEMA}.shadow_scores s
            join {NIGHTLY_SCHEMA}.scored_batch c using (partition_date, source_file, row_number)
            join {LABELS_TABLE} l on l.entity_id = s.entity_id and l.partition_date = s.partition_date
            where s.model_version = $version and s.partition_date < $night and l.arrived_on <= $night
              and s.model_error is null and c.model_error is null""",
        {"version": version, "night": night},
    ).pl()
    rows = labeled.height
    if rows < min_rows or labeled["label"].n_unique() < 2:
        return RealizedAuc(rows, None, None)
    labels = labeled["label"].to_numpy()
    return RealizedAuc(
        rows,
        float(roc_auc_score(labels, labeled["challenger"].to_numpy())),
        float(roc_auc_score(labels, labeled["champion"].to_numpy())),
    )


def estimate_trusted(connection: duckdb.DuckDBPyConnection, night: dt.date) -> bool:
    """Whether the monitoring step judged the performance estimate trustworthy on its latest night up to ``night``
    (``performance.estimate_trusted`` within the two nights before, as tonight's is written after this step);
    missing counts as untrusted."""
    history = metrics_store.metric_history(connection, [metric_names.ESTIMATE_TRUSTED], night, 3).drop_nulls("value")
    return bool(history.height) and history.sort("night")["value"][-1] == 1.0


@dataclass(frozen=True)
class ShadowTally:
    """What the challenger's health tonight is judged from: counts (and counts of distinct scores) that merge over any
    split of the night's rows (``merge``): the challenger's ``rows``, those it could not score (``errors``), the
    champion's failures on the same rows (``champion_errors``), the rows both scored (``both``) and how many of them
    both decided alike (``agreements``), the rows routed to the challenger (``canary_rows``), and both models' scores
    of the rows both scored, counted per distinct value (bounded ``summaries.ValueCounts``)."""

    rows: int
    errors: int
    champion_errors: int
    both: int
    agreements: int
    canary_rows: int
    challenger_scores: ValueCounts
    champion_scores: ValueCounts

    @classmethod
    def of(cls, challenger: pl.DataFrame, champion: pl.DataFrame) -> ShadowTally:
        """The tally of the challenger's scores (SHADOW_SCHEMA) against the champion's (at least
        ``JUDGED_SCORE_COLUMNS``) on the same rows."""
        rows = challenger.height
        both = challenger.join(champion, on=ROW_KEY, suffix="_champion").filter(
            pl.col("model_error").is_null() & pl.col("model_error_champion").is_null()
        )
        return cls(
            rows=rows,
            errors=int(challenger["model_error"].is_not_null().sum()) if rows else 0,
            champion_errors=int(
                champion.join(challenger.select(ROW_KEY), on=ROW_KEY, how="semi")["model_error"].is_not_null().sum()
            ),
            both=both.height,
            agreements=int((both["decision"] == both["decision_champion"]).sum()),
            canary_rows=int(challenger["in_canary"].sum()) if "in_canary" in challenger.columns else 0,
            challenger_scores=ValueCounts.of(both["score"].to_numpy(), bounded=True),
            champion_scores=ValueCounts.of(both["score_champion"].to_numpy(), bounded=True),
        )

    @classmethod
    def merge(cls, parts: list[ShadowTally]) -> ShadowTally:
        """The tally of the union of the parts' rows (counts add)."""
        return cls(
            rows=sum(p.rows for p in parts),
            errors=sum(p.errors for p in parts),
            champion_errors=sum(p.champion_errors for p in parts),
            both=sum(p.both for p in parts),
            agreements=sum(p.agreements for p in parts),
            canary_rows=sum(p.canary_rows for p in parts),
            challenger_scores=ValueCounts.merge([p.challenger_scores for p in parts]),
            champion_scores=ValueCounts.merge([p.champion_scores for p in parts]),
        )


def rollout_health(
    night: dt.date,
    challenger: pl.DataFrame,
    champion: pl.DataFrame,
    threshold: float,
    realized: RealizedAuc,
    trusted: bool,
) -> lifecycle.NightHealth:
    """The challenger's health tonight, judged against the champion on the same rows.

    ``error_rate``: share of rows the challenger could not score. ``fallback_rate_increase``: how many more rows
    (as a share) the fallback would answer with the challenger serving than with the champion — the rows it could not
    score minus those the champion could not score (negative when it answers rows the champion could not).
    ``agreement`` and the CBPE ``estimated_auc_drop`` come from tonight's rows both scored; ``realized`` is the
    evidence from labeled rows of the rollout so far and ``trusted`` whether the estimate may be used.
    """
    return tallied_health(night, ShadowTally.of(challenger, champion), threshold, realized, trusted)


def tallied_health(
    night: dt.date, tally: ShadowTally, threshold: float, realized: RealizedAuc, trusted: bool
) -> lifecycle.NightHealth:
    """``rollout_health`` from the night's ``ShadowTally``."""
    rows = tally.rows
    agreement = tally.agreements / tally.both if tally.both else (1.0 if not rows else 0.0)
    estimated = (
        {
            side: estimate_from_counts(scores, threshold, BusinessValue())["auc"]
            for side, scores in (("challenger", tally.challenger_scores), ("champion", tally.champion_scores))
        }
        if tally.both
        else {}
    )
    champion_auc, challenger_auc = estimated.get("champion"), estimated.get("challenger")
    drop = champion_auc - challenger_auc if champion_auc is not None and challenger_auc is not None else None
    error_rate = tally.errors / rows if rows else 0.0
    fallback_rate_increase = (tally.errors - tally.champion_errors) / rows if rows else 0.0
    return lifecycle.NightHealth(
        night,
        error_rate,
        agreement,
        fallback_rate_increase,
        drop,
        estimate_trusted=trusted,
        realized_auc_drop=realized.drop,
        labeled_rows=realized.rows,
    )


def record_night_metrics(
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    metrics: dict[str, float | int | None],
    version: str | None = None,
) -> None:
    """Store the night's figures in monitoring.night_metrics, where the alert rules read them."""
    metrics_store.record_metrics(
        connection, night, {k: None if v is None else float(v) for k, v in metrics.items()}, version
    )


def recent_row_counts(connection: duckdb.DuckDBPyConnection, night: dt.date, nights: int) -> list[int]:
    """Raw row counts of the stored nights among the ``nights`` nights before ``night``."""
    if not table_exists(connection, NIGHTLY_SCHEMA, "raw_batch"):
        return []
    rows = connection.execute(
        f"""select count(*) from {NIGHTLY_SCHEMA}.raw_batch
            where partition_date < $night and partition_date >= $night - to_days($nights)
            group by partition_date""",
        {"night": night, "nights": nights},
    ).fetchall()
    return [count for (count,) in rows]


def _decision_counts(frame: pl.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame.group_by("decision").len().iter_rows()} if frame.height else {}
