"""The labeled history a retrain learns from, built with the real code paths in a real DuckDB file: simulator nights
landed, read and validated into ``nightly.validated_batch``, delivered labels reconciled and stored in
``monitoring.labels``, reviewer labels stored in ``review.labels``; and the split into training and holdout nights."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from nightkeeper import labels as label_store
from nightkeeper import warehouse
from nightkeeper.config import ProjectConfig
from nightkeeper.examples.simulator import ScenarioPlan, simulate_night, write_labels, write_landing
from nightkeeper.ingest import read_raw_batch
from nightkeeper.review.files import LABEL_SCHEMA
from nightkeeper.review.storage import store_review_labels
from nightkeeper.training import train_model
from nightkeeper.training_data import labeled_history, split_holdout
from nightkeeper.validation import validate

FIRST = dt.date(2024, 5, 1)
NIGHTS = [FIRST + dt.timedelta(days=i) for i in range(5)]
DELIVERED_NIGHTS = NIGHTS[:4]  # the last night's labels have not arrived yet: only reviewers labeled some of it
ROWS = 200
SEED = 5
REVIEWED_AT = dt.datetime(2024, 5, 9, 8, 30, tzinfo=dt.UTC)
PLAN = ScenarioPlan.bad_data_at(0, defects=frozenset({"negative_income"}))  # night 0: a few rows quarantined


@dataclass(frozen=True)
class History:
    """A warehouse holding five validated nights, delivered labels for four and review labels; plus the truth."""

    path: Path
    valid: pl.DataFrame
    quarantined_ids: set[str]
    truth: pl.DataFrame
    reviewed_ids: list[str]  # on the last night, which has no delivered labels
    contested_id: str  # on night 1: the delivered label and a reviewer's opposite label


def review_rows(rows: list[tuple[str, dt.date, int]], reviewer: str = "alice") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "entity_id": [r[0] for r in rows],
            "partition_date": [r[1] for r in rows],
            "label": [r[2] for r in rows],
            "reviewer": reviewer,
            "note": None,
            "reviewed_at": REVIEWED_AT,
            "source_file": "batch-1.csv",
            "row_number": list(range(1, len(rows) + 1)),
        },
        schema=LABEL_SCHEMA,
    )


@pytest.fixture(scope="module")
def history(core_config: ProjectConfig, tmp_path_factory: Any) -> History:
    root = tmp_path_factory.mktemp("training_data")
    contract = core_config.contract
    valid, raw_ids, truth, quarantined = [], [], [], set()
    for index, night in enumerate(NIGHTS):
        data = simulate_night(night, ROWS, SEED, PLAN.scenario_for_night(index))
        landed = write_landing(data, night, root / "landing")
        raw = read_raw_batch([landed], night, contract).frame
        result = validate(raw, contract)
        valid.append(result.valid)
        quarantined |= set(result.quarantine["entity_id"].to_list())
        raw_ids.append(raw.select("entity_id", "partition_date"))
        truth.append(data.labels.with_columns(pl.lit(night).alias("partition_date")))
    valid_frame, truth_frame = pl.concat(valid), pl.concat(truth)
    assert quarantined, "night 0 should have quarantined rows"

    path = root / "warehouse.duckdb"
    with warehouse.connect(path) as connection:
        connection.execute("create schema nightly")
        connection.execute("create table nightly.validated_batch as select * from valid_frame")
        answered = pl.concat(raw_ids)  # every id we answered (quarantined ones too, by the fallback)
        for night in DELIVERED_NIGHTS:
            arrival = night + dt.timedelta(days=3)
            nights_truth = truth_frame.filter(pl.col("partition_date") == night).drop("partition_date")
            file = write_labels(nights_truth, arrival, root / "labels")
            batch = label_store.reconcile_labels(
                label_store.read_label_file(file, contract), answered, label_store.stored_labels(connection), arrival
            )
            assert batch.rejected.height == 0
            label_store.store_labels(connection, batch.accepted)
        last = valid_frame.filter(pl.col("partition_date") == NIGHTS[-1])["entity_id"].head(3).to_list()
        contested = valid_frame.filter(pl.col("partition_date") == NIGHTS[1])["entity_id"][0]
        contested_truth = truth_frame.filter(pl.col("application_id") == contested)["defaulted"].item()
        store_review_labels(
            connection,
            review_rows(
                [
                    (last[0], NIGHTS[-1], 1),
                    (last[1], NIGHTS[-1], 0),
                    (last[2], NIGHTS[-1], 1),
                    (contested, NIGHTS[1], 1 - contested_truth),
                ]
            ),
        )
    return History(path, valid_frame, quarantined, truth_frame, last, contested)


@pytest.fixture
def connection(history: History) -> Any:
    with warehouse.connect(history.path) as opened:
        yield opened


def expected_columns(config: ProjectConfig) -> list[str]:
    contract = config.contract
    return [
        "partition_date",
        "source_file",
        "row_number",
        contract.entity_id,
        contract.event_time,
        *contract.feature_names,
        contract.target,
        "label_source",
    ]


# ---------------------------------------------------------------------------------------------- labeled_history


def test_labeled_history_holds_the_validated_rows_that_carry_a_label(connection, history, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=True)

    delivered_valid = history.valid.filter(pl.col("partition_date").is_in(DELIVERED_NIGHTS)).height
    assert frame.height == delivered_valid + len(history.reviewed_ids)
    assert frame["application_id"].is_unique().all()
    assert not set(frame["application_id"].to_list()) & history.quarantined_ids  # quarantined rows never train


def test_delivered_labels_are_the_true_outcomes(connection, history, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=True)
    delivered = frame.filter(pl.col("label_source") == "delivered")

    joined = delivered.join(history.truth, on=["application_id", "partition_date"], suffix="_true")
    assert joined.height == delivered.height
    assert (joined["defaulted"] == joined["defaulted_true"]).all()


def test_labeled_history_has_contract_column_names_and_types(connection, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=True)

    assert frame.columns == expected_columns(core_config)
    assert "entity_id" not in frame.columns and "event_time" not in frame.columns
    assert frame.schema["defaulted"] == pl.Int8
    assert frame.schema["applied_at"] == pl.Datetime("us")
    assert frame.schema["partition_date"] == pl.Date


def test_rows_are_ordered_by_night_file_and_row(connection, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=True)

    assert frame.select("partition_date", "source_file", "row_number").equals(
        frame.select("partition_date", "source_file", "row_number").sort("partition_date", "source_file", "row_number")
    )


def test_delivered_label_wins_over_a_review_label_for_the_same_row(connection, history, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=True)
    row = frame.filter(pl.col("application_id") == history.contested_id)
    truth = history.truth.filter(pl.col("application_id") == history.contested_id)["defaulted"].item()

    assert row.height == 1
    assert row["label_source"].item() == "delivered"
    assert row["defaulted"].item() == truth


def test_review_labels_fill_a_night_without_delivered_labels(connection, history, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[-1], NIGHTS[-1], include_review=True)

    assert frame["application_id"].to_list() == history.reviewed_ids
    assert frame["defaulted"].to_list() == [1, 0, 1]


def test_review_label_source_names_the_reviewer_and_the_utc_time(connection, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[-1], NIGHTS[-1], include_review=True)

    assert set(frame["label_source"]) == {"review:alice@2024-05-09T08:30:00Z"}


def test_review_label_source_is_utc_whatever_the_session_time_zone(history, core_config):
    with warehouse.connect(history.path) as connection:
        connection.execute(
            "set TimeZone = 'Europe/Berlin'"
        )  # what DuckDB picks on a laptop in Berlin (TZ=Europe/Berlin)
        frame = labeled_history(connection, core_config.contract, NIGHTS[-1], NIGHTS[-1], include_review=True)

    assert set(frame["label_source"]) == {"review:alice@2024-05-09T08:30:00Z"}


def test_without_review_labels_only_delivered_labels_remain(connection, history, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=False)

    assert set(frame["label_source"]) == {"delivered"}
    assert set(frame["partition_date"].unique().to_list()) == set(DELIVERED_NIGHTS)


def test_only_nights_between_first_and_last_are_returned(connection, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[1], NIGHTS[2], include_review=True)

    assert sorted(frame["partition_date"].unique().to_list()) == [NIGHTS[1], NIGHTS[2]]


def test_labeled_history_trains_as_it_is(connection, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=True)

    trained = train_model(frame.drop("partition_date", "label_source"), core_config)

    assert trained.card.training_window.rows + trained.card.training_window.holdout_rows == frame.height


def test_empty_with_contract_columns_when_no_validated_batch_exists(tmp_path, core_config):
    with warehouse.connect(tmp_path / "empty.duckdb") as connection:
        frame = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=True)

    assert frame.height == 0
    assert frame.columns == expected_columns(core_config)
    assert frame.schema["defaulted"] == pl.Int8 and frame.schema["label_source"] == pl.String


def test_empty_with_contract_columns_when_no_label_table_exists(tmp_path, history, core_config):
    valid = history.valid  # noqa: F841 - read by DuckDB below
    with warehouse.connect(tmp_path / "unlabeled.duckdb") as connection:
        connection.execute("create schema nightly")
        connection.execute("create table nightly.validated_batch as select * from valid")
        frame = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=True)

    assert frame.height == 0
    assert frame.columns == expected_columns(core_config)


def test_review_labels_alone_are_used_when_no_delivered_label_table_exists(tmp_path, history, core_config):
    valid = history.valid  # noqa: F841 - read by DuckDB below
    with warehouse.connect(tmp_path / "reviewed_only.duckdb") as connection:
        connection.execute("create schema nightly")
        connection.execute("create table nightly.validated_batch as select * from valid")
        store_review_labels(connection, review_rows([(history.reviewed_ids[0], NIGHTS[-1], 1)], reviewer="bob"))
        with_review = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=True)
        without = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=False)

    assert with_review["label_source"].to_list() == ["review:bob@2024-05-09T08:30:00Z"]
    assert without.height == 0 and without.columns == expected_columns(core_config)


# ------------------------------------------------------------------------------------------------- split_holdout


def nights_frame(nights: list[dt.date], rows_per_night: int = 3) -> pl.DataFrame:
    dates = [night for night in nights for _ in range(rows_per_night)]
    return pl.DataFrame({"partition_date": dates, "x": list(range(len(dates)))})


def test_split_holdout_puts_the_latest_nights_in_the_holdout():
    labeled = nights_frame(NIGHTS)

    training, holdout = split_holdout(labeled, 2)

    assert sorted(holdout["partition_date"].unique().to_list()) == NIGHTS[3:]
    assert sorted(training["partition_date"].unique().to_list()) == NIGHTS[:3]
    assert training.height + holdout.height == labeled.height
    assert training.columns == holdout.columns == labeled.columns


def test_split_holdout_counts_labeled_nights_not_calendar_days():
    gappy = [dt.date(2024, 5, 1), dt.date(2024, 5, 2), dt.date(2024, 5, 9), dt.date(2024, 5, 20)]

    training, holdout = split_holdout(nights_frame(gappy), 2)

    assert sorted(holdout["partition_date"].unique().to_list()) == gappy[2:]
    assert sorted(training["partition_date"].unique().to_list()) == gappy[:2]


def test_split_holdout_does_not_depend_on_row_order():
    labeled = nights_frame(NIGHTS).sample(fraction=1.0, shuffle=True, seed=1)

    training, holdout = split_holdout(labeled, 1)

    assert holdout["partition_date"].unique().to_list() == [NIGHTS[-1]]
    assert training["partition_date"].max() == NIGHTS[-2]


@pytest.mark.parametrize("holdout_nights", [5, 8])
def test_everything_is_holdout_when_there_are_at_most_n_nights(holdout_nights):
    labeled = nights_frame(NIGHTS)

    training, holdout = split_holdout(labeled, holdout_nights)

    assert holdout.equals(labeled)
    assert training.height == 0 and training.columns == labeled.columns


def test_split_holdout_of_an_empty_history_is_two_empty_frames():
    training, holdout = split_holdout(nights_frame([]).cast({"partition_date": pl.Date}), 2)

    assert training.height == holdout.height == 0


def test_split_holdout_on_labeled_history_holds_out_the_review_only_night(connection, core_config):
    frame = labeled_history(connection, core_config.contract, NIGHTS[0], NIGHTS[-1], include_review=True)

    training, holdout = split_holdout(frame, 2)

    assert sorted(holdout["partition_date"].unique().to_list()) == NIGHTS[3:]
    assert training["partition_date"].max() == NIGHTS[2]
