"""`nightkeeper train --history FILE`: the first champion from the user's own labeled history (Parquet or CSV),
checked against the contract with bad rows reported, gated by the behaviour tests, champion from the first night, and
kept in the warehouse and part of each retrain window its dates fall in."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pytest
from pipeline_harness import FIRST_NIGHT, Project, example_config, make_project
from typer.testing import CliRunner

from nightkeeper import registry
from nightkeeper.cli import app
from nightkeeper.config import ProjectConfig
from nightkeeper.examples import simulator
from nightkeeper.pipeline.lifecycle import train_candidate
from nightkeeper.training_data import HISTORY_SOURCE, HistoryFileError, labeled_history, read_history_file

HISTORY_NIGHTS = 12
ROWS_PER_NIGHT = 400


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    return simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), HISTORY_NIGHTS, ROWS_PER_NIGHT, seed=5)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    raw = example_config()
    raw["lifecycle"] = {**raw["lifecycle"], "data_gate": {**raw["lifecycle"]["data_gate"], "min_rows": 2000}}
    return make_project(tmp_path / "project", raw)


def train(project: Project, path: Path, *more: str):
    return CliRunner().invoke(
        app, ["train", "--history", str(path), "--config", str(project.config_path), *more], terminal_width=300
    )


def test_train_makes_the_first_champion_from_the_schedules_start_date(project, history, tmp_path):
    path = tmp_path / "history.parquet"
    history.write_parquet(path)

    done = train(project, path)

    assert done.exit_code == 0, done.output
    with duckdb.connect(str(project.config.warehouse_path)) as connection:
        champion = registry.alias_record(connection, registry.CHAMPION, project.config.schedule.start_date)
        before = registry.alias_record(
            connection, registry.CHAMPION, project.config.schedule.start_date - dt.timedelta(days=1)
        )
    assert champion is not None and before is None
    assert f"champion {champion.version}" in done.output
    assert "pass directions_hold" in done.output


def test_bad_rows_are_reported_by_column_and_left_out(project, history, tmp_path):
    broken = (
        history.with_row_index("i")
        .with_columns(
            pl.when(pl.col("i") == 0).then(-5.0).otherwise(pl.col("income")).alias("income"),  # income must be positive
            pl.when(pl.col("i") == 1).then(None).otherwise(pl.col("defaulted")).alias("defaulted"),  # no label
        )
        .drop("i")
    )
    path = tmp_path / "history.parquet"
    broken.write_parquet(path)

    done = train(project, path)

    assert done.exit_code == 0, done.output
    assert f"{history.height:,} rows, {history.height - 2:,} usable, 2 left out" in done.output
    assert "income" in done.output and "range" in done.output and "defaulted" in done.output
    stored = project.query("select count(*) as n from lifecycle.history")["n"][0]
    assert stored == history.height - 2


def test_a_csv_history_with_its_date_in_another_column_is_read_with_date_column(project, history, tmp_path):
    path = tmp_path / "history.csv"
    history.with_columns(pl.col("applied_at").dt.date().alias("day")).drop("applied_at").write_csv(path)
    raw = example_config()
    raw["contract"] = {key: value for key, value in raw["contract"].items() if key != "event_time"}
    config = ProjectConfig.model_validate(raw)

    checked = read_history_file(path, config.contract, date_column="day")

    assert checked.rejected.height == 0
    assert checked.rows.height == history.height
    assert checked.rows["partition_date"].n_unique() == HISTORY_NIGHTS


def test_a_history_without_a_date_column_is_refused_naming_the_option(history, tmp_path):
    path = tmp_path / "history.csv"
    history.drop("applied_at").write_csv(path)
    raw = example_config()
    raw["contract"] = {key: value for key, value in raw["contract"].items() if key != "event_time"}

    with pytest.raises(HistoryFileError, match="--date-column"):
        read_history_file(path, ProjectConfig.model_validate(raw).contract)


def test_a_history_lacking_the_target_column_fails_naming_it(project, history, tmp_path):
    path = tmp_path / "history.parquet"
    history.drop("defaulted").write_parquet(path)

    done = train(project, path)

    assert done.exit_code == 2
    assert "'defaulted' (the contract's target)" in done.output


def test_a_file_that_is_not_parquet_or_csv_is_refused(project, tmp_path):
    path = tmp_path / "history.xlsx"
    path.write_text("not a table")

    done = train(project, path)

    assert done.exit_code == 2 and ".parquet or .csv" in done.output


def test_the_history_is_part_of_a_retrain_window_that_covers_its_dates(project, history, tmp_path):
    path = tmp_path / "history.parquet"
    history.write_parquet(path)
    assert train(project, path).exit_code == 0
    soon = FIRST_NIGHT + dt.timedelta(days=2)

    with duckdb.connect(str(project.config.warehouse_path)) as connection:
        window = labeled_history(
            connection, project.config.contract, soon - dt.timedelta(days=90), soon, include_review=True
        )

    assert window.height == history.height
    assert set(window["label_source"]) == {HISTORY_SOURCE}


def test_the_history_rolls_off_a_retrain_window_that_has_moved_past_it(project, history, tmp_path):
    path = tmp_path / "history.parquet"
    history.write_parquet(path)
    assert train(project, path).exit_code == 0
    much_later = FIRST_NIGHT + dt.timedelta(days=400)

    with duckdb.connect(str(project.config.warehouse_path)) as connection:
        window = labeled_history(
            connection, project.config.contract, much_later - dt.timedelta(days=90), much_later, include_review=True
        )

    assert window.height == 0


def test_the_first_retrain_is_not_refused_for_lack_of_nightly_labels(project, history, tmp_path):
    path = tmp_path / "history.parquet"
    history.write_parquet(path)
    assert train(project, path).exit_code == 0
    config = project.config

    with duckdb.connect(str(config.warehouse_path)) as connection:
        result = train_candidate(config, connection, FIRST_NIGHT + dt.timedelta(days=2), "test")

    assert result.metadata["status"] != "refused", result.metadata.get("reasons")
    assert result.metadata["history_rows"] > 0
