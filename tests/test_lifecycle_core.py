"""The model lifecycle as data, without Dagster: the order of a challenger's stages, the rollout decision of each
night, and every change of role as a dated row of the alias log in a real DuckDB registry holding real models."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from nightkeeper import lifecycle, registry, warehouse
from nightkeeper.config import ProjectConfig, RolloutConfig
from nightkeeper.examples.simulator import simulate_history
from nightkeeper.lifecycle import NightHealth, canary_percent, canary_stage, decide_rollout, next_stage
from nightkeeper.models import publish
from nightkeeper.registry import AliasState
from nightkeeper.training import TrainedModel, train_model

JAN_1, JAN_5, JAN_10, JAN_15, JAN_20 = (date(2026, 1, d) for d in (1, 5, 10, 15, 20))
TONIGHT = date(2026, 1, 12)
ROLLOUT = RolloutConfig()  # shadow 3 nights, canary 1 → 5 → 20 → 100, 2 nights per step


def healthy(**changes: Any) -> NightHealth:
    values = {
        "night": TONIGHT,
        "error_rate": 0.0,
        "agreement": 0.97,
        "fallback_rate_increase": 0.0,
        "estimated_auc_drop": 0.0,
    }
    return NightHealth(**{**values, **changes})


# ------------------------------------------------------------------------------------------------------ stages


def test_next_stage_walks_shadow_then_each_canary_step_then_promotion():
    walked, stage = [], lifecycle.SHADOW
    while stage is not None:
        walked.append(stage)
        stage = next_stage(stage, ROLLOUT)

    assert walked == ["shadow", "canary:1", "canary:5", "canary:20"]


def test_next_stage_after_the_last_canary_step_is_promotion():
    assert next_stage("canary:20", ROLLOUT) is None


def test_next_stage_follows_configured_percents():
    rollout = RolloutConfig(canary_percents=[10, 50, 100])

    assert next_stage("shadow", rollout) == "canary:10"
    assert next_stage("canary:10", rollout) == "canary:50"
    assert next_stage("canary:50", rollout) is None


def test_canary_percent_reads_the_stage_and_is_zero_outside_canary():
    assert canary_percent(canary_stage(5)) == 5
    assert canary_percent("canary:20") == 20
    assert canary_percent("shadow") == 0
    assert canary_percent(None) == 0


# ------------------------------------------------------------------------------------------------ decide_rollout


def test_shadow_holds_until_enough_healthy_nights():
    decision = decide_rollout("shadow", 2, healthy(), ROLLOUT)

    assert decision.action == "hold"
    assert decision.reason.startswith("shadow: 2 of 3 healthy nights (no realized AUC yet")
    assert decision.next_stage is None


def test_canary_step_holds_until_nights_per_step():
    decision = decide_rollout("canary:5", 1, healthy(), ROLLOUT)

    assert decision.action == "hold"
    assert decision.reason.startswith("canary:5: 1 of 2 healthy nights (")


def test_shadow_advances_to_the_first_canary_after_shadow_nights():
    decision = decide_rollout("shadow", 3, healthy(), ROLLOUT)

    assert decision.action == "advance"
    assert decision.next_stage == "canary:1"
    assert "advancing to canary:1" in decision.reason


def test_canary_step_advances_to_the_next_step():
    decision = decide_rollout("canary:1", 2, healthy(), ROLLOUT)

    assert (decision.action, decision.next_stage) == ("advance", "canary:5")


def test_last_canary_step_promotes_after_enough_healthy_nights():
    decision = decide_rollout("canary:20", 2, healthy(), ROLLOUT)

    assert decision.action == "promote"
    assert decision.next_stage is None
    assert "promoting to champion" in decision.reason


def test_unknown_estimated_auc_drop_breaks_no_rule():
    decision = decide_rollout("shadow", 3, healthy(estimated_auc_drop=None), ROLLOUT)

    assert decision.action == "advance"


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        ({"error_rate": 0.001}, "of rows failed to score (limit 0.0%)"),
        ({"agreement": 0.49}, "agreement with the champion 49.0% is below the catastrophic floor 50%"),
        ({"fallback_rate_increase": 0.02}, "fallback rate up 2.0% (limit 1.0%)"),
        ({"estimated_auc_drop": 0.025, "estimate_trusted": True}, "estimated AUC down 0.025 (limit 0.02)"),
        ({"realized_auc_drop": 0.015, "labeled_rows": 900}, "realized AUC down 0.015 on 900 labeled rows (limit 0.01)"),
    ],
    ids=["error_rate", "agreement", "fallback_increase", "estimated_auc_drop", "realized_auc_drop"],
)
def test_each_broken_health_rule_rolls_back_naming_the_rule(broken, named):
    decision = decide_rollout("canary:5", 5, healthy(**broken), ROLLOUT)

    assert decision.action == "rollback"
    assert decision.reason.startswith(f"canary:5 failed its health check on {TONIGHT}: ")
    assert named in decision.reason
    assert decision.next_stage is None


def test_a_broken_rule_rolls_back_even_before_enough_healthy_nights():
    decision = decide_rollout("shadow", 0, healthy(agreement=0.3), ROLLOUT)

    assert decision.action == "rollback"


def test_every_broken_rule_is_named_in_one_rollback():
    tonight = healthy(
        error_rate=0.5, agreement=0.1, fallback_rate_increase=0.5, estimated_auc_drop=0.5, estimate_trusted=True
    )

    decision = decide_rollout("shadow", 3, tonight, ROLLOUT)

    assert decision.action == "rollback"
    assert len(tonight.failures(ROLLOUT)) == 4
    assert decision.reason.endswith("; ".join(tonight.failures(ROLLOUT)))


def test_health_at_exactly_the_limits_is_healthy():
    at_limits = healthy(
        error_rate=0.0, agreement=0.5, fallback_rate_increase=0.01, estimated_auc_drop=0.02, estimate_trusted=True
    )

    assert at_limits.failures(ROLLOUT) == []
    assert healthy(realized_auc_drop=0.01, labeled_rows=500).failures(ROLLOUT) == []


def test_disagreeing_with_the_champion_above_the_catastrophic_floor_is_no_veto():
    decision = decide_rollout("shadow", 3, healthy(agreement=0.75), ROLLOUT)

    assert decision.action == "advance"
    assert "agreement 75%" in decision.reason


def test_an_untrusted_estimate_breaks_no_rule():
    decision = decide_rollout("shadow", 3, healthy(estimated_auc_drop=0.2, estimate_trusted=False), ROLLOUT)

    assert decision.action == "advance"
    assert "estimate not trusted" in decision.reason


def test_realized_auc_once_labeled_replaces_even_a_trusted_estimate():
    better = healthy(estimated_auc_drop=0.2, estimate_trusted=True, realized_auc_drop=-0.03, labeled_rows=800)

    decision = decide_rollout("canary:5", 2, better, ROLLOUT)

    assert decision.action == "advance"
    assert "realized AUC +0.030 vs the champion on 800 labeled rows" in decision.reason


# ----------------------------------------------------------------------------------- alias operations on DuckDB


@pytest.fixture(scope="module")
def second_trained(core_config: ProjectConfig) -> TrainedModel:
    """Another real model (other seed, smaller history), so the registry holds two versions."""
    return train_model(simulate_history(date(2024, 4, 30), days=6, rows_per_day=500, seed=8), core_config)


@pytest.fixture
def project(tmp_path: Path, core_make_config: Any) -> ProjectConfig:
    return core_make_config(tmp_path)


@pytest.fixture
def versions(project: ProjectConfig, core_trained: TrainedModel, second_trained: TrainedModel) -> tuple[str, str]:
    """Both models published (artifact written, registered) in the project's warehouse; returns (a, b)."""
    first, second = publish(core_trained, project), publish(second_trained, project)
    assert first.version != second.version
    return first.version, second.version


@pytest.fixture
def connection(project: ProjectConfig, versions: tuple[str, str]) -> Any:
    with warehouse.connect(project.warehouse_path) as opened:
        yield opened


def rows_of(connection: Any) -> list[tuple]:
    log = registry.alias_log(connection)
    return list(log.select("alias", "version", "effective_from", "actor", "reason", "stage").iter_rows())


def test_published_versions_are_registered_with_their_cards(connection, versions, core_trained):
    record = registry.get_version(connection, versions[0])

    assert record.card == core_trained.card
    assert record.model_path.is_file()
    assert registry.versions(connection)["version"].sort().to_list() == sorted(versions)


def test_start_shadow_writes_a_dated_challenger_row_in_shadow(connection, versions):
    lifecycle.start_shadow(connection, versions[1], JAN_10, "alice", "passed the gate")

    assert rows_of(connection) == [("challenger", versions[1], JAN_10, "alice", "passed the gate", "shadow")]
    assert registry.alias_state(connection, registry.CHALLENGER, JAN_10) == AliasState(versions[1], "shadow", JAN_10)
    assert registry.alias_state(connection, registry.CHALLENGER, JAN_15) == AliasState(versions[1], "shadow", JAN_10)


def test_alias_state_before_any_row_is_all_none(connection, versions):
    lifecycle.start_shadow(connection, versions[1], JAN_10, "alice", "passed the gate")

    assert registry.alias_state(connection, registry.CHALLENGER, JAN_5) == AliasState(None, None, None)
    assert registry.alias_state(connection, registry.CHAMPION, JAN_20) == AliasState(None, None, None)


def test_advance_writes_a_new_stage_row_and_earlier_nights_keep_theirs(connection, versions):
    lifecycle.start_shadow(connection, versions[1], JAN_10, "dagster", "passed the gate")
    lifecycle.advance(connection, versions[1], "canary:1", JAN_15, "dagster", "3 healthy nights")

    assert rows_of(connection)[-1] == ("challenger", versions[1], JAN_15, "dagster", "3 healthy nights", "canary:1")
    assert registry.alias_state(connection, registry.CHALLENGER, date(2026, 1, 14)) == AliasState(
        versions[1], "shadow", JAN_10
    )
    assert registry.alias_state(connection, registry.CHALLENGER, JAN_15) == AliasState(versions[1], "canary:1", JAN_15)


def test_promote_makes_the_version_champion_and_clears_the_challenger(connection, versions):
    a, b = versions
    registry.set_alias(connection, registry.CHAMPION, a, JAN_1, "bootstrap", "first model")
    lifecycle.start_shadow(connection, b, JAN_5, "dagster", "passed the gate")
    lifecycle.promote(connection, b, JAN_15, "dagster", "canary:20 held")

    assert rows_of(connection)[-2:] == [
        ("champion", b, JAN_15, "dagster", "canary:20 held", None),
        ("challenger", None, JAN_15, "dagster", f"promoted {b}", None),
    ]
    assert registry.alias_state(connection, registry.CHAMPION, JAN_15) == AliasState(b, None, JAN_15)
    assert registry.alias_state(connection, registry.CHALLENGER, JAN_15) == AliasState(None, None, JAN_15)
    assert registry.alias_version(connection, registry.CHAMPION, JAN_10) == a  # history is kept


def test_promote_is_all_or_nothing_when_clearing_the_challenger_fails(connection, versions):
    a, b = versions
    # the same alias log, but one that refuses a row clearing an alias: the second write of promote fails
    connection.execute("drop table registry.model_aliases")
    connection.execute(
        """create table registry.model_aliases (seq bigint primary key, alias varchar not null,
           version varchar check (version is not null), effective_from date not null, set_at timestamptz not null,
           actor varchar not null, reason varchar not null, stage varchar)"""
    )
    registry.set_alias(connection, registry.CHAMPION, a, JAN_1, "bootstrap", "first model")
    lifecycle.start_shadow(connection, b, JAN_5, "dagster", "passed the gate")

    with pytest.raises(Exception, match="CHECK constraint"):
        lifecycle.promote(connection, b, JAN_15, "dagster", "canary:20 held")

    assert registry.alias_version(connection, registry.CHAMPION, JAN_15) == a
    assert registry.alias_state(connection, registry.CHALLENGER, JAN_15) == AliasState(b, "shadow", JAN_5)
    assert len(rows_of(connection)) == 2


def test_reject_challenger_clears_it_and_returns_the_removed_version(connection, versions):
    lifecycle.start_shadow(connection, versions[1], JAN_5, "dagster", "passed the gate")

    removed = lifecycle.reject_challenger(connection, JAN_10, "dagster", "agreement 50%")

    assert removed == versions[1]
    assert rows_of(connection)[-1] == ("challenger", None, JAN_10, "dagster", "agreement 50%", None)
    assert registry.alias_state(connection, registry.CHALLENGER, JAN_10) == AliasState(None, None, JAN_10)
    assert registry.alias_version(connection, registry.CHALLENGER, JAN_5) == versions[1]


def test_reject_challenger_without_a_challenger_returns_none_and_writes_nothing(connection, versions):
    assert lifecycle.reject_challenger(connection, JAN_10, "dagster", "nothing to reject") is None
    assert registry.alias_log(connection).height == 0


def test_rollback_champion_restores_the_previous_champion(connection, versions):
    a, b = versions
    registry.set_alias(connection, registry.CHAMPION, a, JAN_1, "bootstrap", "first model")
    lifecycle.promote(connection, b, JAN_10, "dagster", "rollout done")

    returned = lifecycle.rollback_champion(connection, JAN_15, "bob", "complaints")

    assert returned == (b, a)
    assert rows_of(connection)[-1] == ("champion", a, JAN_15, "bob", "complaints", None)
    assert registry.alias_version(connection, registry.CHAMPION, JAN_15) == a
    assert registry.alias_version(connection, registry.CHAMPION, JAN_10) == b


def test_rollback_champion_without_an_earlier_champion_raises(connection, versions):
    registry.set_alias(connection, registry.CHAMPION, versions[0], JAN_1, "bootstrap", "first model")

    with pytest.raises(ValueError, match="no earlier champion"):
        lifecycle.rollback_champion(connection, JAN_10, "bob", "complaints")
    assert registry.alias_log(connection).height == 1


def test_rollback_champion_with_no_champion_at_all_raises(connection, versions):
    with pytest.raises(ValueError, match=r"no earlier champion to roll back to \(current champion: None\)"):
        lifecycle.rollback_champion(connection, JAN_10, "bob", "complaints")


def test_rollback_before_a_scheduled_promotion_does_not_jump_to_the_future_champion(connection, versions):
    a, b = versions
    registry.set_alias(connection, registry.CHAMPION, a, JAN_1, "bootstrap", "first model")
    lifecycle.promote(connection, b, JAN_20, "alice", "scheduled promotion")  # `models promote --effective 2026-01-20`

    with pytest.raises(ValueError, match="no earlier champion"):
        lifecycle.rollback_champion(
            connection, JAN_10, "bob", "roll back tonight's champion"
        )  # a never had a predecessor


def test_alias_log_answers_the_champion_of_each_night(connection, versions):
    a, b = versions
    registry.set_alias(connection, registry.CHAMPION, a, JAN_5, "bootstrap", "first model")
    lifecycle.promote(connection, b, JAN_10, "dagster", "rollout done")
    lifecycle.rollback_champion(connection, JAN_15, "bob", "complaints")

    served = {
        night: registry.alias_version(connection, registry.CHAMPION, night)
        for night in [JAN_1, JAN_5, date(2026, 1, 9), JAN_10, date(2026, 1, 14), JAN_15, JAN_20]
    }

    assert served == {
        JAN_1: None,
        JAN_5: a,
        date(2026, 1, 9): a,
        JAN_10: b,
        date(2026, 1, 14): b,
        JAN_15: a,
        JAN_20: a,
    }


def test_setting_an_alias_to_an_unregistered_version_raises_and_writes_nothing(connection, versions):
    with pytest.raises(KeyError, match="'feedbeefcafe' is not registered"):
        lifecycle.start_shadow(connection, "feedbeefcafe", JAN_10, "alice", "typo")
    assert registry.alias_log(connection).height == 0


def test_the_alias_log_survives_reopening_the_warehouse(project, versions):
    with warehouse.connect(project.warehouse_path) as connection:
        lifecycle.start_shadow(connection, versions[1], JAN_10, "alice", "passed the gate")
    with warehouse.connect(project.warehouse_path) as reopened:
        log = registry.alias_log(reopened)

    assert log.select("alias", "version", "stage").rows() == [("challenger", versions[1], "shadow")]
    assert log.schema["effective_from"] == pl.Date
