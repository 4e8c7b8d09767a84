"""The human-facing drift report (evidently 0.7.23 HTML) and evidently's figures for cross-checking ours.

Nightly numbers come from ``nightkeeper.drift`` (fast, from the stored profile). evidently is the second opinion a
person reads: ``write_evidently_report`` renders its ``DataDriftPreset`` on a bounded random sample of each side,
and ``evidently_drift_scores`` / ``compare_with_evidently`` put evidently's per-column scores beside ours where the
two definitions agree:

* evidently "Wasserstein distance (normed)" = W1(reference, current) / max(std(reference), 0.001) with the population
  std, the same definition as our ``wasserstein_norm`` (ours reads the reference from the profile's quantile sketch,
  exact for features with at most 101 distinct values);
* evidently "Jensen-Shannon distance" on a category = scipy ``jensenshannon`` of the level shares with the natural
  logarithm; ours is base 2 on the same shares, so ours * sqrt(ln 2) is evidently's figure. On a number evidently
  bins by its own rule (distinct values when at most 20, else Sturges bins on both samples together): comparable
  only when our bins hold one distinct value each (a bool, or a feature with few values all split by the edges).
* evidently's PSI bins differently (Sturges bins of both samples, or distinct values) and is not compared.

evidently drops missing values before every statistic, as we do. Bools are passed to evidently as 0/1 numbers, as
our profile treats them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from nightkeeper.drift import DriftResult
from nightkeeper.encoding import FeatureCard
from nightkeeper.profile import NumericProfile, ReferenceProfile

if TYPE_CHECKING:
    from evidently import Dataset

# evidently (and pandas under it) is imported by the functions that use it, not here: importing it takes ~5 s, which
# every process importing this module (Dagster step processes, test workers) would pay for a report that is optional

WASSERSTEIN = "Wasserstein distance (normed)"
JENSEN_SHANNON = "Jensen-Shannon distance"
COMPARISON_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.String(),
    "method": pl.String(),
    "evidently": pl.Float64(),
    "nightkeeper": pl.Float64(),
    "abs_difference": pl.Float64(),
}


def write_evidently_report(
    reference_sample: pl.DataFrame,
    current: pl.DataFrame,
    features: list[FeatureCard],
    path: str | Path,
    rows: int,
    seed: int,
) -> Path:
    """Write evidently's DataDriftPreset HTML report for ``features`` on at most ``rows`` random rows (``seed``) of
    each side to ``path`` (atomically: written beside it, then renamed) and return ``path``.

    evidently's own method choice applies (for samples over 1000 rows: normed Wasserstein for numbers with more than
    5 distinct values, Jensen-Shannon otherwise), so its verdicts can differ from our fitted thresholds; the report
    is for reading, the nightly figures and flags are ours. Features without any value on a side are left out (evidently
    cannot compare them; the missing-rate change is in our figures). Raises ValueError when either side has no rows.
    """
    if reference_sample.height == 0 or current.height == 0:
        raise ValueError(
            f"the evidently report needs rows on both sides; reference has {reference_sample.height}, current "
            f"{current.height}"
        )
    reference_rows, current_rows = _bounded(reference_sample, rows, seed), _bounded(current, rows, seed + 1)
    # evidently refuses a column with no value on a side; such a column is a data-quality finding reported elsewhere
    shown = [
        f
        for f in features
        if reference_rows[f.name].null_count() < reference_rows.height
        and current_rows[f.name].null_count() < current_rows.height
    ]
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference = _dataset(reference_rows, shown)
    tonight = _dataset(current_rows, shown)
    snapshot = Report([DataDriftPreset(columns=[f.name for f in shown])]).run(tonight, reference)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    snapshot.save_html(str(temporary))  # evidently 0.7.23 writes nothing when given a Path object
    os.replace(temporary, path)
    return path


def evidently_drift_scores(
    reference: pl.DataFrame, current: pl.DataFrame, features: list[FeatureCard], method: str | None = None
) -> pl.DataFrame:
    """evidently's per-column drift score of ``current`` against ``reference`` (all rows, no sampling): columns
    ``feature``, ``method`` (evidently's display name of the statistic) and ``score``, one row per feature in card
    order. ``method`` None lets evidently choose per column as DataDriftPreset does; otherwise it names one of
    evidently's stat tests for every feature (e.g. "wasserstein" (numbers only), "jensenshannon", "psi")."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    names = [f.name for f in features]
    snapshot = Report([DataDriftPreset(columns=names, method=method)]).run(
        _dataset(current, features), _dataset(reference, features)
    )
    found: dict[str, tuple[str, float]] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            found[config["column"]] = (str(config["method"]), float(metric["value"]))
    return pl.DataFrame(
        {"feature": names, "method": [found[n][0] for n in names], "score": [found[n][1] for n in names]},
        schema={"feature": pl.String(), "method": pl.String(), "score": pl.Float64()},
    )


def compare_with_evidently(result: DriftResult, profile: ReferenceProfile, scores: pl.DataFrame) -> pl.DataFrame:
    """Our figure in evidently's definition beside evidently's (``scores`` from ``evidently_drift_scores``), for the
    features where the definitions agree (see the module docstring); columns ``COMPARISON_SCHEMA``."""
    ours = {row["feature"]: row for row in result.features.iter_rows(named=True)}
    rows = []
    for feature, method, score in scores.iter_rows():
        if feature not in ours:
            continue
        reference = profile.features[feature]
        if method == WASSERSTEIN and ours[feature]["kind"] == "numeric":
            value = ours[feature]["wasserstein_norm"]
        elif method == JENSEN_SHANNON and (ours[feature]["kind"] == "category" or _one_value_per_bin(reference)):
            value = ours[feature]["js_distance"] * math.sqrt(math.log(2))
        else:
            continue
        rows.append(
            {
                "feature": feature,
                "method": method,
                "evidently": score,
                "nightkeeper": value,
                "abs_difference": abs(value - score),
            }
        )
    return pl.DataFrame(rows, schema=COMPARISON_SCHEMA) if rows else pl.DataFrame(schema=COMPARISON_SCHEMA)


def _one_value_per_bin(profile: object) -> bool:
    """Whether each numeric bin holds exactly one distinct reference value (then bins = evidently's value counts)."""
    if not isinstance(profile, NumericProfile) or not profile.exact:
        return False
    atoms = np.unique(profile.quantiles)
    edges = np.asarray(profile.edges)
    return len(edges) >= len(atoms) - 1 and bool(np.all(np.isin(atoms[:-1], edges)))


def _bounded(frame: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    return frame.sample(n=rows, seed=seed) if frame.height > rows else frame


def _dataset(frame: pl.DataFrame, features: list[FeatureCard]) -> Dataset:
    """The feature columns as an evidently Dataset: numbers (bools as 0/1) as float, categories as strings."""
    from evidently import DataDefinition, Dataset

    numeric = [f.name for f in features if f.dtype != "category"]
    categories = [f.name for f in features if f.dtype == "category"]
    selected = frame.select(
        *(pl.col(name).cast(pl.Float64) for name in numeric),
        *(pl.col(name).cast(pl.String) for name in categories),
    ).select(f.name for f in features)
    data = selected.to_pandas()
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categories)
    return Dataset.from_pandas(data, data_definition=definition)
