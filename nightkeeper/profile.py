"""The reference profile: a compact summary of a model's training data that each night's drift is measured against.

``fit_profile`` runs once, at training time, on the typed training frame and the model's scores on it. It keeps no
raw rows: per numeric feature (float, int, bool as 0/1) quantile bins with their frequencies, moments and a sketch
of the quantile function; per category feature the level frequencies; the same numeric summary for the score and
its confidence; and, per feature, drift thresholds fitted to the reference's own chunk-to-chunk variation.
The profile is a frozen pydantic model that round-trips through JSON (``model_dump_json`` /
``ReferenceProfile.model_validate_json``); store it beside the model artifact.

``reference_sample`` draws the few raw rows the multivariate (domain classifier) check needs; the caller stores
them as Parquet beside the model artifact. ``domain_auc`` is that classifier (tonight's rows told from reference
rows); ``fit_domain_auc`` runs it on the reference's own real nights, so that the population-shift limit knows how
distinct an ordinary night (a weekend, a pay day) already is.

Definitions shared with :mod:`nightkeeper.drift` (the thresholds are fitted on exactly these statistics):

* Missing values (null, and NaN or infinity in float columns) are never binned: frequencies are shares of the
  non-missing values and the missing rate is reported separately.
* Numeric bins are right-closed: ``(-inf, e0], (e0, e1], ..., (e_last, +inf)`` where the interior edges are the
  reference quantiles at levels ``1/bins, ..., (bins-1)/bins`` (actual data values, so a discrete value sits
  wholly inside one bin), deduplicated; a discrete feature therefore gets fewer bins than ``DriftConfig.bins``.
* Category bins are the contract's levels plus one last "other" bin for values outside them.
* PSI = sum over bins of (c - r) * ln(c / r), after flooring each bin share at ``PSI_EPSILON`` = 1e-4 (no
  renormalisation), so an empty bin on either side contributes a finite amount.
* Jensen-Shannon distance (base 2, in [0, 1]) on the unsmoothed bin shares, as ``scipy.spatial.distance.jensenshannon``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import lightgbm as lgb
import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from scipy.interpolate import PchipInterpolator
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import roc_auc_score

from nightkeeper.config import DriftConfig
from nightkeeper.encoding import FeatureCard, categorical_indices, feature_matrix

PROFILE_FORMAT = 1
PSI_EPSILON = 1e-4
LADDER_FIRST_ROWS = 25  # smallest night size a threshold is fitted for (smaller nights scale it by 1/rows)
LADDER_DRAWS = 100  # random draws of the reference per night size
MIN_REFERENCE_NIGHTS = 7  # real nights a reference needs before their night-to-night variation is fitted
MAX_ATOMS = 101
# Fewer rows per side and the out-of-fold AUC of two identical populations wanders too far to judge (its chance std
# is ~0.018 at 500 rows per side, ~0.033 at 150); small nights rely on the per-feature drift, whose thresholds widen.
DOMAIN_MIN_ROWS = 500
DOMAIN_TREES = 50
DOMAIN_PARAMS: dict[str, object] = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 15,
    "max_bin": 63,
    "min_data_in_leaf": 20,
    "num_threads": 1,  # 2 OpenMP threads stalled for 5-40 s on a busy 2-core host; 1 takes ~0.3 s for 2 x 10k rows
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}
DOMAIN_FIT_NIGHTS = 8  # real reference nights the population-shift limit learns from (one small classifier each)
# 101 quantile levels, dense in both tails (cosine spacing: 0.00025 at the ends, 0.016 in the middle), so that the
# piecewise-linear quantile function between them follows long tails closely (see NumericProfile).
QUANTILE_LEVELS: tuple[float, ...] = tuple(float(v) for v in 0.5 - 0.5 * np.cos(np.pi * np.linspace(0.0, 1.0, 101)))


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericProfile(_Frozen):
    """The reference distribution of one number (a numeric or bool feature, the score or the confidence).

    ``edges``/``frequencies``: the PSI bins (see the module docstring), ``len(frequencies) == len(edges) + 1``,
    shares of the non-missing values. Moments use the non-missing values; ``std`` is the population std (ddof=0).
    They are None, and the lists empty, when the reference has no non-missing value.

    The quantile function passes through the points ``(quantile_levels[k], quantiles[k])``. When the reference takes
    at most ``MAX_ATOMS`` distinct values, ``exact`` is True and the points describe it exactly: each value ``v``
    appears twice, at the cumulative share below it and at the cumulative share up to and including it, and the
    quantile function is the step function through them. Otherwise ``exact`` is False, the points are the reference
    quantiles (numpy "linear" method) at ``QUANTILE_LEVELS`` (repeated quantiles mark a mass point) and the quantile
    function is the monotone cubic (PCHIP) interpolation through them.
    ``resolution``: when every value lies on a grid ``min + k * resolution`` (integers, amounts rounded to 100,
    years to 0.1, ...) the sketched quantile function is rounded to that grid, which keeps the steps of such
    "lattice" data instead of smoothing them; None otherwise.
    ``cdf``/``cdf_below``: the exact reference shares P(X <= q) and P(X < q) at each of ``quantiles``, for the KS
    statistic.
    """

    kind: Literal["numeric"] = "numeric"
    rows: int
    missing_rate: float
    edges: list[float]
    frequencies: list[float]
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    exact: bool
    resolution: float | None
    quantile_levels: list[float]
    quantiles: list[float]
    cdf: list[float]
    cdf_below: list[float]


class CategoryProfile(_Frozen):
    """The reference distribution of one category feature: shares of the non-missing values per contract level
    (in ``levels`` order) and of values outside the levels (``other_frequency``, 0 for a validated frame)."""

    kind: Literal["category"] = "category"
    rows: int
    missing_rate: float
    levels: list[str]
    frequencies: list[float]
    other_frequency: float

    @property
    def bin_frequencies(self) -> list[float]:
        """The category bins: the levels then the "other" bin."""
        return [*self.frequencies, self.other_frequency]


FeatureProfile = Annotated[NumericProfile | CategoryProfile, Field(discriminator="kind")]


class DriftThreshold(_Frozen):
    """When a statistic counts as drift. PSI (an effect size) decides the drifted flag; ``js_distance`` is
    informational.

    The PSI of a night against the reference varies by chance, and more so the fewer rows the night has, so the
    threshold depends on the night's size: ``psi_by_rows[k]`` is the threshold for a night of ``rows[k]`` rows (the
    feature's non-missing rows), fitted on random night-sized draws of the reference (see ``fit_profile``), never
    below ``psi_floor``. ``psi_for(n)`` interpolates it. ``fitted_psi`` = the fitted threshold for a night of
    ``chunk_rows`` rows; ``psi`` equals it unless the config overrides it (``source == "config"``), and a config
    threshold applies to nights of any size. ``js_distance`` is mean + threshold_sigmas * std of the draws'
    Jensen-Shannon distances at ``chunk_rows`` (no floor).
    """

    psi: float
    fitted_psi: float
    js_distance: float
    source: Literal["fitted", "config"]
    rows: list[int] = Field(default_factory=list)
    psi_by_rows: list[float] = Field(default_factory=list)
    nightly_psi: float | None = Field(
        None, description="Night-to-night PSI of the reference's real nights (fitted upper tail), when known."
    )

    def psi_for(self, rows: int) -> float:
        """The PSI threshold for a night with ``rows`` non-missing values: log-log interpolation between the fitted
        sizes; below the smallest, the smallest size's threshold scaled by 1/rows (chance PSI shrinks as 1/rows);
        above the largest, the largest's. A config override (or a profile without sizes) gives ``psi``."""
        if self.source == "config" or not self.rows or rows <= 0:
            return self.psi
        sizes = np.log(np.asarray(self.rows, dtype=np.float64))
        values = np.log(np.asarray(self.psi_by_rows, dtype=np.float64))
        if rows < self.rows[0]:
            return float(self.psi_by_rows[0] * self.rows[0] / rows)
        if rows >= self.rows[-1]:
            return float(self.psi_by_rows[-1])
        return float(np.exp(np.interp(math.log(rows), sizes, values)))


class ProfileSettings(_Frozen):
    """The ``DriftConfig`` fields a profile was fitted with, copied so that a stored profile does not depend on the
    config schema of the day."""

    bins: int
    reference_chunks: int
    threshold_sigmas: float
    psi_floor: float
    thresholds: dict[str, float]

    @classmethod
    def of(cls, config: DriftConfig) -> ProfileSettings:
        return cls(
            bins=config.bins,
            reference_chunks=config.reference_chunks,
            threshold_sigmas=config.threshold_sigmas,
            psi_floor=config.psi_floor,
            thresholds=dict(config.thresholds),
        )


class ReferenceProfile(_Frozen):
    """Everything nightly drift measurement needs to know about the reference (training) data, without its rows.

    ``chunk_rows`` is the size of the reference chunks the thresholds were fitted on: the thresholds describe the
    ordinary variation of batches of about that many rows (smaller nights vary more; ``psi_floor`` guards them).
    """

    format: int = PROFILE_FORMAT
    rows: int
    seed: int
    chunk_rows: int
    settings: ProfileSettings
    decision_threshold: float
    features: dict[str, FeatureProfile]
    score: NumericProfile
    confidence: NumericProfile
    positive_rate: float | None = Field(
        description="Share of non-missing reference scores at or above the decision threshold."
    )
    thresholds: dict[str, DriftThreshold]
    score_threshold: DriftThreshold
    confidence_threshold: DriftThreshold
    domain_auc: float | None = Field(
        None,
        description="Domain-classifier AUC of the reference's most distinct real night told from the rest of the "
        "reference (fit_domain_auc); None when not fitted (too few nights or rows, or a card older than the field).",
    )

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)


# --------------------------------------------------------------------------------------------- distance functions


def population_stability_index(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """PSI between bin shares along the last axis (shapes broadcast): sum (c - r) ln(c / r) after flooring each
    share at ``PSI_EPSILON``. NaN where ``current`` holds NaN (no rows to compare)."""
    r = np.maximum(np.asarray(reference, dtype=np.float64), PSI_EPSILON)
    c = np.maximum(np.asarray(current, dtype=np.float64), PSI_EPSILON)
    return np.sum((c - r) * np.log(c / r), axis=-1)


def bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of sorted non-missing values in the right-closed bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    cumulative = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate(([0], cumulative, [len(sorted_values)])))


def numeric_values(name: str) -> pl.Expr:
    """Column ``name`` as Float64 (bools become 0/1) with NaN and infinities turned into null (missing)."""
    number = pl.col(name).cast(pl.Float64)
    return pl.when(number.is_finite()).then(number).alias(name)


def sorted_numeric_values(frame: pl.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """The non-missing values of each numeric column, sorted ascending, as float64 arrays (columns in parallel)."""
    lazy = frame.lazy()
    queries = [lazy.select(numeric_values(name).drop_nulls().sort()) for name in names]
    return {name: result.to_series().to_numpy() for name, result in zip(names, pl.collect_all(queries), strict=True)}


def category_codes(name: str, levels: list[str]) -> pl.Expr:
    """Level index (0..len(levels)-1) of each value, ``len(levels)`` for a value outside them, -1 for null."""
    column = pl.col(name).cast(pl.String)
    coded = column.replace_strict(levels, list(range(len(levels))), default=len(levels), return_dtype=pl.Int32)
    return pl.when(column.is_null()).then(pl.lit(-1, dtype=pl.Int32)).otherwise(coded).alias(name)


def category_counts(frame: pl.DataFrame, features: list[FeatureCard]) -> dict[str, np.ndarray]:
    """Per category feature, counts of non-missing values per level plus a last "other" count (columns in parallel)."""
    lazy = frame.lazy()
    queries = [
        lazy.select(category_codes(f.name, f.categories or []).alias("code"))
        .filter(pl.col("code") >= 0)
        .group_by("code")
        .len()
        for f in features
    ]
    counts = {}
    for feature, result in zip(features, pl.collect_all(queries), strict=True):
        size = len(feature.categories or []) + 1
        counts[feature.name] = np.bincount(result["code"].to_numpy(), weights=result["len"].to_numpy(), minlength=size)
    return counts


# ---------------------------------------------------------------------------------------------------- the profile


def fit_profile(
    frame: pl.DataFrame,
    features: list[FeatureCard],
    scores: np.ndarray,
    decision_threshold: float,
    config: DriftConfig,
    seed: int = 0,
    nights: np.ndarray | None = None,
) -> ReferenceProfile:
    """Profile the reference ``frame`` (typed per the contract: Float64/Int64/Boolean/String feature columns) and
    the model's ``scores`` on its rows (same order). A NaN score counts as unscored and shapes neither the score
    nor the confidence profile: pass NaN for the training rows to profile only out-of-sample (holdout) scores.

    Thresholds are fitted per night size (see ``DriftThreshold``): for each size of a ladder (``LADDER_FIRST_ROWS``
    doubling up to ``chunk_rows = rows // config.reference_chunks``), ``LADDER_DRAWS`` random draws (``seed``) of
    that many reference rows are compared with the whole reference. Chance PSI behaves like a scaled chi-square
    variable (n * PSI ~ chi2(bins - 1) for a multinomial sample), so a scaled chi-square is fitted to the draws'
    PSI by its mean and variance and the threshold is its upper quantile at the normal tail of
    ``config.threshold_sigmas`` (4 sigma: about 3 in 100 000 ordinary nights per feature exceed it), floored at
    ``config.psi_floor``. A skewed statistic (a binary feature, rare levels) thus gets a wider threshold than
    mean + k*std would give, and a small night a wider one than a large night. ``config.thresholds`` overrides a
    feature's PSI threshold.

    ``nights`` (one key per row, e.g. the date of its event time): random draws know only chance, not the ordinary
    differences between real nights (weekends, pay days, seasons). When the reference spans at least
    ``MIN_REFERENCE_NIGHTS`` nights, each real night's PSI against the whole reference is fitted the same way, and
    no threshold is below that night-to-night one (``DriftThreshold.nightly_psi``): a share the reference shows
    every weekend is not drift on the next weekend. Raises ValueError when a feature column is absent, ``scores``
    or ``nights`` has the wrong length, the frame has fewer rows than chunks, or an override names no feature.
    """
    names = [f.name for f in features]
    absent = [n for n in names if n not in frame.columns]
    if absent:
        raise ValueError(f"reference frame lacks feature column(s) {absent}; it has {frame.columns}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (frame.height,):
        raise ValueError(f"scores must be one per reference row ({frame.height}), got shape {scores.shape}")
    scores = np.where(np.isfinite(scores), scores, np.nan)
    unknown = sorted(set(config.thresholds) - set(names))
    if unknown:
        raise ValueError(f"monitoring.drift.thresholds names {unknown}, which are not features; features are {names}")
    chunks = config.reference_chunks
    if frame.height < chunks:
        raise ValueError(f"the reference needs at least reference_chunks={chunks} rows, got {frame.height}")

    rng = np.random.default_rng(seed)
    ladder = _Ladder.draw(rng, frame.height, frame.height // chunks, _night_index(nights, frame.height))
    numeric = [f for f in features if f.dtype != "category"]
    categories = [f for f in features if f.dtype == "category"]

    profiles: dict[str, NumericProfile | CategoryProfile] = {}
    fitted: dict[str, _Statistics] = {}
    sorted_values = sorted_numeric_values(frame, [f.name for f in numeric])
    for feature in numeric:
        profile = _numeric_profile(sorted_values[feature.name], frame.height, config.bins)
        codes = _bin_codes(frame.select(numeric_values(feature.name)).to_series().to_numpy(), profile.edges)
        profiles[feature.name] = profile
        fitted[feature.name] = ladder.statistics(codes, len(profile.frequencies))
    codes_frame = frame.select(category_codes(f.name, f.categories or []) for f in categories)
    for feature in categories:
        codes = codes_frame[feature.name].to_numpy()
        levels_profile = _category_profile(codes, feature.categories or [])
        profiles[feature.name] = levels_profile
        fitted[feature.name] = ladder.statistics(codes, len(levels_profile.bin_frequencies))

    confidences = confidence_of(scores, decision_threshold)
    score_profile = _numeric_profile(np.sort(scores[np.isfinite(scores)]), len(scores), config.bins)
    confidence_profile = _numeric_profile(np.sort(confidences[np.isfinite(confidences)]), len(scores), config.bins)
    score_stats = ladder.statistics(_bin_codes(scores, score_profile.edges), len(score_profile.frequencies))
    confidence_stats = ladder.statistics(
        _bin_codes(confidences, confidence_profile.edges), len(confidence_profile.frequencies)
    )
    scored = scores[np.isfinite(scores)]

    thresholds = {
        name: _threshold(statistics, config.thresholds.get(name), config) for name, statistics in fitted.items()
    }
    return ReferenceProfile(
        rows=frame.height,
        seed=seed,
        chunk_rows=frame.height // chunks,
        settings=ProfileSettings.of(config),
        decision_threshold=decision_threshold,
        features={name: profiles[name] for name in names},
        score=score_profile,
        confidence=confidence_profile,
        positive_rate=float(np.mean(scored >= decision_threshold)) if len(scored) else None,
        thresholds={name: thresholds[name] for name in names},
        score_threshold=_threshold(score_stats, None, config),
        confidence_threshold=_threshold(confidence_stats, None, config),
    )


def with_threshold_overrides(profile: ReferenceProfile, thresholds: dict[str, float]) -> ReferenceProfile:
    """A copy of ``profile`` whose PSI thresholds follow ``thresholds`` (e.g. today's ``monitoring.drift.thresholds``)
    instead of those it was fitted with: a named feature takes the given value, every other one its fitted value.
    Lets a config change apply to the serving champion without refitting. Raises ValueError for an unknown name."""
    unknown = sorted(set(thresholds) - set(profile.features))
    if unknown:
        raise ValueError(f"thresholds name {unknown}, which are not features; features are {profile.feature_names}")
    updated = {
        name: threshold.model_copy(
            update={"psi": float(thresholds[name]), "source": "config"}
            if name in thresholds
            else {"psi": threshold.fitted_psi, "source": "fitted"}
        )
        for name, threshold in profile.thresholds.items()
    }
    settings = profile.settings.model_copy(update={"thresholds": dict(thresholds)})
    return profile.model_copy(update={"thresholds": updated, "settings": settings})


def reference_sample(frame: pl.DataFrame, features: list[FeatureCard], rows: int, seed: int) -> pl.DataFrame:
    """A uniform random sample (without replacement, seeded) of at most ``rows`` rows of the feature columns, in
    card order: the reference side of the multivariate drift check and of the evidently report."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    selected = frame.select(f.name for f in features)
    return selected.sample(n=min(rows, selected.height), seed=seed, shuffle=True)


def domain_auc(
    reference: pl.DataFrame, current: pl.DataFrame, features: list[FeatureCard], rows: int, seed: int
) -> float | None:
    """Out-of-fold AUC of a small LightGBM classifier (``DOMAIN_TREES`` trees, one thread) telling ``reference``
    rows (0) from ``current`` rows (1): up to ``rows`` random rows of each, equal counts per side, a seeded 2-fold
    split. About 0.5 = indistinguishable. None with fewer than ``DOMAIN_MIN_ROWS`` rows on a side."""
    n = min(rows, reference.height, current.height)
    if n < DOMAIN_MIN_ROWS:
        return None
    reference = reference.sample(n=n, seed=seed) if reference.height > n else reference
    tonight = current.sample(n=n, seed=seed + 1) if current.height > n else current
    matrix = np.vstack([feature_matrix(reference, features), feature_matrix(tonight, features)])
    labels = np.r_[np.zeros(n), np.ones(n)]
    fold = np.random.default_rng(seed).permutation(2 * n) % 2
    predictions = np.empty(2 * n)
    params = {**DOMAIN_PARAMS, "seed": seed}
    for k in (0, 1):
        train, test = fold != k, fold == k
        dataset = lgb.Dataset(
            matrix[train], label=labels[train], categorical_feature=categorical_indices(features), free_raw_data=True
        )
        booster = lgb.train(params, dataset, num_boost_round=DOMAIN_TREES)
        predictions[test] = booster.predict(matrix[test])
    return float(roc_auc_score(labels, predictions))


def domain_chance_std(rows: int) -> float:
    """Standard deviation of ``domain_auc`` between two identical populations of ``rows`` rows a side: the
    Mann-Whitney null, sqrt((2n + 1) / (12 n^2)) (0.018 at 500 rows, 0.006 at 5,000)."""
    return math.sqrt((2 * rows + 1) / (12 * rows * rows)) if rows > 0 else math.inf


def fit_domain_auc(
    frame: pl.DataFrame, features: list[FeatureCard], nights: np.ndarray | None, rows: int, seed: int = 0
) -> float | None:
    """How distinct an ordinary night of the reference is: up to ``DOMAIN_FIT_NIGHTS`` of its real nights (``nights``:
    one key per row, as for ``fit_profile``) are each told from the rest of the reference by ``domain_auc`` (up to
    ``rows`` rows a side, as tonight is told from the reference sample); the largest AUC.

    The nights judged are the most distinct half by a cheap measure (``_night_distinctness``: summed PSI of each
    feature's shares against the whole reference) and the rest evenly spread over the reference: the calendar's
    extremes (a pay day falling on a weekend) are rare, and a sample spread evenly would miss them. So a reference
    whose nights differ by the calendar gives a high value and such a night later is not a population shift; a
    homogeneous one gives about 0.5 plus chance. None without ``nights``, with fewer than ``MIN_REFERENCE_NIGHTS``
    nights, or when no night holds ``DOMAIN_MIN_ROWS`` rows.
    """
    index = _night_index(nights, frame.height)
    if index is None:
        return None
    large = np.flatnonzero(np.bincount(index) >= DOMAIN_MIN_ROWS)
    if len(large) == 0:
        return None
    distinct = large[np.argsort(-_night_distinctness(frame, features, index)[large], kind="stable")]
    chosen = list(distinct[: DOMAIN_FIT_NIGHTS // 2])
    spread = np.linspace(0, len(large) - 1, min(len(large), DOMAIN_FIT_NIGHTS)).round().astype(int)
    chosen += [night for night in large[spread] if night not in chosen][: DOMAIN_FIT_NIGHTS - len(chosen)]
    selected = frame.select(f.name for f in features)
    aucs = [
        domain_auc(selected.filter(index != night), selected.filter(index == night), features, rows, seed + k)
        for k, night in enumerate(chosen)
    ]
    known = [auc for auc in aucs if auc is not None]
    return max(known) if known else None


def _night_distinctness(frame: pl.DataFrame, features: list[FeatureCard], night_of_row: np.ndarray) -> np.ndarray:
    """Per real night, the PSI of each feature's shares that night against the whole reference, summed over the
    features: numbers in deciles of the reference (missing values as one more bin), categories by level."""
    nights = int(night_of_row.max()) + 1
    total = np.zeros(nights)
    for feature in features:
        if feature.dtype == "category":
            codes = frame.select(category_codes(feature.name, feature.categories or [])).to_series().to_numpy() + 1
        else:
            values = frame.select(numeric_values(feature.name)).to_series().to_numpy()
            present = values[np.isfinite(values)]
            deciles = np.unique(np.quantile(present, np.linspace(0.1, 0.9, 9))) if len(present) else np.array([])
            codes = _bin_codes(values.astype(np.float64), deciles.tolist()) + 1
        size = int(codes.max()) + 1
        counts = np.bincount(night_of_row * size + codes, minlength=nights * size).reshape(nights, size)
        whole = counts.sum(axis=0) / counts.sum()
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        total += population_stability_index(whole, shares)
    return total


def confidence_of(scores: np.ndarray, threshold: float) -> np.ndarray:
    """How far each score sits from the decision threshold, scaled to [0, 1] (as ``nightkeeper.scoring.confidence``)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(scores >= threshold, (scores - threshold) / (1 - threshold), (threshold - scores) / threshold)


def reference_quantile(profile: NumericProfile, levels: np.ndarray) -> np.ndarray:
    """The reference quantile function at ``levels`` in [0, 1], as described in ``NumericProfile`` (a sketched one
    rounded to its ``resolution`` grid when it has one)."""
    p = np.asarray(profile.quantile_levels)
    x = np.asarray(profile.quantiles)
    levels = np.clip(np.asarray(levels, dtype=np.float64), 0.0, 1.0)
    if not profile.exact:
        quantiles = PchipInterpolator(p, x)(levels)
        if profile.resolution is not None and profile.min is not None:
            quantiles = profile.min + np.round((quantiles - profile.min) / profile.resolution) * profile.resolution
        return np.clip(quantiles, x[0], x[-1])
    k = np.clip(np.searchsorted(p, levels, side="left"), 1, len(p) - 1)
    p0, p1, x0, x1 = p[k - 1], p[k], x[k - 1], x[k]
    width = p1 - p0
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(width > 0, (levels - p0) / width, 1.0)
    return x0 + np.clip(fraction, 0.0, 1.0) * (x1 - x0)


# ------------------------------------------------------------------------------------------------------- helpers


def _numeric_profile(values: np.ndarray, rows: int, bins: int) -> NumericProfile:
    """Profile of the sorted non-missing ``values`` out of ``rows`` rows."""
    n = len(values)
    missing_rate = (rows - n) / rows if rows else 0.0
    if n == 0:
        return NumericProfile(
            rows=rows,
            missing_rate=missing_rate,
            edges=[],
            frequencies=[],
            mean=None,
            std=None,
            min=None,
            max=None,
            exact=True,
            resolution=None,
            quantile_levels=[],
            quantiles=[],
            cdf=[],
            cdf_below=[],
        )
    # inverted-CDF quantiles: the smallest value whose cumulative share reaches the level (an actual data value)
    positions = np.ceil(np.arange(1, bins) / bins * n).astype(np.int64) - 1
    edges = np.unique(values[np.clip(positions, 0, n - 1)])
    frequencies = bin_counts(values, edges) / n
    distinct = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    if len(distinct) <= MAX_ATOMS:
        atoms = values[distinct]
        upper = np.r_[distinct[1:], n] / n
        lower = distinct / n
        levels = np.column_stack([lower, upper]).ravel()
        quantiles = np.repeat(atoms, 2)
        levels[-1] = 1.0
        exact = True
    else:
        levels = np.asarray(QUANTILE_LEVELS)
        quantiles = np.quantile(values, levels, method="linear")
        exact = False
    resolution = None if exact else _lattice_step(values[distinct])
    return NumericProfile(
        rows=rows,
        missing_rate=missing_rate,
        edges=edges.tolist(),
        frequencies=frequencies.tolist(),
        mean=float(values.mean()),
        std=float(values.std()),
        min=float(values[0]),
        max=float(values[-1]),
        exact=exact,
        resolution=resolution,
        quantile_levels=levels.tolist(),
        quantiles=np.asarray(quantiles, dtype=np.float64).tolist(),
        cdf=(np.searchsorted(values, quantiles, side="right") / n).tolist(),
        cdf_below=(np.searchsorted(values, quantiles, side="left") / n).tolist(),
    )


def _lattice_step(distinct: np.ndarray) -> float | None:
    """The grid step of sorted distinct values when all lie on ``distinct[0] + k * step`` (step = smallest gap)."""
    if len(distinct) < 2:
        return None
    step = float(np.diff(distinct).min())
    ratio = (distinct - distinct[0]) / step
    scale = max(float(np.abs(distinct).max()), 1.0)
    if step <= 0 or not np.all(np.abs(ratio - np.round(ratio)) * step <= 1e-9 * scale):
        return None
    return step


def _category_profile(codes: np.ndarray, levels: list[str]) -> CategoryProfile:
    rows = len(codes)
    present = codes[codes >= 0]
    counts = np.bincount(present, minlength=len(levels) + 1)
    shares = counts / len(present) if len(present) else np.zeros(len(levels) + 1)
    return CategoryProfile(
        rows=rows,
        missing_rate=(rows - len(present)) / rows if rows else 0.0,
        levels=list(levels),
        frequencies=shares[:-1].tolist(),
        other_frequency=float(shares[-1]),
    )


def _bin_codes(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin index of each value in the right-closed bins of ``edges``; -1 for a missing (NaN) value."""
    codes = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    return np.where(np.isnan(values), -1, codes)


@dataclass(frozen=True)
class _Ladder:
    """Random night-sized draws of the reference rows: ``draws[k]`` is a permutation of the row indexes, and a draw
    of ``size`` rows is its first ``size`` entries (nested draws: one permutation serves every size)."""

    sizes: tuple[int, ...]
    draws: np.ndarray
    night_of_row: np.ndarray | None  # index of each row's real night, when the reference has enough nights

    @classmethod
    def draw(cls, rng: np.random.Generator, rows: int, largest: int, night_of_row: np.ndarray | None) -> _Ladder:
        sizes = []
        size = LADDER_FIRST_ROWS
        while size < largest:
            sizes.append(size)
            size *= 2
        sizes.append(max(largest, 1))
        permutations = np.stack([rng.permutation(rows)[: sizes[-1]] for _ in range(LADDER_DRAWS)])
        return cls(tuple(sizes), permutations, night_of_row)

    def statistics(self, codes: np.ndarray, size: int) -> _Statistics:
        """Per ladder size, the PSI and JS distance of every draw's bin shares (non-missing rows: code >= 0)
        against the whole reference's (sizes count rows drawn, so a feature's non-missing rows per draw vary);
        and the PSI of each real night, when known."""
        zeros = np.zeros(len(self.draws))
        if size == 0:
            return _Statistics({n: (zeros, zeros) for n in self.sizes}, None)
        present = codes >= 0
        whole_counts = np.bincount(codes[present], minlength=size)
        if whole_counts.sum() == 0:
            return _Statistics({n: (zeros, zeros) for n in self.sizes}, None)
        whole = whole_counts / whole_counts.sum()
        nightly = None
        if self.night_of_row is not None:
            groups = int(self.night_of_row.max()) + 1
            keys = self.night_of_row[present] * size + codes[present]
            counts = np.bincount(keys, minlength=groups * size).reshape(groups, size)
            totals = counts.sum(axis=1, keepdims=True)
            usable = totals[:, 0] > 0
            nightly = population_stability_index(whole, counts[usable] / totals[usable])
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        drawn = codes[self.draws]  # draws x largest size
        for n in self.sizes:
            part = drawn[:, :n]
            offsets = np.arange(len(part))[:, None] * size
            counts = np.bincount((part + offsets)[part >= 0], minlength=len(part) * size).reshape(len(part), size)
            totals = counts.sum(axis=1, keepdims=True)
            usable = totals[:, 0] > 0
            shares = counts[usable] / totals[usable]
            out[n] = (population_stability_index(whole, shares), jensenshannon(whole, shares, base=2, axis=-1))
        return _Statistics(out, nightly)


@dataclass(frozen=True)
class _Statistics:
    by_size: dict[int, tuple[np.ndarray, np.ndarray]]  # ladder size -> (PSI, JS distance) per draw
    nightly: np.ndarray | None  # PSI of each real night of the reference, when known


def _night_index(nights: np.ndarray | None, rows: int) -> np.ndarray | None:
    """Each row's real night as 0..k-1, or None without nights or with fewer than ``MIN_REFERENCE_NIGHTS``."""
    if nights is None:
        return None
    nights = np.asarray(nights)
    if nights.shape != (rows,):
        raise ValueError(f"nights must be one per reference row ({rows}), got shape {nights.shape}")
    _, index = np.unique(nights, return_inverse=True)
    return index if index.max(initial=-1) + 1 >= MIN_REFERENCE_NIGHTS else None


def _threshold(statistics: _Statistics, override: float | None, config: DriftConfig) -> DriftThreshold:
    sizes = sorted(statistics.by_size)
    nightly = None if statistics.nightly is None else _chance_upper(statistics.nightly, config.threshold_sigmas)
    by_rows = [
        max(config.psi_floor, _chance_upper(statistics.by_size[n][0], config.threshold_sigmas), nightly or 0.0)
        for n in sizes
    ]
    fitted_psi = by_rows[-1]
    return DriftThreshold(
        psi=float(override) if override is not None else fitted_psi,
        fitted_psi=fitted_psi,
        js_distance=_upper(statistics.by_size[sizes[-1]][1], config.threshold_sigmas),
        source="config" if override is not None else "fitted",
        rows=sizes,
        psi_by_rows=by_rows,
        nightly_psi=nightly,
    )


def _chance_upper(values: np.ndarray, sigmas: float) -> float:
    """The upper quantile, at the normal tail of ``sigmas``, of a scaled chi-square a * chi2(d) fitted to ``values``
    by mean (a * d) and variance (2 * a^2 * d); 0 when the values do not vary."""
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return 0.0
    mean, variance = float(np.mean(values)), float(np.var(values, ddof=1))
    if mean <= 0 or variance <= 0:
        return max(mean, 0.0)
    scale, degrees = variance / (2 * mean), 2 * mean * mean / variance
    return float(scale * stats.chi2.isf(stats.norm.sf(sigmas), degrees))


def _upper(values: np.ndarray, sigmas: float) -> float:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return 0.0
    value = float(np.mean(values) + sigmas * np.std(values, ddof=1))
    return value if math.isfinite(value) else 0.0
