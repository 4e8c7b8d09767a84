"""Which model serves a night, and the decision it serves with.

The alias log names a version for each night; its registry row gives the artifact and the card. A registry row
that cannot be used (the alias names a version that is not registered, or its card JSON does not parse) makes the
model unavailable for the night, like a missing artifact: the fallback answers and the error says why. It never
crashes the night.

The decision (threshold and labels) belongs to the serving model's card: the model was judged with it and scores
are decided with it. Everything that turns a score into a decision for a night (scoring, fallback answers,
outcomes, and for the other steps the review queue, metrics and business value) reads ``serving_decision``. The
config's ``model.decision`` is what the next trained model is given, and it serves only while no usable card does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from nightkeeper import registry
from nightkeeper.config import DecisionConfig, ProjectConfig


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


def serving_decision(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> DecisionConfig:
    """The decision the champion serving ``night`` was judged with (its card's); the config's while none is usable."""
    champion = serving_model(connection, registry.CHAMPION, night)
    return champion.record.card.decision if champion.record else config.model.decision
