"""The credit-application simulator: a deterministic world of loan applications and their late default labels.

This is the only module (besides ``nightkeeper.yaml``) that knows the credit example's column names. It produces
what a real lender's upstream systems would drop into the landing folder each night, plus the true outcomes that
arrive later as labels.

Contract of the module:

* Everything is a plain function of its arguments. A night is generated from
  ``numpy.random.default_rng([seed, night.toordinal()])``, so night D is the same whether it is simulated alone,
  inside a history or inside a run of many nights. ``seed`` must be a non-negative int.
* Clean rows satisfy ``nightkeeper.yaml``'s contract: the declared columns and dtypes (float -> Float64,
  int -> Int64, category -> String, bool -> Boolean), every value inside its [min, max] and category levels,
  required features never null, the optional ``dependents`` null in about 3% of rows, unique ``application_id``,
  ``applied_at`` inside the night, and the rule ``loan_amount <= 40 * income``.
* The target ``defaulted`` (Int8 0/1) is a Bernoulli draw from a fixed, non-linear logistic model of the features
  (credit score with a steeper slope below 600, a debt-to-income bend at 0.45, loan-to-income, late payments,
  previous defaults, employment type, a U-shape in age, channel x age interactions, ...). The base rate is about
  11% on a clean night. The applications never contain the target; it is returned separately as labels.
* A bad-data night (``Scenario(bad_data=True)``) is the clean night plus defects drawn from an independent stream
  ``default_rng([seed, night.toordinal(), 1])``: the same applicants, a few of them broken (see ``DEFECTS``).
* World effects (``Scenario.income_factor``, ``young_mobile_share``, ``concept_shift``, ``bot_attack_share``) keep
  every row inside the contract: they move distributions and the feature -> default relationship, never the schema
  or the category levels. Each draws from its own stream (2 = the young population, 3 = the bots), so a knob left at
  its default leaves the night bit-identical to a clean night, and a knob changes only what it is about (concept
  drift changes labels, never features). ``ScenarioPlan`` schedules knobs over nights (ramps, weeks, combinations).
* 1M rows generate in a few seconds: everything is vectorised numpy/polars, no Python loop over rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ENTITY_ID = "application_id"
EVENT_TIME = "applied_at"
TARGET = "defaulted"

EMPLOYMENT_TYPES = ["salaried", "self_employed", "contractor", "unemployed", "retired", "student"]
PURPOSES = ["car", "home_improvement", "debt_consolidation", "education", "medical", "business", "other"]
REGIONS = ["north", "south", "east", "west", "central"]
CHANNELS = ["branch", "web", "mobile", "broker"]
HOME_OWNERSHIP = ["own", "mortgage", "rent", "other"]

# The features in nightkeeper.yaml's order, with their polars dtypes.
FEATURES: dict[str, pl.DataType] = {
    "income": pl.Float64(),
    "age": pl.Int64(),
    "employment_type": pl.String(),
    "employment_years": pl.Float64(),
    "loan_amount": pl.Float64(),
    "loan_term_months": pl.Int64(),
    "purpose": pl.String(),
    "region": pl.String(),
    "channel": pl.String(),
    "credit_score": pl.Int64(),
    "open_accounts": pl.Int64(),
    "late_payments_12m": pl.Int64(),
    "debt_to_income": pl.Float64(),
    "home_ownership": pl.String(),
    "has_cosigner": pl.Boolean(),
    "monthly_expenses": pl.Float64(),
    "previous_defaults": pl.Int64(),
    "dependents": pl.Int64(),
}
APPLICATION_SCHEMA: dict[str, pl.DataType] = {ENTITY_ID: pl.String(), EVENT_TIME: pl.Datetime("us"), **FEATURES}
LABEL_SCHEMA: dict[str, pl.DataType] = {ENTITY_ID: pl.String(), TARGET: pl.Int8()}
DEFECT_SCHEMA: dict[str, pl.DataType] = {ENTITY_ID: pl.String(), "defect": pl.String()}
BOT_SCHEMA: dict[str, pl.DataType] = {ENTITY_ID: pl.String()}

# Row-level defects touch ~defect_rate of the rows each; file-level defects change the whole file's schema.
ROW_DEFECTS = (
    "negative_income",  # income < 0
    "null_required",  # age null in some rows, credit_score null in others
    "unknown_category",  # purpose = "crypto"
    "duplicate_row",  # an exact copy of an existing row
    "duplicate_id_changed",  # an existing application_id again, with a different loan_amount and applied_at
    "unparseable_number",  # the text-typed numeric column holds "12k", "n/a", ... (needs "numeric_as_text")
)
FILE_DEFECTS = (
    "numeric_as_text",  # Scenario.text_column arrives as String ("12500.0")
    "extra_column",  # Scenario.extra_column is added
    "missing_column",  # Scenario.missing_column is dropped
)
DEFECTS = ROW_DEFECTS + FILE_DEFECTS
UNKNOWN_PURPOSE = "crypto"
UTM_CAMPAIGNS = ["spring_promo", "cashback25", "partner_feed", "retarget_q2"]

_MICROS_PER_DAY = 86_400_000_000
_INTERCEPT = -4.45  # calibrated once so that a clean night defaults at ~11%; fixed so that drift moves the rate
_SHIFTED_INTERCEPT = -5.9  # the concept-drifted model's intercept, calibrated so a clean night still defaults at ~11%
YOUNG_STREAM, BOT_STREAM = 2, 3  # night_rng streams of the sudden-shift population and of the bot attack
LOAN_INFLATION_ELASTICITY = 0.5  # loan amounts follow income inflation partially: x income_factor ** 0.5
BOT_LABEL_RATE = 0.9  # share of bot applications labeled defaulted=1
BOT_LOAN_AMOUNTS = np.array([5_000.0, 10_000.0, 15_000.0, 20_000.0])


@dataclass(frozen=True)
class Scenario:
    """What is special about one night. The default ``Scenario()`` is a clean, ordinary night.

    ``bad_data`` switches on the defects named in ``defects`` (all of ``DEFECTS`` by default): each row-level
    defect touches about ``defect_rate`` of the rows (at least 2 rows); ``missing_column`` is dropped (the optional
    ``dependents`` by default; None keeps every column), ``text_column`` arrives as text and ``extra_column``
    is added.

    World effects (each default means "no effect"; all rows stay inside the contract's ranges and levels):

    * ``income_factor`` (gradual drift, > 0): every income is x factor tonight (clipped to the simulator's
      [3 000, 5 000 000], inside the contract's max). Prices follow: monthly expenses scale fully with the factor,
      loan amounts partially (x factor ** ``LOAN_INFLATION_ELASTICITY`` = 0.5, still capped at 12 incomes and
      2 000 000). Credit history (score, accounts, home ownership) follows real, not nominal, income. So
      loan-to-income and debt-to-income fall a little and the default rate drifts slightly down as incomes inflate.
    * ``young_mobile_share`` (sudden shift, in [0, 1]): that share of tonight's applicants (same ids and times) is
      replaced by a new population: ages 18-25, thin credit files (about 25 points lower credit scores, fewer open
      accounts, shorter employment), all applying through ``mobile``. The true model's young-mobile interaction
      makes them riskier, so the default rate rises with the share.
    * ``concept_shift`` (concept drift, in [0, 1]): the default log-odds are ``(1 - s) * usual + s * shifted``;
      the shifted model weakens credit score, late payments and previous defaults, strengthens debt-to-income and
      loan-to-income, and makes ``central`` (the safest region) the riskiest. Features are untouched (same values
      as the clean night); the base rate stays about the same.
    * ``bot_attack_share`` (a bot attack, in [0, 1]): ``round(share * rows)`` junk applications are added on top of
      the ``rows`` normal ones: near-duplicates of one per-seed template (small jitter), all ``web``, one purpose,
      ages within a 3-year band, loan amounts at round 5 000s, applied within a 2-hour burst; ids ``B<night>-NNNNNN``;
      about ``BOT_LABEL_RATE`` (90%) of them default. They are valid under the contract; ``NightData.bots`` lists them.

    Extension hook: a new world effect is a new field whose default means "no effect", applied in
    ``_draw_applicants``/``_default_logit`` (or added like the bots), plus an entry in ``KNOBS``. Fields hold the
    absolute value for this night (e.g. "incomes x1.06 tonight"); a ``ScenarioPlan`` turns per-night rates into
    those values.
    """

    bad_data: bool = False
    defect_rate: float = 0.01
    defects: frozenset[str] = frozenset(DEFECTS)
    missing_column: str | None = "dependents"
    text_column: str = "loan_amount"
    extra_column: str = "utm_campaign"
    income_factor: float = 1.0
    young_mobile_share: float = 0.0
    concept_shift: float = 0.0
    bot_attack_share: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.defects) - set(DEFECTS)
        if unknown:
            raise ValueError(f"unknown defects {sorted(unknown)}; known defects are {list(DEFECTS)}")
        if not 0 < self.defect_rate <= 0.05:
            raise ValueError(f"defect_rate must be in (0, 0.05], got {self.defect_rate}")
        if self.missing_column is not None and self.missing_column not in FEATURES:
            raise ValueError(f"missing_column {self.missing_column!r} is not a feature; features are {list(FEATURES)}")
        if FEATURES.get(self.text_column) not in (pl.Float64(), pl.Int64()):
            raise ValueError(f"text_column {self.text_column!r} must be a numeric feature")
        if self.extra_column in APPLICATION_SCHEMA:
            raise ValueError(f"extra_column {self.extra_column!r} is already a column")
        if not (self.income_factor > 0 and np.isfinite(self.income_factor)):
            raise ValueError(f"income_factor must be a positive finite number, got {self.income_factor}")
        for name in ("young_mobile_share", "concept_shift", "bot_attack_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        object.__setattr__(self, "defects", frozenset(self.defects))

    def has(self, defect: str) -> bool:
        """Whether ``defect`` is applied tonight."""
        return self.bad_data and defect in self.defects


CLEAN = Scenario()
# The numeric world-effect fields a KnobSchedule may set.
KNOBS = ("income_factor", "young_mobile_share", "concept_shift", "bot_attack_share")


def merge_scenarios(*scenarios: Scenario) -> Scenario:
    """One night's scenario from several: field by field, the last scenario whose value differs from the default
    ``Scenario()`` wins; a field every scenario leaves at its default stays default. So a bad-data night merged with
    a sudden shift is a bad-data night with the shift, and two values for the same knob resolve to the later one."""
    merged: dict[str, object] = {}
    for scenario in scenarios:
        for f in fields(Scenario):
            value = getattr(scenario, f.name)
            if value != getattr(CLEAN, f.name):
                merged[f.name] = value
    return replace(CLEAN, **merged)  # type: ignore[arg-type]


@dataclass(frozen=True)
class KnobSchedule:
    """One knob (a name in ``KNOBS``) set over a stretch of nights: from ``start_index`` for ``nights`` nights
    (None = for ever). Constant: the knob is ``value`` every night of the stretch. Compound: ``value`` is a per-night
    rate and night i gets ``(1 + value) ** (i - start_index + 1)`` (for ``income_factor``)."""

    knob: str
    start_index: int
    value: float
    nights: int | None = None
    compound: bool = False

    def __post_init__(self) -> None:
        if self.knob not in KNOBS:
            raise ValueError(f"unknown knob {self.knob!r}; knobs are {list(KNOBS)}")
        if self.start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {self.start_index}")
        if self.nights is not None and self.nights < 1:
            raise ValueError(f"nights must be at least 1 (or None for ever), got {self.nights}")

    def covers(self, night_index: int) -> bool:
        return night_index >= self.start_index and (self.nights is None or night_index < self.start_index + self.nights)

    def value_for_night(self, night_index: int) -> float:
        return (1 + self.value) ** (night_index - self.start_index + 1) if self.compound else self.value


@dataclass(frozen=True)
class ScenarioPlan:
    """Which scenario each night of a run gets. Nights with no entry are long stable (clean) stretches.

    A plan's own scenario for night i is ``nights.get(i, default)`` with each of ``schedules`` that covers night i
    setting its knob on top (in order). A combined plan (``combine``) also has ``layers``: night i's scenario is
    ``merge_scenarios(layer_1(i), ..., layer_n(i), own(i))``, i.e. field by field the last non-default value wins
    (later plans, then the plan's own nights/schedules, override earlier ones only on fields they actually set).
    """

    nights: Mapping[int, Scenario] = field(default_factory=dict)
    default: Scenario = CLEAN
    schedules: tuple[KnobSchedule, ...] = ()
    layers: tuple[ScenarioPlan, ...] = ()

    def scenario_for_night(self, night_index: int) -> Scenario:
        own = self.nights.get(night_index, self.default)
        for schedule in self.schedules:
            if schedule.covers(night_index):
                knob: dict[str, Any] = {schedule.knob: schedule.value_for_night(night_index)}  # a name in KNOBS
                own = replace(own, **knob)
        if not self.layers:
            return own
        return merge_scenarios(*(layer.scenario_for_night(night_index) for layer in self.layers), own)

    def with_night(self, night_index: int, scenario: Scenario) -> ScenarioPlan:
        """A copy of this plan with ``scenario`` on night ``night_index`` (schedules and layers still apply)."""
        return replace(self, nights={**self.nights, night_index: scenario})

    def then(self, *plans: ScenarioPlan) -> ScenarioPlan:
        """This plan combined with ``plans`` (see ``combine``): ``a.then(b, c) == ScenarioPlan.combine(a, b, c)``."""
        return ScenarioPlan.combine(self, *plans)

    @classmethod
    def combine(cls, *plans: ScenarioPlan) -> ScenarioPlan:
        """One plan running all ``plans`` at once. A night set by several plans merges their scenarios field by field
        (``merge_scenarios``: the last plan with a non-default value for a field wins), e.g.
        ``combine(bad_data_at(2), sudden_shift(5, 0.3), bot_attack(9))``."""
        return cls(layers=tuple(plans))

    @classmethod
    def clean(cls) -> ScenarioPlan:
        """Every night clean."""
        return cls()

    @classmethod
    def bad_data_at(cls, night_index: int, **scenario_fields: object) -> ScenarioPlan:
        """Clean nights except a bad-data night at ``night_index``; ``scenario_fields`` tune its Scenario
        (e.g. ``missing_column="region"``)."""
        return cls(nights={night_index: Scenario(bad_data=True, **scenario_fields)})  # type: ignore[arg-type]

    @classmethod
    def gradual_income_inflation(cls, start_index: int, per_night_rate: float) -> ScenarioPlan:
        """Gradual drift: night i >= ``start_index`` has ``income_factor = (1 + per_night_rate) ** (i - start + 1)``,
        for ever (incomes stop at the simulator's 5 000 000 cap, loans at 2 000 000)."""
        return cls(schedules=(KnobSchedule("income_factor", start_index, per_night_rate, compound=True),))

    @classmethod
    def sudden_shift(cls, start_index: int, share: float) -> ScenarioPlan:
        """Sudden shift: from ``start_index`` on, ``share`` of each night's applicants are the young mobile
        population (``Scenario.young_mobile_share``)."""
        return cls(schedules=(KnobSchedule("young_mobile_share", start_index, share),))

    @classmethod
    def concept_drift(cls, start_index: int, shift: float) -> ScenarioPlan:
        """Concept drift: from ``start_index`` on, the default model is blended ``shift`` of the way toward the
        shifted relationship (``Scenario.concept_shift``); the applicants are unchanged."""
        return cls(schedules=(KnobSchedule("concept_shift", start_index, shift),))

    @classmethod
    def bot_attack(cls, start_index: int, nights: int = 7, share: float = 0.3) -> ScenarioPlan:
        """A bot attack: ``nights`` nights from ``start_index`` each get ``round(share * rows)`` extra bot rows
        (``Scenario.bot_attack_share``)."""
        return cls(schedules=(KnobSchedule("bot_attack_share", start_index, share, nights=nights),))


@dataclass(frozen=True)
class NightData:
    """One simulated night.

    ``applications``: the landing file's rows (no target column). ``labels``: (application_id, defaulted Int8),
    one row per unique application_id, the true outcome of each applicant (also for broken rows).
    ``defects``: (application_id, defect) for each row deliberately broken by a row-level defect; empty on a clean
    night. Ids of duplicate rows appear with defect "duplicate_row"/"duplicate_id_changed".
    ``bots``: (application_id) of each bot-attack row (``Scenario.bot_attack_share``); empty on other nights. Bot rows
    are valid applications, so they are not defects (unless a bad-data night also broke one).
    """

    night: date
    applications: pl.DataFrame
    labels: pl.DataFrame
    defects: pl.DataFrame
    bots: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=BOT_SCHEMA))


def night_rng(seed: int, night: date, stream: int = 0) -> np.random.Generator:
    """The generator of ``night``: independent of every other night and of how many nights were generated."""
    return np.random.default_rng([seed, night.toordinal(), stream])


def simulate_night(night: date, rows: int, seed: int, scenario: Scenario = CLEAN) -> NightData:
    """Simulate the ``rows`` applications of ``night`` and their true labels under ``scenario``."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    labeled = _simulate_labeled(night, rows, seed, scenario)
    bots = pl.DataFrame(schema=BOT_SCHEMA)
    if scenario.bot_attack_share > 0:
        attack = _bot_applications(night, max(1, round(scenario.bot_attack_share * rows)), seed)
        bots = attack.select(ENTITY_ID)
        labeled = pl.concat([labeled, attack]).sort(EVENT_TIME, maintain_order=True)
    labels = labeled.select(ENTITY_ID, TARGET)
    applications = labeled.drop(TARGET)
    defects = pl.DataFrame(schema=DEFECT_SCHEMA)
    if scenario.bad_data:
        applications, defects = _break(applications, scenario, night_rng(seed, night, 1))
    return NightData(night=night, applications=applications, labels=labels, defects=defects, bots=bots)


def simulate_history(end: date, days: int, rows_per_day: int, seed: int) -> pl.DataFrame:
    """Clean labeled history of the ``days`` nights ending with ``end`` (inclusive): id, event time, the 18 features
    and ``defaulted``. Night D of a history equals ``simulate_night(D, rows_per_day, seed)`` with its labels."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    nights = [end - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    return pl.concat([_simulate_labeled(night, rows_per_day, seed) for night in nights])


def write_landing(night_data: NightData, night: date, landing_dir: str | Path) -> Path:
    """Write the night's applications to ``landing_dir/YYYY-MM-DD/applications.parquet`` (atomically replacing
    any previous file) and return its path. Matches the config's source pattern ``{date}/*.parquet``."""
    return _write_parquet(night_data.applications, Path(landing_dir) / night.isoformat() / "applications.parquet")


def write_labels(labels: pl.DataFrame, arrival_date: date, labels_dir: str | Path) -> Path:
    """Write labels arriving on ``arrival_date`` to ``labels_dir/YYYY-MM-DD/labels.parquet`` (atomically replacing
    any previous file) and return its path."""
    return _write_parquet(labels, Path(labels_dir) / arrival_date.isoformat() / "labels.parquet")


def simulate_to_folders(
    start: date,
    nights: int,
    rows_per_night: int,
    seed: int,
    plan: ScenarioPlan,
    landing_dir: str | Path,
    labels_dir: str | Path,
    label_delay_days: int = 7,
) -> list[date]:
    """Simulate ``nights`` consecutive nights from ``start`` (night index i gets ``plan.scenario_for_night(i)``),
    write each night's landing file and write its labels to the folder of night + ``label_delay_days``
    (which may lie after the last simulated night: a reader must only take label folders up to its current night).
    Re-running overwrites the same files with the same content. Returns the simulated nights."""
    if label_delay_days < 0:
        raise ValueError(f"label_delay_days must be >= 0, got {label_delay_days}")
    written = []
    for index in range(nights):
        night = start + timedelta(days=index)
        data = simulate_night(night, rows_per_night, seed, plan.scenario_for_night(index))
        write_landing(data, night, landing_dir)
        write_labels(data.labels, night + timedelta(days=label_delay_days), labels_dir)
        written.append(night)
    return written


# --------------------------------------------------------------------------------------------------- the world


def _simulate_labeled(night: date, rows: int, seed: int, scenario: Scenario = CLEAN) -> pl.DataFrame:
    """The clean applications of ``night`` with the target, in applied_at order (world effects applied, no bots)."""
    rng = night_rng(seed, night)
    world = _draw_applicants(rows, rng, income_factor=scenario.income_factor)
    if scenario.young_mobile_share > 0:
        young_rng = night_rng(seed, night, YOUNG_STREAM)
        replaced = np.sort(young_rng.choice(rows, round(scenario.young_mobile_share * rows), replace=False))
        young = _draw_applicants(len(replaced), young_rng, income_factor=scenario.income_factor, young=True)
        for name, values in young.items():
            world[name][replaced] = values
    probability = 1.0 / (1.0 + np.exp(-_default_logit(world, scenario.concept_shift)))
    defaulted = (rng.random(rows) < probability).astype(np.int8)

    start_us = int((datetime.combine(night, datetime.min.time()) - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    applied_at = start_us + np.sort(rng.integers(0, _MICROS_PER_DAY, rows))
    dependents = pl.Series("dependents", world["dependents"], dtype=pl.Int64)
    dependents = dependents.scatter(np.flatnonzero(rng.random(rows) < 0.03), None)

    columns: dict[str, pl.Series] = {
        ENTITY_ID: _ids(night, rows),
        EVENT_TIME: pl.Series(EVENT_TIME, applied_at, dtype=pl.Int64).cast(pl.Datetime("us")),
    }
    for name, dtype in FEATURES.items():
        if name == "dependents":
            columns[name] = dependents
        elif name in _LEVELS:
            columns[name] = pl.Series(_LEVELS[name]).gather(world[name]).alias(name)
        else:
            columns[name] = pl.Series(name, world[name]).cast(dtype)
    columns[TARGET] = pl.Series(TARGET, defaulted, dtype=pl.Int8)
    return pl.DataFrame(columns)


def _ids(night: date, rows: int) -> pl.Series:
    numbers = pl.int_range(rows, eager=True).cast(pl.String).str.zfill(6)
    return (f"A{night:%Y%m%d}-" + numbers).alias(ENTITY_ID)


_LEVELS = {
    "employment_type": EMPLOYMENT_TYPES,
    "purpose": PURPOSES,
    "region": REGIONS,
    "channel": CHANNELS,
    "home_ownership": HOME_OWNERSHIP,
}
_TERMS = np.array([12, 24, 36, 48, 60, 72, 84, 120, 180, 240, 360])
# Loan term probabilities per purpose (rows in PURPOSES order, columns in _TERMS order).
_TERM_PROBS = np.array(
    [
        [0.05, 0.10, 0.20, 0.20, 0.30, 0.10, 0.05, 0.00, 0.00, 0.00, 0.00],
        [0.02, 0.05, 0.10, 0.10, 0.20, 0.10, 0.10, 0.15, 0.10, 0.05, 0.03],
        [0.05, 0.15, 0.30, 0.20, 0.20, 0.05, 0.05, 0.00, 0.00, 0.00, 0.00],
        [0.00, 0.05, 0.10, 0.10, 0.25, 0.10, 0.15, 0.25, 0.00, 0.00, 0.00],
        [0.25, 0.30, 0.30, 0.10, 0.05, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
        [0.05, 0.10, 0.15, 0.10, 0.20, 0.10, 0.10, 0.10, 0.05, 0.05, 0.00],
        [0.20, 0.30, 0.25, 0.10, 0.15, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    ]
)


def _choose(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """One level index per row from row-wise logits of shape (rows, levels)."""
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return _choose_probs(rng, weights / weights.sum(axis=1, keepdims=True))


def _choose_probs(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(probs, axis=1)
    cumulative[:, -1] = 1.0
    return (rng.random(len(probs))[:, None] > cumulative).sum(axis=1)


def _draw_applicants(
    n: int, rng: np.random.Generator, income_factor: float = 1.0, young: bool = False
) -> dict[str, np.ndarray]:
    """The applicants' features as numpy arrays (categories as level indices), clean and inside the contract.

    ``income_factor`` inflates nominal incomes, expenses fully and loans partially (see ``Scenario``). ``young``
    draws the sudden-shift population instead (ages 18-25, thin credit files, all mobile). With the defaults the
    draws are exactly those of an ordinary night."""
    if young:
        age = rng.integers(18, 26, n).astype(np.float64)
    else:
        age = np.clip(np.round(18 + rng.gamma(4.0, 6.0, n)), 18, 90)
    years_over_40 = age - 40

    zero = np.zeros(n)
    employment = _choose(
        rng,
        np.column_stack(
            [
                1.6 - 0.15 * np.maximum(age - 62, 0),  # salaried
                0.0 + 0.02 * np.clip(years_over_40, -15, 20),  # self_employed
                -0.2 + zero,  # contractor
                -1.4 + zero,  # unemployed
                -7.0 + 0.13 * (age - 20),  # retired
                1.0 - 0.35 * (age - 18),  # student
            ]
        ),
    )
    region = _choose_probs(rng, np.broadcast_to([0.22, 0.20, 0.20, 0.20, 0.18], (n, 5)))

    median_income = np.array([52_000, 58_000, 60_000, 14_000, 30_000, 11_000])[employment]
    income_sigma = np.array([0.45, 0.75, 0.55, 0.50, 0.45, 0.50])[employment]
    age_factor = 0.65 + 0.35 * np.exp(-(((age - 50) / 18) ** 2))
    region_factor = np.array([1.0, 0.9, 0.95, 1.05, 1.15])[region]
    income = median_income * age_factor * region_factor * np.exp(income_sigma * rng.standard_normal(n))
    real_income = np.round(np.clip(income, 3_000, 5_000_000), 2)
    income = (
        real_income if income_factor == 1.0 else np.round(np.clip(real_income * income_factor, 3_000, 5_000_000), 2)
    )
    log_income = np.log(real_income / 40_000)  # credit history follows real, not nominal, income

    working_years = (age - 18) * rng.beta(1.5, 3.0, n)
    student_years = np.minimum(age - 18, 6) * rng.beta(1.0, 4.0, n)
    employment_years = np.select([employment <= 2, employment == 5], [working_years, student_years], 0.0)
    if young:
        employment_years = 0.5 * employment_years  # short employment
    employment_years = np.round(np.clip(employment_years, 0, 70), 1)

    if young:
        channel = np.full(n, CHANNELS.index("mobile"))
    else:
        channel = _choose(
            rng,
            np.column_stack([-0.5 + 0.04 * years_over_40, 0.5 + zero, 0.4 - 0.06 * (age - 35), -1.2 + zero]),
        )
    credit_score = (
        630
        + 2.2 * np.minimum(age - 18, 40)
        + 25 * np.clip(log_income, -2, 2)
        - 40 * (employment == 3)
        - 25 * young  # a thin credit file
        + 65 * rng.standard_normal(n)
    )
    credit_score = np.clip(np.round(credit_score), 300, 850)
    late_payments = np.clip(rng.poisson(0.35 * np.exp((660 - credit_score) / 70)), 0, 50)
    previous_defaults = np.clip(rng.poisson(0.08 * np.exp((640 - credit_score) / 60)), 0, 20)
    accounts_mean = 0.5 + 0.05 * (age - 18) + 0.2 * log_income if young else 1.5 + 0.08 * (age - 18) + 0.6 * log_income
    open_accounts = np.clip(rng.poisson(np.maximum(accounts_mean, 0.2)), 0, 100)

    home = _choose(
        rng,
        np.column_stack(
            [
                -2.0 + 0.06 * (age - 30),  # own
                -0.5 + 0.8 * np.clip(log_income, -2, 2) + 0.5 * ((age >= 30) & (age <= 60)),  # mortgage
                1.0 - 0.03 * (age - 30),  # rent
                -2.0 + zero,  # other
            ]
        ),
    )
    dependents = np.clip(rng.poisson(0.3 + 1.4 * np.exp(-(((age - 40) / 12) ** 2))), 0, 20)
    has_cosigner = rng.random(n) < 0.05 + 0.25 * (employment == 5) + 0.10 * (age < 25)

    purpose_logits = np.log([0.22, 0.14, 0.28, 0.06, 0.07, 0.08, 0.15]) + zero[:, None]
    purpose_logits[:, 1] += 0.8 * (home <= 1)  # owners improve their homes
    purpose_logits[:, 3] += 1.5 * (age < 30) + 1.5 * (employment == 5)  # the young study
    purpose_logits[:, 5] += 1.5 * (employment == 1)  # the self-employed borrow for business
    purpose = _choose(rng, purpose_logits)

    median_loan = np.array([18_000, 22_000, 14_000, 16_000, 5_000, 35_000, 7_000])[purpose]
    loan = median_loan * (real_income / 50_000) ** 0.4 * np.exp(0.6 * rng.standard_normal(n))
    loan = loan * income_factor**LOAN_INFLATION_ELASTICITY  # loans follow inflation partially
    # Lenders cap loans at 12 yearly incomes; income >= 3000 keeps the 500 floor below the cap.
    loan_amount = np.clip(np.floor(np.minimum(np.minimum(loan, 12 * income), 2_000_000) / 100) * 100, 500, None)
    loan_term = _TERMS[_choose_probs(rng, _TERM_PROBS[purpose])]

    monthly_rate = 0.08 / 12
    payment = loan_amount * monthly_rate / (1 - (1 + monthly_rate) ** -loan_term)
    existing_debt = rng.gamma(2.0, 0.09, n) + 0.03 * late_payments + 0.02 * np.sqrt(open_accounts)
    debt_to_income = np.round(np.clip(existing_debt + 12 * payment / income, 0, 10), 4)
    expense_share = np.clip(0.55 + 0.15 * rng.standard_normal(n), 0.15, 1.2)
    monthly_expenses = income / 12 * expense_share + 180 * income_factor * dependents  # expenses follow fully
    monthly_expenses = np.round(np.clip(monthly_expenses, 0, 1_000_000), 2)

    return {
        "income": income,
        "age": age,
        "employment_type": employment,
        "employment_years": employment_years,
        "loan_amount": loan_amount,
        "loan_term_months": loan_term,
        "purpose": purpose,
        "region": region,
        "channel": channel,
        "credit_score": credit_score,
        "open_accounts": open_accounts,
        "late_payments_12m": late_payments,
        "debt_to_income": debt_to_income,
        "home_ownership": home,
        "has_cosigner": has_cosigner,
        "monthly_expenses": monthly_expenses,
        "previous_defaults": previous_defaults,
        "dependents": dependents,
    }


def _default_logit(w: Mapping[str, np.ndarray], concept_shift: float = 0.0) -> np.ndarray:
    """The true log-odds of default: fixed and non-linear (bends, a U-shape and interactions), blended
    ``concept_shift`` of the way toward ``_shifted_logit``."""
    usual = _usual_logit(w)
    if concept_shift == 0:
        return usual
    return (1 - concept_shift) * usual + concept_shift * _shifted_logit(w)


def _usual_logit(w: Mapping[str, np.ndarray]) -> np.ndarray:
    """The relationship of an ordinary night."""
    score = w["credit_score"]
    dti = np.minimum(w["debt_to_income"], 3)
    age = w["age"]
    channel = w["channel"]
    return (
        _INTERCEPT
        + 0.012 * (680 - score)
        + 0.015 * np.maximum(600 - score, 0)  # steeper below 600
        + 0.8 * dti
        + 3.0 * np.maximum(dti - 0.45, 0)  # threshold bend in debt-to-income
        + 1.0 * np.log1p(2 * np.minimum(w["loan_amount"] / w["income"], 10))
        + 0.3 * np.minimum(w["late_payments_12m"], 8)
        + 0.9 * np.minimum(w["previous_defaults"], 3)
        + np.array([0.0, 0.25, 0.35, 1.1, -0.1, 0.5])[w["employment_type"]]
        + 0.0015 * (age - 45) ** 2  # U-shape in age
        + np.array([-0.1, 0.0, 0.15, 0.35])[channel]
        + 0.7 * ((channel == 2) & (age < 25))  # young mobile applicants
        + 0.5 * ((channel == 1) & (age >= 65))  # old web applicants
        - 0.6 * w["has_cosigner"]
        + np.array([-0.3, -0.2, 0.15, 0.1])[w["home_ownership"]]
        - 0.25 * np.log1p(w["employment_years"])
        + np.array([-0.1, -0.15, 0.2, 0.1, 0.3, 0.45, 0.1])[w["purpose"]]
        + 0.08 * w["dependents"]
        + np.array([0.0, 0.1, 0.0, -0.05, -0.1])[w["region"]]
    )


def _shifted_logit(w: Mapping[str, np.ndarray]) -> np.ndarray:
    """The concept-drifted relationship: credit history matters much less, indebtedness much more, the safest
    region (central) becomes the riskiest. Calibrated to about the same base rate on a clean night."""
    score = w["credit_score"]
    dti = np.minimum(w["debt_to_income"], 3)
    age = w["age"]
    return (
        _SHIFTED_INTERCEPT
        + 0.001 * (680 - score)  # credit score barely matters any more
        + 2.0 * dti
        + 5.0 * np.maximum(dti - 0.35, 0)  # the debt-to-income bend is earlier and steeper
        + 2.2 * np.log1p(2 * np.minimum(w["loan_amount"] / w["income"], 10))
        + 0.05 * np.minimum(w["late_payments_12m"], 8)
        + 0.2 * np.minimum(w["previous_defaults"], 3)
        + np.array([0.0, 0.25, 0.35, 1.1, -0.1, 0.5])[w["employment_type"]]
        + 0.0015 * (age - 45) ** 2
        + np.array([-0.1, 0.0, 0.15, 0.35])[w["channel"]]
        - 0.6 * w["has_cosigner"]
        - 0.25 * np.log1p(w["employment_years"])
        + np.array([-0.1, -0.15, 0.2, 0.1, 0.3, 0.45, 0.1])[w["purpose"]]
        + np.array([0.0, 0.1, 0.0, -0.05, 1.5])[w["region"]]  # central: from safest to riskiest
    )


def _bot_applications(night: date, count: int, seed: int) -> pl.DataFrame:
    """``count`` labeled bot applications for ``night``: jittered copies of one template fixed by ``seed`` (so the
    same bot campaign comes back every night of an attack), inside the contract, ~BOT_LABEL_RATE defaulted."""
    template = np.random.default_rng([seed, BOT_STREAM])
    rng = night_rng(seed, night, BOT_STREAM)
    age = int(template.integers(24, 45)) + rng.integers(0, 3, count)  # a 3-year band
    income = np.round(template.uniform(35_000, 60_000) * (1 + 0.02 * rng.standard_normal(count)), 2)
    start_us = int((datetime.combine(night, datetime.min.time()) - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    burst_start = start_us + int(template.integers(0, 22)) * 3_600_000_000  # a 2-hour burst
    frame = pl.DataFrame(
        {
            ENTITY_ID: (f"B{night:%Y%m%d}-" + pl.int_range(count, eager=True).cast(pl.String).str.zfill(6)),
            EVENT_TIME: pl.Series(burst_start + np.sort(rng.integers(0, 7_200_000_000, count))).cast(pl.Datetime("us")),
            "income": income,
            "age": age,
            "employment_type": "salaried",
            "employment_years": np.round(np.clip(template.uniform(2, 6) + 0.3 * rng.standard_normal(count), 0, 70), 1),
            "loan_amount": BOT_LOAN_AMOUNTS[rng.integers(0, len(BOT_LOAN_AMOUNTS), count)],
            "loan_term_months": 36,
            "purpose": PURPOSES[int(template.integers(0, len(PURPOSES)))],
            "region": REGIONS[int(template.integers(0, len(REGIONS)))],
            "channel": "web",
            "credit_score": np.clip(int(template.integers(680, 740)) + rng.integers(-5, 6, count), 300, 850),
            "open_accounts": int(template.integers(3, 7)) + rng.integers(0, 2, count),
            "late_payments_12m": 0,
            "debt_to_income": np.round(
                np.clip(template.uniform(0.2, 0.35) + 0.01 * rng.standard_normal(count), 0, 10), 4
            ),
            "home_ownership": "rent",
            "has_cosigner": False,
            "monthly_expenses": np.round(income / 12 * 0.5 * (1 + 0.02 * rng.standard_normal(count)), 2),
            "previous_defaults": 0,
            "dependents": 0,
            TARGET: (rng.random(count) < BOT_LABEL_RATE).astype(np.int8),
        }
    )
    return frame.cast(pl.Schema({**APPLICATION_SCHEMA, TARGET: pl.Int8()}))


# ------------------------------------------------------------------------------------------------ the defects


def _break(
    applications: pl.DataFrame, scenario: Scenario, rng: np.random.Generator
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply the scenario's defects to a clean night. Each row-level defect gets its own disjoint set of rows."""
    rows = applications.height
    per_defect = max(2, round(scenario.defect_rate * rows))
    row_kinds = [d for d in ROW_DEFECTS if scenario.has(d)]
    if "unparseable_number" in row_kinds and not scenario.has("numeric_as_text"):
        row_kinds.remove("unparseable_number")
    slots = len(row_kinds) + ("null_required" in row_kinds)  # null_required breaks age and credit_score rows
    if per_defect * slots > rows // 2:
        raise ValueError(f"a bad-data night needs at least {2 * per_defect * slots} rows, got {rows}")
    chosen = iter(np.split(rng.permutation(rows)[: per_defect * slots], slots) if slots else [])
    picked: dict[str, np.ndarray] = {}
    for kind in row_kinds:
        picked[kind] = next(chosen)
        if kind == "null_required":
            picked["null_required_score"] = next(chosen)

    def mask(kind: str) -> pl.Series:
        flags = np.zeros(rows, dtype=bool)
        flags[picked.get(kind, [])] = True
        return pl.Series(flags)

    ids = applications[ENTITY_ID]
    defect_rows = [
        pl.DataFrame({ENTITY_ID: ids.gather(index), "defect": "null_required" if kind.startswith("null") else kind})
        for kind, index in picked.items()
    ]
    if scenario.has("extra_column"):  # before duplicating, so that duplicate rows are exact copies
        campaign = pl.Series(UTM_CAMPAIGNS + [None]).gather(rng.integers(0, len(UTM_CAMPAIGNS) + 1, rows))
        applications = applications.with_columns(campaign.alias(scenario.extra_column))
    broken = applications.with_columns(
        pl.when(mask("negative_income")).then(-pl.col("income")).otherwise(pl.col("income")).alias("income"),
        pl.when(mask("null_required")).then(None).otherwise(pl.col("age")).alias("age"),
        pl.when(mask("null_required_score")).then(None).otherwise(pl.col("credit_score")).alias("credit_score"),
        pl.when(mask("unknown_category")).then(pl.lit(UNKNOWN_PURPOSE)).otherwise(pl.col("purpose")).alias("purpose"),
    )
    if "duplicate_row" in picked:
        broken = pl.concat([broken, broken[picked["duplicate_row"]]])
    if "duplicate_id_changed" in picked:
        original = applications[picked["duplicate_id_changed"]]
        night_end = original[EVENT_TIME].dt.truncate("1d").dt.offset_by("1d") - timedelta(microseconds=1)
        resubmitted = original.with_columns(
            (pl.col("loan_amount") * 1.25 / 100).round() * 100,
            pl.min_horizontal(pl.col(EVENT_TIME) + timedelta(minutes=17), night_end).alias(EVENT_TIME),
        )
        broken = pl.concat([broken, resubmitted.cast(broken.schema)])
    broken = broken.sort(EVENT_TIME, maintain_order=True)

    if scenario.has("numeric_as_text"):
        column = scenario.text_column
        text = pl.col(column).cast(pl.String)  # Float64 reads "12500.0", Int64 "42"
        if "unparseable_number" in picked:
            bad_ids = ids.gather(picked["unparseable_number"])
            garbage = pl.Series(["12k", "n/a", "unknown", "1.2e+04 EUR"])
            junk = garbage.gather(rng.integers(0, len(garbage), len(bad_ids)))
            lookup = pl.DataFrame({ENTITY_ID: bad_ids, "__junk": junk})
            broken = broken.join(lookup, on=ENTITY_ID, how="left", maintain_order="left")
            text = pl.coalesce(pl.col("__junk"), text)
            broken = broken.with_columns(text.alias(column)).drop("__junk")
        else:
            broken = broken.with_columns(text.alias(column))
    if scenario.has("missing_column") and scenario.missing_column is not None:
        broken = broken.drop(scenario.missing_column)

    defects = pl.concat(defect_rows) if defect_rows else pl.DataFrame(schema=DEFECT_SCHEMA)
    return broken, defects.sort(ENTITY_ID, "defect")


def _write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.write_parquet(temporary)
    os.replace(temporary, path)
    return path
