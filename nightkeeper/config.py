"""The project config: one YAML file holding the data contract, model, decision, fallback and storage settings.

Everything dataset-specific lives here, so the framework never names a column. ``load_config`` validates the
whole file at load and fails with a message naming the field, the value found and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from difflib import get_close_matches
from itertools import pairwise
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args, get_origin

import polars as pl
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nightkeeper.metric_names import check_alert_metric
from nightkeeper.warehouse import Lake, Location

logger = logging.getLogger(__name__)

CONFIG_ENV_VAR = "NIGHTKEEPER_CONFIG"
# libyaml's parser when PyYAML was built with it: ten times faster than the pure-Python one (0.01 s instead of 0.09 s
# for the shipped file), and every step of a night reads the config afresh
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_CONFIG_NAME = "nightkeeper.yaml"

FeatureDtype = Literal["float", "int", "bool", "category"]
# Columns every nightly table carries; a feature with one of these names would overwrite a row key.
RESERVED_COLUMNS = frozenset({"partition_date", "source_file", "row_number", "entity_id", "event_time", "record"})


class ConfigError(ValueError):
    """The config file is missing, unreadable or invalid; the message names the field and the bad value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One model input column and the row rules it must satisfy."""

    dtype: FeatureDtype
    required: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    unknown_category: Literal["quarantine", "missing"] = Field(
        "quarantine", description="What to do with a category level not in `categories`."
    )
    description: str = ""

    @field_validator("categories", mode="before")
    @classmethod
    def _integer_codes_as_text(cls, categories: Any) -> Any:
        # numeric category codes may be written unquoted ([1, 2, 3]); rows carry them as text ("1"), so compare as text
        if isinstance(categories, list):
            return [str(c) if isinstance(c, int) and not isinstance(c, bool) else c for c in categories]
        return categories

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.dtype == "category":
            if not self.categories:
                raise ValueError("a category feature needs a non-empty `categories` list")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"`categories` has duplicates: {self.categories}")
            if self.min is not None or self.max is not None:
                raise ValueError("`min`/`max` apply to numeric features only, not to dtype 'category'")
        elif self.categories is not None:
            raise ValueError(f"`categories` applies to dtype 'category' only, not to dtype {self.dtype!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"`min` ({self.min}) is greater than `max` ({self.max})")
        return self


# Scalar functions a cross-field rule may call (DuckDB's parse names; operators are functions too). Everything here
# is a pure function of its arguments: nothing reads files, the environment or other tables.
RULE_FUNCTIONS = frozenset(
    {
        "+",
        "-",
        "*",
        "/",
        "//",
        "%",
        "||",
        "~~",
        "!~~",
        "~~*",
        "!~~*",
        "abs",
        "ceil",
        "ceiling",
        "floor",
        "round",
        "sqrt",
        "cbrt",
        "ln",
        "log",
        "log2",
        "log10",
        "exp",
        "power",
        "pow",
        "sign",
        "mod",
        "greatest",
        "least",
        "nullif",
        "length",
        "char_length",
        "lower",
        "upper",
        "trim",
        "ltrim",
        "rtrim",
        "starts_with",
        "ends_with",
        "strpos",
        "substr",
        "substring",
        "left",
        "right",
        "concat",
        "reverse",
    }
)
_RULE_OPERATORS = frozenset(
    {
        "OPERATOR_NOT",
        "OPERATOR_IS_NULL",
        "OPERATOR_IS_NOT_NULL",
        "COMPARE_IN",
        "COMPARE_NOT_IN",
        "OPERATOR_COALESCE",
    }
)
_RULE_CLASSES = frozenset({"COLUMN_REF", "CONSTANT", "COMPARISON", "CONJUNCTION", "BETWEEN", "CASE", "CAST"})


def _parsed_select(sql: str) -> dict[str, Any]:
    import duckdb  # the parser only; nothing is executed

    (serialized,) = duckdb.execute("select json_serialize_sql(?)", [sql]).fetchall()[0]
    tree = json.loads(serialized)
    if tree.get("error"):
        raise ValueError(tree.get("error_message", "unparseable"))
    return tree


def rule_sql_problems(expression: str) -> list[str]:
    """What makes ``expression`` more than an expression over one row's columns; empty when it is only that.

    Parsed with DuckDB's parser as ``SELECT (<expression>)``: the statement must be that one SELECT with nothing but
    its single select item, and every node of the item must be a column name, a constant, an operator or one of
    RULE_FUNCTIONS.
    """
    try:
        tree = _parsed_select(f"select ({expression})")
    except Exception as exc:  # a parse error: refuse rather than guess what the expression would do
        return [f"text that is not a valid SQL expression ({exc})"]
    statements = tree.get("statements", [])
    if len(statements) != 1:
        return [f"{len(statements)} statements"]
    node = dict(statements[0]["node"])
    items = node.pop("select_list", [])
    baseline = dict(_parsed_select("select 1")["statements"][0]["node"])
    baseline.pop("select_list")
    if node != baseline or len(items) != 1:
        return ["SQL beyond one expression (FROM, WHERE, GROUP BY, a second item or similar)"]
    problems: list[str] = []
    _rule_nodes(items[0], problems)
    return list(dict.fromkeys(problems))


def _table_sources(node: Any) -> list[str]:
    """The tables and table functions (``read_csv('/some/file')``) a parsed subquery reads from."""
    found: list[str] = []
    if isinstance(node, list):
        for item in node:
            found += _table_sources(item)
    elif isinstance(node, dict):
        if node.get("type") == "TABLE_FUNCTION":
            function = node.get("function", {})
            arguments = [
                str(c.get("value", {}).get("value"))
                for c in function.get("children", [])
                if c.get("class") == "CONSTANT"
            ]
            found.append(f"{function.get('function_name')}({', '.join(repr(a) for a in arguments)})")
        elif node.get("type") == "BASE_TABLE":
            found.append(f"table {node.get('table_name')!r}")
        for value in node.values():
            found += _table_sources(value)
    return found


def _rule_nodes(node: Any, problems: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _rule_nodes(item, problems)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("class")
    if kind == "SUBQUERY":
        sources = sorted(set(_table_sources(node)))
        problems.append("a subquery" + (f" reading {', '.join(sources)}" if sources else ""))
        return
    if kind == "FUNCTION":
        name = str(node.get("function_name", "")).lower()
        if node.get("schema") or node.get("catalog") or name not in RULE_FUNCTIONS:
            qualified = ".".join(
                part for part in (node.get("catalog"), node.get("schema"), node.get("function_name")) if part
            )
            allowed = ", ".join(sorted(f for f in RULE_FUNCTIONS if f.isidentifier()))
            problems.append(f"function {qualified!r} (allowed functions: {allowed})")
            return
    elif kind == "OPERATOR" and node.get("type") not in _RULE_OPERATORS:
        problems.append(f"operator {node.get('type')}")
        return
    elif kind == "COLUMN_REF" and len(node.get("column_names", [])) != 1:
        problems.append(f"qualified name {'.'.join(node['column_names'])!r}")
        return
    elif kind is not None and kind not in _RULE_CLASSES and kind != "OPERATOR":
        problems.append(f"{kind.lower().replace('_', ' ')} {node.get('type', '')}".strip())
        return
    for value in node.values():
        _rule_nodes(value, problems)


class CrossFieldRule(_Strict):
    """A row rule over several columns: a SQL expression that must hold for the row to be valid.

    The expression sees the row's own columns only: column names, constants, comparisons, AND/OR/NOT, IN, BETWEEN,
    LIKE, IS [NOT] NULL, CASE, CAST, arithmetic and the scalar functions in RULE_FUNCTIONS. Subqueries, table
    functions (``read_csv``...), any other function (``getenv``...) and qualified names are refused at load, so a
    config cannot make the nightly run read files or query the warehouse.
    """

    name: str
    expression: str = Field(description="SQL boolean expression over feature names, e.g. 'loan_amount <= 20 * income'.")
    description: str = ""

    @field_validator("expression")
    @classmethod
    def _parses(cls, expression: str, info: ValidationInfo) -> str:
        # checked before polars sees it: polars' SQL parser already executes table functions such as read_csv
        refused = rule_sql_problems(expression)
        if refused:
            raise ValueError(
                f"rule {info.data.get('name', '?')!r} must be an expression over the row's columns only; "
                f"found {'; '.join(refused)}"
            )
        try:
            pl.sql_expr(expression)
        except Exception as exc:  # polars raises several error types for bad SQL
            raise ValueError(f"not a valid SQL expression ({exc})") from exc
        return expression

    def columns(self) -> list[str]:
        return pl.sql_expr(self.expression).meta.root_names()


class Contract(_Strict):
    """What one input row looks like: identity, time, label and the features with their rules."""

    entity_id: str
    event_time: str | None = None
    target: str
    features: dict[str, FeatureSpec]
    rules: list[CrossFieldRule] = []

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        if not self.features:
            raise ValueError("`features` must name at least one feature")
        clashing = sorted(set(self.features) & RESERVED_COLUMNS)
        if clashing:
            raise ValueError(
                f"feature name(s) {clashing} are reserved for Nightkeeper's own columns {sorted(RESERVED_COLUMNS)}; "
                "rename them"
            )
        special = {"entity_id": self.entity_id, "event_time": self.event_time, "target": self.target}
        for role, column in special.items():
            if column is not None and column in self.features:
                raise ValueError(f"{role} column {column!r} must not also be listed as a feature")
        for rule in self.rules:
            unknown = [c for c in rule.columns() if c not in self.features]
            if unknown:
                raise ValueError(
                    f"rule {rule.name!r} uses {unknown}, which are not features; features are {list(self.features)}"
                )
        return self

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)


class DecisionConfig(_Strict):
    """How a score becomes a decision. Scores are the probability of the positive class (target == 1)."""

    threshold: float = Field(0.5, gt=0, lt=1)
    at_or_above_threshold: str = "positive"
    below_threshold: str = "negative"
    undecided: str = Field("refer", description="Decision for rows nobody could answer (quarantined, no fallback).")

    @model_validator(mode="after")
    def _distinct(self) -> DecisionConfig:
        labels = [self.at_or_above_threshold, self.below_threshold, self.undecided]
        if len(set(labels)) != 3:
            raise ValueError(f"decision labels must be distinct, got {labels}")
        return self


class ModelConfig(_Strict):
    """LightGBM training parameters and the scoring budget."""

    params: dict[str, Any] = Field(
        default_factory=lambda: {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31}
    )
    num_boost_round: int = Field(200, ge=1)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    decision: DecisionConfig = DecisionConfig()
    chunk_rows: int = Field(50_000, ge=1, description="Rows scored per chunk; bounds scoring memory.")
    time_budget_seconds: float = Field(
        300.0, gt=0, description="Wall time the model may take for a whole night before the fallback answers instead."
    )
    reason_codes: Literal["scoped", "all", "none"] = Field(
        "scoped",
        description="Which answers get reason codes (exact TreeSHAP, ~100× a prediction): 'scoped' = declined and "
        "near-threshold (review band) answers, 'all' = every answer, 'none'.",
    )
    reason_code_count: int = Field(3, ge=1, le=20)

    @field_validator("params")
    @classmethod
    def _binary(cls, params: dict[str, Any]) -> dict[str, Any]:
        objective = params.get("objective", "binary")
        if objective not in ("binary", "cross_entropy", "xentropy"):
            raise ValueError(f"objective {objective!r} is not supported; expected 'binary' (binary classification)")
        return params


class FallbackConfig(_Strict):
    """The simple rule that answers when the model cannot: a positive rate per segment, fitted with each model."""

    segment_by: list[str] = []
    min_segment_rows: int = Field(50, ge=1)
    answer_quarantined: bool = Field(
        True, description="Answer quarantined rows whose segment columns are valid, instead of leaving them undecided."
    )


class SourceConfig(_Strict):
    """Where nightly input files land and where late labels arrive."""

    landing: Path = Path("data/landing")
    pattern: str = Field("{date}/*.parquet", description="Glob under `landing`; {date} is the night as YYYY-MM-DD.")
    labels: Path = Path("data/labels")

    @field_validator("pattern")
    @classmethod
    def _has_date(cls, pattern: str) -> str:
        if "{date}" not in pattern:
            raise ValueError("must contain the placeholder {date}")
        parts = PurePosixPath(pattern.replace("\\", "/")).parts
        if pattern.startswith(("/", "\\", "~")) or (parts and ":" in parts[0]) or ".." in parts:
            raise ValueError(
                "must stay inside the landing folder: a relative glob without '..', e.g. '{date}/*.parquet'"
            )
        if not pattern.lower().endswith((".parquet", ".csv", "*")):
            raise ValueError("must match .parquet or .csv files")
        return pattern


class LakeConfig(_Strict):
    """A DuckLake warehouse (``storage.kind: ducklake``): its catalog in a PostgreSQL database, its tables' data as
    Parquet files under ``data_path``. Several processes and machines can write it at once."""

    catalog: str = Field(
        description="libpq connection string of the PostgreSQL database holding the lake's catalog, e.g. "
        "'dbname=nightkeeper host=pg.internal port=5432 user=nightkeeper'. Left-out fields and the password come from "
        "libpq's environment (PGHOST, PGUSER, PGPASSWORD, ~/.pgpass), never from this file."
    )
    data_path: str = Field(
        description="Where the lake's Parquet files go: a folder (relative to this file) every writer sees, or an "
        "object-storage URL such as 's3://bucket/nightkeeper/'. Fixed when the lake is created."
    )

    @field_validator("catalog")
    @classmethod
    def _no_password(cls, catalog: str) -> str:
        if re.search(r"(^|\s)password\s*=", catalog, flags=re.IGNORECASE):
            raise ValueError("must not hold a password: set PGPASSWORD or use ~/.pgpass (libpq reads both)")
        return catalog

    @field_validator("data_path")
    @classmethod
    def _not_empty(cls, data_path: str) -> str:
        if not data_path.strip():
            raise ValueError("must name a folder or an object-storage URL, e.g. 'data/lake/' or 's3://bucket/lake/'")
        return data_path


class StorageConfig(_Strict):
    """Where the warehouse, the model artifacts and the Dagster home are.

    The warehouse is one embedded DuckDB file by default (``kind: duckdb_file``, at ``warehouse``: one process opens
    it at a time), or a DuckLake (``kind: ducklake``, described by ``lake``) that several processes and machines
    write at once.
    """

    kind: Literal["duckdb_file", "ducklake"] = Field(
        "duckdb_file",
        description="'duckdb_file' = the single DuckDB file at `warehouse`; 'ducklake' = a DuckLake with a PostgreSQL "
        "catalog and Parquet data files, configured in `lake` (needs `pip install nightkeeper[lake]`).",
    )
    lake: LakeConfig | None = Field(None, description="The DuckLake's catalog and data path; only with kind ducklake.")
    warehouse: Path = Path("data/warehouse.duckdb")
    models: Path = Path("data/models")
    dagster_home: Path = Path("data/dagster")
    lock_wait_seconds: float = Field(
        900.0,
        gt=0,
        description="How long a run or command waits for the warehouse (held by another run) before it gives up with "
        "an error naming the holder.",
    )

    @model_validator(mode="after")
    def _lake_matches_kind(self) -> StorageConfig:
        if self.kind == "ducklake" and self.lake is None:
            raise ValueError("kind 'ducklake' needs a `lake:` section with `catalog` and `data_path`")
        if self.kind == "duckdb_file" and self.lake is not None:
            raise ValueError(f"`lake:` is set but kind is {self.kind!r}; set `kind: ducklake` to use the lake")
        return self


class ScaleConfig(_Strict):
    """How a night is split to run on several processes or machines at once.

    ``shards``: the number of parts a night is split into by a stable hash of the entity id (the contract's
    ``entity_id`` column; ``nightkeeper.sharding.shard_of`` says which hash). Every row of an id lands in the same
    shard on every night, machine and Python version; 1 (the default) runs the night whole.
    ``chunk_rows``: how many of a night's rows the answer steps (``nightkeeper.pipeline.chunked``) hold at a time.
    """

    shards: int = Field(
        1,
        ge=1,
        le=1024,
        description="Parts a night is split into by a stable hash of the entity id (1 = the night runs whole).",
    )
    chunk_rows: int = Field(
        200_000,
        ge=1,
        description="Rows of a night read, validated, scored, answered and stored at a time (the answer steps' "
        "working memory is about this many rows whatever the night's size).",
    )


class ScheduleConfig(_Strict):
    """The nightly calendar: the first night there is data for, and when each night's batch runs."""

    start_date: dt.date = dt.date(2026, 1, 1)
    run_at: dt.time = Field(
        dt.time(2, 0), description="Time of day (in `timezone`) the batch for the previous night runs."
    )
    timezone: str = "UTC"
    cadence: Literal["daily", "weekly"] = Field(
        "daily",
        description="How often a batch lands: 'daily' = one partition per night; 'weekly' = one partition per week, "
        "keyed by the date its week starts (start_date's weekday), run once the week is over.",
    )
    cron: str | None = Field(
        None,
        description="Overrides when the batch schedule ticks (a cron expression in `timezone`; default: derived from "
        "run_at and cadence). Each tick still runs the last night (or week) that is over at the tick, once, so a "
        "tick every minute ('* * * * *', as the daemon test uses) runs each night as soon as it ends.",
    )


class BatchCheckConfig(_Strict):
    """Thresholds of the batch-level asset checks."""

    volume_history_nights: int = Field(14, ge=1)
    volume_min_history_nights: int = Field(3, ge=1)
    volume_tolerance: float = Field(
        0.5, gt=0, description="Allowed relative deviation from the median of recent nights."
    )
    null_rate_spike: float = Field(0.05, gt=0, le=1, description="Allowed absolute rise of a feature's null rate.")
    max_fallback_rate: float = Field(0.05, ge=0, le=1)


class DriftConfig(_Strict):
    """How drift is measured against the champion's reference profile."""

    bins: int = Field(10, ge=2, le=100, description="Quantile bins of a numeric feature's reference distribution.")
    reference_chunks: int = Field(
        20, ge=4, description="Chunks the reference data is cut into to learn each statistic's ordinary variation."
    )
    threshold_sigmas: float = Field(
        4.0, gt=0, description="A feature drifts when its statistic exceeds mean + k·σ over reference chunks."
    )
    psi_floor: float = Field(
        0.05, ge=0, description="Smallest PSI threshold a fitted one may take (avoids hair triggers)."
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="PSI threshold per feature, overriding the fitted one."
    )
    report_sample_rows: int = Field(5000, ge=100, description="Rows per side in the human-facing evidently report.")
    domain_classifier_rows: int = Field(
        10000, ge=200, description="Rows per side for the multivariate domain classifier."
    )
    max_domain_auc: float = Field(
        0.6, gt=0.5, le=1, description="Domain-classifier AUC above which tonight is told apart from the reference."
    )
    evidently_report: bool = Field(True, description="Render evidently's HTML drift report each night (a few seconds).")
    keep_report_nights: int | None = Field(
        30,
        ge=1,
        description="Nights of evidently HTML reports kept (about 4.6 MB a night): the drift step deletes the reports "
        "of nights this many days or more before tonight's; null keeps every night's.",
    )


class BusinessValue(_Strict):
    """Money per decision outcome; positive = gain. 'positive' is the at-or-above-threshold decision."""

    true_positive: float = 0.0
    false_positive: float = 0.0
    true_negative: float = 0.0
    false_negative: float = 0.0

    def money(self, true_positives: Any, false_positives: Any, true_negatives: Any, false_negatives: Any) -> Any:
        """The money of a confusion matrix: each count times its cell's value, summed. The one business-value
        formula: counts may be numbers, numpy arrays, expected (fractional) counts or polars expressions, and so is
        the result."""
        return (
            true_positives * self.true_positive
            + false_positives * self.false_positive
            + true_negatives * self.true_negative
            + false_negatives * self.false_negative
        )


class PerformanceConfig(_Strict):
    """Realized performance once labels land, estimated performance before."""

    min_labeled_rows: int = Field(200, ge=1, description="Fewest labeled rows a night needs for realized metrics.")
    max_calibration_error: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Expected calibration error above which estimated performance is flagged untrustworthy.",
    )
    max_estimate_auc_gap: float = Field(
        0.03,
        gt=0,
        le=1,
        description="Largest |estimated - realized AUC| on the serving model's latest labeled rows (or its holdout) "
        "for which the estimate (CBPE) is still trusted to drive health checks and alerts.",
    )
    estimate_noise_z: float = Field(
        2.0,
        ge=0,
        description="Standard errors of one night's realized AUC (at its row count) added to the estimate's known bias "
        "before comparing with max_estimate_auc_gap: a small night's AUC cannot be promised within the gap.",
    )
    max_positive_rate_gap: float = Field(
        0.03,
        gt=0,
        le=1,
        description="Largest |mean score - realized base rate| on the latest labeled rows for which the estimate is "
        "trusted.",
    )
    drop_noise_z: float = Field(
        2.5,
        ge=0,
        description="Standard errors of the difference between the champion's holdout AUC and the pooled realized AUC "
        "that the realized AUC drop must exceed to count (performance.realized_auc_drop_beyond_noise, 0 below): "
        "small nights must fall further before the drop pages.",
    )
    business_value: BusinessValue = BusinessValue()


class AlertRule(_Strict):
    """An alert: open when ``metric <comparison> threshold`` held for ``sustained_nights`` nights in a row."""

    name: str
    metric: str = Field(description="A nightly metric name, e.g. 'drift.drifted_share' or 'performance.estimated_auc'.")
    comparison: Literal[">", ">=", "<", "<="]
    threshold: float
    sustained_nights: int = Field(1, ge=1)
    severity: Literal["info", "warning", "critical"] = "warning"
    category: Literal["performance", "drift", "data_quality", "operations"]
    runbook: str = Field("", description="Anchor of this alert's section in docs/runbook.md.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        check_alert_metric(metric)  # a misspelt metric would load and never fire
        return metric


class AlertingConfig(_Strict):
    """Where alerts go besides the log and the warehouse, and which rules raise them."""

    webhook_url_env: str = Field(
        "NIGHTKEEPER_WEBHOOK_URL", description="Environment variable holding the webhook URL (never logged)."
    )
    webhook_timeout_seconds: float = Field(5.0, gt=0)
    rules: list[AlertRule] = []

    @model_validator(mode="after")
    def _unique_names(self) -> AlertingConfig:
        names = [rule.name for rule in self.rules]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"alert rule names must be unique; repeated: {duplicated}")
        return self


class MonitoringConfig(_Strict):
    drift: DriftConfig = DriftConfig()
    performance: PerformanceConfig = PerformanceConfig()
    alerts: AlertingConfig = AlertingConfig()


class ReviewConfig(_Strict):
    """The human review queue.

    ``band``: a model answer enters the queue when ``|score - threshold| <= band``. ``capacity``: most rows queued
    per night (0 switches the queue off). ``include_quarantined``: also queue quarantined rows a person could decide.
    ``labels``: the label values a reviewer may write, as text; each must be a whole number in [-128, 127]
    (labels are stored as Int8, like the target).
    """

    band: float = Field(0.1, ge=0, le=1)
    capacity: int = Field(200, ge=0)
    include_quarantined: bool = True
    labels: list[str] = Field(default_factory=lambda: ["0", "1"])
    inbox: Path = Field(Path("data/review/inbox"), description="Folder a sensor watches for filled-in review CSVs.")

    @field_validator("labels")
    @classmethod
    def _integer_labels(cls, labels: list[str]) -> list[str]:
        if not labels:
            raise ValueError("must name at least one label")
        if len(set(labels)) != len(labels):
            raise ValueError(f"has duplicates: {labels}")
        label_values(labels)
        return labels


def label_values(labels: list[str]) -> dict[str, int]:
    """Each allowed label text and its Int8 value; raises ValueError for a label that is not a small whole number."""
    values: dict[str, int] = {}
    for text in labels:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ValueError(f"label {text!r} is not a whole number; labels are stored as Int8") from None
        if not -128 <= value <= 127:
            raise ValueError(f"label {text!r} is outside the Int8 range [-128, 127]")
        values[str(text).strip()] = value
    return values


class TrainingDataGateConfig(_Strict):
    """Sanity of a retraining window before any model is fitted on it."""

    min_rows: int = Field(2000, ge=100, description="Fewest labeled rows a retrain may use.")
    max_volume_ratio: float = Field(
        1.5, gt=1, description="A night with more than this × the window's median volume is suspect."
    )
    max_label_rate_shift: float = Field(
        0.15,
        gt=0,
        le=1,
        description="A night whose label rate differs from the window's median by more than this is suspect.",
    )
    max_duplicate_share: float = Field(
        0.05,
        gt=0,
        le=1,
        description="A night whose share of rows repeating a near-identical feature vector exceeds the window's median "
        "share by more than this (and by more than outlier_mads spreads) is suspect.",
    )
    outlier_mads: float = Field(
        5.0,
        gt=0,
        description="How many robust spreads (scaled median absolute deviations over the window's nights) a night's "
        "volume or duplicate share must lie above the median to be suspect: the dataset's own nights set the standard.",
    )
    max_excluded_share: float = Field(
        0.3, gt=0, le=1, description="Refuse the retrain if suspect nights hold more than this share of rows."
    )
    min_nights_to_judge: int = Field(
        5, ge=2, description="Fewer labeled nights than this give no median to judge a night by."
    )


class PromotionGateConfig(_Strict):
    """The never-worse gate: a candidate must not lose to the champion on the same labeled holdout."""

    holdout_days: int = Field(
        3,
        ge=1,
        description="Most recent labeled nights both models are evaluated on (the candidate trains on the nights "
        "before).",
    )
    auc_tolerance: float = Field(
        0.0,
        ge=0,
        description="The bootstrap CI's lower bound of (candidate − champion) AUC must exceed −this. 0 asks for "
        "evidence that the candidate is better: on a holdout of a few thousand rows the CI is about ±0.01 wide, so a "
        "rule of 'not worse within noise' lets an equal or slightly worse model (one trained on fewer rows than the "
        "champion) through about half the time, and each promotion of noise costs AUC for good.",
    )
    bootstrap_samples: int = Field(200, ge=20)
    segments: list[str] = Field(
        default_factory=list, description="Category features whose levels are checked one by one."
    )
    segment_auc_tolerance: float = Field(0.03, ge=0)
    min_segment_rows: int = Field(300, ge=10)
    brier_tolerance: float = Field(0.002, ge=0)
    business_value_tolerance: float = Field(0.02, ge=0, description="Allowed relative loss of business value.")
    max_latency_ratio: float = Field(2.0, gt=0)


class RolloutConfig(_Strict):
    """Shadow, canary steps and the health a challenger must keep to advance."""

    shadow_nights: int = Field(3, ge=1)
    canary_percents: list[int] = Field(default_factory=lambda: [1, 5, 20, 100])
    nights_per_step: int = Field(2, ge=1)
    max_error_rate: float = Field(0.0, ge=0, le=1, description="Share of rows the challenger may fail to score.")
    max_fallback_rate_increase: float = Field(
        0.01,
        ge=0,
        description="Share of rows the challenger may leave to the fallback beyond those the champion leaves.",
    )
    max_realized_auc_drop: float = Field(
        0.01,
        ge=0,
        description="Realized AUC the challenger may lose against the champion on the same labeled rows of "
        "its rollout's nights (judged once min_labeled_rows labels of both classes have landed).",
    )
    min_labeled_rows: int = Field(
        200, ge=1, description="Labeled rows of the rollout's nights before realized AUC judges it."
    )
    max_estimated_auc_drop: float = Field(
        0.02,
        ge=0,
        description="Estimated (CBPE) AUC the challenger may lose against the champion tonight; judged only while the "
        "estimate is trusted (metric performance.estimate_trusted = 1) and realized AUC is not yet available.",
    )
    min_agreement: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Catastrophic floor on the share of rows where the challenger makes the champion's "
        "decision. Agreement is reported every night but is no health rule above this floor: a model that fixes a "
        "shift must change decisions.",
    )

    @field_validator("canary_percents")
    @classmethod
    def _increasing_to_100(cls, percents: list[int]) -> list[int]:
        if not percents or percents[-1] != 100 or any(b <= a for a, b in pairwise(percents)) or percents[0] <= 0:
            raise ValueError("must be strictly increasing percentages ending at 100, e.g. [1, 5, 20, 100]")
        return percents


class BehaviourConfig(_Strict):
    """Model-specific tests run on every candidate: expectations a person can state about the model's behaviour."""

    directions: dict[str, Literal["increasing", "decreasing"]] = Field(
        default_factory=dict,
        description="Per numeric feature: how the score may move as the feature grows (e.g. income: decreasing).",
    )
    enforce_directions: bool = Field(True, description="Also pass the directions to LightGBM as monotone constraints.")
    invariant: dict[str, float] = Field(
        default_factory=dict,
        description="Per feature: the largest mean |score change| allowed when its values are shuffled.",
    )
    max_violation_share: float = Field(0.01, ge=0, le=1, description="Share of rows that may break a direction.")
    sample_rows: int = Field(2000, ge=50)


class RetrainPolicyConfig(_Strict):
    """When a retrain is requested besides the monthly schedule, and how often at most."""

    cooldown_nights: int = Field(
        7,
        ge=1,
        description="After a retrain that trained a candidate (any trigger, any verdict) the next may look back from "
        "this many nights later. A window the training-data gate refused is tried again the next night.",
    )
    on_persistent_drift: bool = Field(
        False, description="Also retrain when a drift alert has stayed open for drift_persistence_nights."
    )
    drift_persistence_nights: int = Field(
        7, ge=1, description="Nights a drift alert must have been open to count as persistent."
    )


class LifecycleConfig(_Strict):
    """Retraining, its gates and the rollout of a new model."""

    training_window_days: int = Field(90, ge=7)
    include_review_labels: bool = True
    data_gate: TrainingDataGateConfig = TrainingDataGateConfig()
    promotion_gate: PromotionGateConfig = PromotionGateConfig()
    rollout: RolloutConfig = RolloutConfig()
    behaviour: BehaviourConfig = BehaviourConfig()
    retrain_on_alert_categories: list[Literal["performance", "drift", "data_quality", "operations"]] = Field(
        ["performance"],  # pydantic copies a mutable default for each instance
        description="Alert categories whose open alerts trigger a retrain.",
    )
    retrain: RetrainPolicyConfig = RetrainPolicyConfig()


class ProjectConfig(_Strict):
    """The whole project config. Relative paths resolve against the config file's folder."""

    name: str
    contract: Contract
    model: ModelConfig = ModelConfig()
    fallback: FallbackConfig = FallbackConfig()
    source: SourceConfig = SourceConfig()
    storage: StorageConfig = StorageConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    checks: BatchCheckConfig = BatchCheckConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    review: ReviewConfig = ReviewConfig()
    scale: ScaleConfig = ScaleConfig()
    _root: Path = PrivateAttr(default=Path("."))
    _defaulted: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _fallback_segments_are_categories(self) -> ProjectConfig:
        for column in self.fallback.segment_by:
            spec = self.contract.features.get(column)
            if spec is None or spec.dtype not in ("category", "bool"):
                raise ValueError(
                    f"fallback.segment_by: {column!r} must be a category or bool feature of the contract; "
                    f"those are {[n for n, s in self.contract.features.items() if s.dtype in ('category', 'bool')]}"
                )
        return self

    @model_validator(mode="after")
    def _behaviour_names_features(self) -> ProjectConfig:
        behaviour = self.lifecycle.behaviour
        for name in [*behaviour.directions, *behaviour.invariant]:
            if name not in self.contract.features:
                raise ValueError(
                    f"lifecycle.behaviour: {name!r} is not a feature; features are {self.contract.feature_names}"
                )
        for name in behaviour.directions:
            if self.contract.features[name].dtype not in ("float", "int", "bool"):
                raise ValueError(
                    f"lifecycle.behaviour.directions: {name!r} must be numeric or bool to have a direction"
                )
        return self

    @model_validator(mode="after")
    def _alert_metrics_name_features(self) -> ProjectConfig:
        for index, rule in enumerate(self.monitoring.alerts.rules):
            try:
                check_alert_metric(rule.metric, self.contract.feature_names)
            except ValueError as exc:
                raise ValueError(f"monitoring.alerts.rules.{index}.metric: {exc}") from None
        return self

    @model_validator(mode="after")
    def _gate_segments_are_categories(self) -> ProjectConfig:
        for column in self.lifecycle.promotion_gate.segments:
            spec = self.contract.features.get(column)
            if spec is None or spec.dtype not in ("category", "bool"):
                raise ValueError(
                    f"lifecycle.promotion_gate.segments: {column!r} must be a category or bool feature of the contract"
                )
        return self

    @property
    def root(self) -> Path:
        return self._root

    @property
    def defaults_applied(self) -> list[str]:
        """One line per config section the file left out, naming it and the default values now in force.

        Empty when the file spells out every section; ``load_config`` logs these as a warning and ``check-config``
        prints them, so e.g. a config without ``model:`` does not silently decide at threshold 0.5.
        """
        lines = []
        for path in self._defaulted:
            section: Any = self
            for part in path.split("."):
                section = getattr(section, part)
            values = ", ".join(f"{key}={_plain(value)}" for key, value in _flattened(section))
            lines.append(f"{path}: not in the file; defaults apply: {values}")
        return lines

    def path(self, relative: Path) -> Path:
        """Resolve a configured path against the config file's folder."""
        return relative if relative.is_absolute() else (self._root / relative).resolve()

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file of ``storage.kind: duckdb_file`` (see ``warehouse`` for the store of either kind)."""
        return self.path(self.storage.warehouse)

    @property
    def warehouse(self) -> Location:
        """The warehouse to open with ``nightkeeper.warehouse.connect``: the DuckDB file, or the DuckLake with its
        local data folder resolved against the config file's folder."""
        lake = self.storage.lake
        if self.storage.kind == "duckdb_file" or lake is None:
            return self.warehouse_path
        data_path = lake.data_path if "://" in lake.data_path else str(self.path(Path(lake.data_path))) + "/"
        return Lake(catalog=lake.catalog, data_path=data_path)

    @property
    def models_path(self) -> Path:
        return self.path(self.storage.models)

    @property
    def landing_path(self) -> Path:
        return self.path(self.source.landing)

    @property
    def labels_path(self) -> Path:
        return self.path(self.source.labels)

    @property
    def dagster_home(self) -> Path:
        return self.path(self.storage.dagster_home)


def default_config_path() -> Path:
    """The config path: $NIGHTKEEPER_CONFIG if set, else ./nightkeeper.yaml."""
    return Path(os.environ.get(CONFIG_ENV_VAR, DEFAULT_CONFIG_NAME)).resolve()


def load_config(path: str | Path | None = None) -> ProjectConfig:
    """Read and validate a project config. Raises ConfigError naming the field, the value found and what is allowed."""
    config_path = Path(path).resolve() if path is not None else default_config_path()
    try:
        raw = yaml.load(config_path.read_text(), Loader=_YAML_LOADER)
    except FileNotFoundError:
        raise ConfigError(f"config file {config_path} does not exist (set {CONFIG_ENV_VAR} or pass its path)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: expected a mapping at the top level, found {type(raw).__name__}")
    config = parse_config(raw, root=config_path.parent, source=str(config_path))
    for line in config.defaults_applied:
        logger.warning("%s: %s", config_path.name, line)
    return config


def parse_config(raw: dict[str, Any], root: Path, source: str = "config") -> ProjectConfig:
    """Validate a config given as a mapping; relative paths resolve against ``root``."""
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    config._root = Path(root).resolve()
    config._defaulted = tuple(_missing_sections(ProjectConfig, raw))
    return config


def _missing_sections(model: type[BaseModel], raw: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the sub-sections (nested config models) ``raw`` leaves out, outermost only."""
    missing: list[str] = []
    for name, field in model.model_fields.items():
        section = (
            field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        )
        if section is None:
            continue
        if not isinstance(raw, dict) or name not in raw:
            missing.append(f"{prefix}{name}")
        else:
            missing += _missing_sections(section, raw[name], f"{prefix}{name}.")
    return missing


def _flattened(section: BaseModel, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted field, value) of every setting of ``section``, nested sections spelled out."""
    pairs: list[tuple[str, Any]] = []
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            pairs += _flattened(value, f"{prefix}{name}.")
        else:
            pairs.append((f"{prefix}{name}", value))
    return pairs


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid field(s)"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        found = _shown(item["input"])
        if item["type"] == "missing":
            lines.append(f"  {field}: missing; this field is required")
        elif item["type"] == "extra_forbidden":
            allowed = _allowed_fields(item["loc"][:-1])
            hint = get_close_matches(str(item["loc"][-1]), allowed, n=1)
            lines.append(
                f"  {field}: found {found}; this field is not allowed here"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + (f"; allowed fields: {', '.join(allowed)}" if allowed else "")
            )
        else:
            lines.append(f"  {field}: found {found}; {message}")
    return "\n".join(lines)


def _plain(value: Any) -> str:
    """A default value as the YAML a person would write for it."""
    if isinstance(value, (dt.date, dt.time, Path)):
        return str(value)
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _shown(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _allowed_fields(location: tuple[Any, ...]) -> list[str]:
    """The field names of the config model found at ``location`` (keys of dicts and list indexes are stepped over)."""
    annotation: Any = ProjectConfig
    for part in location:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    model = _model_of(annotation)
    return list(model.model_fields) if model else []


def _step(annotation: Any, part: Any) -> Any:
    model = _model_of(annotation)
    if model is not None:
        field = model.model_fields.get(str(part))
        return field.annotation if field else None
    args = get_args(annotation)
    if get_origin(annotation) in (dict, list) and args:
        return args[-1]
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):  # Optional[Model] and the like
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
