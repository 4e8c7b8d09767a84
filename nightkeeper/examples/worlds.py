"""Scenario worlds: small synthetic datasets, not credit, each built to exercise one way self-healing can fail.

A world is a deterministic population that changes (or deliberately does not change) over calendar time. Each one
names its own columns (id, event time, target, features) and ships the project config that lists them, so the
framework learns the columns only from config. ``write_world`` lays a world out on disk as a user would bring it:

```
out/
  nightkeeper.yaml                      project config: the world's contract, sizes derived from its rows per night,
                                        source.landing = batches, source.labels = labels, storage under out/
  history.parquet (or .csv)             labeled history: id, event time, features, target, of the ``history_nights``
                                        batch dates before ``start`` (the first champion's training data)
  batches/YYYY-MM-DD/batch.parquet      one file per batch night D (id, event time, features; never the target)
  labels/YYYY-MM-DD/labels.parquet      (id, target) of every row of batch night D, in the folder of the night
                                        ``label_delay`` batch nights later (D + label_delay × cadence step)
```

This is the layout ``simulator.simulate_to_folders`` writes for the credit example (a ``YYYY-MM-DD``
folder per night for batches, a ``YYYY-MM-DD`` folder per arrival day for labels), which ``nightkeeper.ingest`` and
``nightkeeper.labels`` read. Label folders may lie after the last batch night; a reader takes folders up to its
current night only.

Contract of every world:

* Deterministic: batch night D is drawn from ``default_rng([seed, world tag, D.toordinal()])``, so it is the same
  whether generated alone or in a run, and worlds with the same seed still differ from each other.
* Calendar time drives change: ``t`` = days since ``start`` (negative in the history). A shift "over a year" spans
  365 days whatever the cadence. A batch keyed D holds the events of night D (``daily``) or of the week D ... D + 6
  (``weekly``: one batch every 7 days, keyed by the day its week starts, as ``schedule.cadence: weekly`` expects).
* Rows are valid under the world's own config: declared dtypes (int-coded categories arrive as Int64 columns and are
  listed as text levels in the config), values inside ranges and levels, required features never null, unique ids.
* The target is Int8 0/1 drawn from a known probability per row (``World.labeled_night`` returns it with the rows).
* ``World.facts`` states what the world does (shift dates, vanished levels, expected base rates) for tests to assert.
* Fast: vectorised numpy per night; 365 nights × 2,000 rows generate and write in a few seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import yaml

from nightkeeper.draft import SampleShape, derive_sizes, generic_alert_rules

Cadence = Literal["daily", "weekly"]
FileFormat = Literal["parquet", "csv"]
CADENCE_DAYS: dict[str, int] = {"daily": 1, "weekly": 7}
DEFAULT_START = date(2026, 1, 1)
DEFAULT_LABEL_DELAY = 5
CONFIG_NAME = "nightkeeper.yaml"
BATCHES_DIR = "batches"
LABELS_DIR = "labels"

_MICROS_PER_DAY = 86_400_000_000
_CALIBRATION_ROWS = 10_000  # rows drawn once per world to solve the intercept for a wanted positive rate
_CALIBRATION_STREAM = 99

# A night's features and P(target = 1) per row, drawn from ``rng`` for ``rows`` rows at ``t`` days since start.
Draw = Callable[[np.random.Generator, int, float], tuple[dict[str, pl.Series], np.ndarray]]


@dataclass(frozen=True)
class Calendar:
    """When and how much a world generates: ``nights`` batch nights from ``start``, one ``cadence`` step apart, of
    about ``rows_per_night`` rows each, after ``history_nights`` labeled nights before ``start``; drawn from ``seed``.
    Every world function takes these six as keyword arguments and passes them on as one."""

    start: date
    nights: int
    rows_per_night: int
    seed: int
    cadence: Cadence
    history_nights: int

    def __post_init__(self) -> None:
        if self.cadence not in CADENCE_DAYS:
            raise ValueError(f"cadence must be one of {list(CADENCE_DAYS)}, got {self.cadence!r}")
        for name, value in (("nights", self.nights), ("rows_per_night", self.rows_per_night)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.history_nights < 0:
            raise ValueError(f"history_nights must be >= 0, got {self.history_nights}")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed}")


@dataclass(frozen=True)
class World:
    """A deterministic synthetic dataset over time: its columns, its calendar and how a night is drawn.

    ``features`` maps each feature to its config spec (a FeatureSpec-shaped dict). ``draw`` returns a night's
    feature columns and each row's probability of target 1. ``calendar``: which nights, how many rows, which seed.
    ``rows_jitter``: the rows of a night are Poisson(``calendar.rows_per_night``) instead of exactly that many.
    ``threshold`` is the decision threshold the config starts with; ``segments`` the category features the fallback
    and the promotion gate split by.
    """

    name: str
    tag: int
    entity_id: str
    event_time: str
    target: str
    features: dict[str, dict[str, Any]]
    draw: Draw
    calendar: Calendar
    threshold: float
    segments: list[str]
    rows_jitter: bool = False
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> timedelta:
        """The time between two batch nights."""
        return timedelta(days=CADENCE_DAYS[self.calendar.cadence])

    def batch_nights(self) -> list[date]:
        """The ``nights`` batch dates, from ``start`` on, one cadence step apart."""
        return [self.calendar.start + i * self.step for i in range(self.calendar.nights)]

    def history_dates(self) -> list[date]:
        """The ``history_nights`` batch dates before ``start`` that make up the labeled history, oldest first."""
        return [self.calendar.start - i * self.step for i in range(self.calendar.history_nights, 0, -1)]

    def labeled_night(self, night: date) -> pl.DataFrame:
        """The rows of ``night`` with their target: id, event time, features (config order), target (Int8)."""
        calendar = self.calendar
        rng = np.random.default_rng([calendar.seed, self.tag, night.toordinal()])
        rows = max(1, int(rng.poisson(calendar.rows_per_night))) if self.rows_jitter else calendar.rows_per_night
        columns, probability = self.draw(rng, rows, float((night - calendar.start).days))
        # A batch keyed D holds the events of its period starting on D: the night D, or the week D ... D + 6.
        midnight = datetime.combine(night, datetime.min.time())
        start_us = int((midnight - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
        offsets = np.sort(rng.integers(0, CADENCE_DAYS[self.calendar.cadence] * _MICROS_PER_DAY, rows))
        prefix = f"{self.tag_prefix}{night:%Y%m%d}-"
        return pl.DataFrame(
            [
                pl.Series(self.entity_id, [f"{prefix}{i:06d}" for i in range(rows)], dtype=pl.String),
                pl.Series(self.event_time, start_us + offsets, dtype=pl.Int64).cast(pl.Datetime("us")),
                *(columns[name].alias(name) for name in self.features),
                pl.Series(self.target, rng.random(rows) < probability).cast(pl.Int8),
            ]
        )

    @property
    def tag_prefix(self) -> str:
        """The first letters of every id of this world (ids are ``<prefix><YYYYMMDD>-<row>``)."""
        return "".join(part[0] for part in self.name.split("-")).upper()

    def history(self) -> pl.DataFrame:
        """The labeled history: every row of the history dates, oldest first (empty frame with the columns if none)."""
        frames = [self.labeled_night(night) for night in self.history_dates()]
        return pl.concat(frames) if frames else self.labeled_night(self.calendar.start).head(0)

    def config(self) -> dict[str, Any]:
        """The project config for this world as a mapping (paths relative to the folder ``write_world`` fills): the
        contract, the decision threshold, the segments, the alert rules ``nightkeeper init`` drafts, and the size
        settings ``init`` derives from the rows per night (nights of the weekly cadence count as 7 days)."""
        calendar = self.calendar
        volume_cv = 1 / np.sqrt(calendar.rows_per_night) if self.rows_jitter else 0.0
        sizes = derive_sizes(SampleShape(calendar.rows_per_night, max(calendar.history_nights, 1), volume_cv, None))
        step = CADENCE_DAYS[self.calendar.cadence]
        return {
            "name": self.name,
            "contract": {
                "entity_id": self.entity_id,
                "event_time": self.event_time,
                "target": self.target,
                "features": self.features,
            },
            "model": {
                "params": {
                    "objective": "binary",
                    "learning_rate": 0.05,
                    "num_leaves": 31,
                    "min_data_in_leaf": sizes.min_data_in_leaf,
                    "verbose": -1,
                    "num_threads": 2,
                    "seed": 7,
                },
                "num_boost_round": 200,
                "decision": {
                    "threshold": self.threshold,
                    "at_or_above_threshold": "flag",
                    "below_threshold": "pass",
                    "undecided": "refer",
                },
            },
            "fallback": {"segment_by": self.segments[:1], "min_segment_rows": sizes.fallback_min_segment_rows},
            "source": {"landing": BATCHES_DIR, "pattern": "{date}/*.parquet", "labels": LABELS_DIR},
            "storage": {"warehouse": "warehouse.duckdb", "models": "models", "dagster_home": "dagster"},
            "schedule": {"start_date": self.calendar.start, "cadence": self.calendar.cadence},
            "checks": {"volume_tolerance": sizes.volume_tolerance},
            "monitoring": {
                "performance": {"min_labeled_rows": sizes.min_labeled_rows},
                "alerts": {"rules": generic_alert_rules()},
            },
            "lifecycle": {
                "training_window_days": sizes.training_window_days * step,
                "data_gate": {"min_rows": sizes.data_gate_min_rows, "max_volume_ratio": sizes.max_volume_ratio},
                "promotion_gate": {
                    "holdout_days": sizes.holdout_days * step,
                    "segments": self.segments,
                    "min_segment_rows": sizes.gate_min_segment_rows,
                },
                "retrain_on_alert_categories": ["performance"],
            },
            "review": {"capacity": sizes.review_capacity},
        }


@dataclass(frozen=True)
class WorldFiles:
    """Where ``write_world`` put a world: the folder, its config, history, batch and label folders, batch nights."""

    root: Path
    config: Path
    history: Path
    batches: Path
    labels: Path
    nights: list[date]
    label_delay: int


def write_world(
    world: World,
    out: str | Path,
    label_delay: int = DEFAULT_LABEL_DELAY,
    file_format: FileFormat = "parquet",
) -> WorldFiles:
    """Write ``world`` under ``out`` in the layout of this module's docstring and return where everything went.

    ``label_delay``: batch nights until a night's labels land (0 = the same night). ``file_format``: parquet or csv
    for the history, batch and label files (the config's source pattern follows). Files are replaced atomically, so
    re-running writes the same content again.
    """
    if label_delay < 0:
        raise ValueError(f"label_delay must be >= 0, got {label_delay}")
    if file_format not in ("parquet", "csv"):
        raise ValueError(f"file_format must be 'parquet' or 'csv', got {file_format!r}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    history_path = _write(world.history(), root / f"history.{file_format}")
    nights = world.batch_nights()
    for night in nights:
        labeled = world.labeled_night(night)
        _write(labeled.drop(world.target), root / BATCHES_DIR / night.isoformat() / f"batch.{file_format}")
        arrival = night + label_delay * world.step
        labels_path = root / LABELS_DIR / arrival.isoformat() / f"labels.{file_format}"
        _write(labeled.select(world.entity_id, world.target), labels_path)
    config = world.config()
    config["source"]["pattern"] = f"{{date}}/*.{file_format}"
    config_path = root / CONFIG_NAME
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return WorldFiles(root, config_path, history_path, root / BATCHES_DIR, root / LABELS_DIR, nights, label_delay)


def _write(frame: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if path.suffix == ".csv":
        frame.write_csv(temporary)
    else:
        frame.write_parquet(temporary)
    os.replace(temporary, path)
    return path


# --------------------------------------------------------------------------------------------------- helpers


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept_for(logit: np.ndarray, rate: float) -> float:
    """The intercept b with mean(sigmoid(logit + b)) == rate (bisection; the mean is increasing in b)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        middle = (low + high) / 2
        if np.mean(_sigmoid(logit + middle)) < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _choose(rng: np.random.Generator, shares: np.ndarray, rows: int) -> np.ndarray:
    """One level index per row, level i drawn with probability ``shares[i] / sum(shares)``."""
    cumulative = np.cumsum(shares) / np.sum(shares)
    return np.minimum(np.searchsorted(cumulative, rng.random(rows), side="right"), len(shares) - 1)


def _levels(levels: list[str], index: np.ndarray) -> pl.Series:
    return pl.Series(levels, dtype=pl.String).gather(index)


def _with_nulls(series: pl.Series, rng: np.random.Generator, rate: float | np.ndarray) -> pl.Series:
    """``series`` with each value set to null with probability ``rate`` (a scalar or one rate per row)."""
    return series.scatter(np.flatnonzero(rng.random(len(series)) < rate), None)


def _ramp(t: float, begin: float, end: float, days: float = 365.0) -> float:
    """``begin`` before day 0, ``end`` after ``days``, linear in between."""
    return begin + (end - begin) * min(max(t / days, 0.0), 1.0)


def _calibration_rng(seed: int, tag: int, point: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, tag, _CALIBRATION_STREAM, point])


def _solved_intercept(
    features: Callable[[np.random.Generator, int, float], tuple[dict[str, pl.Series], np.ndarray]],
    seed: int,
    tag: int,
    rate: float,
    t: float = 0.0,
    point: int = 0,
) -> float:
    """The intercept giving positive rate ``rate`` at day ``t``, solved on a calibration draw of the population."""
    _, logit = features(_calibration_rng(seed, tag, point), _CALIBRATION_ROWS, t)
    return _intercept_for(logit, rate)


def _constant_rate(
    features: Callable[[np.random.Generator, int, float], tuple[dict[str, pl.Series], np.ndarray]],
    seed: int,
    tag: int,
    rate: float,
) -> Draw:
    """A draw whose relationship never changes, its intercept solved once so the population's positive rate is
    ``rate``."""
    intercept = _solved_intercept(features, seed, tag, rate)

    def draw(rng: np.random.Generator, rows: int, t: float) -> tuple[dict[str, pl.Series], np.ndarray]:
        columns, logit = features(rng, rows, t)
        return columns, _sigmoid(logit + intercept)

    return draw


# ---------------------------------------------------------------------------------------------------- the worlds

BASE_RATE_START, BASE_RATE_END, BASE_RATE_DRIFT_DAYS = 0.30, 0.02, 365.0
_PLANS = ["basic", "plus", "pro", "family"]
_REGIONS = ["R1", "R2", "R3", "R4", "R5"]


def base_rate_drift_world(
    start: date = DEFAULT_START,
    nights: int = 365,
    rows_per_night: int = 2000,
    seed: int = 0,
    cadence: Cadence = "daily",
    history_nights: int = 60,
) -> World:
    """Subscription churn whose base rate drifts from 0.30 to 0.02 over the year after ``start``, inputs shifting.

    Over those 365 days (linear in calendar time; steady before and after): customers get newer (tenure falls),
    spend more, call support less, move from basic to pro plans, turn on autopay and log in less often; and what
    predicts churn moves from support calls, short tenure and the pro plan toward days since the last login and the
    basic plan. So the first champion ranks worse and worse, and a model retrained on recent labels helps.
    """
    tag = 1

    def features(rng: np.random.Generator, rows: int, t: float) -> tuple[dict[str, pl.Series], np.ndarray]:
        s = _ramp(t, 0.0, 1.0, BASE_RATE_DRIFT_DAYS)
        tenure = np.clip(np.round(rng.gamma(2.0, 15.0 - 7.0 * s, rows)), 0, 240)
        spend = np.round(np.clip(40.0 * (1 + 0.5 * s) * np.exp(0.6 * rng.standard_normal(rows)), 1, 10_000), 2)
        calls = np.clip(rng.poisson(1.3 - 0.6 * s, rows), 0, 50)
        plan = _choose(rng, np.array([0.50 - 0.25 * s, 0.30, 0.15 + 0.15 * s, 0.05 + 0.10 * s]), rows)
        region = _choose(rng, np.array([0.25, 0.2, 0.2, 0.2, 0.15]), rows)
        autopay = rng.random(rows) < 0.4 + 0.3 * s
        login = np.round(np.clip(rng.exponential(8.0 + 10.0 * s, rows), 0, 365), 1)
        login_missing = rng.random(rows) < 0.05
        logit = (
            (0.9 - 0.7 * s) * (calls - 1.0)
            - (0.8 - 0.6 * s) * (np.log1p(tenure) - 3.0)
            + (0.2 + 1.2 * s) * (np.log1p(login) - 2.2)
            + (np.array([0.0, -0.2, 0.7, 0.3]) * (1 - s) + np.array([0.6, 0.2, -0.6, 0.0]) * s)[plan]
            + np.array([0.0, 0.1, -0.1, 0.05, 0.0])[region]
            - 0.5 * autopay
            + 0.2 * np.log(spend / 40.0)
            + 0.4 * login_missing
        )
        columns = {
            "tenure_months": pl.Series(tenure).cast(pl.Int64),
            "monthly_spend": pl.Series(spend),
            "support_calls": pl.Series(calls).cast(pl.Int64),
            "plan": _levels(_PLANS, plan),
            "region": _levels(_REGIONS, region),
            "autopay": pl.Series(autopay),
            "days_since_login": pl.Series(login).scatter(np.flatnonzero(login_missing), None),
        }
        return columns, logit

    # The intercept that gives the wanted base rate, solved every four weeks of the drift and interpolated between.
    grid = np.linspace(0.0, BASE_RATE_DRIFT_DAYS, 14)
    intercepts = np.array(
        [
            _solved_intercept(features, seed, tag, _ramp(t, BASE_RATE_START, BASE_RATE_END, BASE_RATE_DRIFT_DAYS), t, k)
            for k, t in enumerate(grid)
        ]
    )

    def draw(rng: np.random.Generator, rows: int, t: float) -> tuple[dict[str, pl.Series], np.ndarray]:
        columns, logit = features(rng, rows, t)
        return columns, _sigmoid(logit + np.interp(t, grid, intercepts))

    return World(
        name="base-rate-drift",
        tag=tag,
        entity_id="customer_id",
        event_time="observed_at",
        target="churned",
        features={
            "tenure_months": {"dtype": "int", "min": 0, "max": 600},
            "monthly_spend": {"dtype": "float", "min": 0, "max": 100_000},
            "support_calls": {"dtype": "int", "min": 0, "max": 100},
            "plan": {"dtype": "category", "categories": _PLANS},
            "region": {"dtype": "category", "categories": _REGIONS},
            "autopay": {"dtype": "bool"},
            "days_since_login": {"dtype": "float", "min": 0, "max": 3650, "required": False},
        },
        draw=draw,
        calendar=Calendar(start, nights, rows_per_night, seed, cadence, history_nights),
        threshold=0.3,
        segments=["plan", "region"],
        facts={
            "base_rate_start": BASE_RATE_START,
            "base_rate_end": BASE_RATE_END,
            "drift_ends_on": start + timedelta(days=BASE_RATE_DRIFT_DAYS),
            "retraining_helps": True,
        },
    )


# The low-cardinality world: every feature an integer code with a few levels, the shares of each fixed.
_CODES: dict[str, tuple[list[float], str]] = {
    "age_band": ([0.08, 0.16, 0.22, 0.22, 0.17, 0.10, 0.05], "int"),  # codes 1..7
    "region_code": ([0.30, 0.18, 0.14, 0.11, 0.09, 0.07, 0.05, 0.04, 0.02], "category"),  # "1".."9"
    "household_size": ([0.30, 0.33, 0.16, 0.13, 0.06, 0.02], "int"),  # 1..6
    "education_level": ([0.10, 0.42, 0.28, 0.16, 0.04], "int"),  # 0..4
    "employment_code": ([0.55, 0.15, 0.12, 0.08, 0.06, 0.04], "category"),  # "0".."5"
    "contract_type": ([0.70, 0.22, 0.08], "int"),  # 0..2
    "payment_method": ([0.45, 0.30, 0.20, 0.05], "category"),  # "1".."4"
    "prior_claims": ([0.80, 0.13, 0.04, 0.02, 0.01], "int"),  # 0..4
}
_CODE_FIRST = {
    "age_band": 1,
    "region_code": 1,
    "household_size": 1,
    "education_level": 0,
    "employment_code": 0,
    "contract_type": 0,
    "payment_method": 1,
    "prior_claims": 0,
}
_CODE_EFFECTS = {
    "age_band": [0.5, 0.3, 0.1, 0.0, -0.1, -0.2, -0.3],
    "region_code": [0.0, 0.2, -0.1, 0.3, -0.2, 0.1, 0.4, -0.3, 0.2],
    "household_size": [0.2, 0.0, -0.1, -0.2, -0.2, -0.3],
    "education_level": [0.4, 0.2, 0.0, -0.3, -0.5],
    "employment_code": [0.0, 0.5, 0.3, 0.9, -0.2, 0.6],
    "contract_type": [0.0, -0.4, -0.8],
    "payment_method": [0.0, 0.3, -0.2, 0.7],
    "prior_claims": [0.0, 0.8, 1.4, 1.8, 2.2],
}


def duplicate_codes_world(
    start: date = DEFAULT_START,
    nights: int = 365,
    rows_per_night: int = 2000,
    seed: int = 0,
    cadence: Cadence = "daily",
    history_nights: int = 60,
) -> World:
    """Insurance-style coded data: every feature a low-cardinality integer code (five int features, three
    int-coded categories) plus one bool, all with fixed shares, so many rows naturally repeat a feature vector —
    about 6 % of a night's 2,000 rows are repeats (more with more rows), every night. Nothing ever changes: a
    healthy system raises no alert here, not even a refused retrain."""
    tag = 2

    def features(rng: np.random.Generator, rows: int, t: float) -> tuple[dict[str, pl.Series], np.ndarray]:
        logit = np.zeros(rows)
        columns: dict[str, pl.Series] = {}
        for name, (shares, _) in _CODES.items():
            index = _choose(rng, np.array(shares), rows)
            logit += np.array(_CODE_EFFECTS[name])[index]
            columns[name] = pl.Series(index + _CODE_FIRST[name]).cast(pl.Int64)
        vehicle = rng.random(rows) < 0.9
        columns["has_vehicle"] = pl.Series(vehicle)
        return columns, logit - 0.3 * vehicle

    return World(
        name="duplicate-codes",
        tag=tag,
        entity_id="record_id",
        event_time="recorded_at",
        target="claimed",
        features={
            **{
                name: (
                    {"dtype": "int", "min": _CODE_FIRST[name], "max": _CODE_FIRST[name] + len(shares) - 1}
                    if kind == "int"
                    else {"dtype": "category", "categories": [str(_CODE_FIRST[name] + i) for i in range(len(shares))]}
                )
                for name, (shares, kind) in _CODES.items()
            },
            "has_vehicle": {"dtype": "bool"},
        },
        draw=_constant_rate(features, seed, tag, 0.2),
        calendar=Calendar(start, nights, rows_per_night, seed, cadence, history_nights),
        threshold=0.3,
        segments=["employment_code", "payment_method"],
        # The expected repeat share at 2,000 rows, computed exactly from the code shares: 1 - E[unique vectors] / rows.
        facts={"duplicate_share": 0.06, "stable": True, "base_rate": 0.2},
    )


_PAYMENTS = ["card", "paypal", "invoice", "voucher", "cash_on_delivery"]
_PAYMENT_SHARES = np.array([0.45, 0.22, 0.15, 0.11, 0.07])
_DEVICES = ["desktop", "mobile", "tablet"]


def vanishing_category_world(
    start: date = DEFAULT_START,
    nights: int = 90,
    rows_per_night: int = 2000,
    seed: int = 0,
    cadence: Cadence = "daily",
    history_nights: int = 60,
    vanish_at: int = 45,
) -> World:
    """Online orders (target: returned) where the payment method ``cash_on_delivery`` (7 % of orders) vanishes from
    batch night ``vanish_at`` (an index into the batch nights, < ``nights``) on, ``invoice`` absorbing its share
    (15 % -> 22 %).

    The customers are the same: those who would have paid on delivery now pay by invoice and keep their (higher)
    return risk, so the model sees invoice rows riskier than it learned. Everything else stays as it was.
    """
    tag = 3
    if not 0 <= vanish_at < nights:
        raise ValueError(f"vanish_at must be a batch night index in [0, {nights}), got {vanish_at}")
    vanish_day = vanish_at * CADENCE_DAYS[cadence]
    cod, invoice = _PAYMENTS.index("cash_on_delivery"), _PAYMENTS.index("invoice")

    def features(rng: np.random.Generator, rows: int, t: float) -> tuple[dict[str, pl.Series], np.ndarray]:
        payment = _choose(rng, _PAYMENT_SHARES, rows)
        device = _choose(rng, np.array([0.45, 0.45, 0.10]), rows)
        items = np.clip(1 + rng.poisson(1.5, rows), 1, 99)
        basket = np.round(np.clip(25.0 * items * np.exp(0.5 * rng.standard_normal(rows)), 1, 50_000), 2)
        customer_days = np.clip(np.round(rng.exponential(600, rows)), 0, 10_000)
        first_order = rng.random(rows) < 0.25
        has_discount = rng.random(rows) < 0.6  # orders without a discount carry no discount_pct (null)
        discount = np.round(np.clip(rng.gamma(2.0, 6.0, rows), 1, 90), 1)
        logit = (
            np.array([0.0, 0.1, 0.5, -0.2, 1.2])[payment]
            + np.array([0.0, 0.3, 0.1])[device]
            + 0.35 * np.log(items)
            + 0.3 * np.log(basket / 50.0)
            + 0.5 * first_order
            - 0.15 * np.log1p(customer_days / 100)
            + 0.02 * np.where(has_discount, discount, 0.0)
        )
        recorded = np.where((payment == cod) & (t >= vanish_day), invoice, payment)
        columns = {
            "basket_value": pl.Series(basket),
            "items": pl.Series(items).cast(pl.Int64),
            "payment_method": _levels(_PAYMENTS, recorded),
            "device": _levels(_DEVICES, device),
            "customer_age_days": pl.Series(customer_days).cast(pl.Int64),
            "first_order": pl.Series(first_order),
            "discount_pct": pl.Series(discount).scatter(np.flatnonzero(~has_discount), None),
        }
        return columns, logit

    return World(
        name="vanishing-category",
        tag=tag,
        entity_id="order_id",
        event_time="ordered_at",
        target="returned",
        features={
            "basket_value": {"dtype": "float", "min": 0, "max": 1_000_000},
            "items": {"dtype": "int", "min": 1, "max": 1000},
            "payment_method": {"dtype": "category", "categories": _PAYMENTS},
            "device": {"dtype": "category", "categories": _DEVICES},
            "customer_age_days": {"dtype": "int", "min": 0, "max": 100_000},
            "first_order": {"dtype": "bool"},
            "discount_pct": {"dtype": "float", "min": 0, "max": 100, "required": False},
        },
        draw=_constant_rate(features, seed, tag, 0.25),
        calendar=Calendar(start, nights, rows_per_night, seed, cadence, history_nights),
        threshold=0.35,
        segments=["payment_method", "device"],
        facts={
            "feature": "payment_method",
            "vanished_level": "cash_on_delivery",
            "absorbing_level": "invoice",
            "vanishes_on": start + timedelta(days=vanish_day),
            "share_before": {"cash_on_delivery": 0.07, "invoice": 0.15},
            "share_after": {"cash_on_delivery": 0.0, "invoice": 0.22},
        },
    )


_CHANNELS = ["direct", "search", "social", "email", "affiliate"]
_PROMOS = ["none", "payday", "newsletter"]


def seasonal_shares_world(
    start: date = DEFAULT_START,
    nights: int = 365,
    rows_per_night: int = 2000,
    seed: int = 0,
    cadence: Cadence = "daily",
    history_nights: int = 60,
) -> World:
    """Web sessions (target: converted) whose category shares cycle with the calendar, the relationship never.

    Weekly: on Saturdays and Sundays ``channel`` shifts from email and search to social (social 15 % -> 35 %).
    Monthly: from the 25th to the 3rd (pay days) ``promo`` = payday rises from 5 % to 30 %. The cycles are in every
    stretch of history a month or longer, so a reference that covers them has seen every share; the model's
    ranking quality is the same every night (no performance change). The base rate (about 0.15) moves a little
    with the shares.
    """
    tag = 4

    def features(rng: np.random.Generator, rows: int, t: float) -> tuple[dict[str, pl.Series], np.ndarray]:
        day = start + timedelta(days=int(t))
        weekend = day.weekday() >= 5
        payday = day.day >= 25 or day.day <= 3
        channel_shares = [0.20, 0.22, 0.35, 0.08, 0.15] if weekend else [0.22, 0.30, 0.15, 0.18, 0.15]
        promo_shares = [0.62, 0.30, 0.08] if payday else [0.82, 0.05, 0.13]
        channel = _choose(rng, np.array(channel_shares), rows)
        promo = _choose(rng, np.array(promo_shares), rows)
        returning = rng.random(rows) < 0.45
        pages = np.clip(1 + rng.poisson(3.0 + 1.5 * returning, rows), 1, 500)
        minutes = np.round(np.clip(pages * rng.gamma(2.0, 0.8, rows), 0.1, 1_000), 2)
        has_cart = rng.random(rows) < 0.3 + 0.05 * pages.clip(0, 8)
        cart = np.round(np.clip(rng.lognormal(4.0, 0.7, rows), 1, 100_000), 2)
        logit = (
            np.array([0.2, 0.1, -0.4, 0.5, 0.0])[channel]
            + np.array([0.0, 0.4, 0.2])[promo]
            + 0.5 * returning
            + 0.3 * np.log(pages)
            + 1.3 * has_cart
            + 0.1 * np.log(minutes + 1)
        )
        columns = {
            "channel": _levels(_CHANNELS, channel),
            "promo": _levels(_PROMOS, promo),
            "returning_visitor": pl.Series(returning),
            "pages_viewed": pl.Series(pages).cast(pl.Int64),
            "session_minutes": pl.Series(minutes),
            "cart_value": pl.Series(cart).scatter(np.flatnonzero(~has_cart), None),
        }
        return columns, logit

    return World(
        name="seasonal-shares",
        tag=tag,
        entity_id="session_id",
        event_time="started_at",
        target="converted",
        features={
            "channel": {"dtype": "category", "categories": _CHANNELS},
            "promo": {"dtype": "category", "categories": _PROMOS},
            "returning_visitor": {"dtype": "bool"},
            "pages_viewed": {"dtype": "int", "min": 1, "max": 10_000},
            "session_minutes": {"dtype": "float", "min": 0, "max": 10_000},
            "cart_value": {"dtype": "float", "min": 0, "max": 1_000_000, "required": False},
        },
        draw=_constant_rate(features, seed, tag, 0.15),
        calendar=Calendar(start, nights, rows_per_night, seed, cadence, history_nights),
        threshold=0.25,
        segments=["channel", "promo"],
        facts={
            "weekly_feature": "channel",
            "weekly_level": "social",
            "weekly_shares": {"weekday": 0.15, "weekend": 0.35},
            "monthly_feature": "promo",
            "monthly_level": "payday",
            "monthly_shares": {"other_days": 0.05, "days_25_to_3": 0.30},
            "performance_change": False,
        },
    )


_TIERS = ["bronze", "silver", "gold", "platinum"]
_AREAS = ["north", "south", "east", "west"]
WEAK_ORACLE_AUC = 0.56
_WEAK_SIGNAL = 0.72  # scales the true log-odds; tuned so LightGBM on 60 nights of history reaches WEAK_ORACLE_AUC


def weak_model_world(
    start: date = DEFAULT_START,
    nights: int = 365,
    rows_per_night: int = 2000,
    seed: int = 0,
    cadence: Cadence = "daily",
    history_nights: int = 60,
) -> World:
    """Marketing responses (target: responded) that the features barely predict: a LightGBM model fitted on the
    history reaches an AUC of about 0.56 (``WEAK_ORACLE_AUC``) on later nights, and no model can do much better.
    Stable: nothing changes over time. Base rate 0.20."""
    tag = 5

    def features(rng: np.random.Generator, rows: int, t: float) -> tuple[dict[str, pl.Series], np.ndarray]:
        age = np.clip(np.round(18 + rng.gamma(3.0, 9.0, rows)), 18, 99)
        tier = _choose(rng, np.array([0.5, 0.3, 0.15, 0.05]), rows)
        area = _choose(rng, np.array([0.3, 0.25, 0.25, 0.2]), rows)
        opened = np.clip(rng.poisson(2.0, rows), 0, 100)
        has_app = rng.random(rows) < 0.35
        tenure = np.round(np.clip(rng.exponential(4.0, rows), 0, 60), 2)
        last_purchase = np.round(np.clip(rng.exponential(60.0, rows), 0, 3650), 1)
        never_bought = rng.random(rows) < 0.1
        logit = _WEAK_SIGNAL * (
            0.5 * (np.sqrt(opened) - 1.3)
            + np.array([0.0, 0.15, 0.3, 0.4])[tier]
            + 0.2 * has_app
            - 0.15 * np.log1p(last_purchase / 30) * ~never_bought
            + 0.1 * np.array([0.0, 0.1, -0.1, 0.0])[area]
        )
        columns = {
            "age": pl.Series(age).cast(pl.Int64),
            "tier": _levels(_TIERS, tier),
            "area": _levels(_AREAS, area),
            "emails_opened_30d": pl.Series(opened).cast(pl.Int64),
            "has_app": pl.Series(has_app),
            "tenure_years": pl.Series(tenure),
            "days_since_purchase": pl.Series(last_purchase).scatter(np.flatnonzero(never_bought), None),
        }
        return columns, logit

    return World(
        name="weak-model",
        tag=tag,
        entity_id="contact_id",
        event_time="contacted_at",
        target="responded",
        features={
            "age": {"dtype": "int", "min": 18, "max": 120},
            "tier": {"dtype": "category", "categories": _TIERS},
            "area": {"dtype": "category", "categories": _AREAS},
            "emails_opened_30d": {"dtype": "int", "min": 0, "max": 1000},
            "has_app": {"dtype": "bool"},
            "tenure_years": {"dtype": "float", "min": 0, "max": 100},
            "days_since_purchase": {"dtype": "float", "min": 0, "max": 36_500, "required": False},
        },
        draw=_constant_rate(features, seed, tag, 0.2),
        calendar=Calendar(start, nights, rows_per_night, seed, cadence, history_nights),
        threshold=0.25,
        segments=["tier", "area"],
        facts={"oracle_auc": WEAK_ORACLE_AUC, "stable": True, "base_rate": 0.2},
    )


_LINES = ["L1", "L2", "L3", "L4"]
_SHIFTS = ["early", "late", "night"]


def small_nights_world(
    start: date = DEFAULT_START,
    nights: int = 365,
    rows_per_night: int = 150,
    seed: int = 0,
    cadence: Cadence = "daily",
    history_nights: int = 90,
) -> World:
    """Production lots (target: defective) in small nights: Poisson(``rows_per_night``) rows, about 150, so about
    22 positives a night. Stable; a model does well (AUC ≈ 0.8). Exercises every rule that needs enough rows a
    night (realized metrics, the training-data gate, segments of the promotion gate, volume checks)."""
    tag = 6

    def features(rng: np.random.Generator, rows: int, t: float) -> tuple[dict[str, pl.Series], np.ndarray]:
        line = _choose(rng, np.array([0.3, 0.3, 0.25, 0.15]), rows)
        shift = _choose(rng, np.array([0.4, 0.35, 0.25]), rows)
        temperature = 180 + 6 * rng.standard_normal(rows) + np.array([0, 2, -1, 4])[line]
        temperature = np.round(np.clip(temperature, 100, 300), 2)
        pressure = np.round(np.clip(rng.normal(310, 15, rows), 150, 500), 1)
        humidity = np.round(np.clip(rng.normal(45, 8, rows), 0, 100), 1)
        sensor_dropout = rng.random(rows) < 0.04
        experience = np.clip(rng.poisson(6, rows), 0, 45)
        rework = rng.random(rows) < 0.1
        logit = (
            1.2 * np.abs(temperature - 181) / 6
            + 0.8 * np.maximum(pressure - 320, 0) / 15
            + 0.3 * (humidity - 45) / 8 * ~sensor_dropout
            - 0.12 * experience
            + np.array([0.0, 0.2, 0.4, 0.1])[line]
            + np.array([0.0, 0.1, 0.5])[shift]
            + 0.9 * rework
        )
        columns = {
            "line": _levels(_LINES, line),
            "shift": _levels(_SHIFTS, shift),
            "temperature_c": pl.Series(temperature),
            "pressure_kpa": pl.Series(pressure),
            "humidity_pct": pl.Series(humidity).scatter(np.flatnonzero(sensor_dropout), None),
            "operator_years": pl.Series(experience).cast(pl.Int64),
            "reworked": pl.Series(rework),
        }
        return columns, logit

    return World(
        name="small-nights",
        tag=tag,
        entity_id="lot_id",
        event_time="produced_at",
        target="defective",
        features={
            "line": {"dtype": "category", "categories": _LINES},
            "shift": {"dtype": "category", "categories": _SHIFTS},
            "temperature_c": {"dtype": "float", "min": 0, "max": 500},
            "pressure_kpa": {"dtype": "float", "min": 0, "max": 1000},
            "humidity_pct": {"dtype": "float", "min": 0, "max": 100, "required": False},
            "operator_years": {"dtype": "int", "min": 0, "max": 60},
            "reworked": {"dtype": "bool"},
        },
        draw=_constant_rate(features, seed, tag, 0.15),
        calendar=Calendar(start, nights, rows_per_night, seed, cadence, history_nights),
        threshold=0.3,
        segments=["line", "shift"],
        rows_jitter=True,
        facts={"rows_per_night": rows_per_night, "stable": True, "base_rate": 0.15},
    )


_PRIORITIES = ["1", "2", "3", "4"]  # integer codes: 1 = urgent ... 4 = low
_PRODUCT_AREAS = ["billing", "login", "reports", "integrations", "mobile_app"]
SUPPORT_LAUNCH_DAY = 30  # days after start: a new integration ships and integrations tickets double over 30 days


def support_tickets_world(
    start: date = DEFAULT_START,
    nights: int = 90,
    rows_per_night: int = 800,
    seed: int = 0,
    cadence: Cadence = "daily",
    history_nights: int = 60,
) -> World:
    """The "bring your own data" example of the docs: support tickets (target: escalated), column names and types
    unlike the credit example: an integer-coded category (``priority``, codes 1-4, an Int64 column), a boolean
    (``is_enterprise``), a column with natural nulls (``first_response_minutes``, null while nobody answered —
    more often for low priorities), an id (``ticket_id``) and an event time (``created_at``).

    A product launch ``SUPPORT_LAUNCH_DAY`` days after ``start`` doubles the share of ``integrations`` tickets over
    the following 30 days, and those tickets escalate more often than the history taught the model, so a backtest
    has a drift to show and a retrain to make.
    """
    tag = 7

    def features(rng: np.random.Generator, rows: int, t: float) -> tuple[dict[str, pl.Series], np.ndarray]:
        launch = _ramp(t - SUPPORT_LAUNCH_DAY, 0.0, 1.0, 30.0)
        area = _choose(rng, np.array([0.25, 0.25, 0.2, 0.15 * (1 + launch), 0.15]), rows)
        priority = _choose(rng, np.array([0.08, 0.22, 0.45, 0.25]), rows)  # index 0 = code 1 (urgent)
        enterprise = rng.random(rows) < 0.3
        attachments = np.clip(rng.poisson(0.6 + 0.4 * (area == 3), rows), 0, 50)
        tenure = np.clip(np.round(rng.exponential(700, rows)), 0, 20_000)
        length = np.clip(np.round(rng.lognormal(6.0, 0.8, rows)), 1, 100_000)
        sentiment = np.round(np.clip(rng.normal(-0.1, 0.4, rows), -1, 1), 3)
        unanswered = rng.random(rows) < np.array([0.01, 0.04, 0.10, 0.20])[priority]
        response = np.round(np.clip(rng.gamma(1.5, np.array([10, 40, 120, 300])[priority] / 1.5), 0.5, 20_000), 1)
        logit = (
            np.array([1.6, 0.9, 0.0, -0.8])[priority]
            + np.array([0.2, -0.2, 0.0, 0.6 + 0.8 * launch, 0.1])[area]
            + 0.6 * enterprise
            + 0.25 * attachments
            - 1.2 * sentiment
            + 0.25 * np.log(length / 400)
            + 0.3 * np.log1p(response / 60) * ~unanswered
            + 0.5 * unanswered
            - 0.1 * np.log1p(tenure / 365)
        )
        columns = {
            "priority": pl.Series(priority + 1).cast(pl.Int64),
            "product_area": _levels(_PRODUCT_AREAS, area),
            "is_enterprise": pl.Series(enterprise),
            "first_response_minutes": pl.Series(response).scatter(np.flatnonzero(unanswered), None),
            "attachments": pl.Series(attachments).cast(pl.Int64),
            "customer_tenure_days": pl.Series(tenure).cast(pl.Int64),
            "message_length": pl.Series(length).cast(pl.Int64),
            "sentiment": pl.Series(sentiment),
        }
        return columns, logit

    return World(
        name="support-tickets",
        tag=tag,
        entity_id="ticket_id",
        event_time="created_at",
        target="escalated",
        features={
            "priority": {"dtype": "category", "categories": _PRIORITIES},
            "product_area": {"dtype": "category", "categories": _PRODUCT_AREAS},
            "is_enterprise": {"dtype": "bool"},
            "first_response_minutes": {"dtype": "float", "min": 0, "max": 100_000, "required": False},
            "attachments": {"dtype": "int", "min": 0, "max": 100},
            "customer_tenure_days": {"dtype": "int", "min": 0, "max": 50_000},
            "message_length": {"dtype": "int", "min": 1, "max": 1_000_000},
            "sentiment": {"dtype": "float", "min": -1, "max": 1},
        },
        draw=_constant_rate(features, seed, tag, 0.18),
        calendar=Calendar(start, nights, rows_per_night, seed, cadence, history_nights),
        threshold=0.3,
        segments=["product_area", "priority"],
        facts={
            "launch_on": start + timedelta(days=SUPPORT_LAUNCH_DAY),
            "drifting_feature": "product_area",
            "drifting_level": "integrations",
        },
    )


# Every world by name, for benchmarks, backtests and the CLI: name -> the function that builds it.
WORLDS: dict[str, Callable[..., World]] = {
    "base-rate-drift": base_rate_drift_world,
    "duplicate-codes": duplicate_codes_world,
    "vanishing-category": vanishing_category_world,
    "seasonal-shares": seasonal_shares_world,
    "weak-model": weak_model_world,
    "small-nights": small_nights_world,
    "support-tickets": support_tickets_world,
}
