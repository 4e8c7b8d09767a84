"""Which model serves a night.

The alias log names a version for each night; its registry row gives the artifact and the card. A registry row
that cannot be used (the alias names a version that is not registered, or its card JSON does not parse) makes the
model unavailable for the night, like a missing artifact: the fallback answers and the error says why. It never
crashes the night.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from nightkeeper import registry


@dataclass(frozen=True)
class ServingModel:
    """The version an alias names on a night (in which stage, since when) and its registry record.

    ``record`` is None when the alias names no version (``version`` None, ``error`` None) or when the named version's
    registry row cannot be used (``error`` says why).
    """

    version: str | None
    stage: str | None
    effective_from: dt.date | None
    record: registry.ModelRecord | None
    error: str | None


def serving_model(connection: duckdb.DuckDBPyConnection, alias: str, night: dt.date) -> ServingModel:
    """The model ``alias`` (champion / challenger) names on ``night``; a bad registry row is reported, not raised."""
    state = registry.alias_state(connection, alias, night)
    named = (state.version, state.stage, state.effective_from)
    if state.version is None:
        return ServingModel(*named, None, None)
    try:
        record = registry.get_version(connection, state.version)
    except KeyError:
        return ServingModel(*named, None, f"{alias} {state.version!r} is not registered (registry row missing)")
    except ValueError as exc:  # pydantic's ValidationError: the stored card does not parse
        first = str(exc).splitlines()[0]
        return ServingModel(*named, None, f"{alias} {state.version!r} has an invalid card in the registry: {first}")
    return ServingModel(*named, record, None)
