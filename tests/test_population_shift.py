"""The population-shift limit is fitted on the reference's own real nights (issue #9): the domain classifier tells a
pay-day weekend from the whole reference at an AUC above a fixed 0.6, but a reference that holds such nights has
learned how distinct they are, so the same night later pages nobody; a homogeneous reference keeps the floor."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from test_drift_alerts import world_champion

from nightkeeper.drift import domain_auc_limit, measure_drift
from nightkeeper.encoding import feature_cards, feature_matrix
from nightkeeper.examples import worlds
from nightkeeper.profile import domain_chance_std, fit_domain_auc
from nightkeeper.training import training_frame

FLOOR = 0.6  # monitoring.drift.max_domain_auc's default


@pytest.fixture(scope="module")
def seasonal(tmp_path_factory: pytest.TempPathFactory):
    world = worlds.seasonal_shares_world(nights=40)
    config, model = world_champion(world, tmp_path_factory.mktemp("seasonal"))
    return world, config, model


def test_a_pay_day_weekend_the_reference_has_seen_is_not_a_population_shift(seasonal) -> None:
    world, config, model = seasonal
    card = model.card
    [night] = [d for d in world.batch_nights() if d.weekday() == 6 and d.day == 1]  # Sunday, February 1st: pay day
    frame = training_frame(world.labeled_night(night), config)

    result = measure_drift(
        card.profile, frame, model.booster.predict(feature_matrix(frame, card.features)), card.features,
        model.reference_sample, domain_floor=FLOOR, id_column=config.contract.entity_id,
    )  # fmt: skip

    assert result.multivariate_auc > FLOOR  # a fixed limit called it a shift
    assert result.domain_limit > result.multivariate_auc and result.population_shifted == 0.0


def test_calendar_nights_raise_the_fitted_value_and_a_homogeneous_reference_stays_near_chance(
    seasonal, tmp_path: Path
) -> None:
    _, _, model = seasonal
    stable = worlds.duplicate_codes_world(nights=1, rows_per_night=600, history_nights=30)
    config, _ = world_champion(stable, tmp_path)
    data = training_frame(stable.history(), config)
    nights = data[config.contract.event_time].cast(pl.Date).to_numpy()

    homogeneous = fit_domain_auc(data, feature_cards(config.contract), nights, 10_000)

    assert model.card.profile.domain_auc > 0.63
    assert homogeneous < 0.5 + 4 * domain_chance_std(600)
    assert domain_auc_limit(homogeneous, 600, FLOOR) == FLOOR  # the floor holds where chance is all there is


def test_the_limit_widens_for_smaller_nights_and_without_a_fitted_value_is_the_floor() -> None:
    assert domain_auc_limit(0.62, 500, FLOOR) > domain_auc_limit(0.62, 5_000, FLOOR) > 0.62
    assert domain_auc_limit(None, 5_000, FLOOR) == FLOOR
    assert domain_auc_limit(None, 5_000, 0.7) == 0.7  # a config that raises the floor applies to every card


def test_a_reference_without_real_nights_fits_nothing(seasonal) -> None:
    world, config, model = seasonal
    data = training_frame(world.history(), config)

    assert fit_domain_auc(data, model.card.features, None, 10_000) is None
