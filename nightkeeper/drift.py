"""Nightly drift: compare tonight's validated rows and scores with the champion's reference profile.

``measure_drift(profile, current, current_scores, features, reference_sample=None)`` returns a ``DriftResult``: a
table with one row per feature, the prediction (score and confidence) drift, the share of drifted features and,
when a reference sample is given, a multivariate score (the AUC of a classifier telling reference rows from
tonight's). It reads nothing but its arguments and never raises on an empty night. Every statistic is computed from
the night's mergeable summary (``nightkeeper.summaries``: ``drift_of_summary``), so a night run in shards gives the
same result from its shards' merged summaries; ``measure_drift`` is the one-shard case.

Per feature (missing values are never binned; see ``nightkeeper.profile`` for the bins, PSI and JS definitions):

* ``psi``: population stability index on the reference bins, each share floored at 1e-4 (``PSI_EPSILON``).
* ``js_distance``: Jensen-Shannon distance, base 2, on the same bins (numbers) or levels (categories).
* numbers only: ``wasserstein_norm`` = W1 between the reference quantile function (the profile's sketch; exact for
  features with at most 101 distinct values) and tonight's empirical one, divided by max(reference std, 0.001) as
  evidently does; ``ks`` = sup |F_ref - F_tonight| between the sketched reference CDF and tonight's ECDF.
* categories only: ``chi2``/``chi2_p_value`` = ``scipy.stats.chisquare`` of tonight's counts against the reference
  shares, over the levels seen on either side, with reference shares floored at 1e-4 and renormalised (so a level
  the reference never saw gives a large but finite statistic). ``new_category_share`` = share of tonight's rows
  (all rows in the denominator) holding a non-null value that is not a reference level: a value outside the
  contract's levels, or a contract level with no reference row. Validation usually quarantines unknown values;
  with ``unknown_category: missing`` they arrive as null and count in the missing rate instead.
* ``missing_rate_reference``/``missing_rate_current``/``missing_rate_change`` (current - reference).
* ``threshold``: the profile's PSI threshold for a night with tonight's number of non-missing values of the feature
  (``DriftThreshold.psi_for``: fitted on night-sized draws of the reference, so a small night gets a wider one) and
  ``drifted`` = psi > threshold. Alerting reads these effect sizes, never the chi-square p-value, which falls to 0
  on any large night whatever the size of the change (it is kept as information).

Per category level (``DriftResult.levels``, ``LEVEL_SCHEMA``): the reference and tonight's share of the
non-missing values, and a status: ``vanished`` when a reference level is absent tonight although a night this size
would show it at least ``VANISHED_MIN_EXPECTED`` times (so absence by chance has probability under e^-10), ``new``
when tonight holds a level the reference never saw. ``DriftResult.details`` words the top movers for a person:
``employment_type: student 7.0% → 0.0% (vanished), retired 10.1% → 17.3%``.

Columns that do not apply to a feature's kind are null; statistics that cannot be computed tonight (no rows, or no
non-missing value of the feature) are NaN and such a feature is not drifted. An empty night gives rows=0, NaN
statistics and shares, ``multivariate_auc`` None and no drift flagged.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
from scipy import stats
from scipy.spatial.distance import jensenshannon

from nightkeeper import metric_names as names
from nightkeeper import registry
from nightkeeper.artifacts import ModelUnavailable, load_reference_sample
from nightkeeper.encoding import FeatureCard
from nightkeeper.frames import number
from nightkeeper.profile import (
    PSI_EPSILON,
    CategoryProfile,
    NumericProfile,
    ReferenceProfile,
    confidence_of,
    domain_auc,
    domain_chance_std,
    population_stability_index,
    reference_quantile,
    with_threshold_overrides,
)
from nightkeeper.serving import serving_model
from nightkeeper.sharding import ENTITY_COLUMN
from nightkeeper.summaries import HASH_COLUMN, DriftSummary, ValueCounts, summarise_drift

FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.String(),
    "kind": pl.String(),
    "psi": pl.Float64(),
    "js_distance": pl.Float64(),
    "wasserstein_norm": pl.Float64(),
    "ks": pl.Float64(),
    "chi2": pl.Float64(),
    "chi2_p_value": pl.Float64(),
    "missing_rate_reference": pl.Float64(),
    "missing_rate_current": pl.Float64(),
    "missing_rate_change": pl.Float64(),
    "new_category_share": pl.Float64(),
    "threshold": pl.Float64(),
    "drifted": pl.Boolean(),
}
LEVEL_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.String(),
    "level": pl.String(),
    "reference_share": pl.Float64(),
    "current_share": pl.Float64(),
    "status": pl.String(),  # "vanished", "new" or "" (present on both sides, or absent on both)
}
VANISHED_MIN_EXPECTED = 10.0  # a level expected this many times tonight is absent by chance with p < e^-10
TOP_FEATURES = 5  # features named in an alert message
TOP_LEVELS = 3  # levels named per category feature
MIN_LEVEL_CHANGE = 0.005  # a level whose share moved less than half a point is not worth naming
DOMAIN_CHANCE_SIGMAS = 2.0  # chance standard errors of tonight's domain AUC above the reference's most distinct night
WASSERSTEIN_MIN_STD = 0.001
WASSERSTEIN_CHUNK = 1_000_000  # pieces of the quantile grid evaluated at once
WASSERSTEIN_GRID = 4096  # equal pieces the Wasserstein integral is cut into at least (with tonight's cells)
_NAN = float("nan")


@dataclass(frozen=True)
class DriftResult:
    """One night's drift against a reference profile.

    ``features``: one row per feature in card order, columns ``FEATURE_SCHEMA``. ``prediction``: score and
    confidence drift as floats (``score_psi``, ``score_js_distance``, ``score_threshold``, ``score_drifted`` (0/1),
    the same four for ``confidence_``, plus ``rows_scored``, ``score_mean_reference``/``_current`` and
    ``positive_rate_reference``/``_current`` at the decision threshold); tonight's figures are NaN (and the flags
    0) when no score was given.
    ``drifted_share``: drifted features / features (NaN on an empty night). ``multivariate_auc``: out-of-fold AUC
    of the domain classifier (about 0.5 = indistinguishable), None without a reference sample or with fewer than
    ``profile.DOMAIN_MIN_ROWS`` rows on a side. ``rows``: tonight's rows.
    """

    features: pl.DataFrame
    prediction: dict[str, float]
    drifted_share: float
    multivariate_auc: float | None
    rows: int
    domain_limit: float | None = None  # the population-shift limit tonight (domain_auc_limit); None without an AUC
    levels: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=LEVEL_SCHEMA))
    means: dict[str, tuple[float, float]] = field(default_factory=dict)  # numeric feature -> (reference, tonight)

    def metrics(self) -> dict[str, float]:
        """Flat metric names for alert rules and the warehouse: ``drift.rows``, ``drift.drifted_share``,
        ``drift.drifted_features``, ``drift.multivariate_auc`` (NaN when not computed), ``drift.prediction_psi``,
        ``drift.prediction_js_distance``, ``drift.prediction_drifted``, ``drift.confidence_psi``,
        ``drift.confidence_js_distance``, ``drift.confidence_drifted``, and per feature
        ``drift.feature.<name>.<statistic>`` for psi, js_distance, missing_rate_change, drifted (0/1) and, for numbers,
        wasserstein_norm and ks, for categories chi2_p_value, new_category_share and vanished_levels; and the level
        signals ``drift.vanished_levels`` (count), ``drift.vanished_share`` (their summed reference shares) and
        ``drift.new_level_share`` (largest per-feature share of rows at a level the reference never saw). Names are
        those of ``nightkeeper.metric_names``. Undefined values are NaN (every comparison with NaN is false, so an
        alert rule stays silent)."""
        p = self.prediction
        vanished = self.levels.filter(pl.col("status") == "vanished")
        new_share = self.features["new_category_share"].drop_nulls().drop_nans()
        metrics = {
            names.DRIFT_ROWS: float(self.rows),
            names.DRIFTED_SHARE: float(self.drifted_share),
            names.DRIFTED_FEATURES: float(self.features["drifted"].sum()),
            names.MULTIVARIATE_AUC: _NAN if self.multivariate_auc is None else float(self.multivariate_auc),
            names.POPULATION_SHIFTED: self.population_shifted,
            names.PREDICTION_PSI: float(p.get("score_psi", _NAN)),
            names.PREDICTION_JS: float(p.get("score_js_distance", _NAN)),
            names.PREDICTION_DRIFTED: float(p.get("score_drifted", 0.0)),
            names.CONFIDENCE_PSI: float(p.get("confidence_psi", _NAN)),
            names.CONFIDENCE_JS: float(p.get("confidence_js_distance", _NAN)),
            names.CONFIDENCE_DRIFTED: float(p.get("confidence_drifted", 0.0)),
            names.VANISHED_LEVELS: float(vanished.height) if self.rows else _NAN,
            names.VANISHED_SHARE: float(vanished["reference_share"].sum()) if self.rows else _NAN,
            names.NEW_LEVEL_SHARE: number(new_share.max()) if len(new_share) else _NAN,
        }
        for row in self.features.iter_rows(named=True):
            feature = row["feature"]
            extra = ["wasserstein_norm", "ks"] if row["kind"] == "numeric" else ["chi2_p_value", "new_category_share"]
            for statistic in ["psi", "js_distance", "missing_rate_change", *extra]:
                metrics[names.feature_metric(feature, statistic)] = _float(row[statistic])
            metrics[names.feature_metric(feature, "drifted")] = float(row["drifted"])
            if row["kind"] == "category":
                metrics[names.feature_metric(feature, "vanished_levels")] = (
                    float(vanished.filter(pl.col("feature") == feature).height) if self.rows else _NAN
                )
        return metrics

    def details(self) -> dict[str, dict[str, Any]]:
        """What moved, for the people an alert pages: per aggregate drift metric, a JSON-ready dict with a one-line
        ``summary`` (the alert engine appends it to the message), the ``features`` it names (feature, kind, psi,
        threshold, and for categories the moved ``levels`` with shares before and after, for numbers the means)
        and, for the level signals, the ``levels`` concerned. Features are named most drifted first (psi /
        threshold): the drifted ones, or the largest movers when none drifted."""
        if not self.rows or not self.features.height:
            return {}
        ranked = (
            self.features.filter(pl.col("psi").is_finite())
            .with_columns((pl.col("psi") / pl.col("threshold")).alias("ratio"))
            .sort("ratio", descending=True, maintain_order=True)
        )
        drifted = ranked.filter(pl.col("drifted"))
        named = (drifted if drifted.height else ranked).head(TOP_FEATURES)
        movers = [self._feature_detail(row) for row in named.iter_rows(named=True)]
        lead = "drifted: " if drifted.height else "largest movers (none beyond its threshold): "
        features_summary = lead + "; ".join(m["text"] for m in movers) if movers else "no feature measurable tonight"
        if drifted.height > TOP_FEATURES:
            features_summary += f"; and {drifted.height - TOP_FEATURES} more"
        about_features = {"summary": features_summary, "features": [_without_text(m) for m in movers]}

        out: dict[str, dict[str, Any]] = {
            metric: about_features
            for metric in (names.DRIFTED_FEATURES, names.DRIFTED_SHARE, names.MULTIVARIATE_AUC, names.CONFIDENCE_PSI)
        }
        about_scores: dict[str, Any] = {
            "summary": f"{self._score_summary()}; features that moved most: {features_summary}"
        }
        out[names.PREDICTION_PSI] = out[names.PREDICTION_DRIFTED] = about_scores
        rows = {row["feature"]: row for row in self.features.iter_rows(named=True)}
        for metric, status in (
            (names.VANISHED_LEVELS, "vanished"),
            (names.VANISHED_SHARE, "vanished"),
            (names.NEW_LEVEL_SHARE, "new"),
        ):
            concerned = self.levels.filter(pl.col("status") == status)
            features = list(dict.fromkeys(concerned["feature"].to_list()))
            texts = [self._feature_detail(rows[f], must_show=status)["text"] for f in features]
            out[metric] = {
                "summary": "; ".join(texts) if texts else f"no {status} level tonight",
                "levels": concerned.to_dicts(),
            }
        return out

    def _score_summary(self) -> str:
        """How the model's scores moved (``scores: PSI 0.140 > threshold 0.100, mean 0.210 → 0.270, at or above the
        decision threshold 18.0% → 24.1%``), from ``prediction``."""
        p = self.prediction
        psi, threshold = p.get("score_psi", _NAN), p.get("score_threshold", _NAN)
        text = f"scores: PSI {psi:.3f} {'>' if psi > threshold else '<='} threshold {threshold:.3f}"
        mean_before, mean_now = p.get("score_mean_reference", _NAN), p.get("score_mean_current", _NAN)
        if mean_before == mean_before and mean_now == mean_now:
            text += f", mean {mean_before:.3f} → {mean_now:.3f}"
        rate_before, rate_now = p.get("positive_rate_reference", _NAN), p.get("positive_rate_current", _NAN)
        if rate_before == rate_before and rate_now == rate_now:
            text += f", at or above the decision threshold {rate_before:.1%} → {rate_now:.1%}"
        return text

    def _feature_detail(self, row: dict[str, Any], must_show: str = "") -> dict[str, Any]:
        """One feature's movement as data and as text (``income: PSI 0.31 > threshold 0.08, mean 52,000 → 61,000``;
        ``employment_type: student 7.0% → 0.0% (vanished), retired 10.1% → 17.3%``)."""
        feature = row["feature"]
        detail: dict[str, Any] = {
            "feature": feature,
            "kind": row["kind"],
            "psi": row["psi"],
            "threshold": row["threshold"],
        }
        if row["kind"] == "category":
            levels = self.levels.filter(pl.col("feature") == feature).with_columns(
                (pl.col("current_share") - pl.col("reference_share")).abs().alias("change")
            )
            required = levels.filter(pl.col("status") == must_show) if must_show else levels.clear()
            shown = (
                pl.concat(
                    [
                        required,
                        levels.filter(pl.col("change") >= MIN_LEVEL_CHANGE).sort(
                            "change", descending=True, maintain_order=True
                        ),
                    ]
                )
                .unique("level", keep="first", maintain_order=True)
                .head(max(TOP_LEVELS, required.height))
            )
            detail["levels"] = shown.drop("change").to_dicts()
            parts = [
                f"{lv['level']} {_pct(lv['reference_share'])} → {_pct(lv['current_share'])}"
                + (f" ({lv['status']})" if lv["status"] else "")
                for lv in detail["levels"]
            ]
            text = f"{feature}: " + (", ".join(parts) if parts else _psi_text(row))
        else:
            before, after = self.means.get(feature, (_NAN, _NAN))
            detail["mean_reference"], detail["mean_current"] = before, after
            text = f"{feature}: {_psi_text(row)}, mean {_num(before)} → {_num(after)}"
        if row["missing_rate_change"] is not None and abs(row["missing_rate_change"]) >= 0.01:
            text += f", missing {_pct(row['missing_rate_reference'])} → {_pct(row['missing_rate_current'])}"
        detail["text"] = text
        return detail

    @property
    def population_shifted(self) -> float:
        """1.0 when the domain classifier tells tonight from the reference beyond ``domain_limit``, 0.0 when not,
        NaN when it did not run (so a rule stays silent)."""
        if self.multivariate_auc is None or self.domain_limit is None:
            return _NAN
        return float(self.multivariate_auc > self.domain_limit)

    def drifted_features(self) -> list[str]:
        """Names of the drifted features, most drifted (largest psi / threshold) first."""
        drifted = self.features.filter(pl.col("drifted"))
        return drifted.sort(pl.col("psi") / pl.col("threshold"), descending=True, maintain_order=True)[
            "feature"
        ].to_list()

    def plot(self, path: str | Path) -> Path:
        """Write a PNG bar chart of each feature's PSI (and the score's and confidence's) against its threshold;
        drifted bars are red. Uses matplotlib's Agg canvas directly (no pyplot, no global backend change)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        labels = self.features["feature"].to_list() + ["[score]", "[confidence]"]
        p = self.prediction
        psi = np.array(
            self.features["psi"].to_list() + [p.get("score_psi", _NAN), p.get("confidence_psi", _NAN)], dtype=float
        )
        thresholds = np.array(
            self.features["threshold"].to_list()
            + [p.get("score_threshold", _NAN), p.get("confidence_threshold", _NAN)],
            dtype=float,
        )
        drifted = self.features["drifted"].to_list() + [bool(p.get("score_drifted")), bool(p.get("confidence_drifted"))]
        floor = PSI_EPSILON
        shown = np.where(np.isfinite(psi), np.maximum(psi, floor), floor)
        y = np.arange(len(labels))[::-1]
        figure = Figure(figsize=(8, 0.32 * len(labels) + 1.6), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.barh(y, shown, color=["#d62728" if d else "#7f7f7f" for d in drifted], height=0.7, label="PSI")
        axes.scatter(thresholds, y, marker="|", s=200, color="black", zorder=3, label="threshold")
        for value, position in zip(psi, y, strict=True):
            if not np.isfinite(value):
                axes.text(floor, position, " n/a", va="center", fontsize=8)
        axes.set_xscale("log")
        axes.set_yticks(y, labels, fontsize=8)
        axes.set_xlabel("PSI (log scale)")
        auc = "n/a" if self.multivariate_auc is None else f"{self.multivariate_auc:.3f}"
        axes.set_title(
            f"Drift vs reference: {self.rows} rows, drifted share {self.drifted_share:.2f}, domain AUC {auc}",
            fontsize=10,
        )
        axes.legend(loc="lower right", fontsize=8)
        figure.savefig(path, dpi=100)
        return path


@dataclass(frozen=True)
class ServingReference:
    """What a night's drift is measured against: the serving champion's reference profile (with today's
    ``monitoring.drift.thresholds`` applied), its features and, when it can be read, its reference sample."""

    version: str
    profile: ReferenceProfile
    features: list[FeatureCard]
    sample: pl.DataFrame | None
    sample_problem: str | None = None


def serving_reference(
    connection: duckdb.DuckDBPyConnection, night: dt.date, thresholds: dict[str, float]
) -> ServingReference | None:
    """The reference for ``night``: the card of the champion serving that night (``serving.serving_model``), so the
    reference moves with each promotion and a rollback moves it back. None when no usable champion serves (none set,
    or its registry row is bad: the nightly steps report that and answer with the fallback). A reference
    sample that is missing or fails its checksum leaves ``sample`` None with the reason in ``sample_problem`` (the
    multivariate check then goes without); the profile itself lives in the card."""
    champion = serving_model(connection, registry.CHAMPION, night).record
    if champion is None:
        return None
    card = champion.card
    try:
        sample, problem = load_reference_sample(champion), None
    except ModelUnavailable as exc:
        sample, problem = None, str(exc)
    return ServingReference(
        champion.version, with_threshold_overrides(card.profile, thresholds), list(card.features), sample, problem
    )


def domain_auc_limit(reference_auc: float | None, rows: int, floor: float) -> float:
    """Tonight's population-shift limit for a domain AUC measured on ``rows`` rows a side: the reference's most
    distinct ordinary night (``ReferenceProfile.domain_auc``, fitted on its real nights; 0.5 when not fitted) plus
    ``DOMAIN_CHANCE_SIGMAS`` chance standard errors at tonight's size, never below ``floor``
    (``monitoring.drift.max_domain_auc``). A night no more distinct than the reference's own pay days is ordinary."""
    return max(
        floor, (0.5 if reference_auc is None else reference_auc) + DOMAIN_CHANCE_SIGMAS * domain_chance_std(rows)
    )


def measure_drift(
    profile: ReferenceProfile,
    current: pl.DataFrame,
    current_scores: np.ndarray | None,
    features: list[FeatureCard],
    reference_sample: pl.DataFrame | None = None,
    domain_rows: int = 10_000,
    seed: int = 0,
    domain_floor: float = 0.6,
    id_column: str = ENTITY_COLUMN,
) -> DriftResult:
    """Compare tonight's rows (``current``, typed as the validated frame) and their scores (one per row, NaN =
    unscored; None = not scored tonight) with ``profile``: ``drift_of_summary`` of the night's
    ``summaries.summarise_drift``, the one-shard case of a sharded night. See the module docstring for every
    statistic.

    The multivariate check (``nightkeeper.profile.domain_auc``) tells up to ``domain_rows`` rows of
    ``reference_sample`` from as many of ``current`` (those with the smallest stable hash of ``id_column``, a
    uniform sample that shards merge exactly) and reports the out-of-fold AUC; the night counts as a population
    shift above ``domain_auc_limit`` (from the profile's fitted ``domain_auc``, at least ``domain_floor``). Raises
    ValueError when a feature is absent from the profile or from ``current``, its kind or levels differ from the
    profile's, the scores are not one per row, or a reference sample is given and ``current`` lacks ``id_column``.
    """
    _check(profile, features)
    summary = summarise_drift(
        current, current_scores, features, domain_rows if reference_sample is not None else 0, id_column
    )
    return drift_of_summary(profile, summary, features, reference_sample, seed, domain_floor)


def drift_of_summary(
    profile: ReferenceProfile,
    summary: DriftSummary,
    features: list[FeatureCard],
    reference_sample: pl.DataFrame | None = None,
    seed: int = 0,
    domain_floor: float = 0.6,
) -> DriftResult:
    """The night's drift against ``profile`` from its ``summary`` (``summaries.summarise_drift`` of the whole night,
    or ``summaries.merge_drift_summaries`` of its shards': the same summary, so the same result). The multivariate
    check runs on the summary's domain sample when ``reference_sample`` is given. Raises ValueError as
    ``measure_drift`` does for the profile and features."""
    _check(profile, features)
    rows = summary.rows
    numeric = [f for f in features if f.dtype != "category"]
    categories = [f for f in features if f.dtype == "category"]

    records: dict[str, dict[str, Any]] = {}
    means: dict[str, tuple[float, float]] = {}
    for feature in numeric:
        reference = profile.features[feature.name]
        assert isinstance(reference, NumericProfile)
        values = summary.numbers[feature.name]
        records[feature.name] = _numeric_drift(reference, values, rows)
        means[feature.name] = (_float(reference.mean), values.mean())
    level_frames = [pl.DataFrame(schema=LEVEL_SCHEMA)]
    for feature in categories:
        reference = profile.features[feature.name]
        assert isinstance(reference, CategoryProfile)
        counts = summary.categories[feature.name]
        records[feature.name] = _category_drift(reference, counts, rows)
        level_frames.append(_level_shares(feature.name, reference, counts))

    table_rows = []
    for feature in features:
        record = records[feature.name]
        present = round(rows * (1 - record["missing_rate_current"])) if rows else 0
        threshold = profile.thresholds[feature.name].psi_for(present)
        psi = record["psi"]
        table_rows.append(
            {
                "feature": feature.name,
                "kind": "category" if feature.dtype == "category" else "numeric",
                **record,
                "threshold": threshold,
                "drifted": bool(math.isfinite(psi) and psi > threshold),
            }
        )
    table = pl.DataFrame(table_rows, schema=FEATURE_SCHEMA) if table_rows else pl.DataFrame(schema=FEATURE_SCHEMA)
    drifted_share = number(table["drifted"].mean()) if rows and table.height else _NAN
    auc, limit = None, None
    if reference_sample is not None:  # judged at the rows per side the classifier had
        tonight = summary.domain_sample.drop(ENTITY_COLUMN, HASH_COLUMN)
        auc = domain_auc(reference_sample, tonight, features, summary.domain_rows, seed)
        if auc is not None:
            limit = domain_auc_limit(
                profile.domain_auc, min(summary.domain_rows, reference_sample.height, rows), domain_floor
            )
    return DriftResult(
        features=table,
        prediction=_prediction_drift(profile, summary.scores),
        drifted_share=drifted_share,
        multivariate_auc=auc,
        domain_limit=limit,
        rows=rows,
        levels=pl.concat(level_frames),
        means=means,
    )


# --------------------------------------------------------------------------------------------------- statistics


def numeric_statistics(reference: NumericProfile, counts: ValueCounts) -> dict[str, float]:
    """PSI, JS distance, normalised Wasserstein and KS of the values counted in ``counts`` against ``reference``
    (all NaN when either side has no value); rounded counts are compared with the reference's points rounded alike
    (``ValueCounts.counted_up_to``)."""
    n = counts.total
    if n == 0 or not reference.frequencies:
        return {"psi": _NAN, "js_distance": _NAN, "wasserstein_norm": _NAN, "ks": _NAN}
    psi, js_distance = _binned_shift(reference, _bin_counts(reference, counts), n)
    wasserstein = _wasserstein(reference, counts) / max(reference.std or 0.0, WASSERSTEIN_MIN_STD)
    # KS at the reference's quantiles, comparing right-continuous CDFs and their left limits: exact when the
    # profile is exact (every jump of both CDFs is then bracketed by these points), otherwise a lower bound that
    # misses at most the reference mass strictly between two neighbouring quantiles (<= 0.016)
    knots = np.asarray(reference.quantiles)
    right = np.abs(np.asarray(reference.cdf) - counts.counted_up_to(knots, inclusive=True) / n)
    left = np.abs(np.asarray(reference.cdf_below) - counts.counted_up_to(knots, inclusive=False) / n)
    ks = float(max(right.max(), left.max()))
    return {"psi": psi, "js_distance": js_distance, "wasserstein_norm": wasserstein, "ks": ks}


def _binned_shift(reference: NumericProfile, counts: np.ndarray, n: int) -> tuple[float, float]:
    """PSI and JS distance of tonight's ``n`` values counted in the reference's bins (``counts``) against it."""
    expected = np.asarray(reference.frequencies)
    shares = counts / n
    return float(population_stability_index(expected, shares)), float(jensenshannon(expected, shares, base=2))


def _bin_counts(reference: NumericProfile, counts: ValueCounts) -> np.ndarray:
    """The counted values per bin of ``reference`` (``profile.bin_counts``' right-closed bins: (-inf, e0], (e0, e1],
    ..., (e_last, inf))."""
    at_most = counts.counted_up_to(np.asarray(reference.edges), inclusive=True)
    return np.diff(np.r_[np.int64(0), at_most, np.int64(counts.total)])


def _confidence_bin_counts(reference: NumericProfile, scores: ValueCounts, threshold: float) -> np.ndarray:
    """The counted scores per bin of the reference confidence profile, a score's confidence being
    ``profile.confidence_of`` at ``threshold``. Rounded scores are binned in score space: confidence <= c holds
    below the threshold for the scores at or above ``threshold - c * threshold`` and from it up for those at or below
    ``threshold + c * (1 - threshold)``, points rounded as the scores are, so that a score whose confidence equals an
    edge (an atom of a weak model's scores) stays in its bin as it would unrounded."""
    edges = np.asarray(reference.edges)
    if not scores.is_rounded:
        confidences = confidence_of(scores.values, threshold)
        return np.bincount(
            np.searchsorted(edges, confidences, side="left"), weights=scores.counts, minlength=len(edges) + 1
        ).astype(np.int64)
    below = scores.counted_up_to(np.array([threshold]), inclusive=False)[0]
    close_below = below - scores.counted_up_to(threshold - edges * threshold, inclusive=False)
    close_above = scores.counted_up_to(threshold + edges * (1 - threshold), inclusive=True) - below
    at_most = close_below + close_above  # both >= 0: the points lie at or below, at or above the threshold
    return np.diff(np.r_[np.int64(0), at_most, np.int64(scores.total)])


def _wasserstein(reference: NumericProfile, counts: ValueCounts) -> float:
    """W1 = integral over u in [0, 1] of |Q_ref(u) - Q_now(u)|, on the merged grid of the reference's quantile
    levels, tonight's cells (the cumulative shares of its distinct values, on each of which its quantile function is
    constant) and WASSERSTEIN_GRID equal pieces: both functions are constant on each piece for an exact profile, so
    the midpoint rule is then exact; for a sketched profile the pieces are at most 1/WASSERSTEIN_GRID wide."""
    n = counts.total
    cumulative = counts.cumulative
    breaks = np.unique(
        np.concatenate(
            [cumulative / n, np.asarray(reference.quantile_levels), np.linspace(0.0, 1.0, WASSERSTEIN_GRID + 1)]
        )
    )
    # each piece's term is computed WASSERSTEIN_CHUNK pieces at a time (the quantile function's temporaries are
    # a dozen arrays of the pieces' size) and summed at once: the same terms and the same sum as in one go
    terms = np.empty(len(breaks) - 1)
    last = len(counts.values) - 1
    for start in range(0, len(terms), WASSERSTEIN_CHUNK):
        stop = min(start + WASSERSTEIN_CHUNK, len(terms))
        left, right = breaks[start:stop], breaks[start + 1 : stop + 1]
        middles = (right + left) / 2
        cell = np.clip(np.searchsorted(cumulative, middles * n, side="right") - 1, 0, last)
        terms[start:stop] = (right - left) * np.abs(reference_quantile(reference, middles) - counts.values[cell])
    return float(np.sum(terms))


def _numeric_drift(reference: NumericProfile, counts: ValueCounts, rows: int) -> dict[str, Any]:
    current_missing = (rows - counts.total) / rows if rows else _NAN
    return {
        **numeric_statistics(reference, counts),
        "chi2": None,
        "chi2_p_value": None,
        **_missing(reference.missing_rate, current_missing),
        "new_category_share": None,
    }


def _category_drift(reference: CategoryProfile, counts: np.ndarray, rows: int) -> dict[str, Any]:
    present = float(counts.sum())
    current_missing = (rows - present) / rows if rows else _NAN
    expected = np.asarray(reference.bin_frequencies)
    new = np.r_[expected[:-1] == 0, True]  # contract levels the reference never had, and the "other" bin
    record: dict[str, Any] = {
        "wasserstein_norm": None,
        "ks": None,
        **_missing(reference.missing_rate, current_missing),
        "new_category_share": float(counts[new].sum() / rows) if rows else _NAN,
    }
    if present == 0 or expected.sum() == 0:
        return {**record, "psi": _NAN, "js_distance": _NAN, "chi2": _NAN, "chi2_p_value": _NAN}
    shares = counts / present
    seen = (expected > 0) | (counts > 0)
    smoothed = np.maximum(expected[seen], PSI_EPSILON)
    if seen.sum() > 1:
        chi2, p_value = stats.chisquare(counts[seen], smoothed / smoothed.sum() * present)
    else:
        chi2, p_value = 0.0, 1.0
    return {
        **record,
        "psi": float(population_stability_index(expected, shares)),
        "js_distance": float(jensenshannon(expected, shares, base=2)),
        "chi2": float(chi2),
        "chi2_p_value": float(p_value),
    }


def _level_shares(feature: str, reference: CategoryProfile, counts: np.ndarray) -> pl.DataFrame:
    """Reference and tonight's share of each level (and of values outside the levels, as level "(other)") among the
    non-missing values, with the vanished / new status (see the module docstring)."""
    expected = np.asarray(reference.bin_frequencies)
    present = float(counts.sum())
    shares = counts / present if present else np.zeros(len(counts))
    vanished = (expected > 0) & (counts == 0) & (expected * present >= VANISHED_MIN_EXPECTED)
    new = (expected == 0) & (counts > 0)
    status = np.where(vanished, "vanished", np.where(new, "new", ""))
    return pl.DataFrame(
        {
            "feature": [feature] * len(expected),
            "level": [*reference.levels, "(other)"],
            "reference_share": expected.astype(np.float64),
            "current_share": shares.astype(np.float64),
            "status": status.tolist(),
        },
        schema=LEVEL_SCHEMA,
    )


def _missing(reference: float, current: float) -> dict[str, float]:
    return {
        "missing_rate_reference": reference,
        "missing_rate_current": current,
        "missing_rate_change": current - reference,
    }


def _prediction_drift(profile: ReferenceProfile, scores: ValueCounts | None) -> dict[str, float]:
    out: dict[str, float] = {
        "score_threshold": profile.score_threshold.psi,
        "confidence_threshold": profile.confidence_threshold.psi,
        "score_mean_reference": _float(profile.score.mean),
        "positive_rate_reference": _float(profile.positive_rate),
    }
    counted = scores if scores is not None else ValueCounts.of(np.array([], dtype=np.float64), bounded=True)
    n = counted.total
    for name, reference, threshold, binned in (
        ("score", profile.score, profile.score_threshold, _bin_counts(profile.score, counted)),
        (
            "confidence",
            profile.confidence,
            profile.confidence_threshold,
            _confidence_bin_counts(profile.confidence, counted, profile.decision_threshold),
        ),
    ):
        psi, js_distance = _binned_shift(reference, binned, n) if n and reference.frequencies else (_NAN, _NAN)
        out[f"{name}_psi"] = psi
        out[f"{name}_js_distance"] = js_distance
        out[f"{name}_threshold"] = threshold.psi_for(n)
        out[f"{name}_drifted"] = _drifted(psi, out[f"{name}_threshold"])
    out["rows_scored"] = float(n)
    out["score_mean_current"] = counted.mean()
    below = counted.counted_up_to(np.array([profile.decision_threshold]), inclusive=False)[0]
    out["positive_rate_current"] = float((n - below) / n) if n else _NAN
    return out


def _drifted(psi: float, threshold: float) -> float:
    return float(math.isfinite(psi) and psi > threshold)


def _check(profile: ReferenceProfile, features: list[FeatureCard]) -> None:
    for feature in features:
        reference = profile.features.get(feature.name)
        if reference is None:
            raise ValueError(
                f"feature {feature.name!r} is not in the reference profile; it has {profile.feature_names}"
            )
        if (feature.dtype == "category") != isinstance(reference, CategoryProfile):
            raise ValueError(
                f"feature {feature.name!r} is {feature.dtype} but the profile holds a {reference.kind} profile"
            )
        if isinstance(reference, CategoryProfile) and reference.levels != list(feature.categories or []):
            raise ValueError(
                f"feature {feature.name!r} has levels {feature.categories} but the profile was fitted on "
                f"{reference.levels}"
            )


def _float(value: float | None) -> float:
    return _NAN if value is None else float(value)


def _without_text(detail: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in detail.items() if key != "text"}


def _psi_text(row: dict[str, Any]) -> str:
    return f"PSI {_num(row['psi'])} {'>' if row['drifted'] else '<='} threshold {_num(row['threshold'])}"


def _pct(share: float | None) -> str:
    return "n/a" if share is None or not math.isfinite(share) else f"{100 * share:.1f}%"


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
