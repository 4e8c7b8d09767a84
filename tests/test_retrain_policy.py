"""The retrain policy and the other lifecycle decisions as pure functions: what triggers a retrain, the one-candidate-
per-night rule, the cooldown, waiting for a rollout, resuming after a rejection or a rollback, and the registry changes
an approved evaluation or a night's rollout decision ask for. The same functions decide in the sensors and the backtest.
"""

from __future__ import annotations

import datetime as dt

import pytest

from nightkeeper.config import LifecycleConfig, RetrainPolicyConfig
from nightkeeper.pipeline.lifecycle import (
    Evaluation,
    LifecycleState,
    OpenAlert,
    RegistryChange,
    RegistryRequest,
    decide_retrain,
    decide_shadow_start,
    rollout_request,
)

NIGHT = dt.date(2026, 3, 10)
POLICY = LifecycleConfig(retrain_on_alert_categories=["performance"], retrain=RetrainPolicyConfig(cooldown_nights=7))
PERFORMANCE = OpenAlert("a-perf", "performance", NIGHT - dt.timedelta(days=2))


def days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


def state(**values) -> LifecycleState:
    return LifecycleState(**{"open_alerts": (PERFORMANCE,), **values})


# ------------------------------------------------------------------------------------------------------ triggers


def test_an_open_performance_alert_triggers_a_retrain_naming_it():
    decision = decide_retrain(state(), NIGHT, POLICY)

    assert decision.retrain
    assert "a-perf" in decision.trigger and "performance" in decision.trigger


def test_no_open_alert_means_no_retrain_and_says_so():
    decision = decide_retrain(state(open_alerts=()), NIGHT, POLICY)

    assert not decision.retrain
    assert decision.reason == "no retrain-triggering alert is open"


def test_an_alert_of_a_category_not_configured_does_not_trigger():
    decision = decide_retrain(state(open_alerts=(OpenAlert("q", "data_quality", NIGHT),)), NIGHT, POLICY)

    assert not decision.retrain


def test_a_drift_alert_does_not_trigger_by_default():
    old_drift = OpenAlert("d", "drift", NIGHT - days(30))

    assert not decide_retrain(state(open_alerts=(old_drift,)), NIGHT, POLICY).retrain


def persistent_drift_policy(nights: int = 5) -> LifecycleConfig:
    return POLICY.model_copy(
        update={"retrain": RetrainPolicyConfig(on_persistent_drift=True, drift_persistence_nights=nights)}
    )


def test_a_drift_alert_open_for_the_persistence_nights_triggers_when_configured():
    drift = OpenAlert("d", "drift", NIGHT - days(4))  # its 5th night open

    decision = decide_retrain(state(open_alerts=(drift,)), NIGHT, persistent_drift_policy(5))

    assert decision.retrain
    assert "drift alert d open for 5 nights" in decision.trigger


def test_a_drift_alert_younger_than_the_persistence_nights_waits_and_says_how_long_it_has_been_open():
    drift = OpenAlert("d", "drift", NIGHT - days(2))

    decision = decide_retrain(state(open_alerts=(drift,)), NIGHT, persistent_drift_policy(5))

    assert not decision.retrain
    assert "open 3 of 5 nights" in decision.reason


def test_the_schedule_triggers_without_any_alert():
    decision = decide_retrain(state(open_alerts=()), NIGHT, POLICY, schedule="monthly schedule")

    assert decision.retrain and decision.trigger == "monthly schedule"


# ------------------------------------------------------------------------------------------- when a retrain waits


def test_one_candidate_per_night_whatever_triggered_it():
    after_alert_retrain = state(last_retrain_night=NIGHT)

    decision = decide_retrain(after_alert_retrain, NIGHT, POLICY, schedule="monthly schedule")

    assert not decision.retrain
    assert "one candidate per night" in decision.reason


def trained_on(night: dt.date) -> dict:
    return {"last_retrain_night": night, "last_candidate_night": night}


def test_cooldown_blocks_a_retrain_within_its_nights_and_names_the_night_it_ends():
    decision = decide_retrain(state(**trained_on(NIGHT - days(6))), NIGHT, POLICY)

    assert not decision.retrain
    assert f"the next may from {NIGHT + days(1)}" in decision.reason


def test_retrain_resumes_when_the_cooldown_is_over():
    assert decide_retrain(state(**trained_on(NIGHT - days(7))), NIGHT, POLICY).retrain


def test_a_refused_window_trained_nothing_and_is_tried_again_the_next_night():
    refused_last_night = state(last_retrain_night=NIGHT - days(1), last_candidate_night=NIGHT - days(20))

    assert decide_retrain(refused_last_night, NIGHT, POLICY).retrain


def test_the_monthly_schedule_respects_the_cooldown_too():
    decision = decide_retrain(
        state(open_alerts=(), **trained_on(NIGHT - days(2))), NIGHT, POLICY, schedule="monthly schedule"
    )

    assert not decision.retrain and decision.reason.startswith("cooldown")


def test_no_retrain_while_a_challenger_is_in_rollout():
    decision = decide_retrain(state(challenger="v2", latest_scored_night=NIGHT), NIGHT, POLICY)

    assert not decision.retrain
    assert "rollout of v2" in decision.reason


def test_no_retrain_while_an_approved_candidate_waits_for_its_shadow():
    approved = Evaluation("approved", "v2", NIGHT - days(9))

    decision = decide_retrain(state(latest_evaluation=approved, latest_scored_night=NIGHT - days(9)), NIGHT, POLICY)

    assert not decision.retrain
    assert "v2 was approved" in decision.reason


def test_retrain_resumes_after_an_approved_candidate_was_rolled_back_while_the_alert_stays_open():
    # approved 9 nights ago, shadowed, rolled back: the latest night scored has no challenger any more
    approved = Evaluation("approved", "v2", NIGHT - days(9))
    rolled_back = state(
        latest_evaluation=approved, challenger=None, latest_scored_night=NIGHT, **trained_on(NIGHT - days(9))
    )

    assert decide_retrain(rolled_back, NIGHT, POLICY).retrain


def test_retrain_resumes_after_a_rejected_candidate_once_the_cooldown_is_over():
    rejected = Evaluation("rejected", "v2", NIGHT - days(7))

    assert decide_retrain(state(latest_evaluation=rejected, **trained_on(NIGHT - days(7))), NIGHT, POLICY).retrain


def test_cooldown_nights_and_drift_settings_have_defaults_and_are_validated():
    assert LifecycleConfig().retrain == RetrainPolicyConfig(
        cooldown_nights=7, on_persistent_drift=False, drift_persistence_nights=7
    )
    with pytest.raises(ValueError, match="cooldown_nights"):
        RetrainPolicyConfig(cooldown_nights=0)


# ------------------------------------------------------------------------------------- shadow start and rollout


def test_an_approved_evaluation_starts_the_shadow_the_next_night():
    request = decide_shadow_start(Evaluation("approved", "v2", NIGHT))

    assert isinstance(request, RegistryRequest)
    assert request.change.action == "start_shadow" and request.change.version == "v2"
    assert request.effective == NIGHT + days(1)


@pytest.mark.parametrize("decision", ["rejected", "nothing to evaluate"])
def test_an_evaluation_that_did_not_approve_starts_nothing(decision):
    assert decide_shadow_start(Evaluation(decision, "v2", NIGHT)) == f"latest evaluation: {decision}"


def shadow(action: str, **more) -> dict:
    return {
        "night": NIGHT.isoformat(),
        "challenger_version": "v2",
        "rollout_action": action,
        "rollout_reason": "why",
        **more,
    }


def test_a_rollout_advance_asks_for_the_next_stage_from_the_next_night():
    request = rollout_request(shadow("advance", rollout_next_stage="canary:5"))

    assert request == RegistryRequest(RegistryChange("advance", "v2", "canary:5", "why", "sensor"), NIGHT + days(1))


def test_a_rollout_promotion_and_rollback_ask_for_their_changes():
    assert rollout_request(shadow("promote")).change.action == "promote"
    assert rollout_request(shadow("rollback")).change.action == "reject_challenger"


def test_a_held_rollout_changes_nothing_and_says_why():
    assert rollout_request(shadow("hold")) == "rollout: hold (why)"
    assert rollout_request({"challenger_version": "none", "rollout_action": "none"}) == "rollout: none"
