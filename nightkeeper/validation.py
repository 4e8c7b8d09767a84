"""Row-level validation: judge the typed raw batch against the contract and quarantine every rule a row breaks.

Nothing is dropped. Each raw row either becomes one typed row of ``valid`` or appears in ``quarantine`` once per
rule it breaks, with the column, the rule, the offending value as text and what was expected.

A raw row arrives typed (``nightkeeper.ingest``). A row whose every value typed keeps no text, so the value a rule
shows is its typed value as text (``contract_types.shown_value``); only the rows that failed typing carry what was
received (``record``), and only those are decoded, so a clean night is judged without parsing any text. The batch is
judged a slice at a time, so the intermediates stay bounded whatever the night's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from nightkeeper.config import Contract, FeatureSpec
from nightkeeper.contract_types import (
    FALSE_TEXTS,
    TRUE_TEXTS,
    shown_value,
    text_column,
    typed_columns,
    valid_schema,
)
from nightkeeper.frames import conform
from nightkeeper.ingest import FILE_ERROR_KEY, FILE_ROW, RECORD, file_errors, record_columns

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
VALIDATE_SLICE_ROWS = 100_000


@dataclass(frozen=True)
class ValidationResult:
    """``valid``: typed rows that broke no rule. ``quarantine``: one row per (row, broken rule).

    ``null_counts``: each feature's empty values over the ``judged_rows`` rows (every row but an unreadable file's
    marker), before quarantine; ``null_rates`` their shares, for the batch checks. Counts, so a night validated in
    shards adds its shards' counts and gets the night's shares exactly (``null_rates_of``).
    """

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    null_counts: dict[str, int]
    judged_rows: int

    @property
    def null_rates(self) -> dict[str, float]:
        return null_rates_of(self.null_counts, self.judged_rows)

    @property
    def quarantined_rows(self) -> int:
        return self.quarantine.select(ROW_KEY).unique().height


@dataclass(frozen=True)
class _Values:
    """How a rule reads column ``name`` of the rows it judges: ``present`` (a value was received), ``value`` (typed,
    null when absent or not typable) and ``text`` (what a person is shown)."""

    present: pl.Expr
    value: pl.Expr
    text: pl.Expr


@dataclass(frozen=True)
class NightFacts:
    """What judging some of a night's raw rows needs to know of the whole night: ``copies``, the keys (ROW_KEY,
    ``entity_id``) of every row whose id an earlier row of the night has (by file, then row number), and
    ``first_records``, one ``record`` of each file that has rows which failed typing (``source_file``,
    ``row_number``, ``record``), which tells the columns each file lacked."""

    copies: pl.DataFrame
    first_records: pl.DataFrame


def night_facts(raw: pl.DataFrame) -> NightFacts:
    """The ``NightFacts`` of a whole night's raw batch."""
    rows = raw.filter(pl.col("row_number") != FILE_ROW)
    # storage does not keep row order; "first" of a duplicated id means earliest by file, then row number
    copies = (
        rows.select(*ROW_KEY, "entity_id")
        .sort(ROW_KEY)
        .filter(pl.col("entity_id").is_not_null() & ~pl.col("entity_id").is_first_distinct())
    )
    records = (
        rows.filter(pl.col(RECORD).is_not_null())
        .group_by("source_file")
        .agg(pl.col("row_number").first(), pl.col(RECORD).first())
    )
    return NightFacts(copies, records)


def validate(
    raw: pl.DataFrame, contract: Contract, slice_rows: int = VALIDATE_SLICE_ROWS, night: NightFacts | None = None
) -> ValidationResult:
    """Validate a raw batch (``nightkeeper.ingest.raw_schema(contract)``) against ``contract``.

    An unreadable file's one raw row (``row_number`` FILE_ROW) is quarantined once, with rule UNREADABLE_FILE,
    column FILE_COLUMN and the reason as the value; no other rule is applied to it. An ``event_time`` that is
    present but not a date-time quarantines its row (rule ``type``); an empty one is allowed. A later row with an id
    already seen in the batch (by file, then row number) is quarantined (rule ``duplicate_id``). The rows are
    judged ``slice_rows`` at a time; the result does not depend on it. ``raw`` may be some of a night's rows when
    ``night`` gives what the rules need of the whole night (``NightFacts``; default: ``raw`` is the whole night):
    then the result is those rows' share of the whole night's.
    """
    facts = night if night is not None else night_facts(raw)
    unreadable = file_errors(raw)
    raw = raw.filter(pl.col("row_number") != FILE_ROW)
    files_by_column = _files_missing_each_column(facts.first_records, list(contract.features))
    copies = facts.copies
    valid_parts: list[pl.DataFrame] = []
    violations = [_file_violations(unreadable)]
    nulls = dict.fromkeys(contract.features, 0)
    for part in raw.iter_slices(slice_rows):
        for rows, values in _judged_groups(part, contract):
            found = _violations(rows, values, contract, files_by_column, copies)
            violations += found
            broken = pl.concat([v.select(ROW_KEY) for v in found])
            valid_parts.append(conform(rows.join(broken, on=ROW_KEY, how="anti"), valid_schema(contract)))
            counts = rows.select((~values[name].present).sum().alias(name) for name in contract.features).row(
                0, named=True
            )
            nulls = {name: nulls[name] + counts[name] for name in nulls}
    quarantine = pl.concat([v.cast(QUARANTINE_SCHEMA) for v in violations]).sort([*ROW_KEY, "column", "rule"])
    valid = pl.concat(valid_parts).sort(ROW_KEY) if valid_parts else pl.DataFrame(schema=valid_schema(contract))
    return ValidationResult(valid=valid, quarantine=quarantine, null_counts=nulls, judged_rows=raw.height)


def null_rates_of(null_counts: dict[str, int], rows: int) -> dict[str, float]:
    """Each feature's share of empty values: its count over ``rows`` (0.0 for no rows)."""
    return {name: count / rows if rows else 0.0 for name, count in null_counts.items()}


def _judged_groups(part: pl.DataFrame, contract: Contract) -> list[tuple[pl.DataFrame, dict[str, _Values]]]:
    """The rows of ``part`` that typed cleanly and those that failed typing (decoded from their record), each with
    how the rules read their columns."""
    typed = typed_columns(contract)
    clean = part.filter(pl.col(RECORD).is_null())
    groups = [
        (
            clean,
            {
                name: _Values(pl.col(name).is_not_null(), pl.col(name), shown_value(pl.col(name), dtype))
                for name, dtype in valid_schema(contract).items()
                if name in typed
            },
        )
    ]
    received = part.filter(pl.col(RECORD).is_not_null())
    if received.height:
        decoded = decode_records(received, [*dict.fromkeys(typed.values())]).drop(KEY_COLUMNS)
        texts = {name: pl.col(text_column(source)) for name, source in typed.items()}
        groups.append(
            (
                pl.concat([received.drop(decoded.columns, strict=False), decoded], how="horizontal"),
                {name: _Values(text.is_not_null(), pl.col(name), text) for name, text in texts.items()},
            )
        )
    return [(rows, values) for rows, values in groups if rows.height]


def _violations(
    rows: pl.DataFrame,
    values: dict[str, _Values],
    contract: Contract,
    files_by_column: dict[str, list[str]],
    copies: pl.DataFrame,
) -> list[pl.DataFrame]:
    return [
        *_entity_id_violations(rows, contract.entity_id, copies),
        *(
            v
            for name, spec in contract.features.items()
            for v in _feature_violations(rows, name, spec, values[name], files_by_column[name])
        ),
        *(_cross_field_violations(rows, rule.name, rule.expression, rule.columns(), values) for rule in contract.rules),
        *([_event_time_violations(rows, contract.event_time, values["event_time"])] if contract.event_time else []),
    ]


def decode_records(raw: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """The key columns plus each of ``columns`` as stripped text in ``__text_<column>`` (empty text becomes null),
    decoded from the rows' ``record`` (what was received, kept for rows that failed typing)."""
    struct = pl.Struct({name: pl.String for name in columns})
    return raw.select(*KEY_COLUMNS, pl.col(RECORD).str.json_decode(struct).alias("__record")).select(
        *KEY_COLUMNS,
        *(
            pl.col("__record").struct.field(name).str.strip_chars().replace("", None).alias(text_column(name))
            for name in columns
        ),
    )


def _event_time_violations(rows: pl.DataFrame, name: str, values: _Values) -> pl.DataFrame:
    return _violation(rows, values.present & values.value.is_null(), name, "type", values.text, EVENT_TIME_EXPECTED)


def _file_violations(unreadable: pl.DataFrame) -> pl.DataFrame:
    return unreadable.select(
        *KEY_COLUMNS,
        pl.lit(FILE_COLUMN).alias("column"),
        pl.lit(UNREADABLE_FILE).alias("rule"),
        pl.col(FILE_ERROR_KEY).alias("value"),
        pl.lit("a readable Parquet or CSV file").alias("expected"),
    )


def _files_missing_each_column(records: pl.DataFrame, columns: list[str]) -> dict[str, list[str]]:
    """Per column, the files that lacked it (known from their rows' ``records``: such rows always fail typing when
    the column is required; an optional column missing from a file breaks no rule)."""
    present = record_columns(records) if records.height else {}
    return {column: [file for file, names in present.items() if column not in names] for column in columns}


def _violation(
    rows: pl.DataFrame, condition: pl.Expr, column: str, rule: str, value: pl.Expr, expected: str
) -> pl.DataFrame:
    return rows.filter(condition).select(
        *KEY_COLUMNS,
        pl.lit(column).alias("column"),
        pl.lit(rule).alias("rule"),
        value.cast(pl.String).alias("value"),
        pl.lit(expected).alias("expected"),
    )


def _entity_id_violations(rows: pl.DataFrame, entity_id: str, copies: pl.DataFrame) -> list[pl.DataFrame]:
    """A missing id, and (``copies``: the keys of every later row of a repeated id in the whole batch) a repeat."""
    ident = pl.col("entity_id")
    return [
        _violation(rows, ident.is_null(), entity_id, "required", ident, "a non-empty id"),
        _violation(
            rows.join(copies.select(ROW_KEY), on=ROW_KEY, how="semi"),
            pl.lit(True),
            entity_id,
            "duplicate_id",
            ident,
            "an id not already seen in this batch",
        ),
    ]


def _feature_violations(
    rows: pl.DataFrame, name: str, spec: FeatureSpec, values: _Values, files_missing: list[str]
) -> list[pl.DataFrame]:
    present, value, text = values.present, values.value, values.text
    shown = pl.when(pl.col("source_file").is_in(files_missing)).then(pl.lit(MISSING_COLUMN_VALUE)).otherwise(text)
    found = []
    if spec.required:
        found.append(_violation(rows, ~present, name, "required", shown, "a value (the feature is required)"))
    if spec.dtype == "category":
        if spec.unknown_category == "quarantine":
            found.append(
                _violation(rows, present & value.is_null(), name, "category", text, f"one of {spec.categories}")
            )
    else:
        expected = {
            "float": "a finite number",
            "int": "a whole number",
            "bool": f"one of {TRUE_TEXTS + FALSE_TEXTS}",
        }[spec.dtype]
        found.append(_violation(rows, present & value.is_null(), name, "type", text, expected))
    if spec.min is not None or spec.max is not None:
        too_low = value < spec.min if spec.min is not None else pl.lit(False)
        too_high = value > spec.max if spec.max is not None else pl.lit(False)
        bounds = (
            f"between {_fmt(spec.min)} and {_fmt(spec.max)}"
            if spec.min is not None and spec.max is not None
            else (f">= {_fmt(spec.min)}" if spec.min is not None else f"<= {_fmt(spec.max)}")
        )
        found.append(_violation(rows, value.is_not_null() & (too_low | too_high), name, "range", text, bounds))
    return found


def _cross_field_violations(
    rows: pl.DataFrame, name: str, expression: str, columns: list[str], values: dict[str, _Values]
) -> pl.DataFrame:
    shown = pl.concat_str(
        [pl.format("{}={}", pl.lit(c), values[c].text.fill_null("null")) for c in columns], separator=", "
    )
    broken = pl.sql_expr(expression).fill_null(True).not_()
    return _violation(rows, broken, ",".join(columns), name, shown, expression)


def _fmt(number: float | None) -> str:
    return f"{number:g}" if number is not None else ""


def quarantine_summary(quarantine: pl.DataFrame) -> pl.DataFrame:
    """Broken-rule counts by column and rule, most frequent first."""
    counts = quarantine.group_by("column", "rule").agg(pl.len().alias("rows"))
    return counts.sort(["rows", "column", "rule"], descending=[True, False, False])
