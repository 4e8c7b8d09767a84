"""Rollout health judged on evidence: a challenger is compared with the champion on the realized AUC of the same
labeled rows of its rollout, as labels land; disagreeing with the champion is no veto (above a catastrophic floor).

Nights run through the pipeline core (the functions the Dagster assets call) on a real warehouse with real models:
a champion trained on the usual world and a challenger trained after a shift of concept and base rate (the
simulator's concept shift, with three of four non-defaulting applicants left out so the base rate rises from about
0.12 to 0.35: the simulator has no base-rate knob yet).
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

import duckdb
import polars as pl
import pytest
from pipeline_harness import FIRST_NIGHT, Project, bootstrap_example_champion, example_config, make_project

from nightkeeper import lifecycle, warehouse
from nightkeeper.examples import simulator
from nightkeeper.models import publish
from nightkeeper.pipeline import monitoring, nightly
from nightkeeper.pipeline.step import StepResult
from nightkeeper.training import train_model
from nightkeeper.warehouse import NIGHTLY_SCHEMA, store_partition

SHIFTED = simulator.Scenario(concept_shift=1.0)
NIGHTS = 3  # shadow needs 3 healthy nights; night 1's labels land on night 2, so night 3 is judged on them


@pytest.fixture
def project(tmp_path) -> Project:
    raw = example_config()
    rollout = {**raw["lifecycle"]["rollout"], "shadow_nights": NIGHTS, "min_labeled_rows": 200}
    project = make_project(tmp_path / "project", example_config(lifecycle={**raw["lifecycle"], "rollout": rollout}))
    bootstrap_example_champion(project)
    return project


def _shifted_night(night: dt.date, rows: int, seed: int) -> simulator.NightData:
    """A concept-shifted night without three of four non-defaulting applicants."""
    data = simulator.simulate_night(night, rows, seed, SHIFTED)
    labels = data.labels.filter((pl.col("defaulted") == 1) | (pl.int_range(pl.len()).over("defaulted") % 4 == 0))
    return simulator.NightData(
        night,
        data.applications.join(labels.select("application_id"), on="application_id", how="semi"),
        labels,
        data.defects,
    )


def _shadow_a_challenger_trained_after_the_shift(project: Project) -> str:
    nights = [FIRST_NIGHT - dt.timedelta(days=offset) for offset in range(20, 0, -1)]
    data = [_shifted_night(night, 500, seed=3) for night in nights]
    history = pl.concat(
        [night.applications.join(night.labels, on="application_id") for night in data], how="vertical_relaxed"
    )
    config = project.config
    record = publish(train_model(history, config), config)
    with warehouse.connect(config.warehouse_path) as connection:
        lifecycle.start_shadow(connection, record.version, FIRST_NIGHT, "test", "trained after the shift")
    return record.version


def _stored(connection: duckdb.DuckDBPyConnection, night: dt.date, result: StepResult) -> StepResult:
    """``result`` after storing its tables as the night's partitions."""
    for name, frame in result.tables.items():
        store_partition(connection, NIGHTLY_SCHEMA, name, night, frame)
    return result


def _run_nights(project: Project, shifted: bool) -> list[dict[str, Any]]:
    """Each night through the nightly steps and the labels step; labels land one night late. The shadow metadata."""
    config = project.config
    nights = [FIRST_NIGHT + dt.timedelta(days=index) for index in range(NIGHTS)]
    for night in nights:
        data = _shifted_night(night, 900, seed=11) if shifted else simulator.simulate_night(night, 600, seed=11)
        simulator.write_landing(data, night, config.landing_path)
        simulator.write_labels(data.labels, night + dt.timedelta(days=1), config.labels_path)
    shadows = []
    with warehouse.connect(config.warehouse_path) as connection:
        for night in nights:
            stored = partial(_stored, connection, night)
            raw = stored(nightly.ingest_night(config, connection, night)).tables["raw_batch"]
            valid = stored(nightly.validate_night(config, connection, night, raw)).tables
            scored = stored(nightly.score_night(config, connection, night, valid["validated_batch"])).tables[
                "scored_batch"
            ]
            shadow = stored(nightly.shadow_night(config, connection, night, valid["validated_batch"], scored))
            stored(
                nightly.answer_night(
                    config, connection, night, raw, valid["quarantine"], scored, shadow.tables["shadow_scores"]
                )
            )
            monitoring.labels_night(config, connection, night)
            shadows.append(shadow.metadata)
    return shadows


def test_a_challenger_that_fixes_a_shift_advances_on_realized_auc_though_it_changes_many_decisions(project):
    version = _shadow_a_challenger_trained_after_the_shift(project)

    shadows = _run_nights(project, shifted=True)

    assert [night["challenger_version"] for night in shadows] == [version] * NIGHTS
    assert max(night["agreement"] for night in shadows) < 0.8, "it must change decisions to fix the shift"
    assert [night["rollout_action"] for night in shadows] == ["hold", "hold", "advance"], [
        n["rollout_reason"] for n in shadows
    ]
    judged = shadows[-1]
    assert judged["labeled_rows"] >= 200
    assert judged["realized_auc_challenger"] > judged["realized_auc_champion"]
    assert "realized AUC +" in judged["rollout_reason"]


def test_a_challenger_with_worse_realized_auc_is_rolled_back_naming_it(project):
    _shadow_a_challenger_trained_after_the_shift(project)

    shadows = _run_nights(project, shifted=False)  # the world did not shift: the challenger is worse

    assert [night["rollout_action"] for night in shadows] == ["hold", "hold", "rollback"], [
        n["rollout_reason"] for n in shadows
    ]
    judged = shadows[-1]
    assert judged["realized_auc_challenger"] < judged["realized_auc_champion"]
    assert "realized AUC down" in judged["rollout_reason"]
