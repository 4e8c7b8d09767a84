"""The model lifecycle as data: challenger stages, the rollout decision of each night, promotion and rollback.

Stages of a challenger, in order: ``shadow`` (scores every row, serves none), then ``canary:<p>`` for each configured
percentage (serves the entities whose stable bucket is below p), and at 100 % it becomes champion. Every change is
one appended row of the dated alias log (nightkeeper.registry), so "which version served on night D" always has an
answer and a rollback is one more row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import duckdb
import polars as pl

from nightkeeper import registry
from nightkeeper.config import RolloutConfig
from nightkeeper.warehouse import run_transaction

SHADOW = "shadow"
Action = Literal["hold", "advance", "promote", "rollback"]


def canary_stage(percent: int) -> str:
    return f"canary:{percent}"


def canary_percent(stage: str | None) -> int:
    """The share of entities the challenger serves in ``stage`` (0 in shadow or with no challenger)."""
    if stage and stage.startswith("canary:"):
        return int(stage.split(":", 1)[1])
    return 0


def next_stage(stage: str, rollout: RolloutConfig) -> str | None:
    """The stage after ``stage``; None when the next step is promotion to champion."""
    order = [SHADOW, *(canary_stage(p) for p in rollout.canary_percents if p < 100)]
    position = order.index(stage)
    return order[position + 1] if position + 1 < len(order) else None


@dataclass(frozen=True)
class NightHealth:
    """How the challenger did on one night, compared with the champion on the same rows.

    ``realized_auc_drop``: champion's minus challenger's realized AUC on the labeled rows of this rollout's nights
    (``labeled_rows`` of them; None until enough labels of both classes landed). ``estimated_auc_drop``: the same from
    tonight's scores by CBPE, counted only while ``estimate_trusted``. ``agreement`` is information, a rule only below
    the configured catastrophic floor.
    """

    night: dt.date
    error_rate: float
    agreement: float
    fallback_rate_increase: float
    estimated_auc_drop: float | None
    estimate_trusted: bool = False
    realized_auc_drop: float | None = None
    labeled_rows: int = 0

    def failures(self, rollout: RolloutConfig) -> list[str]:
        """Each health rule this night broke, as a sentence. Realized evidence, once there, replaces the estimate."""
        broken = []
        if self.error_rate > rollout.max_error_rate:
            broken.append(f"{self.error_rate:.1%} of rows failed to score (limit {rollout.max_error_rate:.1%})")
        if self.agreement < rollout.min_agreement:
            broken.append(
                f"agreement with the champion {self.agreement:.1%} is below the catastrophic floor "
                f"{rollout.min_agreement:.0%}"
            )
        if self.fallback_rate_increase > rollout.max_fallback_rate_increase:
            broken.append(
                f"fallback rate up {self.fallback_rate_increase:.1%} (limit {rollout.max_fallback_rate_increase:.1%})"
            )
        if self.realized_auc_drop is not None:
            if self.realized_auc_drop > rollout.max_realized_auc_drop:
                broken.append(
                    f"realized AUC down {self.realized_auc_drop:.3f} on {self.labeled_rows} labeled rows "
                    f"(limit {rollout.max_realized_auc_drop})"
                )
        elif (
            self.estimate_trusted
            and self.estimated_auc_drop is not None
            and self.estimated_auc_drop > rollout.max_estimated_auc_drop
        ):
            broken.append(f"estimated AUC down {self.estimated_auc_drop:.3f} (limit {rollout.max_estimated_auc_drop})")
        return broken

    def evidence(self) -> str:
        """What tonight's judgement rests on, as a phrase: the AUC evidence and the (informational) agreement."""
        if self.realized_auc_drop is not None:
            auc = f"realized AUC {-self.realized_auc_drop:+.3f} vs the champion on {self.labeled_rows} labeled rows"
        elif self.estimate_trusted and self.estimated_auc_drop is not None:
            auc = (
                f"no realized AUC yet ({self.labeled_rows} labeled rows), estimated AUC {-self.estimated_auc_drop:+.3f}"
            )
        else:
            auc = f"no realized AUC yet ({self.labeled_rows} labeled rows), estimate not trusted"
        return f"{auc}; agreement {self.agreement:.0%}"


@dataclass(frozen=True)
class RolloutDecision:
    action: Action
    reason: str
    next_stage: str | None = None


def decide_rollout(
    stage: str, healthy_nights_in_stage: int, tonight: NightHealth, rollout: RolloutConfig
) -> RolloutDecision:
    """What to do after tonight: roll back on any broken health rule, advance after enough healthy nights, else hold.
    The reason ends with the evidence the night was judged on.

    ``healthy_nights_in_stage`` counts tonight if it was healthy. Shadow needs ``shadow_nights``; each canary step
    needs ``nights_per_step``.
    """
    broken = tonight.failures(rollout)
    if broken:
        return RolloutDecision("rollback", f"{stage} failed its health check on {tonight.night}: " + "; ".join(broken))
    needed = rollout.shadow_nights if stage == SHADOW else rollout.nights_per_step
    evidence = f" ({tonight.evidence()})"
    if healthy_nights_in_stage < needed:
        return RolloutDecision("hold", f"{stage}: {healthy_nights_in_stage} of {needed} healthy nights" + evidence)
    following = next_stage(stage, rollout)
    if following is None:
        return RolloutDecision("promote", f"{stage} held {needed} healthy nights; promoting to champion" + evidence)
    return RolloutDecision(
        "advance", f"{stage} held {needed} healthy nights; advancing to {following}" + evidence, following
    )


def start_shadow(
    connection: duckdb.DuckDBPyConnection, version: str, effective_from: dt.date, actor: str, reason: str
) -> None:
    """Make ``version`` the challenger in shadow from ``effective_from`` on."""
    registry.set_alias(connection, registry.CHALLENGER, version, effective_from, actor, reason, stage=SHADOW)


def advance(
    connection: duckdb.DuckDBPyConnection, version: str, stage: str, effective_from: dt.date, actor: str, reason: str
) -> None:
    """Move the challenger ``version`` to ``stage`` from ``effective_from`` on."""
    registry.set_alias(connection, registry.CHALLENGER, version, effective_from, actor, reason, stage=stage)


def promote(
    connection: duckdb.DuckDBPyConnection, version: str, effective_from: dt.date, actor: str, reason: str
) -> None:
    """Make ``version`` champion from ``effective_from`` on and clear the challenger, in one transaction.

    Both rows or neither: a failure between them must not leave the version serving as champion and as challenger.
    Idempotent: when this very promotion (version and night) is already in the log — a promote repeated after a
    killed one had landed — nothing is logged again. The caller must not hold an open transaction.
    """
    current = registry.alias_state(connection, registry.CHAMPION, effective_from)
    if current.version == version and current.effective_from == effective_from:
        return

    def promote_both() -> None:
        registry.set_alias(connection, registry.CHAMPION, version, effective_from, actor, reason)
        registry.set_alias(connection, registry.CHALLENGER, None, effective_from, actor, f"promoted {version}")

    run_transaction(connection, promote_both)


def reject_challenger(
    connection: duckdb.DuckDBPyConnection, effective_from: dt.date, actor: str, reason: str
) -> str | None:
    """Clear the challenger (a failed rollout); returns the version that was removed."""
    version = registry.alias_state(connection, registry.CHALLENGER, effective_from).version
    if version is not None:
        registry.set_alias(connection, registry.CHALLENGER, None, effective_from, actor, reason)
    return version


def rollback_champion(
    connection: duckdb.DuckDBPyConnection, effective_from: dt.date, actor: str, reason: str
) -> tuple[str, str]:
    """Point champion back at the version it held before the current one; returns (from, to).

    Raises ValueError when there is no earlier champion to return to.
    """
    current = registry.alias_version(connection, registry.CHAMPION, effective_from)
    log = (
        registry.alias_log(connection)
        .filter((pl.col("alias") == registry.CHAMPION) & (pl.col("effective_from") <= effective_from))
        .sort("effective_from", "seq")["version"]
        .to_list()
    )  # only what had taken effect by then: a promotion scheduled for later is not a past champion
    champions = [version for i, version in enumerate(log) if version and (i == 0 or version != log[i - 1])]
    if current is None or len(champions) < 2:
        raise ValueError(f"no earlier champion to roll back to (current champion: {current})")
    previous = champions[-2]
    registry.set_alias(connection, registry.CHAMPION, previous, effective_from, actor, reason)
    return current, previous
