"""Issue #9's acceptance, proven by backtests: on the simulator's scenario worlds, with labels 5 nights late, the
served model keeps what retraining can give (≥ 0.97 × a model retrained every block on every label at once) and is
never worse than the first champion left alone; stable low-cardinality data pages nobody; and on every world the
estimate before labels (CBPE) is marked untrusted on each night where it was off the realized AUC by more than 0.03.

Each test replays a world through ``nightkeeper backtest``'s driver (the pipeline core with the sensors' decisions)
at a size that runs in a few minutes on two cores: fewer rows per night and fewer boosting rounds than the worlds'
defaults, the same for the served models and the oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from nightkeeper.backtest import run_backtest
from nightkeeper.backtest_report import BLOCK_NIGHTS
from nightkeeper.config import load_config
from nightkeeper.examples import worlds
from nightkeeper.oracle import retrained_every_block

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(3600)]

LABEL_DELAY = 5
NOISE = (
    0.005  # AUC a block may lose to the first champion by chance (two models scored on the same ~18–24k labeled rows)
)
ORACLE_SHARE = 0.97
ESTIMATE_GAP = 0.03  # issue #9: CBPE is marked untrusted on every night it is off the realized AUC by more than this
BOOST_ROUNDS = 60


def backtest_world(world: worlds.World, out: Path) -> tuple[dict[str, Any], Any]:
    """Write ``world`` (labels per scoring night), replay it with labels ``LABEL_DELAY`` nights late; the summary
    and the config it ran with."""
    files = worlds.write_world(world, out / "world", label_delay=0)
    raw = yaml.safe_load(files.config.read_text())
    raw["model"]["num_boost_round"] = BOOST_ROUNDS
    files.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(files.config)
    result = run_backtest(
        config,
        files.history,
        files.batches,
        files.labels,
        LABEL_DELAY,
        world.calendar.cadence,
        out / "backtest",
        progress=False,
    )
    return result.summary, config


def served_blocks(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary's blocks that are whole and hold labels of both classes."""
    return [b for b in summary["blocks"] if b["served_auc"] is not None and b["first_champion_auc"] is not None]


def lifecycle_story(summary: dict[str, Any]) -> str:
    """The lifecycle events and per-block AUCs, for an assertion message that says what happened."""
    events = [f"{e['night']} {e['event']} {e['version']}: {(e['detail'] or '')[:120]}" for e in summary["lifecycle"]]
    blocks = [
        f"{b['first_night']}: served {b['served_auc']:.4f} first {b['first_champion_auc']:.4f}"
        for b in served_blocks(summary)
    ]
    return "\n".join(["blocks:", *blocks, "lifecycle:", *events])


def assert_estimate_untrusted_wherever_off(summary: dict[str, Any]) -> None:
    """Every night whose CBPE estimate was off the realized AUC of the champion's rows (every label, known later) by
    more than ESTIMATE_GAP was marked untrusted that night. Canary nights are left out: their served rows mix two
    models, the estimate is the champion's alone."""
    compared = [
        n
        for n in summary["nights"]
        if n["estimated_auc"] is not None and n["served_auc"] is not None and not n["sources"].get("canary")
    ]
    off = [n for n in compared if abs(n["estimated_auc"] - n["served_auc"]) > ESTIMATE_GAP]
    trusted_and_off = [
        f"{n['night']}: estimated {n['estimated_auc']:.4f} realized {n['served_auc']:.4f}"
        for n in off
        if n["estimate_trusted"] is not False
    ]
    assert compared and trusted_and_off == [], "\n".join(trusted_and_off)


def assert_never_below_first_champion(summary: dict[str, Any]) -> None:
    for block in served_blocks(summary):
        assert block["served_minus_first"] >= -NOISE, (
            f"block from {block['first_night']}: served AUC {block['served_auc']:.4f} below the first champion's "
            f"{block['first_champion_auc']:.4f}\n{lifecycle_story(summary)}"
        )


# measured 2026-12-01 (150 nights x 800 rows, labeled history held to the retrain window, noise-aware realized drop,
# fitted population-shift limit): served / oracle per block 1.003, 1.002, 0.999, 0.988, 0.995; served - first
# champion +0.000, +0.000, +0.000, +0.003, +0.022; CBPE never trusted at 800 rows a night (0 nights trusted and off)
def test_base_rate_drift_served_model_keeps_up_with_a_model_retrained_every_block(tmp_path: Path) -> None:
    world = worlds.base_rate_drift_world(nights=150, rows_per_night=800)
    summary, config = backtest_world(world, tmp_path)
    labeled = pl.concat([world.history(), *(world.labeled_night(n) for n in world.batch_nights())])
    oracle = retrained_every_block(config, labeled, world.batch_nights(), BLOCK_NIGHTS)
    blocks = served_blocks(summary)
    assert len(blocks) == len(oracle) == 5
    assert_never_below_first_champion(summary)
    assert_estimate_untrusted_wherever_off(summary)
    for block, best in zip(blocks, oracle, strict=True):
        assert block["served_auc"] >= ORACLE_SHARE * best.auc, (
            f"block from {block['first_night']}: served AUC {block['served_auc']:.4f} < {ORACLE_SHARE} × oracle "
            f"{best.auc:.4f}\n{lifecycle_story(summary)}"
        )


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: worlds.duplicate_codes_world(nights=120, rows_per_night=600), id="duplicate_codes"),
        pytest.param(lambda: worlds.seasonal_shares_world(nights=120, rows_per_night=600), id="seasonal_shares"),
        pytest.param(lambda: worlds.weak_model_world(nights=120, rows_per_night=600), id="weak_model"),
        pytest.param(lambda: worlds.small_nights_world(nights=120), id="small_nights"),
        pytest.param(
            lambda: worlds.vanishing_category_world(nights=120, rows_per_night=600, vanish_at=60),
            id="vanishing_category",
        ),
    ],
)
def test_where_retraining_cannot_help_the_served_model_is_never_below_the_first_champion(
    make: Callable[[], worlds.World], tmp_path: Path
) -> None:
    summary, _ = backtest_world(make(), tmp_path)
    assert len(served_blocks(summary)) >= 4
    assert_never_below_first_champion(summary)
    assert_estimate_untrusted_wherever_off(summary)


def test_ninety_stable_nights_of_low_cardinality_codes_raise_no_alert(tmp_path: Path) -> None:
    summary, _ = backtest_world(worlds.duplicate_codes_world(nights=90, rows_per_night=600), tmp_path)
    opened = [a for a in summary["alerts"] if a["event"] == "opened"]
    refused = [e for e in summary["lifecycle"] if e["event"] == "candidate refused"]
    assert opened == [] and refused == [], f"alerts: {opened}\nrefused retrains: {refused}"
    assert_estimate_untrusted_wherever_off(summary)
