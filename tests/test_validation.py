"""Ingest and row validation: landed files become typed raw rows (what was received kept only for rows that fail
typing); every raw row is either one typed valid row or is quarantined once per rule it breaks, with the column, the
rule and the offending value."""

from __future__ import annotations

import json
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from nightkeeper.config import Contract, ProjectConfig
from nightkeeper.examples.simulator import Scenario, simulate_night
from nightkeeper.ingest import landed_files, raw_schema, read_raw_batch
from nightkeeper.validation import (
    MISSING_COLUMN_VALUE,
    QUARANTINE_SCHEMA,
    ROW_KEY,
    ValidationResult,
    quarantine_summary,
    valid_schema,
    validate,
)

NIGHT = date(2024, 5, 1)
SEED = 7
ROWS = 60


@pytest.fixture
def contract(core_config: ProjectConfig) -> Contract:
    return core_config.contract


@pytest.fixture
def clean() -> pl.DataFrame:
    """A clean simulated night: every row satisfies the contract."""
    return simulate_night(NIGHT, ROWS, SEED).applications


def set_text(frame: pl.DataFrame, index: int, column: str, text: str | None) -> pl.DataFrame:
    """``frame`` with ``column`` turned to text and the row at ``index`` (0-based) set to ``text``."""
    as_text = pl.col(column).cast(pl.String)
    at_row = pl.int_range(pl.len()) == index
    return frame.with_columns(pl.when(at_row).then(pl.lit(text, dtype=pl.String)).otherwise(as_text).alias(column))


def set_null(frame: pl.DataFrame, index: int, column: str) -> pl.DataFrame:
    at_row = pl.int_range(pl.len()) == index
    return frame.with_columns(pl.when(at_row).then(None).otherwise(pl.col(column)).alias(column))


def land(frame: pl.DataFrame, folder: Path, name: str = "applications.parquet") -> Path:
    path = folder / name
    if name.endswith(".csv"):
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def run(paths: list[Path], contract: Contract) -> tuple[pl.DataFrame, ValidationResult]:
    raw = read_raw_batch(paths, NIGHT, contract).frame
    return raw, validate(raw, contract)


def broken(result: ValidationResult, row_number: int, source_file: Path | None = None) -> list[dict[str, Any]]:
    """The (column, rule, value) of every quarantine row of the given row."""
    rows = result.quarantine.filter(pl.col("row_number") == row_number)
    if source_file is not None:
        rows = rows.filter(pl.col("source_file") == str(source_file))
    return rows.select("column", "rule", "value").to_dicts()


def valid_row_numbers(result: ValidationResult) -> set[int]:
    return set(result.valid["row_number"])


# ------------------------------------------------------------------------------------------------------- ingest


def test_raw_batch_keeps_every_row_numbered_from_one_per_file(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    first, second = land(clean[:20], tmp_path, "a.parquet"), land(clean[20:], tmp_path, "b.parquet")
    batch = read_raw_batch([first, second], NIGHT, contract)
    assert batch.frame.schema == raw_schema(contract)
    assert batch.frame.height == ROWS
    assert batch.frame.filter(pl.col("source_file") == str(first))["row_number"].to_list() == list(range(1, 21))
    assert batch.frame.filter(pl.col("source_file") == str(second))["row_number"].to_list() == list(range(1, 41))
    assert batch.frame["entity_id"].to_list() == clean["application_id"].to_list()
    assert [(f.path, f.rows) for f in batch.files] == [(str(first), 20), (str(second), 40)]


def test_raw_batch_holds_the_contracts_columns_typed_and_no_text_for_rows_that_typed(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    frame = read_raw_batch([land(clean, tmp_path)], NIGHT, contract).frame
    assert frame.schema["income"] == pl.Float64 and frame.schema["age"] == pl.Int64
    assert frame.schema["has_cosigner"] == pl.Boolean and frame.schema["event_time"] == pl.Datetime("us")
    assert_frame_equal(frame.select(contract.feature_names), clean.select(contract.feature_names))
    assert frame["record"].null_count() == ROWS


def test_a_row_failing_typing_keeps_what_was_received_and_is_quarantined_for_it(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    raw, result = run([land(set_text(clean, 3, "income", "12k"), tmp_path)], contract)
    kept = raw.filter(pl.col("record").is_not_null())
    assert kept["row_number"].to_list() == [4]
    received = json.loads(kept["record"][0])
    assert received["income"] == "12k"
    assert received["application_id"] == clean["application_id"][3]
    assert kept["income"][0] is None
    assert broken(result, 4) == [{"column": "income", "rule": "type", "value": "12k"}]


def test_a_night_typed_and_judged_in_small_slices_equals_it_typed_and_judged_whole(
    tmp_path: Path, contract: Contract
) -> None:
    night = simulate_night(NIGHT, 2_000, SEED, Scenario(bad_data=True))
    path = land(night.applications, tmp_path)
    whole = read_raw_batch([path], NIGHT, contract).frame
    sliced = read_raw_batch([path], NIGHT, contract, slice_rows=97).frame
    assert_frame_equal(sliced, whole)
    at_once, in_slices = validate(whole, contract), validate(whole.sample(fraction=1.0, seed=3), contract, 113)
    assert_frame_equal(in_slices.valid, at_once.valid)
    assert_frame_equal(in_slices.quarantine, at_once.quarantine)
    assert in_slices.null_rates == pytest.approx(at_once.null_rates)
    assert in_slices.quarantine.filter(pl.col("rule") == "duplicate_id").height > 0


def test_landed_files_are_the_nights_matching_files_sorted(tmp_path: Path, clean: pl.DataFrame) -> None:
    folder = tmp_path / NIGHT.isoformat()
    folder.mkdir()
    b, a = land(clean, folder, "b.parquet"), land(clean, folder, "a.parquet")
    (folder / "notes.txt").write_text("not data")
    (tmp_path / "2024-05-02").mkdir()
    land(clean, tmp_path / "2024-05-02", "c.parquet")
    assert landed_files(tmp_path, "{date}/*.parquet", NIGHT) == [a, b]


def test_unreadable_file_is_one_raw_row_carrying_the_reason(tmp_path: Path, contract: Contract) -> None:
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"this is not parquet")
    batch = read_raw_batch([corrupt], NIGHT, contract)
    assert batch.frame.select("source_file", "row_number", "entity_id").rows() == [(str(corrupt), 0, None)]
    [landed] = batch.files
    assert landed.rows == 0 and landed.error is not None and "cannot be read as parquet" in landed.error


# ------------------------------------------------------------------------------------------------ valid rows


def test_clean_night_is_entirely_valid(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    _, result = run([land(clean, tmp_path)], contract)
    assert result.quarantine.is_empty()
    assert result.valid.height == ROWS


def test_valid_rows_are_typed_per_the_contract(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    path = land(clean, tmp_path)
    _, result = run([path], contract)
    assert dict(result.valid.schema) == valid_schema(contract)
    assert_frame_equal(result.valid.select(contract.feature_names), clean.select(contract.feature_names))
    assert result.valid["entity_id"].to_list() == clean["application_id"].to_list()
    assert result.valid["event_time"].to_list() == clean["applied_at"].to_list()
    assert set(result.valid["partition_date"]) == {NIGHT}
    assert set(result.valid["source_file"]) == {str(path)}


def test_numeric_text_and_boolean_words_are_parsed(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    frame = set_text(clean, 0, "income", " 52000.5 ")
    frame = set_text(frame, 1, "age", "41.0")
    frame = set_text(frame, 2, "has_cosigner", "Yes")
    _, result = run([land(frame, tmp_path)], contract)
    assert result.quarantine.is_empty()
    assert result.valid["income"][0] == 52000.5
    assert result.valid["age"][1] == 41
    assert result.valid["has_cosigner"][2] is True


def test_csv_input_is_read_as_text_and_validates_like_parquet(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    csv_path = land(clean, tmp_path, "applications.csv")
    batch = read_raw_batch([csv_path], NIGHT, contract)
    assert set(batch.files[0].columns.values()) == {"String"}
    _, from_csv = run([csv_path], contract)
    _, from_parquet = run([land(clean, tmp_path)], contract)
    assert from_csv.quarantine.is_empty()
    assert_frame_equal(from_csv.valid.drop("source_file"), from_parquet.valid.drop("source_file"))


def test_a_csv_night_is_typed_a_slice_at_a_time_as_its_parquet_twin_and_leaves_no_spooled_text(
    tmp_path: Path, contract: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    night = simulate_night(NIGHT, 2_000, SEED, Scenario(bad_data=True)).applications
    csv_path = land(night, tmp_path, "applications.csv")
    in_slices = read_raw_batch([csv_path], NIGHT, contract, slice_rows=97).frame
    at_once = read_raw_batch([csv_path], NIGHT, contract, slice_rows=night.height).frame
    from_parquet = read_raw_batch([land(night, tmp_path)], NIGHT, contract).frame
    assert in_slices.height == night.height
    assert_frame_equal(in_slices, at_once)
    # a failed row's record is the text received, and a CSV writes a datetime as "2024-05-01T01:04" where a Parquet
    # file's is cast to "2024-05-01 01:04": every typed value is the same
    assert_frame_equal(in_slices.drop("source_file", "record"), from_parquet.drop("source_file", "record"))
    assert in_slices["record"].is_null().to_list() == from_parquet["record"].is_null().to_list()
    assert list(spool.iterdir()) == []


def test_bounds_are_inclusive(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    frame = set_text(set_text(clean, 0, "age", "18"), 1, "age", "100")
    _, result = run([land(frame, tmp_path)], contract)
    assert result.quarantine.is_empty()
    assert result.valid["age"][:2].to_list() == [18, 100]


# ---------------------------------------------------------------------------------------- one rule at a time


def test_null_in_required_feature_is_quarantined_with_a_null_value(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    frame = set_null(set_null(clean, 0, "age"), 9, "credit_score")  # row 1 too: the file's first record has a null
    _, result = run([land(frame, tmp_path)], contract)
    assert broken(result, 1) == [{"column": "age", "rule": "required", "value": None}]
    assert broken(result, 10) == [{"column": "credit_score", "rule": "required", "value": None}]
    assert valid_row_numbers(result) == set(range(1, ROWS + 1)) - {1, 10}


def test_empty_text_counts_as_null(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    _, result = run([land(set_text(clean, 4, "region", "   "), tmp_path)], contract)
    assert broken(result, 5) == [{"column": "region", "rule": "required", "value": None}]


@pytest.mark.parametrize(
    ("column", "text", "expected"),
    [
        ("income", "12k", "a finite number"),
        ("income", "NaN", "a finite number"),
        ("age", "41.5", "a whole number"),
        ("credit_score", "n/a", "a whole number"),
        ("has_cosigner", "maybe", "one of ['true'"),
    ],
)
def test_unparseable_value_is_a_type_violation(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract, column: str, text: str, expected: str
) -> None:
    _, result = run([land(set_text(clean, 3, column, text), tmp_path)], contract)
    assert broken(result, 4) == [{"column": column, "rule": "type", "value": text}]
    assert result.quarantine["expected"][0].startswith(expected)
    assert 4 not in valid_row_numbers(result)


@pytest.mark.parametrize(
    ("column", "text", "expected"),
    [
        ("age", "17", "between 18 and 100"),
        ("age", "101", "between 18 and 100"),
        ("debt_to_income", "-0.5", "between 0 and 10"),
    ],
)
def test_value_out_of_range_is_a_range_violation(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract, column: str, text: str, expected: str
) -> None:
    _, result = run([land(set_text(clean, 5, column, text), tmp_path)], contract)
    assert broken(result, 6) == [{"column": column, "rule": "range", "value": text}]
    assert result.quarantine["expected"].to_list() == [expected]


def test_unknown_category_level_is_a_category_violation(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    _, result = run([land(set_text(clean, 7, "purpose", "crypto"), tmp_path)], contract)
    assert broken(result, 8) == [{"column": "purpose", "rule": "category", "value": "crypto"}]
    assert "'debt_consolidation'" in result.quarantine["expected"][0]


def test_category_levels_are_case_sensitive(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    _, result = run([land(set_text(clean, 7, "region", "North"), tmp_path)], contract)
    assert broken(result, 8) == [{"column": "region", "rule": "category", "value": "North"}]


def test_unknown_category_in_missing_mode_becomes_null_without_quarantine(
    tmp_path: Path, clean: pl.DataFrame, core_make_config: Any
) -> None:
    config = core_make_config(
        tmp_path, lambda raw: raw["contract"]["features"]["purpose"].update(unknown_category="missing")
    )
    _, result = run([land(set_text(clean, 7, "purpose", "crypto"), tmp_path)], config.contract)
    assert result.quarantine.is_empty()
    assert result.valid.height == ROWS
    assert result.valid["purpose"][7] is None
    assert result.valid["purpose"].null_count() == 1


def test_later_copy_of_an_id_is_quarantined_and_the_first_kept(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    frame = pl.concat([clean, clean[3:4].with_columns(pl.col("loan_amount") * 2)])
    _, result = run([land(frame, tmp_path)], contract)
    copy_id = clean["application_id"][3]
    assert broken(result, ROWS + 1) == [{"column": "application_id", "rule": "duplicate_id", "value": copy_id}]
    assert broken(result, 4) == []
    kept = result.valid.filter(pl.col("entity_id") == copy_id)
    assert kept["row_number"].to_list() == [4]
    assert kept["loan_amount"].to_list() == [clean["loan_amount"][3]]


def test_duplicate_id_across_files_quarantines_the_copy_in_the_later_file(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    first, second = land(clean, tmp_path, "a.parquet"), land(clean[10:11], tmp_path, "b.parquet")
    _, result = run([first, second], contract)
    assert broken(result, 1, second) == [
        {"column": "application_id", "rule": "duplicate_id", "value": clean["application_id"][10]}
    ]
    assert broken(result, 11, first) == []
    assert result.valid.height == ROWS


def test_null_id_is_quarantined(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    _, result = run([land(set_null(clean, 2, "application_id"), tmp_path)], contract)
    assert broken(result, 3) == [{"column": "application_id", "rule": "required", "value": None}]
    assert result.valid.height == ROWS - 1


def test_cross_field_rule_violation_shows_every_column_it_reads(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    frame = set_text(set_text(clean, 6, "income", "10000"), 6, "loan_amount", "500000")  # 50 yearly incomes
    _, result = run([land(frame, tmp_path)], contract)
    assert broken(result, 7) == [
        {
            "column": "loan_amount,income",
            "rule": "loan_within_income_multiple",
            "value": "loan_amount=500000, income=10000",
        }
    ]
    assert result.quarantine["expected"].to_list() == ["loan_amount <= 40 * income"]


def test_required_column_missing_from_file_quarantines_every_row_of_that_file_only(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    without = land(clean[:20].drop("region"), tmp_path, "a.parquet")
    complete = land(clean[20:], tmp_path, "b.parquet")
    _, result = run([without, complete], contract)
    assert set(result.quarantine["source_file"]) == {str(without)}
    assert result.quarantine.select("column", "rule", "value").unique().to_dicts() == [
        {"column": "region", "rule": "required", "value": MISSING_COLUMN_VALUE}
    ]
    assert result.quarantine.height == 20
    assert set(result.valid["source_file"]) == {str(complete)}


def test_optional_column_missing_from_file_is_not_a_violation(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    _, result = run([land(clean.drop("dependents"), tmp_path)], contract)
    assert result.quarantine.is_empty()
    assert result.valid.height == ROWS
    assert result.valid["dependents"].null_count() == ROWS


def test_row_breaking_two_rules_appears_once_per_rule(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    frame = set_text(set_null(clean, 8, "age"), 8, "purpose", "crypto")
    _, result = run([land(frame, tmp_path)], contract)
    assert broken(result, 9) == [
        {"column": "age", "rule": "required", "value": None},
        {"column": "purpose", "rule": "category", "value": "crypto"},
    ]
    assert result.quarantined_rows == 1
    assert 9 not in valid_row_numbers(result)


def test_negative_income_breaks_its_range_and_the_cross_field_rule(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    _, result = run([land(set_text(clean, 0, "income", "-20000"), tmp_path)], contract)
    assert {(v["column"], v["rule"]) for v in broken(result, 1)} == {
        ("income", "range"),
        ("loan_amount,income", "loan_within_income_multiple"),
    }


def test_quarantine_summary_counts_rows_per_column_and_rule(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    frame = set_text(set_text(set_text(clean, 0, "purpose", "crypto"), 1, "purpose", "crypto"), 2, "age", "5")
    _, result = run([land(frame, tmp_path)], contract)
    assert quarantine_summary(result.quarantine).rows() == [("purpose", "category", 2), ("age", "range", 1)]


def test_null_rates_are_shares_of_empty_values_before_quarantine(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    frame = clean.drop("dependents")
    for index in range(6):
        frame = set_null(frame, index, "age")
    _, result = run([land(frame, tmp_path)], contract)
    assert result.null_rates["age"] == pytest.approx(6 / ROWS)
    assert result.null_rates["dependents"] == 1.0
    assert result.null_rates["income"] == 0.0


# ----------------------------------------------------------------------------------------- whole nights


def test_every_raw_row_is_either_valid_or_quarantined_on_a_bad_data_night(tmp_path: Path, contract: Contract) -> None:
    night = simulate_night(NIGHT, 2_000, SEED, Scenario(bad_data=True))
    raw, result = run([land(night.applications, tmp_path)], contract)
    raw_keys = set(raw.select(ROW_KEY).iter_rows())
    valid_keys = set(result.valid.select(ROW_KEY).iter_rows())
    quarantined_keys = set(result.quarantine.select(ROW_KEY).iter_rows())
    assert quarantined_keys, "a bad-data night must quarantine something"
    assert valid_keys | quarantined_keys == raw_keys
    assert not valid_keys & quarantined_keys
    assert result.valid.height == len(valid_keys)


def test_every_deliberately_broken_row_is_quarantined(tmp_path: Path, contract: Contract) -> None:
    night = simulate_night(NIGHT, 2_000, SEED, Scenario(bad_data=True))
    _, result = run([land(night.applications, tmp_path)], contract)
    always_broken = night.defects.filter(~pl.col("defect").str.starts_with("duplicate"))["application_id"]
    assert not set(always_broken) & set(result.valid["entity_id"])
    duplicated = night.defects.filter(pl.col("defect").str.starts_with("duplicate"))["application_id"]
    assert result.valid.filter(pl.col("entity_id").is_in(duplicated.implode())).height == duplicated.len()
    assert set(quarantine_summary(result.quarantine).select("column", "rule").iter_rows()) == {
        ("income", "range"),
        ("loan_amount,income", "loan_within_income_multiple"),
        ("age", "required"),
        ("credit_score", "required"),
        ("purpose", "category"),
        ("application_id", "duplicate_id"),
        ("loan_amount", "type"),
    }


def test_empty_input_gives_empty_frames_with_the_right_schemas(contract: Contract) -> None:
    batch = read_raw_batch([], NIGHT, contract)
    assert batch.frame.schema == raw_schema(contract)
    result = validate(batch.frame, contract)
    assert result.valid.is_empty() and result.quarantine.is_empty()
    assert dict(result.valid.schema) == valid_schema(contract)
    assert dict(result.quarantine.schema) == QUARANTINE_SCHEMA
    assert result.null_rates == {name: 0.0 for name in contract.features}


def test_file_without_rows_is_listed_but_adds_no_rows(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    empty = land(clean.clear(), tmp_path, "empty.parquet")
    batch = read_raw_batch([empty], NIGHT, contract)
    assert [(f.path, f.rows) for f in batch.files] == [(str(empty), 0)]
    result = validate(batch.frame, contract)
    assert result.valid.is_empty()
    assert dict(result.valid.schema) == valid_schema(contract)
