"""Checks of a valid config against the project's state, which pydantic cannot see from the file alone.

The decision (threshold and labels) has one source while a model serves: the serving champion's card. A config whose
``model.decision`` disagrees with it would make metrics, review queue and fallback describe decisions never made, so
it is refused until the change is made explicitly, as a new model version or a promotion.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from nightkeeper import registry
from nightkeeper.card import ModelCard
from nightkeeper.config import DecisionConfig, ProjectConfig


def serving_champion(connection: duckdb.DuckDBPyConnection) -> registry.ModelRecord | None:
    """The champion the alias log names for the latest night it plans (today's, or one promoted for a later night)."""
    return registry.alias_record(connection, registry.CHAMPION, dt.date.max)


def decision_conflicts(config: ProjectConfig, card: ModelCard) -> list[str]:
    """One message per ``model.decision`` field whose config value differs from ``card``'s, naming both values and
    how to make the change explicitly; empty when they agree."""
    problems = []
    for field in DecisionConfig.model_fields:
        configured, served = getattr(config.model.decision, field), getattr(card.decision, field)
        if configured != served:
            problems.append(
                f"model.decision.{field}: the config says {configured!r}, the serving champion {card.version}'s card "
                f"says {served!r}. Scoring uses the card's decision. Either set model.decision.{field} back to "
                f"{served!r}, or make the change explicit: train a new model version with this config (its card "
                "records the new decision) or `nightkeeper models promote VERSION` a registered version whose card "
                f"has {configured!r}."
            )
    return problems
