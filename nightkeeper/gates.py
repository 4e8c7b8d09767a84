"""The two gates of a retrain: is the training window sane, and is the candidate never worse than the champion?"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from sklearn.metrics import brier_score_loss, roc_auc_score

from nightkeeper.config import BusinessValue, PromotionGateConfig, TrainingDataGateConfig
from nightkeeper.encoding import FeatureCard
from nightkeeper.frames import number


@dataclass(frozen=True)
class GateResult:
    """Whether a gate passed, why not (one sentence per failed rule) and the figures it judged on."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowVerdict:
    """The training-data gate's answer: which nights to exclude (with why) and whether the retrain may go on."""

    gate: GateResult
    excluded_nights: dict[str, str]
    per_night: pl.DataFrame


def training_window_gate(
    window: pl.DataFrame,
    target: str,
    features: list[FeatureCard],
    config: TrainingDataGateConfig,
    trusted_rows: int = 0,
) -> WindowVerdict:
    """Judge a labeled training window night by night (``partition_date`` column) against the window's own baseline.

    Each night is compared with what is usual for this dataset: the median over the window's nights and a robust
    spread (``outlier_mads`` × the scaled median absolute deviation), so a dataset whose ordinary nights are large,
    or full of natural duplicates (low-cardinality codes), is judged by its own standard. A night is suspect when
    its volume exceeds ``max_volume_ratio`` × the median and the spread; its label rate is more than
    ``max_label_rate_shift`` from the median; or its share of rows repeating a near-identical feature vector (numbers
    rounded to 2 significant digits) exceeds the window's median share by more than ``max_duplicate_share`` and the
    spread — the marks of a bot burst with skewed labels. Suspect nights are excluded; the retrain is refused when
    they hold more than ``max_excluded_share`` of the rows or fewer than ``min_rows`` labeled rows remain. With
    fewer than ``min_nights_to_judge`` nights there is no median worth the name, and only ``min_rows`` is checked.
    ``trusted_rows`` (the project's own labeled history) are not judged night by night but count toward ``min_rows``.
    """
    if window.height == 0:
        if trusted_rows >= config.min_rows:
            return WindowVerdict(
                GateResult(True, [], {"rows": 0.0, "excluded_rows": 0.0, "excluded_nights": 0.0}), {}, pl.DataFrame()
            )
        return WindowVerdict(
            GateResult(
                False,
                [
                    f"the training window holds no labeled rows besides {trusted_rows} of the history"
                    if trusted_rows
                    else "the training window holds no labeled rows"
                ],
            ),
            {},
            pl.DataFrame(),
        )
    fingerprint = pl.concat_str([_rounded(f) for f in features], separator="|")
    per_night = (
        window.with_columns(fingerprint.alias("__fingerprint"))
        .group_by("partition_date")
        .agg(
            pl.len().alias("rows"),
            pl.col(target).cast(pl.Float64).mean().alias("label_rate"),
            (1 - pl.col("__fingerprint").n_unique() / pl.len()).alias("duplicate_share"),
        )
        .sort("partition_date")
    )
    median_rows, rows_spread = _median_and_spread(per_night["rows"], config.outlier_mads)
    median_rate = number(per_night["label_rate"].median())
    median_duplicates, duplicates_spread = _median_and_spread(per_night["duplicate_share"], config.outlier_mads)
    volume_limit = max(config.max_volume_ratio * median_rows, median_rows + rows_spread)
    duplicate_limit = median_duplicates + max(config.max_duplicate_share, duplicates_spread)
    excluded: dict[str, str] = {}
    judged = per_night if per_night.height >= config.min_nights_to_judge else per_night.head(0)
    for row in judged.iter_rows(named=True):
        why = []
        if row["rows"] > volume_limit:
            why.append(f"{row['rows']} rows is {row['rows'] / median_rows:.1f}× the median {median_rows:g}")
        if abs(row["label_rate"] - median_rate) > config.max_label_rate_shift:
            why.append(f"label rate {row['label_rate']:.1%} vs median {median_rate:.1%}")
        if row["duplicate_share"] > duplicate_limit:
            why.append(
                f"{row['duplicate_share']:.1%} of rows repeat a near-identical feature vector "
                f"(the window's nights: median {median_duplicates:.1%}, suspect above {duplicate_limit:.1%})"
            )
        if why:
            excluded[str(row["partition_date"])] = "; ".join(why)
    excluded_rows = int(per_night.filter(pl.col("partition_date").cast(pl.String).is_in(list(excluded)))["rows"].sum())
    kept_rows = window.height - excluded_rows + trusted_rows
    reasons = []
    if excluded_rows > config.max_excluded_share * window.height:
        reasons.append(
            f"suspect nights hold {excluded_rows / window.height:.0%} of the window's rows "
            f"(limit {config.max_excluded_share:.0%}): " + "; ".join(f"{n}: {w}" for n, w in excluded.items())
        )
    if kept_rows < config.min_rows:
        reasons.append(f"only {kept_rows} labeled rows remain after exclusions; at least {config.min_rows} are needed")
    metrics = {
        "rows": float(window.height),
        "excluded_rows": float(excluded_rows),
        "excluded_nights": float(len(excluded)),
    }
    return WindowVerdict(GateResult(not reasons, reasons, metrics), excluded, per_night)


def _median_and_spread(values: pl.Series, mads: float) -> tuple[float, float]:
    """The median of ``values`` and ``mads`` × their median absolute deviation scaled to a normal's σ (× 1.4826):
    a centre and a spread that a minority of odd nights cannot move."""
    median = number(values.median())
    return median, mads * 1.4826 * number((values.cast(pl.Float64) - median).abs().median())


def _rounded(feature: FeatureCard) -> pl.Expr:
    column = pl.col(feature.name)
    if feature.dtype in ("float", "int"):
        magnitude = column.cast(pl.Float64).abs().log10().floor().fill_nan(0).fill_null(0)
        step = pl.lit(10.0).pow(magnitude - 1)
        return ((column.cast(pl.Float64) / step).round() * step).cast(pl.String).fill_null("∅")
    return column.cast(pl.String).fill_null("∅")


# per-row scoring times below this are noise on a shared machine and cost nothing that matters (1M rows in < 10 s):
# the latency rule compares models only when one of them is slower than this
LATENCY_NOISE_FLOOR_SECONDS_PER_ROW = 1e-5


def latency_ratio(candidate_seconds_per_row: float, champion_seconds_per_row: float) -> float:
    """The candidate's scoring time per row over the champion's; 1.0 when both are below the noise floor
    (LATENCY_NOISE_FLOOR_SECONDS_PER_ROW), where a ratio would measure the scheduler, not the models."""
    if max(candidate_seconds_per_row, champion_seconds_per_row) < LATENCY_NOISE_FLOOR_SECONDS_PER_ROW:
        return 1.0
    return candidate_seconds_per_row / max(champion_seconds_per_row, 1e-12)


def never_worse_gate(
    holdout: pl.DataFrame,
    target: str,
    champion_scores: np.ndarray,
    candidate_scores: np.ndarray,
    threshold: float,
    value: BusinessValue,
    latency_ratio: float,
    config: PromotionGateConfig,
    seed: int = 0,
) -> GateResult:
    """Compare candidate and champion on the same labeled ``holdout`` rows; pass only if the candidate is never worse.

    Rules: the paired-bootstrap 95% CI lower bound of AUC(candidate) − AUC(champion) above −``auc_tolerance``; no
    segment level (``segments``, with ≥ ``min_segment_rows`` rows and both classes) worse by more than
    ``segment_auc_tolerance``; Brier not worse by more than ``brier_tolerance``; business value not lower by more
    than ``business_value_tolerance`` (relative); scoring latency at most ``max_latency_ratio`` × the champion's.
    """
    labels = holdout[target].cast(pl.Int8).to_numpy()
    if len(np.unique(labels)) < 2:
        return GateResult(
            False, ["the holdout has a single class; the models cannot be compared"], {"rows": float(len(labels))}
        )
    reasons: list[str] = []
    auc_champion = float(roc_auc_score(labels, champion_scores))
    auc_candidate = float(roc_auc_score(labels, candidate_scores))
    low, high = _paired_bootstrap_auc_difference(
        labels, champion_scores, candidate_scores, config.bootstrap_samples, seed
    )
    if low < -config.auc_tolerance:
        reasons.append(
            f"AUC {auc_candidate:.4f} vs champion {auc_champion:.4f}: the 95% CI of the difference [{low:+.4f}, "
            f"{high:+.4f}] reaches below −{config.auc_tolerance}"
        )
    for segment in config.segments:
        for level, rows in holdout.with_row_index("__i").group_by(segment):
            index = rows["__i"].to_numpy()
            if len(index) < config.min_segment_rows or len(np.unique(labels[index])) < 2:
                continue
            loss = roc_auc_score(labels[index], champion_scores[index]) - roc_auc_score(
                labels[index], candidate_scores[index]
            )
            if loss > config.segment_auc_tolerance:
                reasons.append(
                    f"segment {segment}={level[0]}: AUC lower by {loss:.4f} (tolerance {config.segment_auc_tolerance})"
                )
    brier_champion = float(brier_score_loss(labels, champion_scores))
    brier_candidate = float(brier_score_loss(labels, candidate_scores))
    if brier_candidate > brier_champion + config.brier_tolerance:
        reasons.append(
            f"Brier {brier_candidate:.4f} vs champion {brier_champion:.4f} (tolerance {config.brier_tolerance})"
        )
    value_champion = business_value(labels, champion_scores, threshold, value)
    value_candidate = business_value(labels, candidate_scores, threshold, value)
    if value_candidate < value_champion - config.business_value_tolerance * abs(value_champion):
        reasons.append(f"business value {value_candidate:,.0f} vs champion {value_champion:,.0f}")
    if latency_ratio > config.max_latency_ratio:
        reasons.append(f"scoring takes {latency_ratio:.1f}× the champion's time (limit {config.max_latency_ratio}×)")
    metrics = {
        "rows": float(len(labels)),
        "auc_champion": auc_champion,
        "auc_candidate": auc_candidate,
        "auc_difference_ci_low": low,
        "auc_difference_ci_high": high,
        "brier_champion": brier_champion,
        "brier_candidate": brier_candidate,
        "business_value_champion": value_champion,
        "business_value_candidate": value_candidate,
        "latency_ratio": latency_ratio,
    }
    return GateResult(not reasons, reasons, metrics)


def business_value(labels: np.ndarray, scores: np.ndarray, threshold: float, value: BusinessValue) -> float:
    """Money made by deciding ``scores >= threshold`` as positive, given the true ``labels``."""
    predicted = scores >= threshold
    actual = labels.astype(bool)
    return float(
        value.money(
            np.sum(predicted & actual),
            np.sum(predicted & ~actual),
            np.sum(~predicted & ~actual),
            np.sum(~predicted & actual),
        )
    )


def _paired_bootstrap_auc_difference(
    labels: np.ndarray, champion: np.ndarray, candidate: np.ndarray, samples: int, seed: int
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    differences = []
    n = len(labels)
    for _ in range(samples):
        index = rng.integers(0, n, n)
        if labels[index].min() == labels[index].max():
            continue
        differences.append(
            roc_auc_score(labels[index], candidate[index]) - roc_auc_score(labels[index], champion[index])
        )
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)
