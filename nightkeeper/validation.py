"""Row-level validation: parse the raw text records against the contract and quarantine every rule a row breaks.

Nothing is dropped. Each raw row either becomes one typed row of ``valid`` or appears in ``quarantine`` once per
rule it breaks, with the column, the rule, the offending text value and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from nightkeeper.config import Contract, FeatureSpec
from nightkeeper.frames import conform
from nightkeeper.ingest import FILE_ERROR_KEY, FILE_ROW, file_errors, record_columns

ROW_KEY = ["source_file", "row_number"]
KEY_COLUMNS = ["partition_date", "source_file", "row_number", "entity_id"]

QUARANTINE_SCHEMA = pl.Schema(
    {
        "partition_date": pl.Date(),
        "source_file": pl.String(),
        "row_number": pl.Int64(),
        "entity_id": pl.String(),
        "column": pl.String(),
        "rule": pl.String(),
        "value": pl.String(),
        "expected": pl.String(),
    }
)

MISSING_COLUMN_VALUE = "<column missing from file>"
UNREADABLE_FILE = "unreadable_file"
"""The rule of the one quarantine row an unreadable file gets (its ``column`` is FILE_COLUMN, ``value`` the reason)."""
FILE_COLUMN = "(file)"
EVENT_TIME_EXPECTED = "a date-time such as 2026-01-01T09:30:00 (ISO 8601; a date alone, a Z or a ±hh:mm offset also do)"
# the formats an event time may come in; an offset is converted to UTC and then dropped, like every stored time
_NAIVE_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M")
_ZONED_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%:z")
DECODE_SLICE_ROWS = 50_000
_TRUE = ["true", "t", "yes", "y", "1", "1.0"]
_FALSE = ["false", "f", "no", "n", "0", "0.0"]


@dataclass(frozen=True)
class ValidationResult:
    """``valid``: typed rows that broke no rule. ``quarantine``: one row per (row, broken rule).

    ``null_rates`` is each feature's share of empty values over all rows, before quarantine, for the batch checks.
    """

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    null_rates: dict[str, float]

    @property
    def quarantined_rows(self) -> int:
        return self.quarantine.select(ROW_KEY).unique().height


def valid_schema(contract: Contract) -> dict[str, pl.DataType]:
    """The column types of the validated batch for ``contract``."""
    schema: dict[str, pl.DataType] = {
        "partition_date": pl.Date(),
        "source_file": pl.String(),
        "row_number": pl.Int64(),
        "entity_id": pl.String(),
    }
    if contract.event_time:
        schema["event_time"] = pl.Datetime("us")
    schema.update({name: polars_dtype(spec) for name, spec in contract.features.items()})
    return schema


def polars_dtype(spec: FeatureSpec) -> pl.DataType:
    return {"float": pl.Float64(), "int": pl.Int64(), "bool": pl.Boolean(), "category": pl.String()}[spec.dtype]


def validate(raw: pl.DataFrame, contract: Contract) -> ValidationResult:
    """Validate a raw batch (see nightkeeper.ingest.RAW_SCHEMA) against ``contract``.

    An unreadable file's one raw row (``row_number`` FILE_ROW) is quarantined once, with rule UNREADABLE_FILE,
    column FILE_COLUMN and the reason as the value; no other rule is applied to it. An ``event_time`` that is
    present but not a date-time quarantines its row (rule ``type``); an empty one is allowed.
    """
    raw = raw.sort(ROW_KEY)  # storage does not keep row order; "first" of a duplicated id means earliest in its file
    unreadable = file_errors(raw)
    raw = raw.filter(pl.col("row_number") != FILE_ROW)
    texts = decode_records(raw, [*contract.features, *([contract.event_time] if contract.event_time else [])])
    parsed = texts.with_columns(parse_feature(name, spec).alias(name) for name, spec in contract.features.items())
    if contract.event_time:
        parsed = parsed.with_columns(parse_event_time(contract.event_time).alias("event_time"))
    files_by_column = _files_missing_each_column(raw, list(contract.features))
    violations = [
        _file_violations(unreadable),
        *_entity_id_violations(parsed, contract.entity_id),
        *(
            v
            for name, spec in contract.features.items()
            for v in _feature_violations(parsed, name, spec, files_by_column[name])
        ),
        *(_cross_field_violations(parsed, rule.name, rule.expression, rule.columns()) for rule in contract.rules),
        *([_event_time_violations(parsed, contract.event_time)] if contract.event_time else []),
    ]
    quarantine = (
        pl.concat([v.cast(QUARANTINE_SCHEMA) for v in violations])
        if violations
        else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    )
    quarantine = quarantine.sort([*ROW_KEY, "column", "rule"])

    valid = parsed.join(quarantine.select(ROW_KEY).unique(), on=ROW_KEY, how="anti")
    valid = conform(valid, valid_schema(contract))

    null_rates = {
        name: (texts.select(pl.col(f"__text_{name}").is_null().mean()).item() or 0.0) if texts.height else 0.0
        for name in contract.features
    }
    return ValidationResult(valid=valid, quarantine=quarantine, null_rates=null_rates)


def decode_records(raw: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """The raw keys plus each of ``columns`` as stripped text in ``__text_<column>`` (empty text becomes null)."""
    struct = pl.Struct({name: pl.String for name in columns})
    fields = [
        pl.col("__record").struct.field(name).str.strip_chars().replace("", None).alias(f"__text_{name}")
        for name in columns
    ]
    # decoded a slice at a time: one decode of a whole 1M-row night holds ~3 GB of intermediate structs at once
    slices = [
        part.select(*KEY_COLUMNS, pl.col("record").str.json_decode(struct).alias("__record")).select(
            *KEY_COLUMNS, *fields
        )
        for part in raw.iter_slices(DECODE_SLICE_ROWS)
    ]
    return (
        pl.concat(slices)
        if slices
        else raw.select(*KEY_COLUMNS, *(pl.lit(None, dtype=pl.String).alias(f"__text_{c}") for c in columns))
    )


def parse_feature(name: str, spec: FeatureSpec) -> pl.Expr:
    """The typed value of feature ``name`` from its text; null when empty or unparseable or (if so configured)
    unknown."""
    text = pl.col(f"__text_{name}")
    if spec.dtype == "float":
        number = text.cast(pl.Float64, strict=False)
        return pl.when(number.is_finite()).then(number)
    if spec.dtype == "int":
        number = text.cast(pl.Float64, strict=False)
        return pl.when(number.is_finite() & (number.round() == number)).then(number).cast(pl.Int64, strict=False)
    if spec.dtype == "bool":
        lowered = text.str.to_lowercase()
        return pl.when(lowered.is_in(_TRUE)).then(True).when(lowered.is_in(_FALSE)).then(False).otherwise(None)
    return pl.when(text.is_in(spec.categories or [])).then(text)


def parse_event_time(name: str) -> pl.Expr:
    """The event time ``name`` from its text as a naive UTC datetime; null when empty or not a date-time."""
    text = pl.col(f"__text_{name}").str.replace(r"[Zz]$", "+00:00")
    return pl.coalesce(
        *(text.str.to_datetime(f, strict=False, time_unit="us") for f in _NAIVE_TIME_FORMATS),
        text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
        *(
            text.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC").dt.replace_time_zone(None)
            for f in _ZONED_TIME_FORMATS
        ),
    )


def _event_time_violations(parsed: pl.DataFrame, name: str) -> pl.DataFrame:
    text = pl.col(f"__text_{name}")
    return _violation(
        parsed, text.is_not_null() & pl.col("event_time").is_null(), name, "type", text, EVENT_TIME_EXPECTED
    )


def _file_violations(unreadable: pl.DataFrame) -> pl.DataFrame:
    return unreadable.select(
        *KEY_COLUMNS,
        pl.lit(FILE_COLUMN).alias("column"),
        pl.lit(UNREADABLE_FILE).alias("rule"),
        pl.col(FILE_ERROR_KEY).alias("value"),
        pl.lit("a readable Parquet or CSV file").alias("expected"),
    )


def _files_missing_each_column(raw: pl.DataFrame, columns: list[str]) -> dict[str, list[str]]:
    present = record_columns(raw) if raw.height else {}
    return {column: [file for file, names in present.items() if column not in names] for column in columns}


def _violation(
    parsed: pl.DataFrame, condition: pl.Expr, column: str, rule: str, value: pl.Expr, expected: str
) -> pl.DataFrame:
    return parsed.filter(condition).select(
        *KEY_COLUMNS,
        pl.lit(column).alias("column"),
        pl.lit(rule).alias("rule"),
        value.cast(pl.String).alias("value"),
        pl.lit(expected).alias("expected"),
    )


def _entity_id_violations(parsed: pl.DataFrame, entity_id: str) -> list[pl.DataFrame]:
    ident = pl.col("entity_id")
    return [
        _violation(parsed, ident.is_null(), entity_id, "required", ident, "a non-empty id"),
        _violation(
            parsed,
            ident.is_not_null() & ~ident.is_first_distinct(),
            entity_id,
            "duplicate_id",
            ident,
            "an id not already seen in this batch",
        ),
    ]


def _feature_violations(
    parsed: pl.DataFrame, name: str, spec: FeatureSpec, files_missing: list[str]
) -> list[pl.DataFrame]:
    text, value = pl.col(f"__text_{name}"), pl.col(name)
    shown = pl.when(pl.col("source_file").is_in(files_missing)).then(pl.lit(MISSING_COLUMN_VALUE)).otherwise(text)
    found = []
    if spec.required:
        found.append(_violation(parsed, text.is_null(), name, "required", shown, "a value (the feature is required)"))
    if spec.dtype == "category":
        if spec.unknown_category == "quarantine":
            found.append(
                _violation(
                    parsed, text.is_not_null() & value.is_null(), name, "category", text, f"one of {spec.categories}"
                )
            )
    else:
        expected = {"float": "a finite number", "int": "a whole number", "bool": f"one of {_TRUE + _FALSE}"}[spec.dtype]
        found.append(_violation(parsed, text.is_not_null() & value.is_null(), name, "type", text, expected))
    if spec.min is not None or spec.max is not None:
        too_low = value < spec.min if spec.min is not None else pl.lit(False)
        too_high = value > spec.max if spec.max is not None else pl.lit(False)
        bounds = (
            f"between {_fmt(spec.min)} and {_fmt(spec.max)}"
            if spec.min is not None and spec.max is not None
            else (f">= {_fmt(spec.min)}" if spec.min is not None else f"<= {_fmt(spec.max)}")
        )
        found.append(_violation(parsed, value.is_not_null() & (too_low | too_high), name, "range", text, bounds))
    return found


def _cross_field_violations(parsed: pl.DataFrame, name: str, expression: str, columns: list[str]) -> pl.DataFrame:
    shown = pl.concat_str(
        [pl.format("{}={}", pl.lit(c), pl.col(f"__text_{c}").fill_null("null")) for c in columns], separator=", "
    )
    broken = pl.sql_expr(expression).fill_null(True).not_()
    return _violation(parsed, broken, ",".join(columns), name, shown, expression)


def _fmt(number: float | None) -> str:
    return f"{number:g}" if number is not None else ""


def quarantine_summary(quarantine: pl.DataFrame) -> pl.DataFrame:
    """Broken-rule counts by column and rule, most frequent first."""
    return quarantine.group_by("column", "rule").agg(pl.len().alias("rows")).sort("rows", descending=True)
