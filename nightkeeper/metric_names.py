"""Every nightly metric name Nightkeeper records, with its meaning: the one owner of the metric-name contract.

A metric is a dotted name in ``monitoring.night_metrics`` (``nightkeeper.metrics_store``) that alert rules read.
Code that records a metric must list it here; ``config.AlertRule`` refuses a rule on a name not listed (with the
closest known names as a hint), so a misspelt rule fails at load instead of never firing.

Per-feature drift metrics are patterns: ``drift.feature.{feature}.psi`` stands for one name per contract feature;
the config check also verifies that the feature part names a feature of the contract.

``alertable=False`` marks a metric kept as information only: a p-value shrinks to 0 on any large night whatever the
size of the change, so it separates nothing and an alert rule on it is refused (alert on an effect size instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import get_close_matches

FEATURE = "{feature}"


@dataclass(frozen=True)
class Metric:
    """One metric name (or per-feature pattern holding ``{feature}``), what it means, and whether rules may use it."""

    name: str
    meaning: str
    alertable: bool = True

    def matches(self, name: str) -> str | None:
        """The feature a per-feature pattern matched ('' for a plain name that equals ``name``); None if no match."""
        if FEATURE not in self.name:
            return "" if name == self.name else None
        prefix, suffix = self.name.split(FEATURE)
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
            return name[len(prefix) : len(name) - len(suffix)]
        return None


def _m(name: str, meaning: str, alertable: bool = True) -> Metric:
    return Metric(name, meaning, alertable)


# Lifecycle events, counted on the night they happen (nightkeeper.pipeline.lifecycle); 0 on nights without one
ROLLBACKS = "lifecycle.rollbacks"
CANDIDATE_REJECTED = "lifecycle.candidate_rejected"
RETRAIN_REFUSED = "lifecycle.retrain_refused"
LIFECYCLE_EVENTS: tuple[str, ...] = (ROLLBACKS, CANDIDATE_REJECTED, RETRAIN_REFUSED)

# Drift: nightkeeper.drift.DriftResult.metrics
DRIFT_ROWS = "drift.rows"
DRIFTED_SHARE = "drift.drifted_share"
DRIFTED_FEATURES = "drift.drifted_features"
MULTIVARIATE_AUC = "drift.multivariate_auc"
POPULATION_SHIFTED = "drift.population_shifted"
PREDICTION_PSI = "drift.prediction_psi"
PREDICTION_JS = "drift.prediction_js_distance"
PREDICTION_DRIFTED = "drift.prediction_drifted"
CONFIDENCE_PSI = "drift.confidence_psi"
CONFIDENCE_JS = "drift.confidence_js_distance"
CONFIDENCE_DRIFTED = "drift.confidence_drifted"
VANISHED_LEVELS = "drift.vanished_levels"
VANISHED_SHARE = "drift.vanished_share"
NEW_LEVEL_SHARE = "drift.new_level_share"
FEATURE_STATISTICS: tuple[str, ...] = (
    "psi",
    "js_distance",
    "missing_rate_change",
    "drifted",
    "wasserstein_norm",
    "ks",
    "chi2_p_value",
    "new_category_share",
    "vanished_levels",
)

# Performance: written by the monitoring step (1.0 = tonight's estimate may be trusted, 0.0 = not); rollout health
# reads it and counts a missing value as untrusted
ESTIMATE_TRUSTED = "performance.estimate_trusted"
# Champion's holdout AUC minus the pooled realized AUC, counted only beyond monitoring.performance.drop_noise_z
# standard errors of that difference (performance.auc_drop_beyond_noise): what the shipped realized-auc-drop rule reads
REALIZED_AUC_DROP_BEYOND_NOISE = "performance.realized_auc_drop_beyond_noise"


def feature_metric(feature: str, statistic: str) -> str:
    """The name of a per-feature drift metric, e.g. ``drift.feature.income.psi``."""
    if statistic not in FEATURE_STATISTICS:
        raise ValueError(f"unknown per-feature drift statistic {statistic!r}; known: {FEATURE_STATISTICS}")
    return f"drift.feature.{feature}.{statistic}"


METRICS: tuple[Metric, ...] = (
    # validation (assets/nightly.py: raw_batch, validate_batch)
    _m("validation.rows", "Rows that landed tonight."),
    _m(
        "validation.schema_problems",
        "Missing, extra or retyped columns in tonight's files (0 = schema matches the contract).",
    ),
    _m("validation.volume_deviation", "Relative deviation of tonight's row count from the median of recent nights."),
    _m("validation.duplicate_ids", "Entity ids that appear more than once tonight."),
    _m("validation.quarantine_rate", "Share of tonight's rows quarantined by row rules."),
    _m("validation.null_rate_spikes", "Features whose null rate rose past checks.null_rate_spike over the champion's."),
    # scoring and outcomes (assets/nightly.py)
    _m("scoring.model_failed", "1 when the champion could not score tonight (the fallback answered), else 0."),
    _m("scoring.latency_p95_ms", "95th percentile of the champion's scoring latency per row, milliseconds."),
    _m("outcomes.rows", "Answers stored tonight (equals validation.rows: row conservation)."),
    _m("outcomes.fallback_rate", "Share of tonight's answers given by the fallback rule."),
    _m("outcomes.undecided_rate", "Share of tonight's answers left undecided (quarantined, no fallback)."),
    # rollout of a challenger (nightkeeper/pipeline/nightly.py: shadow_night)
    _m("rollout.healthy", "1 when the challenger passed tonight's rollout health checks, else 0."),
    _m("rollout.error_rate", "Share of rows the challenger failed to score tonight."),
    _m(
        "rollout.fallback_rate_increase",
        "Share of rows the challenger could not score minus the champion's (fallback would answer more).",
    ),
    _m(
        "rollout.agreement",
        "Share of rows where challenger and champion made the same decision (a rule only below "
        "lifecycle.rollout.min_agreement).",
    ),
    _m("rollout.estimated_auc_drop", "Champion's minus challenger's estimated AUC on tonight's rows."),
    _m("rollout.estimate_trusted", "1 when the estimated AUC drop counted in tonight's rollout health, else 0."),
    _m(
        "rollout.realized_auc_drop",
        "Champion's minus challenger's realized AUC on the labeled rows of the rollout so far.",
    ),
    _m(
        "rollout.labeled_rows", "Labeled rows of the rollout's nights both models scored (the realized AUC's evidence)."
    ),
    _m("rollout.canary_percent", "Percent of entities the challenger answers tonight."),
    # lifecycle events (assets/lifecycle.py, assets/monitoring.py)
    _m(ROLLBACKS, "Rollbacks of a challenger or champion on this night."),
    _m(CANDIDATE_REJECTED, "Candidates the promotion gate rejected on this night."),
    _m(RETRAIN_REFUSED, "Retrains the training-data gate refused on this night."),
    # performance (nightkeeper.performance.performance_metrics, assets/monitoring.py)
    *(
        _m(f"performance.realized_{name}", f"Realized {meaning} of the latest labeled scoring night.")
        for name, meaning in (
            ("auc", "AUC"),
            ("precision", "precision"),
            ("recall", "recall"),
            ("brier", "Brier score"),
            ("positive_rate", "positive-decision rate"),
            ("business_value", "business value (money)"),
            ("business_value_per_row", "business value per row"),
        )
    ),
    _m("performance.labeled_rows", "Labeled rows of the latest labeled scoring night."),
    _m("performance.label_coverage", "Share of the latest labeled scoring night's rows that have a label."),
    *(
        _m(f"performance.estimated_{name}", f"Tonight's estimated {meaning} from calibrated scores (CBPE).")
        for name, meaning in (
            ("auc", "AUC"),
            ("precision", "precision"),
            ("recall", "recall"),
            ("accuracy", "accuracy"),
            ("positive_rate", "positive-decision rate"),
            ("business_value", "business value (money)"),
            ("business_value_per_row", "business value per row"),
        )
    ),
    _m("performance.calibration_error", "Expected calibration error of the scores on recent labeled rows."),
    _m("performance.calibration_max_gap", "Largest gap between score and label rate over calibration bins."),
    _m("performance.estimate_trustworthy", "1 when the estimated performance is trustworthy (calibrated), else 0."),
    _m(
        ESTIMATE_TRUSTED,
        "1 when tonight's estimate (CBPE) matched the serving model's latest labels (or holdout), else 0; "
        "while 0 the estimated AUC drop is not recorded.",
    ),
    _m(
        "performance.estimate_auc_gap",
        "Estimated minus realized AUC on the serving model's latest labeled rows (or holdout).",
    ),
    _m(
        "performance.estimate_positive_rate_gap",
        "Mean score minus realized base rate on the serving model's latest labeled rows.",
    ),
    _m("performance.realized_auc_window", "Realized AUC pooled over the latest labeled scoring nights."),
    _m("performance.realized_auc_drop", "Champion's holdout AUC minus the pooled realized AUC."),
    _m(
        REALIZED_AUC_DROP_BEYOND_NOISE,
        "Champion's holdout AUC minus the pooled realized AUC when that exceeds drop_noise_z standard errors of the "
        "difference, else 0 (a drop chance can explain does not count).",
    ),
    _m("performance.estimated_auc_drop", "Champion's holdout estimated AUC minus tonight's estimated AUC."),
    # drift (nightkeeper.drift.DriftResult.metrics)
    _m(DRIFT_ROWS, "Rows drift was measured on tonight."),
    _m(DRIFTED_SHARE, "Share of features whose drift exceeds their threshold for a night of tonight's size."),
    _m(DRIFTED_FEATURES, "Number of features whose drift exceeds their threshold for a night of tonight's size."),
    _m(MULTIVARIATE_AUC, "AUC of a classifier telling tonight's rows from the reference (0.5 = indistinguishable)."),
    _m(
        POPULATION_SHIFTED,
        "1 when the domain AUC exceeds tonight's limit: the reference's most distinct real night plus 2 chance "
        "standard errors, at least monitoring.drift.max_domain_auc; else 0.",
    ),
    _m(PREDICTION_PSI, "PSI of tonight's scores against the reference scores."),
    _m(PREDICTION_JS, "Jensen-Shannon distance of tonight's scores against the reference scores."),
    _m(PREDICTION_DRIFTED, "1 when the score PSI exceeds its fitted threshold, else 0."),
    _m(CONFIDENCE_PSI, "PSI of tonight's confidences against the reference confidences."),
    _m(CONFIDENCE_JS, "Jensen-Shannon distance of tonight's confidences against the reference."),
    _m(CONFIDENCE_DRIFTED, "1 when the confidence PSI exceeds its fitted threshold, else 0."),
    _m(
        VANISHED_LEVELS,
        "Category levels the reference holds that are absent tonight although a night this size surely shows them.",
    ),
    _m(VANISHED_SHARE, "Reference share of the vanished levels, summed over features (the rows that went elsewhere)."),
    _m(
        NEW_LEVEL_SHARE,
        "Largest share, over category features, of tonight's rows holding a level the reference never saw.",
    ),
    _m("drift.feature.{feature}.psi", "PSI of the feature against the reference bins."),
    _m("drift.feature.{feature}.js_distance", "Jensen-Shannon distance (base 2) of the feature against the reference."),
    _m("drift.feature.{feature}.missing_rate_change", "Tonight's missing rate minus the reference's."),
    _m("drift.feature.{feature}.drifted", "1 when the feature's drift exceeds its threshold for tonight's size."),
    _m("drift.feature.{feature}.wasserstein_norm", "Wasserstein distance over the reference std (numbers)."),
    _m("drift.feature.{feature}.ks", "Kolmogorov-Smirnov statistic against the reference (numbers)."),
    _m(
        "drift.feature.{feature}.chi2_p_value",
        "Chi-square p-value of the level counts (categories); information only: ~0 on any large night.",
        alertable=False,
    ),
    _m("drift.feature.{feature}.new_category_share", "Share of tonight's rows with a level the reference never saw."),
    _m("drift.feature.{feature}.vanished_levels", "Reference levels of the feature that vanished tonight."),
)
_BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}
_PATTERNS: tuple[Metric, ...] = tuple(metric for metric in METRICS if FEATURE in metric.name)
assert len(_BY_NAME) == len(METRICS), "a metric is listed twice"
assert all(re.fullmatch(r"[a-z_]+(\.[a-z_{}0-9]+)+", m.name) for m in METRICS), "metric names are dotted lower case"


def lookup(name: str) -> tuple[Metric, str] | None:
    """The registered metric ``name`` is, and the feature it names ('' for a plain metric); None if unknown."""
    metric = _BY_NAME.get(name)
    if metric is not None:
        return metric, ""
    for pattern in _PATTERNS:
        feature = pattern.matches(name)
        if feature:
            return pattern, feature
    return None


def check_alert_metric(name: str, features: list[str] | None = None) -> None:
    """Raise ValueError unless an alert rule may read ``name``: it is registered, alertable and, for a per-feature
    metric, names one of ``features`` (when given). The message names the closest known metrics."""
    found = lookup(name)
    if found is None:
        hint = get_close_matches(name, [m.name for m in METRICS], n=3, cutoff=0.6)
        raise ValueError(
            f"unknown metric {name!r}: Nightkeeper records no metric of that name"
            + (f" (did you mean {' or '.join(repr(h) for h in hint)}?)" if hint else "")
            + "; the known metrics are listed in nightkeeper/metric_names.py"
        )
    metric, feature = found
    if not metric.alertable:
        raise ValueError(f"metric {name!r} is information only, not for alerting: {metric.meaning}")
    if feature and features is not None and feature not in features:
        hint = get_close_matches(feature, features, n=1)
        raise ValueError(
            f"metric {name!r} names feature {feature!r}, which is not a contract feature"
            + (f" (did you mean {hint[0]!r}?)" if hint else f"; features are {features}")
        )
