"""Issue #9's drift acceptance on a scenario backtest (labels 5 nights late): when a category vanishes overnight and
another absorbs its share, the first night it is gone alerts, naming the feature, the vanished level and the shares
before → after; once a person acknowledges those alerts, the nights the drift persists page nobody. And a reduced
form of "stable low-cardinality data pages nobody": 45 nights of integer codes with natural duplicates, one monthly
retrain that the data gate must not refuse.

The world is replayed through ``nightkeeper backtest``'s driver up to the vanishing night; the acknowledgement is
made as ``nightkeeper alerts ack`` makes it, then the nights after it run through the same pipeline steps.
Sized for CI's slow suite: about 1 and 3.5 minutes on a loaded two-core machine.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from nightkeeper import alerts, warehouse
from nightkeeper.backtest import run_backtest
from nightkeeper.config import ProjectConfig, load_config
from nightkeeper.examples import worlds
from nightkeeper.pipeline import monitoring, nightly
from nightkeeper.warehouse import NIGHTLY_SCHEMA, store_partition

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

LABEL_DELAY = 5
NIGHTS, VANISH_AT, AFTER_ACK = 24, 20, 3  # the replay covers nights 0..VANISH_AT; the last AFTER_ACK follow the ack


def drift_night(config: ProjectConfig, night: dt.date) -> list[dict[str, Any]]:
    """The steps of one night that drift alerting needs (ingest, validate, score, drift, alerts), stored as the
    backtest and the IO manager store them; the alert events of the night."""
    with warehouse.connect(config.warehouse_path) as connection:

        def run(step, *inputs, **options) -> dict:
            result = step(config, connection, night, *inputs, **options)
            for table, frame in result.tables.items():
                store_partition(connection, NIGHTLY_SCHEMA, table, night, frame)
            return result.tables

        raw = run(nightly.ingest_night)["raw_batch"]
        rows = run(nightly.validate_night, raw)["validated_batch"]
        scored = run(nightly.score_night, rows)["scored_batch"]
        run(monitoring.drift_night, rows, scored, plots=False)
        run(monitoring.alerts_night)
        return (
            connection.execute(
                "select e.event, e.alert_id, a.rule from monitoring.alert_events e join monitoring.alerts a "
                "using (alert_id) where e.night = ?",
                [night],
            )
            .pl()
            .to_dicts()
        )


def test_a_vanished_category_alerts_its_first_night_naming_it_and_stops_paging_once_acknowledged(
    tmp_path: Path,
) -> None:
    world = worlds.vanishing_category_world(nights=NIGHTS, rows_per_night=600, history_nights=45, vanish_at=VANISH_AT)
    gone = world.facts["vanishes_on"]
    files = worlds.write_world(world, tmp_path / "world", label_delay=0)
    raw = yaml.safe_load(files.config.read_text())
    raw["model"]["num_boost_round"] = 60
    files.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    later = tmp_path / "later"  # the nights after the acknowledgement land only once it is made
    later.mkdir()
    for night in files.nights[VANISH_AT + 1 :]:
        shutil.move(files.batches / night.isoformat(), later / night.isoformat())

    result = run_backtest(
        load_config(files.config), files.history, files.batches, files.labels, LABEL_DELAY, "daily",
        tmp_path / "backtest", progress=False,
    )  # fmt: skip

    opened = [a for a in result.summary["alerts"] if a["event"] == "opened"]
    assert [a for a in opened if a["night"] < gone.isoformat()] == [], "stable nights before the change page nobody"
    tonight = {a["rule"]: a for a in opened if a["night"] == gone.isoformat()}
    assert {"vanished-level", "feature-drift"} <= set(tonight), opened
    assert re.search(
        r"payment_method: cash_on_delivery [5-9]\.\d% → 0\.0% \(vanished\), invoice 1\d\.\d% → 2\d\.\d%",
        tonight["vanished-level"]["message"],
    ), tonight["vanished-level"]["message"]
    assert "drifted: payment_method: cash_on_delivery" in tonight["feature-drift"]["message"]  # the feature and level

    config = load_config(result.config_path)
    with warehouse.connect(config.warehouse_path) as connection:
        for alert in tonight.values():
            alerts.acknowledge(
                connection,
                alert["alert_id"],
                "data owner",
                "cash on delivery was discontinued; invoice absorbs it",
                dt.datetime.combine(gone + dt.timedelta(days=1), dt.time(9), dt.UTC),
            )
    for night in files.nights[VANISH_AT + 1 :]:
        shutil.move(later / night.isoformat(), files.batches / night.isoformat())
        events = drift_night(config, night)
        paged = [e for e in events if e["rule"] in tonight and e["event"] != "acknowledged"]  # the ack is logged
        assert paged == [], f"{night}: {events}"

    with warehouse.connect(config.warehouse_path) as connection:
        statuses = dict(
            connection.execute(
                "select rule, status from monitoring.alerts where opened_night = ? and rule in (select unnest(?))",
                [gone, list(tonight)],
            ).fetchall()
        )
    assert statuses == {rule: alerts.ACKNOWLEDGED for rule in tonight}  # the drift persists, quietly


def test_forty_five_stable_nights_of_low_cardinality_codes_page_nobody_and_the_monthly_retrain_is_not_refused(
    tmp_path: Path,
) -> None:
    """The reduced form of the acceptance test (90 nights, test_self_healing_backtests): one monthly retrain, on
    data whose rows repeat a feature vector every night (the data gate once refused it as a bot burst)."""
    world = worlds.duplicate_codes_world(nights=45, rows_per_night=600)
    files = worlds.write_world(world, tmp_path / "world", label_delay=0)
    raw = yaml.safe_load(files.config.read_text())
    raw["model"]["num_boost_round"] = 60
    files.config.write_text(yaml.safe_dump(raw, sort_keys=False))

    result = run_backtest(
        load_config(files.config), files.history, files.batches, files.labels, LABEL_DELAY, "daily",
        tmp_path / "backtest", progress=False,
    )  # fmt: skip

    opened = [a for a in result.summary["alerts"] if a["event"] == "opened"]
    retrains = [e for e in result.summary["lifecycle"] if e["event"].startswith("candidate")]
    assert opened == [], opened
    assert retrains and [e for e in retrains if e["event"] == "candidate refused"] == [], retrains
