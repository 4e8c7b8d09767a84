"""Late labels: files found by arrival date, read with their raw text, reconciled with the answers we gave (accepted,
known duplicate or rejected with a reason) and stored once per id in a real DuckDB file."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from nightkeeper.config import ProjectConfig
from nightkeeper.examples.simulator import ENTITY_ID, TARGET, simulate_night, write_labels
from nightkeeper.labels import (
    LABEL_FILE_SCHEMA,
    LABELS_SCHEMA,
    REJECTED_SCHEMA,
    LabelBatch,
    arrival_date,
    label_files,
    read_label_file,
    reconcile_labels,
    store_label_batch,
    stored_labels,
    stored_rejections,
)
from nightkeeper.warehouse import connect

NIGHT = date(2024, 5, 1)
ARRIVAL = NIGHT + timedelta(days=7)
ROWS = 400
SEED = 7


@pytest.fixture(scope="module")
def night_labels() -> pl.DataFrame:
    """The simulator's true labels of NIGHT: (application_id, defaulted)."""
    return simulate_night(NIGHT, ROWS, SEED).labels


@pytest.fixture(scope="module")
def answered(night_labels: pl.DataFrame) -> pl.DataFrame:
    """Every id of NIGHT was answered on NIGHT."""
    return night_labels.select(pl.col(ENTITY_ID).alias("entity_id"), pl.lit(NIGHT).alias("partition_date"))


def ingest(warehouse: Path, path: Path, config: ProjectConfig, answered: pl.DataFrame) -> LabelBatch:
    """What the labels asset does for one file: read it, reconcile against the stored labels, store the batch."""
    incoming = read_label_file(path, config.contract)
    with connect(warehouse) as connection:
        batch = reconcile_labels(incoming, answered, stored_labels(connection), arrival_date(path))
        store_label_batch(connection, batch)
    return batch


def write_csv(folder: Path, name: str, rows: list[tuple[str | None, str | None]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pl.DataFrame(rows, schema={ENTITY_ID: pl.String, TARGET: pl.String}, orient="row").write_csv(path)
    return path


def stored(warehouse: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    with connect(warehouse) as connection:
        return stored_labels(connection), stored_rejections(connection)


def test_label_files_respects_up_to(tmp_path: Path, night_labels: pl.DataFrame) -> None:
    for day in (date(2024, 5, 3), date(2024, 5, 1), date(2024, 5, 5)):
        write_labels(night_labels, day, tmp_path)
    write_csv(tmp_path / "2024-05-02", "extra.csv", [("x", "1")])
    (tmp_path / "2024-05-02" / "notes.txt").write_text("not a label file")
    (tmp_path / "not-a-date").mkdir()
    (tmp_path / "not-a-date" / "labels.parquet").write_bytes(b"")

    found = label_files(tmp_path, up_to=date(2024, 5, 3))

    assert found == [
        tmp_path / "2024-05-01" / "labels.parquet",
        tmp_path / "2024-05-02" / "extra.csv",
        tmp_path / "2024-05-03" / "labels.parquet",
    ]
    assert label_files(tmp_path / "missing", up_to=date(2024, 5, 3)) == []


def test_read_label_file_keeps_raw_text_and_parses_zero_one(tmp_path: Path, core_config: ProjectConfig) -> None:
    path = write_csv(
        tmp_path / "2024-05-08", "labels.csv", [("a", "1"), ("b", " 0 "), ("c", "TRUE"), ("d", "yes"), ("e", None)]
    )

    frame = read_label_file(path, core_config.contract)

    assert dict(frame.schema) == LABEL_FILE_SCHEMA
    assert frame["row_number"].to_list() == [1, 2, 3, 4, 5]
    assert frame["value"].to_list() == ["1", " 0 ", "TRUE", "yes", None]
    assert frame["label"].to_list() == [1, 0, 1, None, None]
    assert set(frame["source_file"]) == {str(path)}


def test_malformed_file_without_target_column_raises_naming_file_and_column(
    tmp_path: Path, core_config: ProjectConfig
) -> None:
    path = tmp_path / "2024-05-08" / "labels.parquet"
    path.parent.mkdir()
    pl.DataFrame({ENTITY_ID: ["a"], "outcome": [1]}).write_parquet(path)

    with pytest.raises(ValueError, match=r"labels\.parquet lacks column\(s\) \['defaulted'\]") as error:
        read_label_file(path, core_config.contract)
    assert str(path) in str(error.value)


def test_unreadable_file_raises_naming_the_file(tmp_path: Path, core_config: ProjectConfig) -> None:
    path = tmp_path / "2024-05-08" / "labels.parquet"
    path.parent.mkdir()
    path.write_bytes(b"this is not parquet")

    with pytest.raises(ValueError, match="cannot read label file") as error:
        read_label_file(path, core_config.contract)
    assert str(path) in str(error.value)


def test_labels_arriving_in_parts_accumulate(
    tmp_path: Path, core_config: ProjectConfig, night_labels: pl.DataFrame, answered: pl.DataFrame
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    first, second = night_labels[:150], night_labels[150:]

    batch_1 = ingest(warehouse, write_labels(first, ARRIVAL, tmp_path / "labels"), core_config, answered)
    batch_2 = ingest(
        warehouse, write_labels(second, ARRIVAL + timedelta(days=1), tmp_path / "labels"), core_config, answered
    )

    labels, rejections = stored(warehouse)
    assert (batch_1.accepted.height, batch_2.accepted.height) == (150, ROWS - 150)
    assert dict(labels.schema) == LABELS_SCHEMA
    expected = night_labels.select(pl.col(ENTITY_ID).alias("entity_id"), pl.col(TARGET).alias("label")).sort(
        "entity_id"
    )
    assert labels.select("entity_id", "label").sort("entity_id").equals(expected)
    assert set(labels["partition_date"]) == {NIGHT}
    assert labels.group_by("arrived_on").len().sort("arrived_on")["len"].to_list() == [150, ROWS - 150]
    assert rejections.height == 0


def test_redelivered_file_adds_nothing(
    tmp_path: Path, core_config: ProjectConfig, night_labels: pl.DataFrame, answered: pl.DataFrame
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    path = write_labels(night_labels, ARRIVAL, tmp_path / "labels")
    ingest(warehouse, path, core_config, answered)
    before = stored(warehouse)

    again = ingest(warehouse, path, core_config, answered)
    later = ingest(
        warehouse, write_labels(night_labels, ARRIVAL + timedelta(days=3), tmp_path / "labels"), core_config, answered
    )

    for batch in (again, later):
        assert batch.summary() == {
            "labels.received": ROWS,
            "labels.accepted": 0,
            "labels.duplicate_known": ROWS,
            "labels.rejected": 0,
        }
    after = stored(warehouse)
    assert after[0].equals(before[0]) and after[1].equals(before[1])


def test_duplicate_id_within_a_file_keeps_the_first_row(
    tmp_path: Path, core_config: ProjectConfig, answered: pl.DataFrame
) -> None:
    first_id, other_id = answered["entity_id"][0], answered["entity_id"][1]
    path = write_csv(
        tmp_path / ARRIVAL.isoformat(),
        "labels.csv",
        [(first_id, "1"), (other_id, "0"), (first_id, "0"), (first_id, "1")],
    )

    batch = reconcile_labels(
        read_label_file(path, core_config.contract), answered, pl.DataFrame(schema=LABELS_SCHEMA), ARRIVAL
    )

    assert dict(zip(batch.accepted["entity_id"], batch.accepted["label"], strict=True)) == {first_id: 1, other_id: 0}
    assert batch.rejected["row_number"].to_list() == [3, 4]
    assert all(reason.startswith("duplicate_in_batch: id already on row 1 of ") for reason in batch.rejected["reason"])


def test_conflicting_relabel_is_rejected_naming_both_values(
    tmp_path: Path, core_config: ProjectConfig, answered: pl.DataFrame
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    entity = answered["entity_id"][0]
    ingest(warehouse, write_csv(tmp_path / ARRIVAL.isoformat(), "labels.csv", [(entity, "0")]), core_config, answered)

    relabel = ingest(warehouse, write_csv(tmp_path / "2024-05-10", "fix.csv", [(entity, "1")]), core_config, answered)

    assert relabel.accepted.height == 0 and relabel.duplicate_known == 0
    (reason,) = relabel.rejected["reason"].to_list()
    assert reason.startswith("conflict: already labeled 0 (arrived 2024-05-08 in ")
    assert reason.endswith("this row says 1")
    labels, rejections = stored(warehouse)
    assert labels.select("entity_id", "label").rows() == [(entity, 0)]  # a stored label is never overwritten
    assert dict(rejections.schema) == REJECTED_SCHEMA
    assert rejections.select("entity_id", "value", "arrived_on").rows() == [(entity, "1", date(2024, 5, 10))]


def test_unknown_id_is_rejected(tmp_path: Path, core_config: ProjectConfig, answered: pl.DataFrame) -> None:
    path = write_csv(tmp_path / ARRIVAL.isoformat(), "labels.csv", [("A19990101-000001", "1")])

    batch = reconcile_labels(
        read_label_file(path, core_config.contract), answered, pl.DataFrame(schema=LABELS_SCHEMA), ARRIVAL
    )

    assert batch.accepted.height == 0
    assert batch.rejected["reason"].to_list() == ["unknown_id: never answered on a night up to 2024-05-08"]


def test_id_answered_only_after_arrival_is_unknown(
    tmp_path: Path, core_config: ProjectConfig, answered: pl.DataFrame
) -> None:
    path = write_csv(tmp_path / "2024-04-30", "labels.csv", [(answered["entity_id"][0], "1")])

    batch = reconcile_labels(
        read_label_file(path, core_config.contract), answered, pl.DataFrame(schema=LABELS_SCHEMA), date(2024, 4, 30)
    )

    assert batch.rejected["reason"].str.starts_with("unknown_id").to_list() == [True]


def test_label_outside_allowed_set_is_rejected_with_reason(
    tmp_path: Path, core_config: ProjectConfig, answered: pl.DataFrame
) -> None:
    ids = answered["entity_id"].to_list()
    path = write_csv(
        tmp_path / ARRIVAL.isoformat(),
        "labels.csv",
        [(ids[0], "2"), (ids[1], "yes"), (ids[2], None), (ids[3], "false")],
    )

    batch = reconcile_labels(
        read_label_file(path, core_config.contract), answered, pl.DataFrame(schema=LABELS_SCHEMA), ARRIVAL
    )

    assert batch.accepted.select("entity_id", "label").rows() == [(ids[3], 0)]
    assert batch.rejected.select("entity_id", "value", "reason").rows() == [
        (ids[0], "2", "invalid_label: value '2' is not a label; expected one of 0, 0.0, 1, 1.0, false, true"),
        (ids[1], "yes", "invalid_label: value 'yes' is not a label; expected one of 0, 0.0, 1, 1.0, false, true"),
        (ids[2], None, "invalid_label: value <empty> is not a label; expected one of 0, 0.0, 1, 1.0, false, true"),
    ]


def test_row_without_id_is_rejected(tmp_path: Path, core_config: ProjectConfig, answered: pl.DataFrame) -> None:
    path = write_csv(tmp_path / ARRIVAL.isoformat(), "labels.csv", [(None, "1"), ("  ", "0")])

    batch = reconcile_labels(
        read_label_file(path, core_config.contract), answered, pl.DataFrame(schema=LABELS_SCHEMA), ARRIVAL
    )

    assert batch.rejected["reason"].to_list() == ["missing_id: the row has no id"] * 2


def test_id_answered_on_several_nights_is_attached_to_the_latest_night_before_arrival(
    tmp_path: Path, core_config: ProjectConfig
) -> None:
    nights = [date(2024, 5, 1), date(2024, 5, 4), date(2024, 5, 9)]
    answered = pl.DataFrame({"entity_id": ["repeat"] * 3, "partition_date": nights})
    path = write_csv(tmp_path / ARRIVAL.isoformat(), "labels.csv", [("repeat", "1")])

    batch = reconcile_labels(
        read_label_file(path, core_config.contract), answered, pl.DataFrame(schema=LABELS_SCHEMA), ARRIVAL
    )

    assert batch.accepted.select("entity_id", "partition_date").rows() == [("repeat", date(2024, 5, 4))]


def test_rejected_rows_are_stored_once_however_often_the_file_is_ingested(
    tmp_path: Path, core_config: ProjectConfig, answered: pl.DataFrame
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    path = write_csv(
        tmp_path / ARRIVAL.isoformat(), "labels.csv", [("nobody", "1"), (answered["entity_id"][0], "maybe")]
    )

    for _ in range(3):
        ingest(warehouse, path, core_config, answered)

    assert stored(warehouse)[1]["row_number"].to_list() == [1, 2]


def test_label_of_an_id_answered_later_is_accepted_on_reingest_and_its_rejection_cleared(
    tmp_path: Path, core_config: ProjectConfig, answered: pl.DataFrame
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    path = write_csv(tmp_path / ARRIVAL.isoformat(), "labels.csv", [("late-outcome", "1")])
    ingest(warehouse, path, core_config, answered)
    assert stored(warehouse)[1].height == 1

    with_outcome = pl.concat([answered, pl.DataFrame({"entity_id": ["late-outcome"], "partition_date": [NIGHT]})])
    ingest(warehouse, path, core_config, with_outcome)

    labels, rejections = stored(warehouse)
    assert labels["entity_id"].to_list() == ["late-outcome"] and rejections.height == 0


def test_every_received_row_is_accepted_known_or_rejected(
    tmp_path: Path, core_config: ProjectConfig, night_labels: pl.DataFrame, answered: pl.DataFrame
) -> None:
    ids = answered["entity_id"].to_list()
    extra = [(ids[0], "1"), ("nobody", "0"), (ids[1], "7"), (None, "1")]
    mixed = pl.concat(
        [night_labels.cast({TARGET: pl.String}), pl.DataFrame(extra, schema=night_labels.columns, orient="row")]
    )
    path = write_labels(mixed, ARRIVAL, tmp_path / "labels")

    batch = reconcile_labels(
        read_label_file(path, core_config.contract), answered, pl.DataFrame(schema=LABELS_SCHEMA), ARRIVAL
    )

    summary = batch.summary()
    assert summary["labels.received"] == ROWS + len(extra)
    assert (
        summary["labels.accepted"] + summary["labels.duplicate_known"] + summary["labels.rejected"]
        == summary["labels.received"]
    )
    assert summary["labels.accepted"] == ROWS
    assert {k: v for k, v in summary.items() if k.startswith("labels.rejected.")} == {
        "labels.rejected.duplicate_in_batch": 2,
        "labels.rejected.missing_id": 1,
        "labels.rejected.unknown_id": 1,
    }
