"""The yardstick a backtest's served model is held to: a model retrained before every block on every label, at once.

``retrained_every_block`` is the oracle of issue #9's acceptance: for each block of nights it trains a model with the
project's own training function and config (``nightkeeper.training.train_model``: same parameters, same rounds, same
``lifecycle.training_window_days`` window) on every labeled row dated before the block — as if labels arrived the
night they were scored — and scores the block's rows with it. No production system can do better than this without
seeing the future, so "served AUC ≥ 0.97 × oracle AUC" says how much of what retraining can give the lifecycle kept.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from nightkeeper.config import ProjectConfig
from nightkeeper.encoding import feature_matrix
from nightkeeper.performance import auc
from nightkeeper.training import train_model, training_frame


@dataclass(frozen=True)
class OracleBlock:
    """One block: its nights, the rows scored, the oracle model's AUC on them and the training rows it learned from."""

    first_night: dt.date
    last_night: dt.date
    rows: int
    training_rows: int
    auc: float | None


def retrained_every_block(
    config: ProjectConfig,
    labeled: pl.DataFrame,
    nights: list[dt.date],
    block_nights: int,
    step: dt.timedelta = dt.timedelta(days=1),
) -> list[OracleBlock]:
    """The oracle's AUC per block of ``block_nights`` consecutive ``nights`` (the backtest's blocks).

    ``labeled`` holds every labeled row, history included, in the contract's columns; each row's night is the date
    of its ``contract.event_time`` (required); a batch night covers ``step`` (a week's batch its seven days). A
    block's model learns from the rows of the ``training_window_days`` before the block's first night. AUC is None
    for a block without both classes. Raises ValueError when the contract has no event time (rows could not be
    placed in time).
    """
    contract = config.contract
    if not contract.event_time or contract.event_time not in labeled.columns:
        raise ValueError("the oracle needs the contract's event_time column to place labeled rows in time")
    dated = training_frame(labeled, config).with_columns(pl.col(contract.event_time).cast(pl.Date).alias("__night"))
    window = dt.timedelta(days=config.lifecycle.training_window_days)
    blocks = []
    for start in range(0, len(nights), block_nights):
        span = nights[start : start + block_nights]
        train = dated.filter(pl.col("__night").is_between(span[0] - window, span[0], closed="left"))
        block = dated.filter(pl.col("__night").is_between(span[0], span[-1] + step, closed="left"))
        trained = train_model(train.drop("__night"), config)
        scores = np.asarray(trained.booster.predict(feature_matrix(block, trained.card.features)))
        labels = block[contract.target].to_numpy()
        blocks.append(OracleBlock(span[0], span[-1], block.height, train.height, auc(labels, scores)))
    return blocks
