"""``nightkeeper backtest``: replaying nights with a simulated clock through the pipeline core.

One short replay (simulated credit nights, a bad-data night, labels two nights late) run once through the real CLI,
then its warehouse, summary.json and report.html are checked behaviour by behaviour.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml
from pipeline_harness import FIRST_NIGHT, example_config
from typer.testing import CliRunner

from nightkeeper.backtest import CONFIG_NAME, MARKER, replay_nights, run_backtest
from nightkeeper.cli import app
from nightkeeper.config import parse_config
from nightkeeper.examples import simulator

NIGHTS = 5
ROWS = 800
LABEL_DELAY = 2
BAD_NIGHT = 1


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("backtest")
    simulator.simulate_to_folders(
        FIRST_NIGHT,
        NIGHTS,
        ROWS,
        5,
        simulator.ScenarioPlan.bad_data_at(BAD_NIGHT),
        root / "batches",
        root / "labels",
        label_delay_days=0,
    )
    simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), days=20, rows_per_day=500, seed=3).write_parquet(
        root / "history.parquet"
    )
    config = root / "nightkeeper.yaml"
    config.write_text(yaml.safe_dump(example_config(), sort_keys=False))
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--config",
            str(config),
            "--history",
            str(root / "history.parquet"),
            "--batches",
            str(root / "batches"),
            "--labels",
            str(root / "labels"),
            "--label-delay",
            str(LABEL_DELAY),
            "--out",
            str(root / "out"),
        ],
    )
    out = root / "out"
    return {"root": root, "out": out, "cli": result, "summary": json.loads((out / "summary.json").read_text())}


def _query(out: Path, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(out / "warehouse.duckdb"), read_only=True) as connection:
        return connection.execute(sql).pl()


@pytest.mark.slow
def test_the_cli_replays_every_night_and_says_where_the_report_is(replay) -> None:
    assert replay["cli"].exit_code == 0, replay["cli"].output
    assert "report.html" in replay["cli"].output
    assert [n["night"] for n in replay["summary"]["nights"]] == [
        (FIRST_NIGHT + dt.timedelta(days=i)).isoformat() for i in range(NIGHTS)
    ]


@pytest.mark.slow
def test_every_landed_row_has_exactly_one_outcome_each_night(replay) -> None:
    counts = _query(
        replay["out"],
        """
        select r.partition_date, count(*) as raw,
               (select count(*) from nightly.outcomes o where o.partition_date = r.partition_date) as answered
        from nightly.raw_batch r group by all order by 1""",
    )
    assert counts.height == NIGHTS
    assert (counts["raw"] == counts["answered"]).all()
    assert [n["rows"] for n in replay["summary"]["nights"]] == counts["raw"].to_list()


@pytest.mark.slow
def test_labels_are_seen_only_from_their_arrival_night(replay) -> None:
    stored = _query(replay["out"], "select partition_date, arrived_on from monitoring.labels")
    assert stored.height > 0
    assert ((stored["arrived_on"] - stored["partition_date"]).dt.total_days() == LABEL_DELAY).all()
    # the last LABEL_DELAY nights' labels had not arrived when the replay ended
    assert stored["partition_date"].max() == FIRST_NIGHT + dt.timedelta(days=NIGHTS - 1 - LABEL_DELAY)
    assert replay["summary"]["label_lag_days"] == {"median": LABEL_DELAY, "min": LABEL_DELAY, "max": LABEL_DELAY}


@pytest.mark.slow
def test_while_the_first_champion_serves_the_counterfactual_is_the_served_auc(replay) -> None:
    nights = replay["summary"]["nights"]
    first = replay["summary"]["first_champion"]
    alone = [n for n in nights if n["serving_version"] == first and n["served_auc"] is not None]
    assert alone, "the first champion served labeled nights"
    assert all(n["served_auc"] == pytest.approx(n["first_champion_auc"]) for n in alone)


@pytest.mark.slow
def test_realized_auc_uses_labels_the_replay_had_not_seen_yet(replay) -> None:
    last = replay["summary"]["nights"][-1]
    assert last["labeled_rows"] > 0 and last["served_auc"] is not None


@pytest.mark.slow
def test_each_nights_estimate_verdict_is_the_trust_the_performance_step_recorded(replay) -> None:
    recorded = _query(
        replay["out"],
        "select night, value from monitoring.night_metrics where metric = 'performance.estimate_trusted'",
    )
    verdicts = {night.isoformat(): value >= 0.5 for night, value in recorded.iter_rows()}
    summary = {n["night"]: n["estimate_trusted"] for n in replay["summary"]["nights"]}
    assert verdicts and summary == verdicts  # not the calibration-only flag, which passes where the estimate is off


@pytest.mark.slow
def test_the_summary_counts_the_bad_nights_quarantine_and_says_what_alerted(replay) -> None:
    nights = replay["summary"]["nights"]
    assert nights[BAD_NIGHT]["sources"]["quarantine"] + nights[BAD_NIGHT]["sources"]["fallback"] > 0
    opened = [a for a in replay["summary"]["alerts"] if a["event"] == "opened"]
    assert opened and all(a["rule"] and a["message"] for a in opened)
    assert replay["summary"]["lifecycle"][0]["event"] == "champion"


@pytest.mark.slow
def test_the_report_is_one_self_contained_html_file_with_its_plots(replay) -> None:
    html = (replay["out"] / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "src='http" not in html and 'src="http' not in html
    for heading in (
        "Served AUC vs the first champion left alone",
        "Alerts",
        "Lifecycle",
        "Estimated (CBPE) vs realized AUC",
    ):
        assert heading in html


@pytest.mark.slow
def test_the_output_is_a_normal_project_whose_config_loads(replay) -> None:
    from nightkeeper.config import load_config

    project = load_config(replay["out"] / CONFIG_NAME)
    assert project.warehouse_path == replay["out"] / "warehouse.duckdb"
    assert project.landing_path == replay["root"] / "batches"


def test_a_folder_not_written_by_a_backtest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "batches" / "2026-01-01").mkdir(parents=True)
    (tmp_path / "batches" / "2026-01-01" / "a.parquet").write_bytes(b"")
    (tmp_path / "labels").mkdir()
    (tmp_path / "history.parquet").write_bytes(b"")
    out = tmp_path / "project"
    out.mkdir()
    (out / "warehouse.duckdb").write_text("someone's data")
    with pytest.raises(ValueError, match="out_dir: .* not written by a backtest"):
        run_backtest(
            parse_config(example_config(), root=tmp_path),
            tmp_path / "history.parquet",
            tmp_path / "batches",
            tmp_path / "labels",
            2,
            "daily",
            out,
            progress=False,
        )
    assert (out / "warehouse.duckdb").read_text() == "someone's data"
    assert not (out / MARKER).exists()


def test_nights_run_from_the_first_to_the_last_batch_at_the_cadence(tmp_path: Path) -> None:
    for day in ("2026-01-01", "2026-01-08", "2026-01-22"):
        (tmp_path / day).mkdir()
        (tmp_path / day / "batch.parquet").write_bytes(b"")
    weekly = replay_nights(tmp_path, "{date}/*.parquet", dt.timedelta(days=7))
    assert weekly == [dt.date(2026, 1, 1), dt.date(2026, 1, 8), dt.date(2026, 1, 15), dt.date(2026, 1, 22)]
    daily = replay_nights(tmp_path, "{date}/*.parquet", dt.timedelta(days=1))
    assert len(daily) == 22  # the nights without a file are replayed as empty nights


def test_batches_that_match_no_file_of_the_pattern_are_refused(tmp_path: Path) -> None:
    (tmp_path / "2026-01-01").mkdir()
    (tmp_path / "2026-01-01" / "batch.csv").write_text("a\n1\n")
    with pytest.raises(ValueError, match=r"batches_dir: no file .* matches the source pattern '\{date\}/\*.parquet'"):
        replay_nights(tmp_path, "{date}/*.parquet", dt.timedelta(days=1))
