"""The model lifecycle through Dagster, its sensors and the simulator: retrain, the gates, shadow, canary, promotion
and rollback — with every change of role a run of a job and the alias log answering who served each night."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from urllib.parse import urlparse

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
import yaml
from pipeline_harness import (
    FIRST_NIGHT,
    Project,
    alerts_table,
    bootstrap_example_champion,
    champion_of,
    example_config,
    make_project,
)
from typer.testing import CliRunner

from jobs.demo import QUIET_LOGS, SensorDriver
from jobs.lifecycle import registry_run_config, retrain_run_config
from nightkeeper import registry, warehouse
from nightkeeper.cli import app
from nightkeeper.examples import simulator

ROWS = 3000


def lifecycle_project(tmp_path: Path, **lifecycle) -> Project:
    raw = example_config()
    raw["lifecycle"] = {
        **raw["lifecycle"],
        "promotion_gate": {
            **raw["lifecycle"]["promotion_gate"],
            "holdout_days": 1,
            "segments": [],
            "bootstrap_samples": 100,
        },
        "rollout": {
            **raw["lifecycle"]["rollout"],
            "shadow_nights": 1,
            "nights_per_step": 1,
            "max_estimated_auc_drop": 0.08,
            "min_agreement": 0.7,
        },
        "data_gate": {**raw["lifecycle"]["data_gate"], "min_rows": 2000},
        **lifecycle,
    }
    project = make_project(tmp_path / "project", raw)
    bootstrap_example_champion(project)
    return project


def run_nights(project: Project, plan: simulator.ScenarioPlan, nights: int, label_delay_days: int = 1) -> list[str]:
    """Run each night, then let the sensors decide and execute what they request, as the daemon would."""
    config = project.config
    dates = simulator.simulate_to_folders(
        FIRST_NIGHT, nights, ROWS, 11, plan, config.landing_path, config.labels_path, label_delay_days=label_delay_days
    )
    driver = SensorDriver(project.defs, project.instance)
    actions: list[str] = []
    for night in dates:
        assert project.run_night(night).success, night
        actions += [f"{night}: {line}" for line in driver.tick()]
    return actions


def served(project: Project) -> dict[dt.date, set[str]]:
    rows = project.query(
        "select partition_date, source, model_version from nightly.outcomes where source in ('model', 'canary')"
    )
    return {night: set(group["model_version"]) for (night,), group in rows.group_by("partition_date")}


@pytest.mark.slow  # ten nights, a retrain, four rollout steps. In the default suite, piece by piece:
# test_retrain_policy (an open performance alert retrains; an approved candidate starts its shadow; each rollout
# step asks for the next), test_lifecycle_core (shadow, then each canary step, then promotion),
# test_rollout_evidence (a better challenger advances), test_retrain_sensors (the sensors run the retrain job)
def test_improvement_after_concept_drift_goes_through_shadow_and_every_canary_step_to_champion(tmp_path):
    project = lifecycle_project(tmp_path)
    old = project.query("select version from registry.model_aliases where alias = 'champion'")["version"][0]

    actions = run_nights(project, simulator.ScenarioPlan.concept_drift(0, shift=1.0), nights=10)

    log = project.query("select * from registry.model_aliases order by seq")
    new_champion = log.filter(pl.col("alias") == "champion")["version"][-1]
    assert new_champion != old, "\n".join(actions)
    stages = log.filter((pl.col("alias") == "challenger") & (pl.col("version") == new_champion))["stage"].to_list()
    assert stages == ["shadow", "canary:1", "canary:5", "canary:20"]
    canary_nights = project.query(
        "select partition_date, count(*) as n from nightly.outcomes where source = 'canary' group by 1 order by 1"
    )
    assert canary_nights.height == 3 and canary_nights["n"].is_sorted()
    declined_by_canary = project.query(
        """select r.reason_text, r.model_version = o.model_version as own_version from nightly.outcomes o
           left join nightly.reason_codes r using (partition_date, source_file, row_number)
           where o.source = 'canary' and o.decision = 'decline'"""
    )
    assert declined_by_canary.height > 0 and declined_by_canary["reason_text"].is_not_null().all()
    assert declined_by_canary["own_version"].all()  # explained by the challenger that answered, not the champion
    promoted_from = log.filter((pl.col("alias") == "champion") & (pl.col("version") == new_champion))["effective_from"][
        0
    ]
    served_versions = served(project)  # before the connection below: one process opens the file one way at a time
    with warehouse.connect(project.config.warehouse_path) as connection:
        by_log = {night: registry.alias_version(connection, registry.CHAMPION, night) for night in served_versions}
    for night, versions in served_versions.items():
        assert by_log[night] in versions  # the alias log answers which version served every night
        if night >= promoted_from:
            assert versions == {new_champion}
    runs = project.instance.get_runs()
    assert {run.job_name for run in runs} >= {"nightly_batch", "retrain", "promote"}


@pytest.mark.slow  # ten nights and a retrain. In the default suite: test_gates (bot-attack nights excluded, too many
# suspect rows refuse the retrain naming the nights), test_retrain_policy (a refused window trained nothing)
def test_poisoned_training_window_is_refused_with_an_alert_naming_the_nights(tmp_path):
    project = lifecycle_project(tmp_path)
    plan = simulator.ScenarioPlan.bot_attack(5, nights=4, share=0.45)
    config = project.config
    dates = simulator.simulate_to_folders(
        FIRST_NIGHT, 10, ROWS, 11, plan, config.landing_path, config.labels_path, label_delay_days=1
    )
    for night in dates:
        project.run_night(night)

    retrain = project.defs.resolve_job_def("retrain").execute_in_process(
        run_config={**retrain_run_config(dates[-1].isoformat(), "test"), **QUIET_LOGS},
        instance=project.instance,
        raise_on_error=False,
    )

    candidates = project.query("select * from lifecycle.candidates")
    assert candidates["status"].to_list() == ["refused"]
    for night in dates[5:8]:  # attack nights with labels by the last night
        assert str(night) in candidates["reasons"][0]
    assert "retrain-refused" in set(alerts_table(project)["rule"])
    assert project.query("select count(*) as n from registry.model_aliases where alias = 'challenger'")["n"][0] == 0
    assert not retrain.success or all(not c.passed for c in retrain.get_asset_check_evaluations())


@pytest.mark.slow  # five nights, a retrain and its card notebook. In the default suite: test_gates (a one-tree
# candidate fails with an AUC reason), test_candidate_evaluation (a losing candidate is rejected, paging when an alert
# asked for it), test_retrain_policy (an evaluation that did not approve starts nothing)
def test_deliberately_worse_candidate_is_rejected_at_the_gate_and_never_shadows(tmp_path):
    project = lifecycle_project(tmp_path)
    config = project.config
    dates = simulator.simulate_to_folders(
        FIRST_NIGHT,
        5,
        ROWS,
        11,
        simulator.ScenarioPlan.clean(),
        config.landing_path,
        config.labels_path,
        label_delay_days=1,
    )
    for night in dates:
        project.run_night(night)
    raw = yaml.safe_load(project.config_path.read_text())
    raw["model"]["num_boost_round"] = 1
    raw["model"]["params"] = {**raw["model"]["params"], "num_leaves": 2}
    project.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))

    retrain = project.defs.resolve_job_def("retrain").execute_in_process(
        run_config={**retrain_run_config(dates[-1].isoformat(), "test"), **QUIET_LOGS}, instance=project.instance
    )
    driver_runs = SensorDriver(project.defs, project.instance).tick()
    card = retrain.asset_materializations_for_node("candidate_model_card")[0].metadata
    card_file = Path(urlparse(card["html"].value).path)  # a file:// link the UI opens
    assert card_file.exists() and card["images"].value >= 1  # the card says why it was rejected too

    evaluation = project.query("select * from lifecycle.candidates")
    assert evaluation["status"].to_list() == ["rejected"]
    assert "AUC" in evaluation["reasons"][0]
    assert "candidate-rejected" in set(alerts_table(project)["rule"])
    assert not any("start_shadow" in run or "shadow:" in run for run in driver_runs)
    assert project.query("select count(*) as n from registry.model_aliases where alias = 'challenger'")["n"][0] == 0


@pytest.mark.slow  # Dagster nights of a canary (~20 s). In the default suite: test_lifecycle_core (each broken
# health rule rolls back), test_pipeline_nightly (a challenger failing every row is rolled back)
def test_challenger_failing_in_canary_is_rolled_back_within_one_night_and_alerts(tmp_path):
    project = lifecycle_project(tmp_path)
    champion = champion_of(project)
    # a real booster trained on 3 features, registered with a card listing all of them: it raises while scoring
    rng = np.random.default_rng(0)
    narrow = lgb.train(
        {"objective": "binary", "verbose": -1}, lgb.Dataset(rng.normal(size=(300, 3)), label=rng.integers(0, 2, 300)), 5
    )
    path = tmp_path / "broken.txt"
    path.write_text(narrow.model_to_string())
    card = champion.card.model_copy(
        update={"version": "broken000001", "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    )
    with warehouse.connect(project.config.warehouse_path) as connection:
        registry.register(connection, card, path)
    promote = project.defs.resolve_job_def("promote")
    promote.execute_in_process(
        run_config={
            **registry_run_config("advance", "broken000001", FIRST_NIGHT.isoformat(), "test", stage="canary:5"),
            **QUIET_LOGS,
        },
        instance=project.instance,
    )

    actions = run_nights(project, simulator.ScenarioPlan.clean(), nights=2)

    log = project.query("select * from registry.model_aliases where alias = 'challenger' order by seq")
    assert log["version"].to_list() == ["broken000001", None]
    assert log["effective_from"][-1] == FIRST_NIGHT + dt.timedelta(days=1)
    assert "rollback" in set(alerts_table(project)["rule"])
    assert any("rollback" in action for action in actions)
    second = project.table("outcomes", FIRST_NIGHT + dt.timedelta(days=1))
    assert (second["source"] == "model").all() and (second["model_version"] == champion.version).all()


@pytest.mark.slow  # a multi-night scenario (~20 s on 2 quiet cores)
def test_models_rollback_command_restores_the_previous_champion_for_the_next_night(tmp_path):
    project = lifecycle_project(tmp_path)
    first = project.query("select version from registry.model_aliases where alias = 'champion'")["version"][0]
    config = project.config
    history = simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), days=10, rows_per_day=600, seed=9)
    from nightkeeper.models import publish
    from nightkeeper.training import train_model

    second = publish(train_model(history, config), config).version
    dates = simulator.simulate_to_folders(
        FIRST_NIGHT, 3, 800, 11, simulator.ScenarioPlan.clean(), config.landing_path, config.labels_path
    )
    env_home = {"DAGSTER_HOME": str(config.dagster_home)}
    project.run_night(dates[0])
    done = CliRunner().invoke(
        app,
        ["models", "promote", second, "--config", str(project.config_path), "--effective", dates[1].isoformat()],
        env=env_home,
    )
    assert done.exit_code == 0, done.output
    project.run_night(dates[1])

    done = CliRunner().invoke(
        app,
        [
            "models",
            "rollback",
            "--config",
            str(project.config_path),
            "--effective",
            dates[2].isoformat(),
            "--reason",
            "test rollback",
            "--actor",
            "tester",
        ],
        env=env_home,
    )
    assert done.exit_code == 0, done.output
    project.run_night(dates[2])

    assert served(project) == {dates[0]: {first}, dates[1]: {second}, dates[2]: {first}}
    log = project.query("select * from registry.model_aliases where alias = 'champion' order by seq")
    assert log["actor"][-1] == "tester" and log["reason"][-1] == "test rollback"
