"""Drift alerts a person can act on (issue #9, item 5): on simulated nights measured against a real model's reference
profile, with the shipped drift rules, the alert opens on the first night of a change, says which features and
levels moved (shares before → after), stays silent over long stable runs — also of small nights of low-cardinality
integer codes — and stops paging once acknowledged; the reference is the serving champion's, so it moves with
each promotion."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import lightgbm as lgb
import polars as pl
import pytest
import yaml

from nightkeeper import alerts, metric_names, registry
from nightkeeper.artifacts import save_artifact
from nightkeeper.config import AlertRule, ProjectConfig, parse_config
from nightkeeper.drift import measure_drift, serving_reference
from nightkeeper.encoding import FeatureCard, feature_matrix
from nightkeeper.examples import worlds
from nightkeeper.examples.simulator import Scenario, simulate_history, simulate_night
from nightkeeper.metrics_store import record_metrics
from nightkeeper.profile import CategoryProfile, ReferenceProfile
from nightkeeper.training import TrainedModel, train_model, training_frame
from nightkeeper.warehouse import connect

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
SEED = 7
FIRST = dt.date(2026, 3, 1)
ROWS = 2_000
SHIPPED_RULES: list[dict[str, Any]] = yaml.safe_load(CONFIG_PATH.read_text())["monitoring"]["alerts"]["rules"]


def night(offset: int) -> dt.date:
    return FIRST + dt.timedelta(days=offset)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    raw = copy.deepcopy(yaml.safe_load(CONFIG_PATH.read_text()))
    raw["model"]["num_boost_round"] = 20
    raw["model"]["params"]["num_threads"] = 1
    return parse_config(raw, root=tmp_path_factory.mktemp("drift_alerts"))


@pytest.fixture(scope="module")
def trained(config: ProjectConfig) -> TrainedModel:
    """The champion: trained on 20 clean simulated nights of 1000 rows; its card holds the reference profile."""
    history = simulate_history(FIRST - dt.timedelta(days=1), days=20, rows_per_day=1_000, seed=SEED)
    return train_model(training_frame(history, config), config)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(tmp_path / "warehouse.duckdb") as connection:
        yield connection


def drift_rules(config: ProjectConfig) -> list[AlertRule]:
    return [rule for rule in config.monitoring.alerts.rules if rule.category == "drift"]


def run_drift_night(
    conn: duckdb.DuckDBPyConnection,
    rules: list[AlertRule],
    model: lgb.Booster,
    profile: ReferenceProfile,
    features: list[FeatureCard],
    when: dt.date,
    frame: pl.DataFrame,
    sample: pl.DataFrame | None = None,
    id_column: str = "application_id",
) -> list[dict[str, Any]]:
    """One night's drift step and alert step, as the pipeline runs them: measure, record with details, alert."""
    result = measure_drift(
        profile, frame, model.predict(feature_matrix(frame, features)), features, sample, id_column=id_column
    )
    record_metrics(conn, when, result.metrics(), "v1", details=result.details())
    return alerts.run_alerts(conn, rules, when)


def clean(offset: int, rows: int = ROWS) -> pl.DataFrame:
    return simulate_night(night(offset), rows, SEED + offset).applications


def shifted(offset: int, rows: int = ROWS) -> pl.DataFrame:
    return simulate_night(night(offset), rows, SEED + offset, Scenario(young_mobile_share=0.3)).applications


def rarest_level(profile: ReferenceProfile, feature: str) -> str:
    reference = profile.features[feature]
    assert isinstance(reference, CategoryProfile)
    return min(zip(reference.frequencies, reference.levels, strict=True))[1]


def test_a_sudden_shift_alerts_on_its_first_night_naming_the_features_and_levels(
    conn: duckdb.DuckDBPyConnection, config: ProjectConfig, trained: TrainedModel
) -> None:
    card, rules = trained.card, drift_rules(config)
    for offset in range(3):
        assert (
            run_drift_night(conn, rules, trained.booster, card.profile, card.features, night(offset), clean(offset))
            == []
        )

    events = run_drift_night(conn, rules, trained.booster, card.profile, card.features, night(3), shifted(3))

    [feature_drift] = [e for e in events if e["rule"] == "feature-drift"]
    assert feature_drift["event"] == "opened"
    message = feature_drift["message"]
    assert "drifted: age: PSI" in message  # the young population: the most drifted feature, named first
    assert "channel: mobile" in message and "% → " in message  # a category names its moved level with shares
    stored = json.loads(
        conn.execute("select payload from monitoring.alerts where rule = 'feature-drift'").fetchone()[0]
    )
    named = [feature["feature"] for feature in stored["details"]["features"]]
    assert named[0] == "age" and "channel" in named


def test_a_rare_level_absent_from_a_small_night_is_not_called_vanished(
    config: ProjectConfig, trained: TrainedModel
) -> None:
    card = trained.card
    rare = rarest_level(card.profile, "employment_type")  # ~0.5 %: often absent from 150 rows by chance
    frame = clean(0, rows=150).filter(pl.col("employment_type") != rare)

    result = measure_drift(card.profile, frame, None, card.features)

    assert result.metrics()["drift.vanished_levels"] == 0


def test_an_acknowledged_drift_stops_paging_while_it_lasts_and_pages_again_after_it_resolves(
    conn: duckdb.DuckDBPyConnection, config: ProjectConfig, trained: TrainedModel
) -> None:
    card, rules = trained.card, drift_rules(config)

    def nightly(offset: int, frame: pl.DataFrame) -> list[dict[str, Any]]:
        return run_drift_night(conn, rules, trained.booster, card.profile, card.features, night(offset), frame)

    opened = [e for e in nightly(0, shifted(0)) if e["event"] == "opened"]
    assert {e["rule"] for e in opened} >= {"feature-drift"}
    outbox_before = conn.execute("select count(*) from monitoring.alert_outbox").fetchone()[0]
    for event in opened:
        alerts.acknowledge(
            conn,
            event["alert_id"],
            "oncall",
            "young mobile campaign; performance holds",
            dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC),
        )

    quiet = [nightly(offset, shifted(offset)) for offset in range(1, 6)]

    assert quiet == [[]] * 5  # the drift persists: no re-open, no message
    assert conn.execute("select count(*) from monitoring.alert_outbox").fetchone()[0] == outbox_before
    assert alerts.open_alerts(conn).height == 0  # acknowledged alerts no longer count as open (e.g. for retraining)
    log = conn.execute(
        "select event, message from monitoring.alert_events where alert_id = ? order by event", [opened[0]["alert_id"]]
    ).fetchall()
    assert [event for event, _ in log] == ["acknowledged", "opened"]
    assert log[0][1] == f"[acknowledged] {opened[0]['alert_id']} by oncall: young mobile campaign; performance holds"

    resolved = nightly(6, clean(6))
    again = nightly(7, shifted(7))

    assert {e["event"] for e in resolved} == {"resolved"}
    assert "feature-drift" in {e["rule"] for e in again if e["event"] == "opened"}  # a new drift pages again


def test_only_an_open_alert_can_be_acknowledged_and_only_with_a_reason(
    conn: duckdb.DuckDBPyConnection, config: ProjectConfig, trained: TrainedModel
) -> None:
    card, rules = trained.card, drift_rules(config)
    [event] = [
        e
        for e in run_drift_night(conn, rules, trained.booster, card.profile, card.features, night(0), shifted(0))
        if e["rule"] == "feature-drift"
    ]
    at = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)

    with pytest.raises(ValueError, match="needs a reason"):
        alerts.acknowledge(conn, event["alert_id"], "oncall", "  ", at)
    with pytest.raises(ValueError, match=f"no alert 'feature-drift@2026-01-01'; open alerts: .*{event['alert_id']}"):
        alerts.acknowledge(conn, "feature-drift@2026-01-01", "oncall", "seen", at)
    alerts.acknowledge(conn, event["alert_id"], "oncall", "seen", at)
    with pytest.raises(ValueError, match="already acknowledged by oncall: seen"):
        alerts.acknowledge(conn, event["alert_id"], "someone", "again", at)
    run_drift_night(conn, rules, trained.booster, card.profile, card.features, night(1), clean(1))
    with pytest.raises(ValueError, match="is resolved"):
        alerts.acknowledge(conn, event["alert_id"], "oncall", "late", at)


# ------------------------------------------------------------------------------ the simulator's scenario worlds


def world_champion(world: worlds.World, root: Path) -> tuple[ProjectConfig, TrainedModel]:
    """The world's own config (its shipped-example alert rules replaced by this repo's drift rules) and a model
    trained on its labeled history."""
    raw = world.config()
    raw["monitoring"]["alerts"]["rules"] = [r for r in SHIPPED_RULES if r["category"] == "drift"]
    raw["model"]["num_boost_round"] = 20
    raw["model"]["params"]["num_threads"] = 1
    config = parse_config(raw, root=root)
    return config, train_model(training_frame(world.history(), config), config)


def world_alerts(
    conn: duckdb.DuckDBPyConnection, world: worlds.World, root: Path, nights: list[int]
) -> list[dict[str, Any]]:
    """The drift alert events over the given batch nights of ``world``, measured against its champion."""
    config, model = world_champion(world, root)
    card, dates = model.card, world.batch_nights()
    return [
        event
        for index in nights
        for event in run_drift_night(
            conn,
            drift_rules(config),
            model.booster,
            card.profile,
            card.features,
            dates[index],
            training_frame(world.labeled_night(dates[index]), config),
            model.reference_sample,
            config.contract.entity_id,
        )
    ]


def test_a_vanished_category_is_named_with_its_shares_the_first_night_it_is_gone(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    world = worlds.vanishing_category_world(nights=60, vanish_at=45)
    facts = world.facts

    before = world_alerts(conn, world, tmp_path, [43, 44])
    gone = world_alerts(conn, world, tmp_path, [45])

    assert before == []
    [vanished] = [e for e in gone if e["rule"] == "vanished-level"]
    assert vanished["event"] == "opened" and vanished["night"] == facts["vanishes_on"].isoformat()
    assert re.search(
        r"payment_method: cash_on_delivery [67]\.\d% → 0\.0% \(vanished\), invoice 1[45]\.\d% → 2[123]\.\d%",
        vanished["message"],
    )
    [level] = vanished["details"]["levels"]
    assert (level["feature"], level["level"], level["current_share"]) == ("payment_method", "cash_on_delivery", 0.0)
    assert level["reference_share"] == pytest.approx(facts["share_before"]["cash_on_delivery"], abs=0.01)


@pytest.mark.slow
def test_ninety_stable_nights_of_low_cardinality_codes_raise_no_drift_alert(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    world = worlds.duplicate_codes_world(nights=90)

    assert world_alerts(conn, world, tmp_path, list(range(90))) == []


@pytest.mark.slow
def test_forty_small_nights_of_about_150_rows_raise_no_drift_alert(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    world = worlds.small_nights_world(nights=40)

    assert world_alerts(conn, world, tmp_path, list(range(40))) == []


@pytest.mark.slow
def test_weekend_and_payday_shares_the_reference_has_seen_raise_no_drift_alert(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    world = worlds.seasonal_shares_world(nights=45)  # thresholds learn the reference's real nights, weekends included

    events = world_alerts(conn, world, tmp_path, list(range(45)))

    # the per-feature thresholds and the population-shift limit both learned the reference's real nights: a pay day
    # is as distinct from the whole reference as the pay days the reference holds (a fixed 0.6 fired on them)
    assert events == []


# ------------------------------------------------------------------------------------------ the reference moves


def test_drift_is_measured_against_the_serving_champion_so_the_reference_moves_with_each_promotion(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, config: ProjectConfig, trained: TrainedModel
) -> None:
    inflated_history = simulate_history(night(9), days=10, rows_per_day=1_000, seed=SEED + 1).with_columns(
        pl.col("income") * 1.5
    )
    successor = train_model(training_frame(inflated_history, config), config)
    first = registry.register(conn, trained.card, save_artifact(trained, tmp_path / "models"))
    second = registry.register(conn, successor.card, save_artifact(successor, tmp_path / "models"))
    registry.set_alias(conn, registry.CHAMPION, first.version, night(0), "test", "bootstrap")
    registry.set_alias(conn, registry.CHAMPION, second.version, night(10), "test", "promotion")
    tonight = clean(12).with_columns(pl.col("income") * 1.5)

    before, after = serving_reference(conn, night(9), {}), serving_reference(conn, night(12), {})

    assert before is not None and after is not None
    assert (before.version, after.version) == (first.version, second.version)
    assert after.profile == successor.card.profile and after.sample is not None
    drifted = lambda reference: measure_drift(reference.profile, tonight, None, reference.features).drifted_features()  # noqa: E731
    assert "income" in drifted(before)  # against the old champion, inflated incomes are drift
    assert "income" not in drifted(after)  # the promoted model was trained on them: its reference moved


def test_no_champion_means_no_reference(conn: duckdb.DuckDBPyConnection) -> None:
    assert serving_reference(conn, night(0), {}) is None


def test_every_drift_metric_and_detail_is_a_registered_metric(config: ProjectConfig, trained: TrainedModel) -> None:
    card = trained.card
    result = measure_drift(
        card.profile, clean(0), trained.booster.predict(feature_matrix(clean(0), card.features)), card.features
    )

    assert [name for name in result.metrics() if metric_names.lookup(name) is None] == []
    assert set(result.details()) <= set(result.metrics())


def test_alerts_cli_lists_an_open_drift_and_acknowledges_it_with_who_and_why(
    tmp_path: Path, config: ProjectConfig, trained: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from nightkeeper import cli
    from nightkeeper.cli import app

    # a wide terminal: the console's width is fixed when the module is imported where COLUMNS is set (pytest-xdist)
    monkeypatch.setattr(cli.console, "width", 250)

    config_file = tmp_path / "nightkeeper.yaml"
    config_file.write_text(CONFIG_PATH.read_text())
    project = parse_config(yaml.safe_load(config_file.read_text()), root=tmp_path)
    card = trained.card
    with connect(project.warehouse_path) as connection:
        events = run_drift_night(
            connection, drift_rules(config), trained.booster, card.profile, card.features, night(0), shifted(0)
        )
    alert_id = next(e["alert_id"] for e in events if e["rule"] == "feature-drift")
    runner = CliRunner()

    listed = runner.invoke(app, ["alerts", "list", "--config", str(config_file)])
    acked = runner.invoke(
        app, ["alerts", "ack", alert_id, "--reason", "campaign; AUC holds", "--by", "ana", "--config", str(config_file)]
    )
    refused = runner.invoke(app, ["alerts", "ack", "nope@2026-01-01", "--reason", "x", "--config", str(config_file)])
    after = runner.invoke(app, ["alerts", "list", "--config", str(config_file)])

    assert listed.exit_code == 0 and alert_id in listed.output and "drifted: age" in listed.output
    assert acked.exit_code == 0 and f"acknowledged {alert_id} by ana: campaign; AUC holds" in acked.output
    assert refused.exit_code == 2 and "no alert 'nope@2026-01-01'" in refused.output
    assert "acknowledged by ana" in after.output
    with connect(project.warehouse_path) as connection:
        logged = connection.execute(
            "select message from monitoring.alert_events where event = 'acknowledged'"
        ).fetchall()
    assert logged == [(f"[acknowledged] {alert_id} by ana: campaign; AUC holds",)]


def test_the_pipeline_drift_and_alert_steps_name_the_moved_features_against_the_serving_champion(
    tmp_path: Path, trained: TrainedModel
) -> None:
    from nightkeeper.pipeline.monitoring import alerts_night, drift_night

    raw = copy.deepcopy(yaml.safe_load(CONFIG_PATH.read_text()))
    raw["monitoring"]["drift"]["evidently_report"] = False
    config = parse_config(raw, root=tmp_path)
    tonight = (
        shifted(3)  # the simulator's columns are typed as the contract says; the id column as the validated batch's
        .rename({"application_id": "entity_id"})
        .with_columns(pl.lit("night.parquet").alias("source_file"), pl.int_range(pl.len()).alias("row_number"))
    )
    scored = tonight.with_columns(
        pl.Series("score", trained.booster.predict(feature_matrix(tonight, trained.card.features)))
    )
    with connect(config.warehouse_path) as connection:
        champion = registry.register(connection, trained.card, save_artifact(trained, tmp_path / "models"))
        registry.set_alias(connection, registry.CHAMPION, champion.version, night(0), "test", "bootstrap")

        measured = drift_night(config, connection, night(3), tonight, scored)
        alerted = alerts_night(config, connection, night(3))
        message = connection.execute("select message from monitoring.alerts where rule = 'feature-drift'").fetchone()[0]

    assert measured.metadata["reference_version"] == champion.version
    assert "feature-drift" in {alert["rule"] for alert in alerted.metadata["opened_alerts"]}
    assert "drifted: age: PSI" in message and "channel: mobile" in message


def test_a_prediction_drift_alert_says_how_the_scores_moved_and_which_features_moved_most(
    conn: duckdb.DuckDBPyConnection, config: ProjectConfig, trained: TrainedModel
) -> None:
    card, rules = trained.card, drift_rules(config)
    young = simulate_night(night(0), ROWS, SEED, Scenario(young_mobile_share=0.8)).applications

    events = run_drift_night(conn, rules, trained.booster, card.profile, card.features, night(0), young)

    [prediction_drift] = [e for e in events if e["rule"] == "prediction-drift"]
    message = prediction_drift["message"]
    assert re.search(r"scores: PSI \d\.\d{3} > threshold \d\.\d{3}, mean 0\.\d{3} → 0\.\d{3}", message), message
    assert re.search(r"at or above the decision threshold \d+\.\d% → \d+\.\d%", message), message
    assert "features that moved most: drifted: age: PSI" in message
