"""The oracle the self-healing backtests are held to: a model retrained before every block on every label at once."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from nightkeeper.config import load_config
from nightkeeper.encoding import feature_matrix
from nightkeeper.examples import worlds
from nightkeeper.oracle import retrained_every_block
from nightkeeper.training import train_model

BLOCK = 30
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def drifting(tmp_path_factory: pytest.TempPathFactory):
    world = worlds.base_rate_drift_world(nights=150, rows_per_night=300)
    path = tmp_path_factory.mktemp("world") / "nightkeeper.yaml"
    path.write_text(yaml.safe_dump(world.config(), sort_keys=False))
    config = load_config(path)
    config = config.model_copy(update={"model": config.model.model_copy(update={"num_boost_round": 40})})
    nights = world.batch_nights()
    labeled = pl.concat([world.history(), *(world.labeled_night(n) for n in nights)])
    return world, config, nights, labeled


def test_the_oracle_scores_every_row_of_each_block_once(drifting) -> None:
    world, config, nights, labeled = drifting
    blocks = retrained_every_block(config, labeled, nights, BLOCK)
    assert [b.first_night for b in blocks] == nights[::BLOCK]
    assert sum(b.rows for b in blocks) == labeled.height - world.history().height


def test_each_block_learns_only_from_the_training_window_before_it(drifting) -> None:
    _, config, nights, labeled = drifting
    blocks = retrained_every_block(config, labeled, nights, BLOCK)
    window = config.lifecycle.training_window_days
    per_night = labeled[config.contract.event_time].cast(pl.Date).value_counts(name="n")
    for block in blocks:
        before = per_night.filter(
            pl.col(config.contract.event_time).is_between(
                block.first_night - dt.timedelta(days=window), block.first_night, closed="left"
            )
        )
        assert block.training_rows == before["n"].sum()


def test_under_a_drifting_base_rate_the_oracle_beats_the_first_model_left_alone(drifting) -> None:
    world, config, nights, labeled = drifting
    last = retrained_every_block(config, labeled, nights, BLOCK)[-1]
    frozen = train_model(world.history(), config)
    block = pl.concat([world.labeled_night(n) for n in nights[-BLOCK:]])
    scores = frozen.booster.predict(feature_matrix(block, frozen.card.features))
    assert last.auc > roc_auc_score(block[config.contract.target].to_numpy(), scores) + 0.01
