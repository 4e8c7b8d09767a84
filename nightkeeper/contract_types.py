"""The contract's column types, and how a value received as text is typed into them.

Ingest types each landed row with these (``nightkeeper.ingest``), validation judges what could not be typed
(``nightkeeper.validation``); both read a column's text from ``__text_<column>`` (stripped, empty text as null).
"""

from __future__ import annotations

import polars as pl

from nightkeeper.config import Contract, FeatureSpec

TEXT_PREFIX = "__text_"
TRUE_TEXTS = ["true", "t", "yes", "y", "1", "1.0"]
FALSE_TEXTS = ["false", "f", "no", "n", "0", "0.0"]
# the formats an event time may come in; an offset is converted to UTC and then dropped, like every stored time
_NAIVE_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M")
_ZONED_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%:z")
# a float shown without its ".0" when it is whole and exactly representable as an integer
_WHOLE_FLOAT_LIMIT = 2.0**53


def text_column(name: str) -> str:
    """The name of the column holding ``name``'s received text."""
    return f"{TEXT_PREFIX}{name}"


def polars_dtype(spec: FeatureSpec) -> pl.DataType:
    return {"float": pl.Float64(), "int": pl.Int64(), "bool": pl.Boolean(), "category": pl.String()}[spec.dtype]


def valid_schema(contract: Contract) -> dict[str, pl.DataType]:
    """The column types of a typed row for ``contract``: the row keys, ``event_time`` if the contract has one, and
    the features."""
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


def typed_columns(contract: Contract) -> dict[str, str]:
    """Each typed column of a row (``event_time``, then the features) and the received column it is typed from."""
    return {
        **({"event_time": contract.event_time} if contract.event_time else {}),
        **{name: name for name in contract.features},
    }


def clean_text(expr: pl.Expr) -> pl.Expr:
    """Received text as validation reads it: stripped, empty text as null."""
    return expr.str.strip_chars().replace("", None)


def parse_feature(name: str, spec: FeatureSpec) -> pl.Expr:
    """The typed value of feature ``name`` from its text; null when empty or unparseable or (if so configured)
    unknown."""
    text = pl.col(text_column(name))
    if spec.dtype == "float":
        number = text.cast(pl.Float64, strict=False)
        return pl.when(number.is_finite()).then(number)
    if spec.dtype == "int":
        number = text.cast(pl.Float64, strict=False)
        return pl.when(number.is_finite() & (number.round() == number)).then(number).cast(pl.Int64, strict=False)
    if spec.dtype == "bool":
        lowered = text.str.to_lowercase()
        return (
            pl.when(lowered.is_in(TRUE_TEXTS)).then(True).when(lowered.is_in(FALSE_TEXTS)).then(False).otherwise(None)
        )
    return pl.when(text.is_in(spec.categories or [])).then(text)


def parse_native(name: str, contract: Contract, dtype: pl.DataType) -> pl.Expr | None:
    """Typed column ``name`` (a feature or ``event_time``) straight from its source column, which a file holds as
    ``dtype`` (a Parquet number, boolean, date or naive date-time): the value ``parse_column`` gives from its text,
    without making the text. None where only the text can say (a category, text, a zoned time, or a type whose text
    is not its value's, such as Float32)."""
    if name == "event_time":
        if dtype == pl.Date() or (isinstance(dtype, pl.Datetime) and dtype.time_zone is None):
            return pl.col(str(contract.event_time)).cast(pl.Datetime("us"))
        return None
    spec, value = contract.features[name], pl.col(name)
    if spec.dtype in ("float", "int") and (dtype == pl.Float64() or dtype.is_integer()):
        number = value.cast(pl.Float64)
        if spec.dtype == "float":
            return pl.when(number.is_finite()).then(number)
        return pl.when(number.is_finite() & (number.round() == number)).then(number).cast(pl.Int64, strict=False)
    if spec.dtype == "bool" and dtype == pl.Boolean():
        return value
    return None


def parse_event_time(name: str) -> pl.Expr:
    """The event time ``name`` from its text as a naive UTC datetime; null when empty or not a date-time."""
    text = pl.col(text_column(name)).str.replace(r"[Zz]$", "+00:00")
    return pl.coalesce(
        *(text.str.to_datetime(f, strict=False, time_unit="us") for f in _NAIVE_TIME_FORMATS),
        text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
        *(
            text.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC").dt.replace_time_zone(None)
            for f in _ZONED_TIME_FORMATS
        ),
    )


def parse_column(name: str, contract: Contract) -> pl.Expr:
    """Typed column ``name`` (a feature or ``event_time``) from its received text."""
    if name == "event_time":
        assert contract.event_time is not None, "the contract has no event_time"
        return parse_event_time(contract.event_time)
    return parse_feature(name, contract.features[name])


def shown_value(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A typed value as text for a person: a whole float without its ``.0`` (``10000``, as most files write it)."""
    if dtype == pl.Float64():
        whole = value.is_finite() & (value.round() == value) & (value.abs() < _WHOLE_FLOAT_LIMIT)
        return pl.when(whole).then(value.cast(pl.Int64, strict=False).cast(pl.String)).otherwise(value.cast(pl.String))
    return value.cast(pl.String)
