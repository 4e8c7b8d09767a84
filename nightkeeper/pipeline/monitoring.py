"""The monitoring steps of a night: late labels, realized and estimated performance, drift, alerts, the review queue.

Each step is ``(config, connection, night, *inputs) -> StepResult`` (nightkeeper.pipeline.step): Dagster's assets
call them in production and the backtest calls them with a simulated clock, so both write the same tables. State
that accumulates across nights (labels, metrics, alerts, the review queue) lives in the warehouse's ``monitoring``
schema and is written here through the connection; the only partition table a step returns is ``drift_metrics``.

Metadata values are plain Python: numbers, strings, ``pl.DataFrame`` previews (already cut to the rows worth
showing), ``Path`` for files people open (plots, reports) and lists of dicts read by sensors.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from nightkeeper import (
    alerts,
    drift,
    labels,
    metric_names,
    metrics_store,
    performance,
    registry,
    sharding,
    summaries,
    webhook,
)
from nightkeeper.batch_checks import CheckOutcome
from nightkeeper.config import AlertingConfig, ProjectConfig
from nightkeeper.frames import day
from nightkeeper.pipeline import metadata_keys as keys
from nightkeeper.pipeline.step import StepResult
from nightkeeper.review.queue import build_review_queue
from nightkeeper.review.storage import store_queue
from nightkeeper.serving import serving_model
from nightkeeper.validation import ROW_KEY
from nightkeeper.warehouse import NIGHTLY_SCHEMA, PARTITION_COLUMN, count_rows, read_chunks

REPORTS_FOLDER = "reports"  # under the project root: plots and HTML reports people open
REALIZED_WINDOW_NIGHTS = 7  # realized AUC for alerting is pooled over this many labeled scoring nights
LABEL_LOOKBACK_NIGHTS = 7  # label files that arrived within this many nights are read again (see labels_night)
CALIBRATION_WINDOW_NIGHTS = 14  # calibration is judged on the labeled rows of this many latest scoring nights
PERFORMANCE_HOLD_TOLERANCE = 0.03  # AUC below the champion's holdout by more than this fails `performance_holds`

DRIFT_CHECKS = ("features_stable", "predictions_stable", "population_indistinct")
PERFORMANCE_CHECKS = ("estimate_trustworthy", "performance_holds")

_LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------- labels


def labels_night(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> StepResult:
    """Read the label files that arrived in the week up to ``night`` and store them reconciled with the answers.

    Files that arrived within the last LABEL_LOOKBACK_NIGHTS nights are read again: re-reading is harmless (nothing
    counts twice) and picks up labels whose answer was stored after the file arrived; older files were settled on
    earlier nights. Writes ``monitoring.labels`` and ``monitoring.labels_rejected``; no partition table.
    """
    totals: dict[str, int] = {}
    files = [
        path
        for path in labels.label_files(config.labels_path, night)
        if labels.arrival_date(path) > night - dt.timedelta(days=LABEL_LOOKBACK_NIGHTS)
    ]
    for path in files:
        incoming = labels.read_label_file(path, config.contract)
        ids = incoming["entity_id"].drop_nulls().unique().to_list()
        answered = connection.execute(
            f"select distinct entity_id, partition_date from {NIGHTLY_SCHEMA}.outcomes "
            "where entity_id in (select unnest($ids))",
            {"ids": ids},
        ).pl()
        batch = labels.reconcile_labels(
            incoming, answered, labels.stored_labels(connection, ids), labels.arrival_date(path)
        )
        labels.store_label_batch(connection, batch)
        for name, count in batch.summary().items():
            totals[name] = totals.get(name, 0) + count
    stored, rejected = labels.stored_counts(connection)
    return StepResult(
        metadata={
            "files_read": len(files),
            **{name.replace("labels.", ""): count for name, count in totals.items()},
            "labels_stored": stored,
            "rejections_stored": rejected,
            "recent_rejections": labels.latest_rejections(connection, 10),
        }
    )


# -------------------------------------------------------------------------------------------------- performance


def performance_night(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, *, plots: bool = True
) -> StepResult:
    """Realized metrics per scoring night and model version, tonight's CBPE estimate, and the `performance.*` metrics.

    ``monitoring.performance_realized`` covers every night (re-running an old night must not drop later ones) and
    is kept current incrementally (``performance.refresh_performance``: only nights whose outcomes or labels changed
    are recomputed); tonight's metrics see only what was known by tonight: outcomes up to ``night`` and labels
    arrived by it. ``plots``: render the realized-vs-estimated PNG (its cost grows with the nights shown; a
    backtest that draws its own report turns it off).
    Estimate trust (``performance.estimate_trust``): CBPE is judged against the serving model's latest labels (or its
    holdout before they land); ``performance.estimate_trusted`` (1/0), its gaps and the reason are recorded, and while
    untrusted ``performance.estimated_auc_drop`` is not recorded, so no alert or health check acts on it.
    Checks: ``estimate_trustworthy`` (that verdict, with its reason), ``performance_holds`` (trusted estimated and
    realized AUC within PERFORMANCE_HOLD_TOLERANCE of the champion's holdout).
    """
    settings = config.monitoring.performance
    decision = config.model.decision
    champion = serving_model(connection, registry.CHAMPION, night).record  # a bad registry row: no reference
    performance.refresh_performance(connection, night, decision, settings, config.scale.chunk_rows)
    realized = performance.realized_as_of(connection, night, decision, settings)
    estimated = performance.estimated_as_of(connection, night)  # every night, for the plot
    window = _labeled_window(connection, night, realized)
    calibration = _calibration(window, settings.max_calibration_error)
    tonight = estimated.filter((pl.col("partition_date") == night) & (pl.col("source") == "model"))
    estimate_row = tonight.row(0, named=True) if tonight.height else None
    latest = performance.latest_realized(realized)
    metrics = performance.performance_metrics(latest, estimate_row, calibration, include_missing=True)
    reference_auc = champion.card.holdout_metrics["auc"] if champion else None
    expected_auc = champion.card.holdout_metrics.get("estimated_auc") if champion else None
    pooled = performance.pooled_realized_auc(window, REALIZED_WINDOW_NIGHTS, settings.min_labeled_rows)
    metrics["performance.realized_auc_window"] = pooled["auc"] if pooled else None
    trust = performance.estimate_trust(
        _serving_labeled(window, champion.version if champion else None),
        calibration,
        champion.card.holdout_metrics if champion else None,
        estimate_row,
        settings,
    )
    metrics |= {
        metric_names.ESTIMATE_TRUSTED: 1.0 if trust.trusted else 0.0,
        "performance.estimate_auc_gap": trust.auc_gap,
        "performance.estimate_positive_rate_gap": trust.positive_rate_gap,
    }
    # an estimate that did not match reality must not page anyone nor judge a model: its drop is not recorded
    metrics["performance.estimated_auc_drop"] = (
        _drop(expected_auc, metrics.get("performance.estimated_auc")) if trust.trusted else None
    )
    metrics["performance.realized_auc_drop"] = _drop(reference_auc, pooled["auc"] if pooled else None)
    # the shipped rule pages on the drop beyond chance: a week of small nights wanders further than one of large nights
    metrics[metric_names.REALIZED_AUC_DROP_BEYOND_NOISE] = (
        performance.auc_drop_beyond_noise(champion.card.holdout_metrics, pooled, settings.drop_noise_z)
        if champion and pooled
        else None
    )
    metrics_store.record_metrics(connection, night, metrics, champion.version if champion else None)
    plot = _plot(config.path(Path(REPORTS_FOLDER)), night, realized, estimated) if plots else None
    return StepResult(
        metadata={
            "estimated_auc": metrics.get("performance.estimated_auc"),
            "realized_auc_latest": metrics.get("performance.realized_auc"),
            "realized_night_latest": str(latest["partition_date"]) if latest else "none yet",
            "calibration_error": metrics.get("performance.calibration_error"),
            "estimate_trusted": trust.trusted,
            "estimate_trust_reason": trust.reason,
            "reference_auc": reference_auc,
            "realized_by_night": realized.sort("partition_date", descending=True).head(14),
            "plot": plot if plot else "not rendered" if not plots else "no nights yet",
        },
        checks={
            "estimate_trustworthy": _trustworthy(trust),
            "performance_holds": _holds(metrics, reference_auc),
        },
    )


def _labeled_window(connection: duckdb.DuckDBPyConnection, night: dt.date, realized: pl.DataFrame) -> pl.DataFrame:
    """``scored_with_labels`` (labels arrived by ``night``) of the scoring nights the calibration check and the
    pooled realized AUC read: the model's labeled nights within CALIBRATION_WINDOW_NIGHTS of the latest one, and its
    latest REALIZED_WINDOW_NIGHTS labeled nights."""
    labeled = (
        realized.filter((pl.col("source") == "model") & (pl.col("labeled_rows") > 0))["partition_date"].unique().sort()
    )
    if labeled.is_empty():
        return performance.scored_with_labels_of(connection, [], night)
    recent = labeled.filter(labeled > day(labeled.max()) - dt.timedelta(days=CALIBRATION_WINDOW_NIGHTS))
    return performance.scored_with_labels_of(
        connection, sorted({*recent, *labeled.tail(REALIZED_WINDOW_NIGHTS)}), night
    )


def _serving_labeled(window: pl.DataFrame, version: str | None) -> pl.DataFrame:
    """The serving model's labeled rows of its latest REALIZED_WINDOW_NIGHTS labeled nights in ``window`` (none
    without a serving model)."""
    if version is None:
        return window.clear()
    rows = window.filter(
        (pl.col("source") == "model") & (pl.col("model_version") == version) & pl.col("label").is_not_null()
    )
    nights = rows["partition_date"].unique().sort().tail(REALIZED_WINDOW_NIGHTS)
    return rows.filter(pl.col("partition_date").is_in(nights.implode()))


def _calibration(window: pl.DataFrame, max_error: float) -> performance.CalibrationResult | None:
    """``calibration_check`` on the model's labeled rows of the latest CALIBRATION_WINDOW_NIGHTS calendar nights."""
    joined = window.filter((pl.col("source") == "model") & pl.col("label").is_not_null())
    if joined.height == 0:
        return None
    recent = joined.filter(
        pl.col("partition_date") > day(joined["partition_date"].max()) - dt.timedelta(days=CALIBRATION_WINDOW_NIGHTS)
    )
    return performance.calibration_check(
        recent["score"].to_numpy(), recent["label"].to_numpy(), max_calibration_error=max_error
    )


def _drop(reference: float | None, value: float | None) -> float | None:
    return None if reference is None or value is None else reference - value


def _trustworthy(trust: performance.EstimateTrust) -> CheckOutcome:
    return CheckOutcome(
        trust.trusted,
        (
            "estimated performance is trusted: "
            if trust.trusted
            else "estimated performance is NOT trusted — trust realized figures: "
        )
        + trust.reason,
        "WARN",
        {
            "evidence": trust.evidence,
            **{
                k: v
                for k, v in (("auc_gap", trust.auc_gap), ("positive_rate_gap", trust.positive_rate_gap))
                if v is not None
            },
        },
    )


def _holds(metrics: dict[str, float | None], reference: float | None) -> CheckOutcome:
    drops = {name: metrics.get(f"performance.{name}_auc_drop") for name in ("estimated", "realized")}
    known = {name: drop for name, drop in drops.items() if drop is not None}
    if reference is None or not known:
        return CheckOutcome(True, "no champion reference or no performance figures yet", "WARN")
    limit = PERFORMANCE_HOLD_TOLERANCE
    return CheckOutcome(
        max(known.values()) <= limit,
        "; ".join(
            f"{name} AUC {-drop:+.3f} against the champion's holdout (limit −{limit})" for name, drop in known.items()
        ),
        "ERROR",
        {name + "_auc_drop": drop for name, drop in known.items()},
    )


def prune_drift_reports(folder: Path, night: dt.date, keep_nights: int) -> list[Path]:
    """Delete the evidently reports (``drift-<night>.html``) in ``folder`` of nights ``keep_nights`` days or more
    before ``night``; returns what was deleted. Reports of later nights stay (``night`` may be a backfill)."""
    oldest_kept = night - dt.timedelta(days=keep_nights - 1)
    deleted = []
    for path in folder.glob("drift-*.html"):
        try:
            reported = dt.date.fromisoformat(path.stem.removeprefix("drift-"))
        except ValueError:
            continue  # not a nightly report of ours
        if reported < oldest_kept:
            path.unlink()
            deleted.append(path)
    return deleted


def _plot(folder: Path, night: dt.date, realized: pl.DataFrame, estimated: pl.DataFrame) -> Path | None:
    if estimated.height == 0:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return performance.plot_performance(
        performance.performance_table(realized, estimated), folder / f"performance-{night}.png"
    )


# -------------------------------------------------------------------------------------------------------- drift


def drift_night(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    validated_batch: pl.DataFrame,
    scored_batch: pl.DataFrame,
    *,
    plots: bool = True,
) -> StepResult:
    """Drift of tonight's validated rows against the serving champion's reference profile: the night as one shard,
    ``drift_shards_night`` of its ``drift_summary_of_shard``.

    Returns the ``drift_metrics`` partition (one row per feature, ``drift.FEATURE_SCHEMA`` with ``partition_date``),
    records the ``drift.*`` metrics, writes the drift plot (and evidently's HTML report when configured) under the
    reports folder. Without a champion there is no reference: an empty partition and passing WARN checks. ``plots``:
    render the drift PNG (about a second a night; the backtest draws its own report instead).
    """
    summary = drift_summary_of_shard(config, connection, night, validated_batch, scored_batch)
    return drift_shards_night(config, connection, night, [summary] if summary else [], plots=plots)


def drift_stored_night(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, *, plots: bool = True
) -> StepResult:
    """``drift_night`` of the night's validated rows and champion scores as the warehouse stores them
    (``nightly.validated_batch`` and ``nightly.scored_batch``, partition ``night``), read
    ``summaries.CHUNK_ROWS`` rows at a time: the night is never held whole, so the step's memory is a chunk's and
    the summary's whatever the night's size. Same tables, metrics and checks as ``drift_night`` on the same rows.

    ``scored_batch`` holds one row per validated row (``score_night``), so the night's scores are read on their
    own, without pairing each with its row (only their counts enter the summary); when the two partitions do not
    hold as many rows, the scores are those of the scored rows that pair with a validated row, as in ``drift_night``.
    """
    reference = drift.serving_reference(connection, night, config.monitoring.drift.thresholds)
    if reference is None:
        return drift_shards_night(config, connection, night, [], plots=plots)
    rows, scored, at_night = f"{NIGHTLY_SCHEMA}.validated_batch", f"{NIGHTLY_SCHEMA}.scored_batch", {"night": night}
    rows_query = f"select * from {rows} where {PARTITION_COLUMN} = $night"
    scores_query = f"select score from {scored} where {PARTITION_COLUMN} = $night"
    if count_rows(connection, rows_query, at_night) != count_rows(connection, scores_query, at_night):
        # not one score per row: each row's score by the row key, as drift_night pairs them
        scores_query = (
            f"select s.score from ({rows_query}) v left join (select * from {scored} where {PARTITION_COLUMN} = "
            f"$night) s using ({', '.join(ROW_KEY)})"
        )
    summary = summaries.summarise_drift_chunks(
        read_chunks(connection, rows_query, at_night, summaries.CHUNK_ROWS),
        (
            frame["score"].fill_null(float("nan")).to_numpy()
            for frame in read_chunks(connection, scores_query, at_night, summaries.CHUNK_ROWS)
        ),
        reference.features,
        config.monitoring.drift.domain_classifier_rows,
    )
    return drift_shards_night(config, connection, night, [summary], plots=plots)


def drift_summary_of_shard(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    validated_batch: pl.DataFrame,
    scored_batch: pl.DataFrame,
) -> summaries.DriftSummary | None:
    """The mergeable drift summary (``summaries.summarise_drift``) of one shard's validated rows and champion scores
    (or of the whole night's), over the serving champion's features; None without a champion (no reference)."""
    reference = drift.serving_reference(connection, night, config.monitoring.drift.thresholds)
    return None if reference is None else summarise_shard_drift(config, reference, validated_batch, scored_batch)


def summarise_shard_drift(
    config: ProjectConfig,
    reference: drift.ServingReference,
    validated_batch: pl.DataFrame,
    scored_batch: pl.DataFrame,
) -> summaries.DriftSummary:
    """``drift_summary_of_shard`` against a ``reference`` already read (a shard that must not hold the warehouse
    while it computes reads it first)."""
    return summaries.summarise_drift(
        validated_batch,
        _scores_of_rows(validated_batch, scored_batch),
        reference.features,
        config.monitoring.drift.domain_classifier_rows,
    )


def _scores_of_rows(validated_batch: pl.DataFrame, scored_batch: pl.DataFrame) -> np.ndarray:
    """The champion's score of each validated row, in the rows' order (NaN = unscored). The scored rows usually come
    in the validated rows' order (the pipeline scores them in it and the warehouse keeps it): then no join is needed
    (a join on the row key costs more memory than the night's validated frame)."""
    aligned = validated_batch.height == scored_batch.height and all(
        validated_batch[key].equals(scored_batch[key]) for key in ROW_KEY
    )
    if aligned:
        scores = scored_batch["score"]
    else:
        keys = validated_batch.select(ROW_KEY)
        scores = keys.join(scored_batch.select(*ROW_KEY, "score"), on=ROW_KEY, how="left", maintain_order="left")[
            "score"
        ]
    return scores.fill_null(float("nan")).to_numpy()


def drift_shards_night(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    shards: list[summaries.DriftSummary],
    *,
    plots: bool = True,
) -> StepResult:
    """The night's drift from its shards' summaries (``drift_summary_of_shard`` of each; one for an unsharded night),
    merged exactly (``summaries.merge_drift_summaries``): the tables, metrics, plots and checks ``drift_night``
    describes. evidently's report (when configured) reads the merged domain sample: a uniform sample of the night of
    up to ``monitoring.drift.domain_classifier_rows`` rows.
    No summary, or no champion: no reference, an empty partition and passing WARN checks."""
    settings = config.monitoring.drift
    # the serving champion's reference: it moves with each promotion (and back with a rollback)
    reference = drift.serving_reference(connection, night, settings.thresholds)
    if reference is None or not shards:
        _LOG.warning("no champion: drift has no reference to compare with")
        return StepResult(
            tables={"drift_metrics": pl.DataFrame(schema={"partition_date": pl.Date, **drift.FEATURE_SCHEMA})},
            metadata={"reference": "none"},
            checks={name: CheckOutcome(True, "no champion, no reference profile", "WARN") for name in DRIFT_CHECKS},
        )
    if reference.sample_problem:
        _LOG.warning(f"multivariate drift skipped: {reference.sample_problem}")
    sample = reference.sample
    merged = summaries.merge_drift_summaries(shards)
    result = drift.drift_of_summary(
        reference.profile, merged, reference.features, sample, domain_floor=settings.max_domain_auc
    )
    current = merged.domain_sample.drop(sharding.ENTITY_COLUMN, summaries.HASH_COLUMN)
    folder = config.path(Path(REPORTS_FOLDER))
    plot = result.plot(folder / f"drift-{night}.png") if plots else None
    report = None
    if settings.evidently_report and sample is not None and current.height:
        from nightkeeper.drift_report import (
            write_evidently_report,
        )  # evidently takes seconds to import: only when asked

        report = write_evidently_report(
            sample, current, reference.features, folder / f"drift-{night}.html", settings.report_sample_rows, seed=0
        )
        if settings.keep_report_nights is not None:
            prune_drift_reports(folder, night, settings.keep_report_nights)
    # the details (which features and levels moved) travel with the metrics into the alert messages
    metrics_store.record_metrics(connection, night, result.metrics(), reference.version, details=result.details())
    drifted = result.drifted_features()
    score_psi = result.prediction.get("score_psi", float("nan"))
    auc = result.multivariate_auc
    return StepResult(
        tables={
            "drift_metrics": result.features.with_columns(pl.lit(night, dtype=pl.Date).alias("partition_date")).select(
                "partition_date", *drift.FEATURE_SCHEMA
            )
        },
        metadata={
            "reference_version": reference.version,
            "rows": result.rows,
            "drifted_share": result.drifted_share,
            "drifted_features": ", ".join(drifted) or "none",
            "multivariate_auc": result.multivariate_auc,
            "prediction_psi": result.prediction.get("score_psi"),
            "by_feature": result.features.select("feature", "psi", "threshold", "drifted", "missing_rate_change").head(
                50
            ),
            "plot": plot if plot else "not rendered",
            "evidently_report": report if report else "not rendered",
        },
        checks={
            "features_stable": CheckOutcome(
                not drifted,
                f"drifted: {', '.join(drifted)}" if drifted else "every feature within its fitted threshold",
                "WARN",
                {"drifted_share": result.drifted_share},
            ),
            "predictions_stable": CheckOutcome(
                not result.prediction.get("score_drifted"),
                f"score PSI {score_psi:.3f} vs threshold {result.prediction.get('score_threshold', float('nan')):.3f}",
                "WARN",
            ),
            "population_indistinct": CheckOutcome(
                result.population_shifted != 1.0,
                "no reference sample or too few rows"
                if auc is None or result.domain_limit is None
                else f"domain classifier AUC {auc:.3f} (limit {result.domain_limit:.3f}: the reference's most distinct "
                "real night plus chance, at least monitoring.drift.max_domain_auc)",
                "WARN",
            ),
        },
    )


# ------------------------------------------------------------------------------------------------------- alerts


def alerts_night(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, log: logging.Logger = _LOG
) -> StepResult:
    """Evaluate the config's alert rules on ``night`` (see ``raise_alerts``); lifecycle event counts missing tonight
    are recorded as 0 first, which resolves their alerts. Metadata ``keys.ALERTS_OPEN`` (id, category and opened night
    of every open alert) is what the retrain sensor reads."""
    recorded = metrics_store.metrics_on(connection, night)
    metrics_store.record_metrics(
        connection, night, {m: 0.0 for m in metric_names.LIFECYCLE_EVENTS if m not in recorded}, None
    )
    events, delivery = raise_alerts(connection, config.monitoring.alerts, night, log)
    still_open = alerts.open_alerts(connection)
    opened = [e for e in events if e["event"] == "opened"]
    return StepResult(
        metadata={
            "opened": len(opened),
            "resolved": sum(e["event"] == "resolved" for e in events),
            "open_now": still_open.height,
            "opened_alerts": [
                {"alert_id": e["alert_id"], "rule": e["rule"], "category": e["category"], "severity": e["severity"]}
                for e in opened
            ],
            "open_alerts": still_open.select("alert_id", "category", "severity", "opened_night", "message").head(20),
            keys.ALERTS_OPEN: [
                {keys.OPEN_ALERT_ID: a, keys.OPEN_ALERT_CATEGORY: c, keys.OPEN_ALERT_OPENED_NIGHT: str(o)}
                for a, c, o in still_open.select("alert_id", "category", "opened_night").iter_rows()
            ],
            keys.ALERTS_WEBHOOK_DELIVERED: delivery.delivered,
            keys.ALERTS_WEBHOOK_PENDING: delivery.pending,
            "webhook_configured": delivery.webhook_configured,
        }
    )


def raise_alerts(
    connection: duckdb.DuckDBPyConnection, settings: AlertingConfig, night: dt.date, log: logging.Logger = _LOG
) -> tuple[list[dict[str, Any]], webhook.DeliveryReport]:
    """Evaluate the alert rules on ``night``, log each transition at its severity and enqueue them for the webhook.

    Nothing is posted here (this runs inside the caller's connection): the report says what is pending; the asset
    posts with ``webhook.deliver`` once its connection is closed, and the ``alert_outbox`` sensor retries.

    The one way a night's alerts go out, whether from the nightly alerts step or from a lifecycle event (a rollback,
    a rejected or refused retrain) that must not wait for the next night. ``log`` is any ``logging.Logger`` (Dagster's
    run logger is one).
    """
    events = alerts.run_alerts(connection, settings.rules, night)
    for event in events:
        level = (
            log.info
            if event["event"] == "resolved" or event["severity"] == "info"
            else (log.error if event["severity"] == "critical" else log.warning)
        )
        level(event["message"])
    # posting waits until the caller has released the warehouse (webhook.deliver) or for the alert_outbox sensor
    return events, webhook.outbox_report(connection, webhook.webhook_url(settings.webhook_url_env))


# ------------------------------------------------------------------------------------------------- review queue


def review_queue_night(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    outcomes: pl.DataFrame,
    quarantine: pl.DataFrame,
) -> StepResult:
    """Tonight's answers a person should look at (``build_review_queue``), stored in the review queue table.

    "Near the threshold" means near the threshold each answer was decided at: its model version's card's
    (``performance.card_thresholds``), the config's only for a version the registry does not know.
    """
    threshold = answer_thresholds(config, connection, outcomes["model_version"].unique())
    return store_review_queue(
        config, connection, night, build_review_queue(outcomes, quarantine, threshold, config.review)
    )


def answer_thresholds(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, versions: Iterable[str | None]
) -> pl.Expr:
    """Each answer's threshold, by the model version that answered it: its card's (``performance.card_thresholds``),
    the config's for a version the registry does not know (``versions``: those that answered)."""
    thresholds = performance.card_thresholds(connection, versions)
    return pl.col("model_version").replace_strict(
        thresholds, default=config.model.decision.threshold, return_dtype=pl.Float64
    )


def store_review_queue(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date, queue: pl.DataFrame
) -> StepResult:
    """Store ``night``'s review ``queue`` (``build_review_queue``) and report it (``review_queue_night``)."""
    store_queue(connection, night, queue)
    by_reason = queue.with_columns(pl.col("queue_reason").str.split(":").list.first()).group_by("queue_reason").len()
    return StepResult(
        metadata={
            "queued": queue.height,
            "capacity": config.review.capacity,
            "by_reason": by_reason.head(10),
            "export": f"nightkeeper review export --date {night}",
            "preview": queue.head(10),
        }
    )
