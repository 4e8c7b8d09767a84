"""Draft a project config from a sample of the user's own data (``nightkeeper init``).

The draft is a starting point a person edits, written so that ``check-config`` accepts it unchanged:

- each column's dtype is inferred; integer columns with few distinct values are offered as categories (their codes
  written unquoted), text with few levels becomes a category, other text and dates are left out with a comment;
- ``required`` only where the sample has no nulls;
- numeric ranges are the sample's range widened by its span on each side (not below 0 where the sample has no
  negative value), so the ordinary tails of later nights are not quarantined;
- the decision labels and business values are neutral placeholders, with comments saying what to put there;
- every size setting (training window, holdout nights, minimum labeled rows, review capacity, volume checks, segment
  and leaf sizes) is derived from the sample's rows per night.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from pydantic import BaseModel

from nightkeeper.config import RESERVED_COLUMNS, ProjectConfig
from nightkeeper.frames import day, number
from nightkeeper.project_root import require_project_root

MAX_CODE_LEVELS = 12
"""An integer column with at most this many distinct values is offered as a category (codes, grades, flags)."""
COUNT_TAIL_SHARE = 0.01
"""An integer column 0 … k whose top value holds less than this share of rows is a count, not codes."""
MAX_TEXT_LEVELS = 100
"""A text column with more distinct values than this is no feature (an id, free text) and is left out."""
TARGET_TRAINING_ROWS = 20_000
"""Rows the training window should hold; the window is this many rows' worth of nights (28 to 365)."""
TARGET_HOLDOUT_ROWS = 2_000
"""Rows the promotion gate's holdout should hold for a stable AUC comparison."""
MIN_CANARY_ROWS = 50
"""Rows a canary step should hold a night; steps smaller than this are left out of the drafted rollout."""

SHIPPED_CONFIG = Path("nightkeeper.yaml")
"""The shipped example config, in the project root; the draft copies its alert rules on Nightkeeper's own (not
per-feature) metrics."""


def generic_alert_rules() -> list[dict[str, Any]]:
    """The shipped example's alert rules that name no feature, so they hold for any dataset."""
    root = require_project_root(f"The shipped example config ({SHIPPED_CONFIG}), whose alert rules a draft copies,")
    rules = yaml.safe_load((root / SHIPPED_CONFIG).read_text())["monitoring"]["alerts"]["rules"]
    return [rule for rule in rules if not str(rule["metric"]).startswith("drift.feature.")]


class DraftError(ValueError):
    """The sample cannot be drafted from; the message names the column, what was found and what is needed."""


@dataclass(frozen=True)
class FeatureDraft:
    """One column's drafted feature spec (None when it is left out) and the comment that explains the choice."""

    name: str
    spec: dict[str, Any] | None
    note: str = ""


@dataclass(frozen=True)
class SampleShape:
    """How much data a night holds: rows per night (median), nights seen, and the nights' volume variation."""

    rows_per_night: int
    nights: int
    volume_cv: float | None
    last_night: dt.date | None


@dataclass(frozen=True)
class Sizes:
    """Every size setting of the draft, each derived from the rows per night."""

    training_window_days: int
    holdout_days: int
    min_labeled_rows: int
    data_gate_min_rows: int
    review_capacity: int
    volume_tolerance: float
    max_volume_ratio: float
    fallback_min_segment_rows: int
    gate_min_segment_rows: int
    min_data_in_leaf: int
    drift_sample_rows: int
    canary_percents: list[int]
    notes: list[str] = field(default_factory=list)


def read_sample(path: Path) -> pl.DataFrame:
    """A Parquet or CSV sample file as a frame; raises DraftError for another kind of file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.read_parquet(path)
    if suffix == ".csv":
        return pl.read_csv(path, infer_schema_length=None, try_parse_dates=True)
    raise DraftError(f"{path}: expected a .parquet or .csv sample file, found {suffix or 'no extension'!r}")


def sample_shape(sample: pl.DataFrame, time_column: str | None) -> SampleShape:
    """Rows per night from ``time_column`` (its date part); without one the whole sample counts as one night."""
    if time_column is None:
        return SampleShape(sample.height, 1, None, None)
    column = sample[time_column]
    if column.dtype == pl.String:
        column = column.str.to_datetime(strict=False)
    if column.dtype not in (pl.Date,) and not isinstance(column.dtype, pl.Datetime):
        raise DraftError(f"--time column {time_column!r}: expected dates or timestamps, found dtype {column.dtype}")
    days = column.cast(pl.Date) if column.dtype == pl.Date else column.dt.date()
    if days.null_count() == len(days):
        raise DraftError(f"--time column {time_column!r}: no value parses as a date or timestamp")
    counts = days.drop_nulls().value_counts()["count"].to_list()
    cv = statistics.pstdev(counts) / statistics.mean(counts) if len(counts) >= 3 else None
    return SampleShape(int(statistics.median(counts)), len(counts), cv, day(days.max()))


def derive_sizes(shape: SampleShape) -> Sizes:
    """The draft's size settings for ``shape.rows_per_night`` rows a night (see each line's comment in the YAML)."""
    per_night = max(shape.rows_per_night, 1)
    window = _clamp(math.ceil(TARGET_TRAINING_ROWS / per_night), 28, 365)
    holdout = _clamp(math.ceil(TARGET_HOLDOUT_ROWS / per_night), 1, min(14, window // 4))
    cv = shape.volume_cv
    notes = []
    if shape.nights == 1:
        notes.append(
            "no --time column was given: the whole sample was taken as ONE night of "
            f"{per_night:,} rows; re-run with --time COL if it spans several nights"
        )
    elif cv is None:
        notes.append(
            f"the sample spans {shape.nights} nights, too few to measure how volume varies: volume limits are the "
            "defaults"
        )
    return Sizes(
        training_window_days=window,
        holdout_days=holdout,
        min_labeled_rows=_clamp(per_night // 4, 30, 200),
        data_gate_min_rows=_clamp(per_night * window // 4, 100, 2000),
        review_capacity=_clamp(round(0.04 * per_night), 10, 500),
        volume_tolerance=max(0.5, round(4 * cv, 2)) if cv is not None else 0.5,
        max_volume_ratio=max(1.5, round(1 + 4 * cv, 2)) if cv is not None else 1.5,
        fallback_min_segment_rows=_clamp(per_night * window // 200, 10, 50),
        gate_min_segment_rows=_clamp(per_night * holdout // 10, 10, 300),
        min_data_in_leaf=_clamp(per_night * window // 1000, 5, 50),
        drift_sample_rows=_clamp(per_night, 200, 10_000),
        # each canary step should hold some MIN_CANARY_ROWS rows a night to judge it by
        canary_percents=[p for p in (1, 5, 20, 50) if p * per_night / 100 >= MIN_CANARY_ROWS] + [100],
        notes=notes,
    )


def draft_feature(name: str, column: pl.Series) -> FeatureDraft:
    """The drafted spec of one sample column (see the module docstring for the rules)."""
    values = column.drop_nulls()
    nulls = column.null_count()
    required = {} if nulls == 0 else {"required": False}
    null_note = f"; {nulls / len(column):.1%} null in the sample" if nulls else ""
    if name in RESERVED_COLUMNS:
        return FeatureDraft(
            name, None, f"left out: {name!r} is a name Nightkeeper reserves for its own columns; rename it to use it"
        )
    if values.is_empty():
        return FeatureDraft(name, None, "left out: every value in the sample is null")
    dtype: pl.DataType = column.dtype
    if dtype == pl.Boolean:
        return FeatureDraft(name, {"dtype": "bool", **required}, f"boolean{null_note}")
    if dtype.is_float() and bool((values == values.round()).all()) and number(values.abs().max()) < 2**53:
        values, dtype = values.cast(pl.Int64), pl.Int64()  # whole numbers stored as floats (a column with nulls, often)
    if dtype.is_integer():
        levels = sorted(values.unique().to_list())
        if len(levels) <= MAX_CODE_LEVELS and not _looks_like_a_count(values, levels):
            return FeatureDraft(
                name,
                {"dtype": "category", "categories": levels, **required},
                f"integer codes, {len(levels)} levels: offered as a category; make it "
                f"{{dtype: int, min, max}} if the order of the codes means something{null_note}",
            )
        low, high = _widened(number(values.min()), number(values.max()))
        return FeatureDraft(
            name,
            {"dtype": "int", "min": math.floor(low), "max": math.ceil(high), **required},
            f"integer; sample range {values.min()!r} … {values.max()!r}{null_note}",  # ints: repr is the number
        )
    if dtype.is_float():
        low, high = _widened(number(values.min()), number(values.max()))
        return FeatureDraft(
            name,
            {"dtype": "float", "min": _round(low), "max": _round(high), **required},
            f"number; sample range {_round(number(values.min()))} … {_round(number(values.max()))}{null_note}",
        )
    if dtype == pl.String or dtype == pl.Categorical:
        levels = sorted(values.cast(pl.String).unique().to_list())
        if len(levels) <= MAX_TEXT_LEVELS:
            return FeatureDraft(
                name, {"dtype": "category", "categories": levels, **required}, f"text, {len(levels)} levels{null_note}"
            )
        return FeatureDraft(name, None, f"left out: text with {len(levels):,} distinct values (an id or free text?)")
    return FeatureDraft(name, None, f"left out: dtype {dtype} is not a model input (float, int, bool or category)")


def draft_config_text(
    sample: pl.DataFrame,
    target: str,
    entity_id: str | None,
    event_time: str | None,
    name: str,
    file_suffix: str = ".parquet",
) -> str:
    """The draft config as commented YAML for ``sample`` (raises DraftError naming a bad column)."""
    for role, column in (("--target", target), ("--id", entity_id), ("--time", event_time)):
        if column is not None and column not in sample.columns:
            raise DraftError(f"{role} column {column!r} is not in the sample; its columns are {sample.columns}")
    positive_rate = _positive_rate(sample, target)
    entity_id, id_note = _entity_id(sample, entity_id, target, event_time)
    shape = sample_shape(sample, event_time)
    sizes = derive_sizes(shape)
    features = [
        draft_feature(column, sample[column])
        for column in sample.columns
        if column not in (target, entity_id, event_time)
    ]
    if not any(f.spec for f in features):
        raise DraftError(f"no column of the sample can be a feature: {[f'{f.name}: {f.note}' for f in features]}")
    threshold = min(max(round(positive_rate, 2), 0.01), 0.99)
    start = shape.last_night + dt.timedelta(days=1) if shape.last_night else dt.date.today()
    per_night = shape.rows_per_night

    out = [
        f"# Draft Nightkeeper config, written by `nightkeeper init` from a sample of {sample.height:,} rows.",
        "# Read every line: names of decisions, money per outcome and the fallback segments are yours to set.",
        f"# Size settings are derived from {per_night:,} rows per night"
        + (f" (median of {shape.nights} nights in the sample)." if shape.nights > 1 else "."),
        *(f"# NOTE: {note}." for note in sizes.notes),
        f"name: {_scalar(name)}",
        "",
        "contract:",
        f"  entity_id: {_scalar(entity_id)}" + (f"   # {id_note}" if id_note else ""),
        *([f"  event_time: {_scalar(event_time)}"] if event_time else []),
        f"  target: {_scalar(target)}            # 1 = positive; scores are P(target = 1); sample positive rate "
        f"{positive_rate:.3f}",
        "  # Ranges are the sample's range widened by its span on each side (not below 0 where the sample has no "
        "negative",
        "  # value), so the normal tails of later nights are not quarantined. Tighten them to what is impossible, not "
        "rare.",
        "  features:",
    ]
    for feature in features:
        if feature.spec is None:
            out.append(f"    # {feature.name}: {feature.note}")
        else:
            out.append(f"    {_scalar(feature.name)}: {_flow(feature.spec)}   # {feature.note}")
    params = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": sizes.min_data_in_leaf,
        "verbose": -1,
        "seed": 7,
    }
    out += [
        "",
        "model:",
        f"  params: {_flow(params)}",
        "  num_boost_round: 200",
        "  holdout_fraction: 0.2",
        "  decision:",
        f"    threshold: {threshold}           # placeholder: the sample's positive rate; set it from what each kind "
        "of error costs",
        "    at_or_above_threshold: positive   # placeholder: name the action taken when the score is at or above the "
        "threshold",
        "    below_threshold: negative         # placeholder: the action below the threshold",
        "    undecided: refer                  # placeholder: the answer for rows nobody could score",
        "",
        "fallback:",
        "  segment_by: []          # category or bool features whose levels get their own fallback rate; [] = one "
        "overall rate",
        f"  min_segment_rows: {sizes.fallback_min_segment_rows}",
        "  answer_quarantined: true",
        "",
        "source:",
        "  landing: data/landing",
        f'  pattern: "{{date}}/*{file_suffix}"',
        "  labels: data/labels",
        "",
        "storage:",
        "  warehouse: data/warehouse.duckdb",
        "  models: data/models",
        "  dagster_home: data/dagster",
        "",
        "schedule:",
        f"  start_date: {start.isoformat()}"
        + ("   # the night after the sample's last" if shape.last_night else "   # set to the first night to run"),
        '  run_at: "02:00"',
        "  timezone: UTC",
        "",
        "checks:",
        "  volume_history_nights: 14",
        "  volume_min_history_nights: 3",
        f"  volume_tolerance: {sizes.volume_tolerance}   # allowed relative deviation of a night's rows from recent "
        "nights"
        + (
            f" (4 × the sample's night-to-night variation {shape.volume_cv:.2f}, at least 0.5)"
            if shape.volume_cv is not None
            else ""
        ),
        "  null_rate_spike: 0.05",
        "  max_fallback_rate: 0.05",
        "",
        "monitoring:",
        "  drift:",
        f"    report_sample_rows: {min(sizes.drift_sample_rows, 5000)}       # rows per side in the nightly drift "
        "report: about a night",
        f"    domain_classifier_rows: {sizes.drift_sample_rows}   # rows per side for the multivariate drift score: "
        "about a night",
        "  performance:",
        f"    min_labeled_rows: {sizes.min_labeled_rows}   # a quarter of a night's rows (30 to 200)",
        "    max_calibration_error: 0.05",
        "    business_value:            # placeholders: money per outcome; 'positive' = at or above the threshold",
        "      true_positive: 0",
        "      false_positive: 0",
        "      true_negative: 0",
        "      false_negative: 0",
        "  alerts:",
        "    webhook_url_env: NIGHTKEEPER_WEBHOOK_URL",
        "    rules:",
        *(f"      - {_flow(rule)}" for rule in generic_alert_rules()),
        "",
        "lifecycle:",
        f"  training_window_days: {sizes.training_window_days}   # about {TARGET_TRAINING_ROWS:,} rows' worth of "
        "nights (28 to 365)",
        "  include_review_labels: true",
        "  data_gate: " + _flow({"min_rows": sizes.data_gate_min_rows, "max_volume_ratio": sizes.max_volume_ratio}),
        "  promotion_gate:",
        f"    holdout_days: {sizes.holdout_days}   # about {TARGET_HOLDOUT_ROWS:,} rows' worth of nights",
        f"    min_segment_rows: {sizes.gate_min_segment_rows}",
        "    segments: []          # category features whose levels must each stay as good as the champion's",
        f"  rollout: {_flow({'canary_percents': sizes.canary_percents})}   # steps of at least {MIN_CANARY_ROWS} rows "
        "a night",
        "  behaviour:             # expectations you can state, tested on every candidate; none drafted",
        "    directions: {}       # e.g. {some_number: increasing}: the score may only rise as it grows",
        "    invariant: {}        # e.g. {some_feature: 0.05}: the score must barely move when it is shuffled",
        "  retrain_on_alert_categories: [performance]",
        "",
        "review:",
        "  band: 0.05",
        f"  capacity: {sizes.review_capacity}   # 4 % of a night's rows (10 to 500)",
        '  labels: ["0", "1"]',
        "  inbox: data/review/inbox",
        "",
    ]
    return "\n".join(_with_defaulted_sections(out))


def write_draft(
    sample_path: Path, target: str, entity_id: str | None = None, event_time: str | None = None, out: Path | None = None
) -> Path:
    """Draft a config from ``sample_path`` and write it to ``out`` (default: nightkeeper.yaml next to the sample).
    Never overwrites: raises DraftError if the file exists."""
    destination = out or sample_path.parent / "nightkeeper.yaml"
    if destination.exists():
        raise DraftError(f"{destination} exists; pass --out to write the draft elsewhere")
    text = draft_config_text(
        read_sample(sample_path),
        target,
        entity_id,
        event_time,
        name=sample_path.stem,
        file_suffix=".csv" if sample_path.suffix.lower() == ".csv" else ".parquet",
    )
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(text)
    return destination


def _with_defaulted_sections(lines: list[str]) -> list[str]:
    """``lines`` with every config section they leave out spelled out at its defaults, each under its parent, so the
    draft names every setting in force (and check-config reports no defaults) as sections are added to the config."""
    raw = yaml.safe_load("\n".join(lines))
    lines = list(lines)
    for path in _missing_sections(ProjectConfig, raw):
        section: Any = ProjectConfig.model_fields[path[0]].get_default(call_default_factory=True)
        for part in path[1:]:
            section = getattr(section, part)
        depth = len(path) - 1
        value = _flow(section.model_dump(mode="json"))
        line = f"{'  ' * depth}{path[-1]}: {value}   # defaults: nothing in the sample bears on them"
        lines.insert(_line_after_parent(lines, path[:-1]), line)
    return lines


def _missing_sections(model: type[BaseModel], raw: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the sub-sections (nested config models) ``raw`` leaves out, outermost only."""
    missing = []
    for name, field_info in model.model_fields.items():
        section = field_info.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue
        if not isinstance(raw, dict) or name not in raw:
            missing.append((*prefix, name))
        else:
            missing.extend(_missing_sections(section, raw[name], (*prefix, name)))
    return missing


def _line_after_parent(lines: list[str], parent: tuple[str, ...]) -> int:
    """Index just after the line opening section ``parent`` (the end of the file for the top level)."""
    index = -1
    for depth, name in enumerate(parent):
        index = next(i for i in range(index + 1, len(lines)) if lines[i].startswith(f"{'  ' * depth}{name}:"))
    return index + 1 if parent else len(lines)


def _positive_rate(sample: pl.DataFrame, target: str) -> float:
    labels = sample[target].drop_nulls()
    if labels.dtype == pl.Boolean:
        labels = labels.cast(pl.Int8)
    found = set(labels.unique().to_list())
    if labels.is_empty() or not found <= {0, 1}:
        raise DraftError(
            f"--target column {target!r}: expected labels 0 and 1 (or true/false), found {sorted(map(str, found))[:10]}"
        )
    return number(labels.mean())


def _entity_id(sample: pl.DataFrame, entity_id: str | None, target: str, event_time: str | None) -> tuple[str, str]:
    """The id column: the one given, else the first column named like an id whose values are unique."""
    if entity_id is not None:
        return entity_id, ""
    for column in sample.columns:
        if column not in (target, event_time) and "id" in column.lower() and sample[column].n_unique() == sample.height:
            return column, "guessed: unique in the sample and named like an id; pass --id to choose"
    raise DraftError("no --id given and no column named like an id is unique in the sample; pass --id COL")


def _looks_like_a_count(values: pl.Series, levels: list[int]) -> bool:
    """Values 0, 1, 2, … k whose top value is rare are a count with a thinning tail (a later night may well bring
    k + 1), not codes: drafted as an int with a range rather than a category that would quarantine a new top."""
    return (
        levels == list(range(len(levels)))
        and len(levels) > 2
        and number((values == levels[-1]).mean()) < COUNT_TAIL_SHARE
    )


def _widened(low: float, high: float) -> tuple[float, float]:
    span = (high - low) or max(abs(high), 1.0)
    return (max(0.0, low - span) if low >= 0 else low - span), high + span


def _round(value: float) -> float | int:
    rounded = float(f"{value:.6g}")
    return int(rounded) if rounded.is_integer() else rounded


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _flow(mapping: dict[str, Any]) -> str:
    return yaml.safe_dump(mapping, default_flow_style=True, sort_keys=False, width=10_000).strip()
