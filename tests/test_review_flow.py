"""Review round trip through Dagster and the CLI: the night's queue is exported, reviewers fill it in, the file lands
in the inbox, the sensor imports it, bad rows are rejected with reasons, and the labels reach the next retrain."""

from __future__ import annotations

import csv
import shutil

import polars as pl
import pytest
from pipeline_harness import FIRST_NIGHT, bootstrap_example_champion, example_config, make_project
from typer.testing import CliRunner

from jobs.demo import QUIET_LOGS, SensorDriver
from jobs.lifecycle import retrain_run_config
from nightkeeper import warehouse
from nightkeeper.cli import app
from nightkeeper.examples import simulator
from nightkeeper.training_data import labeled_history


@pytest.mark.slow  # four nights, the CLI, a sensor and a retrain (~37 s on 2 quiet cores)
def test_exported_queue_filled_in_and_dropped_in_the_inbox_is_imported_and_feeds_the_retrain(tmp_path):
    raw = example_config()
    raw["review"] = {**raw["review"], "capacity": 40}
    raw["lifecycle"]["promotion_gate"]["holdout_days"] = 1
    raw["lifecycle"]["data_gate"]["min_rows"] = 1000
    project = make_project(tmp_path / "project", raw)
    bootstrap_example_champion(project)
    config = project.config
    nights = simulator.simulate_to_folders(
        FIRST_NIGHT,
        4,
        2000,
        11,
        simulator.ScenarioPlan.bad_data_at(0),
        config.landing_path,
        config.labels_path,
        label_delay_days=1,
    )
    shutil.rmtree(
        config.labels_path / nights[1].isoformat()
    )  # the first night's labels never arrive: only reviewers label it
    for night in nights:
        project.run_night(night)
    queue = project.query("select * from review.queue where partition_date = ?", [nights[0]])
    assert 0 < queue.height <= 40
    assert queue["priority"].to_list() == sorted(queue["priority"].to_list())

    export = tmp_path / "review.csv"
    done = CliRunner().invoke(
        app, ["review", "export", "--date", str(nights[0]), "--config", str(project.config_path), "--out", str(export)]
    )
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(export.open()))
    assert len(rows) == queue.height
    for i, row in enumerate(rows):
        row["label"], row["reviewer"] = ("1" if i % 2 else "0"), "alice"
    rows[0]["label"] = "maybe"  # outside the allowed set
    rows.append({**rows[1], "entity_id": "NOT-AN-ID"})  # unknown id
    inbox = config.path(config.review.inbox)
    inbox.mkdir(parents=True)
    with (inbox / "batch-1.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    ran = SensorDriver(project.defs, project.instance).tick()

    assert any("review_inbox" in line and "FAILED" not in line for line in ran), ran
    labels = project.query("select * from review.labels")
    assert labels.height == queue.height - 1
    assert set(labels["reviewer"]) == {"alice"}
    rejects = pl.read_csv(inbox / "batch-1.rejects.csv")
    reasons = " ".join(rejects["reason"].to_list())
    assert (
        rejects.height == 2 and "maybe" in reasons and "NOT-AN-ID" in " ".join(map(str, rejects["entity_id"].to_list()))
    )

    with warehouse.connect(config.warehouse_path) as connection:
        history = labeled_history(connection, config.contract, FIRST_NIGHT, nights[-1], include_review=True)
    reviewed = history.filter(pl.col("label_source").str.starts_with("review:alice@"))
    assert reviewed.height > 0
    retrain = project.defs.resolve_job_def("retrain").execute_in_process(
        run_config={**retrain_run_config(nights[-1].isoformat(), "test"), **QUIET_LOGS},
        instance=project.instance,
        raise_on_error=False,
    )
    trained = retrain.asset_materializations_for_node("candidate_model")[0].metadata
    assert trained["status"].value in ("trained", "rejected"), (
        trained["reasons"].value if "reasons" in trained else trained
    )
    assert trained["review_labeled_rows"].value > 0
