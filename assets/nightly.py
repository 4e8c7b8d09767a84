"""The nightly assets: raw_batch -> validated_batch + quarantine -> scored_batch -> outcomes, one daily partition each.

Each asset is a thin call into nightkeeper/; every one touching the warehouse runs in the ``warehouse`` pool.
"""


import datetime as dt

import polars as pl
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetOut,
    AssetsDefinition,
    DailyPartitionsDefinition,
    MetadataValue,
    Output,
    asset,
    asset_check,
    multi_asset,
)

from assets.checks import check_result, markdown_table
from jobs.resources import NIGHTLY_SCHEMA, WAREHOUSE_POOL, ProjectResource, WarehouseResource
from nightkeeper import batch_checks, lifecycle, metrics_store, registry
from nightkeeper.config import BusinessValue
from nightkeeper.performance import estimate_performance
from nightkeeper.routing import in_canary
from nightkeeper.artifacts import ModelUnavailable, load_verified
from nightkeeper.ingest import read_night
from nightkeeper.outcomes import Fallback, assemble_outcomes, outcome_summary
from nightkeeper.scoring import SCORED_SCHEMA, latency_percentiles, needs_reasons, score_batch, unscored, with_reason_codes
from nightkeeper.validation import ROW_KEY, quarantine_summary, validate

PARTITION_METADATA = {"partition_expr": "partition_date"}


def night_of(context: AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def build_nightly_assets(partitions: DailyPartitionsDefinition) -> list:
    """The nightly assets and checks over ``partitions``."""

    @asset(
        name="raw_batch",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="nightly",
        metadata=PARTITION_METADATA,
        description="Every row of the night's landed files, kept as text (JSON record) with its file and row number, "
        "whatever the file's schema.",
        check_specs=[
            AssetCheckSpec("schema_matches_contract", asset="raw_batch", description="Columns and types match the contract."),
            AssetCheckSpec("volume_within_history", asset="raw_batch", description="Row count near recent nights."),
            AssetCheckSpec("entity_ids_unique", asset="raw_batch", description="No id appears twice in the night."),
        ],
    )
    def raw_batch(context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource):
        config = project.load()
        night = night_of(context)
        batch = read_night(config.landing_path, config.source.pattern, night, config.contract.entity_id, config.root)
        for warning in batch.warnings:
            context.log.warning(warning)
        history = _recent_row_counts(warehouse, night, config.checks.volume_history_nights)
        yield Output(
            batch.frame,
            metadata={
                "rows": batch.frame.height,
                "files": MetadataValue.json([{"path": f.path, "rows": f.rows, "error": f.error} for f in batch.files]),
                "files_not_read": MetadataValue.json([{"path": s.path, "reason": s.reason} for s in batch.skipped]),
                "file_warnings": MetadataValue.json(batch.warnings),
                "preview": markdown_table(batch.frame.drop("record")),
            },
        )
        schema = batch_checks.schema_matches_contract(batch.files, config.contract, night.isoformat())
        volume = batch_checks.volume_within_history(
            batch.frame.height, history, config.checks.volume_tolerance, config.checks.volume_min_history_nights
        )
        unique = batch_checks.entity_ids_unique(batch.frame)
        record_night_metrics(warehouse, night, {
            "validation.rows": batch.frame.height,
            "validation.schema_problems": schema.metadata.get("problems", 1),
            "validation.volume_deviation": volume.metadata.get("deviation"),
            "validation.duplicate_ids": unique.metadata["duplicated_ids"],
        })
        yield check_result("schema_matches_contract", schema)
        yield check_result("volume_within_history", volume)
        yield check_result("entity_ids_unique", unique)

    @multi_asset(
        name="validate_batch",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="nightly",
        outs={
            "validated_batch": AssetOut(
                metadata=PARTITION_METADATA,
                description="Rows that passed every row rule, typed per the contract: the model's input.",
            ),
            "quarantine": AssetOut(
                metadata=PARTITION_METADATA,
                description="One row per (input row, broken rule): column, rule, offending value, what was expected.",
            ),
        },
        check_specs=[
            AssetCheckSpec("null_rates_stable", asset="validated_batch", description="No feature's empty share spiked."),
        ],
    )
    def validate_batch(context: AssetExecutionContext, raw_batch: pl.DataFrame, project: ProjectResource, warehouse: WarehouseResource):
        config = project.load()
        result = validate(raw_batch, config.contract)
        rows = raw_batch.height
        quarantined = result.quarantined_rows
        yield Output(
            result.valid,
            output_name="validated_batch",
            metadata={"rows": result.valid.height, "rows_in": rows, "preview": markdown_table(result.valid)},
        )
        by_rule = quarantine_summary(result.quarantine)
        yield Output(
            result.quarantine,
            output_name="quarantine",
            metadata={
                "quarantined_rows": quarantined,
                "quarantine_rate": quarantined / rows if rows else 0.0,
                "broken_rules": result.quarantine.height,
                "by_rule": markdown_table(by_rule, rows=50),
                "preview": markdown_table(result.quarantine),
            },
        )
        night = night_of(context)
        champion = _champion(warehouse, night)
        reference = champion.card.missing_rates if champion else {}
        nulls = batch_checks.null_rates_stable(result.null_rates, reference, config.checks.null_rate_spike)
        record_night_metrics(warehouse, night, {
            "validation.quarantine_rate": quarantined / rows if rows else 0.0,
            "validation.null_rate_spikes": nulls.metadata["spiking_features"],
        })
        yield check_result("null_rates_stable", nulls, asset_key="validated_batch")

    @asset(
        name="scored_batch",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="nightly",
        metadata=PARTITION_METADATA,
        description="The champion's score, confidence and decision for every validated row, in chunks within a time "
        "budget; rows it could not score carry the reason instead.",
        check_specs=[AssetCheckSpec("champion_answered", asset="scored_batch", description="The champion scored every validated row.")],
    )
    def scored_batch(context: AssetExecutionContext, validated_batch: pl.DataFrame, project: ProjectResource, warehouse: WarehouseResource):
        config = project.load()
        champion = _champion(warehouse, night_of(context))
        if champion is None:
            error, version = "no champion model is registered for this night", None
            frame = unscored(validated_batch, None, error)
        else:
            version = champion.version
            try:
                booster = load_verified(champion)
                result = score_batch(validated_batch, booster, champion.card, config.model.chunk_rows, config.model.time_budget_seconds)
                frame, error = result.frame, result.error
                if error is None:
                    needs = needs_reasons(frame, champion.card.decision, config.model.reason_codes, config.review.band)
                    frame = with_reason_codes(frame, validated_batch, booster, champion.card, needs, config.model.reason_code_count)
            except ModelUnavailable as exc:
                frame, error = unscored(validated_batch, version, str(exc)), str(exc)
        if error:
            context.log.error(f"degraded night: {error}; the fallback answers every validated row")
        latency = latency_percentiles(frame)
        yield Output(
            frame,
            metadata={
                "rows": frame.height,
                "model_version": version or "none",
                "degraded": error is not None,
                "model_error": error or "",
                "latency_p50_ms": latency["p50_ms"],
                "latency_p95_ms": latency["p95_ms"],
                "decisions": MetadataValue.json(dict(frame.group_by("decision").len().iter_rows()) if frame.height else {}),
                "rows_with_reason_codes": int(frame["reason_text"].is_not_null().sum()),
                "preview": markdown_table(frame.drop("reason_codes")),
            },
        )
        record_night_metrics(warehouse, night_of(context), {
            "scoring.model_failed": 1.0 if error else 0.0,
            "scoring.latency_p95_ms": latency["p95_ms"],
        }, version)
        yield check_result("champion_answered", batch_checks.model_answered(error, version))

    @asset(
        name="shadow_scores",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="nightly",
        metadata=PARTITION_METADATA,
        description="The challenger's score for every validated row (logged, served only to its canary share), and "
        "its health against the champion tonight: errors, agreement, estimated AUC, latency. Its metadata carries "
        "the rollout decision (hold / advance / promote / rollback) the rollout sensor acts on.",
        check_specs=[AssetCheckSpec("challenger_healthy", asset="shadow_scores", description="The challenger kept its health rules tonight.")],
    )
    def shadow_scores(
        context: AssetExecutionContext,
        validated_batch: pl.DataFrame,
        scored_batch: pl.DataFrame,
        project: ProjectResource,
        warehouse: WarehouseResource,
    ):
        config = project.load()
        night = night_of(context)
        with warehouse.connect() as connection:
            state = registry.alias_state(connection, registry.CHALLENGER, night)
            challenger = registry.get_version(connection, state.version) if state.version else None
            history = metrics_store.metric_history(connection, ["rollout.healthy"], night - dt.timedelta(days=1), 400)
        if challenger is None:
            yield Output(pl.DataFrame(schema=SHADOW_SCHEMA), metadata={"challenger_version": "none", "rollout_action": "none"})
            yield check_result("challenger_healthy", batch_checks.CheckOutcome(True, "no challenger tonight", "WARN"))
            return
        percent = lifecycle.canary_percent(state.stage)
        try:
            booster = load_verified(challenger)
            result = score_batch(validated_batch, booster, challenger.card, config.model.chunk_rows, config.model.time_budget_seconds)
            frame = result.frame
            if result.error is None and percent:  # the answers the challenger serves get their reasons, like the champion's
                needs = needs_reasons(frame, challenger.card.decision, config.model.reason_codes, config.review.band)
                served = frame.with_columns(in_canary(frame["entity_id"], percent))
                frame = with_reason_codes(
                    served, validated_batch, booster, challenger.card, needs & pl.col("in_canary"), config.model.reason_code_count
                )
        except ModelUnavailable as exc:
            frame = unscored(validated_batch, challenger.version, str(exc))
        frame = frame.with_columns(in_canary(frame["entity_id"], percent))
        health = rollout_health(night, frame, scored_batch, config.model.decision.threshold)
        earlier_healthy = history.filter(
            (pl.col("night") >= state.effective_from) & (pl.col("value") == 1.0)
        ).height
        rollout = config.lifecycle.rollout
        healthy = not health.failures(rollout)
        decision = lifecycle.decide_rollout(state.stage, earlier_healthy + healthy, health, rollout)
        record_night_metrics(warehouse, night, {
            "rollout.healthy": float(healthy),
            "rollout.error_rate": health.error_rate,
            "rollout.agreement": health.agreement,
            "rollout.estimated_auc_drop": health.estimated_auc_drop,
            "rollout.canary_percent": percent,
        }, challenger.version)
        context.log.info(f"rollout of {challenger.version} ({state.stage}): {decision.action} — {decision.reason}")
        yield Output(
            frame,
            metadata={
                "night": night.isoformat(),
                "challenger_version": challenger.version,
                "stage": state.stage or "",
                "canary_percent": percent,
                "canary_rows": int(frame["in_canary"].sum()),
                "error_rate": health.error_rate,
                "agreement": health.agreement,
                "estimated_auc_drop": health.estimated_auc_drop,
                "healthy_nights_in_stage": earlier_healthy + healthy,
                "rollout_action": decision.action,
                "rollout_next_stage": decision.next_stage or "",
                "rollout_reason": decision.reason,
            },
        )
        yield check_result("challenger_healthy", batch_checks.CheckOutcome(
            healthy, "; ".join(health.failures(rollout)) or f"{state.stage}: healthy ({decision.reason})", "ERROR",
        ))

    @asset(
        name="outcomes",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="nightly",
        metadata=PARTITION_METADATA,
        description="Exactly one answer per raw row: source (model / canary / fallback / quarantine), decision, score, "
        "confidence, model version, latency and the reason when the model did not answer.",
        check_specs=[AssetCheckSpec("fallback_rate_within_limit", asset="outcomes", description="Few rows left to the fallback.")],
    )
    def outcomes(
        context: AssetExecutionContext,
        raw_batch: pl.DataFrame,
        quarantine: pl.DataFrame,
        scored_batch: pl.DataFrame,
        shadow_scores: pl.DataFrame,
        project: ProjectResource,
        warehouse: WarehouseResource,
    ):
        config = project.load()
        champion = _champion(warehouse, night_of(context))
        fallback = Fallback(champion.card.fallback, champion.version) if champion else Fallback(None, None)
        canary = shadow_scores.filter(pl.col("in_canary")).drop("in_canary") if shadow_scores.height else None
        frame = assemble_outcomes(
            raw_batch, quarantine, scored_batch, fallback, config.contract, config.model.decision,
            config.fallback.answer_quarantined, canary,
        )
        counts = outcome_summary(frame)
        total = frame.height
        not_model = frame.filter(~pl.col("source").is_in(["model", "canary"]))
        reasons = (
            not_model.with_columns(pl.col("reason").str.split(";").list.first().str.replace(r":.*$", ""))
            .group_by("source", "reason").len().sort("len", descending=True)
        )
        yield Output(
            frame,
            metadata={
                "rows": total,
                **{f"{source}_rows": count for source, count in counts.items()},
                "fallback_rate": counts["fallback"] / total if total else 0.0,
                "quarantine_rate": counts["quarantine"] / total if total else 0.0,
                "not_model_by_reason": markdown_table(reasons, rows=50),
                "decisions": MetadataValue.json(dict(frame.group_by("decision").len().iter_rows()) if total else {}),
                "model_version": champion.version if champion else "none",
                "preview": markdown_table(frame.drop("reason_codes")),
            },
        )
        record_night_metrics(warehouse, night_of(context), {
            "outcomes.rows": total,
            "outcomes.fallback_rate": counts["fallback"] / total if total else 0.0,
            "outcomes.undecided_rate": counts["quarantine"] / total if total else 0.0,
        }, champion.version if champion else None)
        yield check_result("fallback_rate_within_limit", batch_checks.fallback_rate_within_limit(counts, config.checks.max_fallback_rate))

    @asset_check(
        asset="outcomes",
        name="outcomes_conserve_rows",
        pool=WAREHOUSE_POOL,
        description="Across all stored nights, every raw row has exactly one outcome row (none missing, none extra).",
    )
    def outcomes_conserve_rows(warehouse: WarehouseResource):
        with warehouse.connect() as connection:
            nights = connection.execute(
                f"""with raw as (select partition_date, count(*) as rows_in from {NIGHTLY_SCHEMA}.raw_batch group by all),
                         answered as (select partition_date, count(*) as rows_out,
                                             count(distinct (source_file, row_number)) as distinct_out
                                      from {NIGHTLY_SCHEMA}.outcomes group by all)
                    select coalesce(raw.partition_date, answered.partition_date) as night,
                           coalesce(rows_in, 0), coalesce(rows_out, 0), coalesce(distinct_out, 0)
                    from raw full join answered using (partition_date) order by night"""
            ).fetchall()
        return check_result("outcomes_conserve_rows", batch_checks.rows_conserved(nights))

    return [raw_batch, validate_batch, scored_batch, shadow_scores, outcomes, outcomes_conserve_rows]


SHADOW_SCHEMA = {**SCORED_SCHEMA, "in_canary": pl.Boolean()}


def rollout_health(night: dt.date, challenger: pl.DataFrame, champion: pl.DataFrame, threshold: float) -> lifecycle.NightHealth:
    """The challenger's health tonight, judged against the champion on the same rows."""
    rows = challenger.height
    errors = challenger["model_error"].is_not_null().sum() if rows else 0
    both = challenger.join(champion, on=ROW_KEY, suffix="_champion").filter(
        pl.col("model_error").is_null() & pl.col("model_error_champion").is_null()
    )
    agreement = float((both["decision"] == both["decision_champion"]).mean()) if both.height else (1.0 if not rows else 0.0)
    estimated = {
        side: estimate_performance(both[column].to_numpy(), threshold, BusinessValue())["auc"]
        for side, column in (("challenger", "score"), ("champion", "score_champion"))
    } if both.height else {}
    drop = (
        estimated["champion"] - estimated["challenger"]
        if estimated.get("champion") is not None and estimated.get("challenger") is not None
        else None
    )
    error_rate = errors / rows if rows else 0.0
    return lifecycle.NightHealth(night, error_rate, agreement, error_rate, drop)


def record_night_metrics(
    warehouse: WarehouseResource, night: dt.date, metrics: dict[str, float | int | None], version: str | None = None
) -> None:
    """Store the night's figures in monitoring.night_metrics, where the alert rules read them."""
    with warehouse.connect() as connection:
        metrics_store.record_metrics(connection, night, {k: None if v is None else float(v) for k, v in metrics.items()}, version)


def _champion(warehouse: WarehouseResource, night: dt.date) -> registry.ModelRecord | None:
    with warehouse.connect() as connection:
        return registry.alias_record(connection, registry.CHAMPION, night)


def _recent_row_counts(warehouse: WarehouseResource, night: dt.date, nights: int) -> list[int]:
    with warehouse.connect() as connection:
        exists = connection.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = 'raw_batch'", [NIGHTLY_SCHEMA]
        ).fetchone()[0]
        if not exists:
            return []
        rows = connection.execute(
            f"""select count(*) from {NIGHTLY_SCHEMA}.raw_batch
                where partition_date < $night and partition_date >= $night - to_days($nights)
                group by partition_date""",
            {"night": night, "nights": nights},
        ).fetchall()
    return [count for (count,) in rows]
