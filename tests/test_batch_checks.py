"""Batch-level checks: whole-night rules whose failure is an alert (ERROR or WARN), not a quarantined row."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from nightkeeper.batch_checks import (
    entity_ids_unique,
    fallback_rate_within_limit,
    model_answered,
    null_rates_stable,
    rows_conserved,
    schema_matches_contract,
    volume_within_history,
)
from nightkeeper.config import Contract, ProjectConfig
from nightkeeper.examples.simulator import Scenario, simulate_night
from nightkeeper.examples.worlds import duplicate_codes_world
from nightkeeper.ingest import LandedFile, RawBatch, read_raw_batch
from nightkeeper.training import TrainedModel
from nightkeeper.validation import validate

NIGHT = date(2024, 5, 1)
ROWS = 400


@pytest.fixture
def contract(core_config: ProjectConfig) -> Contract:
    return core_config.contract


@pytest.fixture(scope="module")
def clean() -> pl.DataFrame:
    return simulate_night(NIGHT, ROWS, 7).applications


def landed(frame: pl.DataFrame, folder: Path, contract: Contract, name: str = "applications.parquet") -> RawBatch:
    path = folder / name
    frame.write_csv(path) if name.endswith(".csv") else frame.write_parquet(path)
    return read_raw_batch([path], NIGHT, contract)


def check_schema(frame: pl.DataFrame, folder: Path, contract: Contract, name: str = "applications.parquet"):
    return schema_matches_contract(landed(frame, folder, contract, name).files, contract, NIGHT.isoformat())


# --------------------------------------------------------------------------------------------------------- schema


def test_schema_of_a_clean_file_matches(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    outcome = check_schema(clean, tmp_path, contract)
    assert outcome.passed
    assert outcome.description == "1 file(s) match the contract"


def test_missing_required_column_fails_with_error(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    outcome = check_schema(clean.drop("region"), tmp_path, contract)
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    assert "required column 'region' is missing" in outcome.description


def test_missing_id_column_fails_with_error(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    outcome = check_schema(clean.drop("application_id"), tmp_path, contract)
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    assert "id column 'application_id' is missing" in outcome.description


def test_missing_optional_column_fails_with_warning(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    outcome = check_schema(clean.drop("dependents"), tmp_path, contract)
    assert not outcome.passed
    assert outcome.severity == "WARN"
    assert "optional column 'dependents' is missing" in outcome.description


def test_integer_codes_of_a_category_feature_match_the_contract(tmp_path: Path) -> None:
    # low-cardinality data often stores its levels as integer codes (region 1..9); that is no schema break
    world = duplicate_codes_world(nights=1, rows_per_night=50)
    night = world.labeled_night(world.calendar.start)
    contract = Contract.model_validate(world.config()["contract"])
    assert night["region_code"].dtype == pl.Int64 and contract.features["region_code"].dtype == "category"
    assert check_schema(night.drop(world.target), tmp_path, contract).passed


def test_extra_column_fails_with_warning(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    outcome = check_schema(clean.with_columns(pl.lit("spring_promo").alias("utm_campaign")), tmp_path, contract)
    assert not outcome.passed
    assert outcome.severity == "WARN"
    assert "unexpected column(s) ['utm_campaign']" in outcome.description


def test_target_column_in_the_file_is_not_extra(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    assert check_schema(clean.with_columns(pl.lit(0, dtype=pl.Int8).alias("defaulted")), tmp_path, contract).passed


@pytest.mark.parametrize(
    ("column", "dtype", "found"),
    [("loan_amount", pl.String, "String"), ("age", pl.Float64, "Float64"), ("has_cosigner", pl.Int64, "Int64")],
)
def test_retyped_column_fails_with_error(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract, column: str, dtype: pl.DataType, found: str
) -> None:
    outcome = check_schema(clean.with_columns(pl.col(column).cast(dtype)), tmp_path, contract)
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    assert f"column {column!r} arrived as {found}" in outcome.description


def test_integer_column_for_a_float_feature_is_compatible(
    tmp_path: Path, clean: pl.DataFrame, contract: Contract
) -> None:
    assert check_schema(clean.with_columns(pl.col("income").round().cast(pl.Int64)), tmp_path, contract).passed


def test_csv_column_types_are_ignored(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    batch = landed(clean, tmp_path, contract, "applications.csv")
    assert set(batch.files[0].columns.values()) == {"String"}
    assert schema_matches_contract(batch.files, contract, NIGHT.isoformat()).passed


def test_csv_column_names_are_still_checked(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    outcome = check_schema(clean.drop("region"), tmp_path, contract, "applications.csv")
    assert not outcome.passed
    assert "required column 'region' is missing" in outcome.description


def test_no_files_is_an_empty_night_warning_not_a_schema_break(contract: Contract) -> None:
    outcome = schema_matches_contract([], contract, "2024-05-01")
    assert not outcome.passed
    assert outcome.severity == "WARN"
    assert outcome.metadata["problems"] == 0
    assert outcome.description == "empty night 2024-05-01: no input file landed; nothing to answer"


def test_a_night_of_only_an_unreadable_file_is_not_an_empty_night(contract: Contract) -> None:
    outcome = schema_matches_contract([LandedFile("landing/x.csv", 0, {}, "zero-byte file")], contract, "2024-05-01")
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    assert "unreadable" in outcome.description


def test_schema_problems_of_several_files_are_all_reported(contract: Contract) -> None:
    good = {
        "application_id": "String",
        **{
            n: {"float": "Float64", "int": "Int64", "bool": "Boolean", "category": "String"}[s.dtype]
            for n, s in contract.features.items()
        },
    }
    files = [
        LandedFile("/landing/a.parquet", 10, {k: v for k, v in good.items() if k != "region"}),
        LandedFile("/landing/b.parquet", 10, {**good, "extra": "String"}),
    ]
    outcome = schema_matches_contract(files, contract, NIGHT.isoformat())
    assert outcome.severity == "ERROR"
    assert "a.parquet: required column 'region' is missing" in outcome.description
    assert "b.parquet: unexpected column(s) ['extra']" in outcome.description
    assert outcome.metadata == {"problems": 2}


# --------------------------------------------------------------------------------------------------------- volume

HISTORY = [900, 1_000, 1_100, 5_000, 800]  # median 1000


def test_volume_passes_when_history_is_too_short_to_judge() -> None:
    outcome = volume_within_history(100, [1_000, 1_000], tolerance=0.5, min_history=3)
    assert outcome.passed
    assert "need 3" in outcome.description


@pytest.mark.parametrize("rows", [500, 1_000, 1_500])
def test_volume_within_tolerance_of_the_median_passes(rows: int) -> None:
    assert volume_within_history(rows, HISTORY, tolerance=0.5, min_history=3).passed


def test_an_empty_night_passes_volume_because_the_schema_check_warns_about_it() -> None:
    outcome = volume_within_history(0, HISTORY, tolerance=0.5, min_history=3)
    assert outcome.passed
    assert "empty night" in outcome.description


@pytest.mark.parametrize("rows", [499, 1_501])
def test_volume_beyond_tolerance_of_the_median_fails(rows: int) -> None:
    outcome = volume_within_history(rows, HISTORY, tolerance=0.5, min_history=3)
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    assert outcome.metadata["median_rows"] == 1_000.0
    assert "beyond the 50% tolerance" in outcome.description


def test_volume_compares_with_the_median_not_the_mean() -> None:
    outcome = volume_within_history(1_000, [1_000, 1_000, 1_000, 100_000], tolerance=0.1, min_history=3)
    assert outcome.passed
    assert outcome.metadata["median_rows"] == 1_000.0


# ---------------------------------------------------------------------------------------------- duplicate ids


def test_unique_ids_pass(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    outcome = entity_ids_unique(landed(clean, tmp_path, contract).frame)
    assert outcome.passed
    assert outcome.metadata == {"duplicated_ids": 0, "extra_rows": 0}


def test_repeated_ids_fail_with_their_count(tmp_path: Path, contract: Contract) -> None:
    night = simulate_night(
        NIGHT, 1_000, 7, Scenario(bad_data=True, defects=frozenset({"duplicate_row", "duplicate_id_changed"}))
    )
    repeated = night.defects.filter(pl.col("defect").str.starts_with("duplicate"))["application_id"]
    outcome = entity_ids_unique(landed(night.applications, tmp_path, contract).frame)
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    assert outcome.metadata == {"duplicated_ids": repeated.n_unique(), "extra_rows": repeated.len()}
    assert any(repeated_id in outcome.description for repeated_id in repeated)


def test_rows_without_an_id_are_not_counted_as_repeats(tmp_path: Path, clean: pl.DataFrame, contract: Contract) -> None:
    frame = clean.with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(None).otherwise(pl.col("application_id")).alias("application_id")
    )
    assert entity_ids_unique(landed(frame, tmp_path, contract).frame).passed


# ------------------------------------------------------------------------------------------------- null rates


def test_null_rates_like_the_training_data_pass(
    tmp_path: Path, clean: pl.DataFrame, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    result = validate(landed(clean, tmp_path, core_config.contract).frame, core_config.contract)
    assert null_rates_stable(result.null_rates, core_trained.card.missing_rates, 0.05).passed


def test_null_rate_spike_fails_with_a_warning_naming_the_feature(
    tmp_path: Path, clean: pl.DataFrame, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    frame = clean.with_columns(pl.when(pl.int_range(pl.len()) < 40).then(None).otherwise(pl.col("age")).alias("age"))
    result = validate(landed(frame, tmp_path, core_config.contract).frame, core_config.contract)
    outcome = null_rates_stable(result.null_rates, core_trained.card.missing_rates, 0.05)
    assert not outcome.passed
    assert outcome.severity == "WARN"
    assert outcome.description == "age: 10.0% empty vs 0.0% in reference"
    assert outcome.metadata == {"spiking_features": 1}


def test_null_rate_rise_within_the_limit_passes() -> None:
    assert null_rates_stable({"dependents": 0.07}, {"dependents": 0.03}, 0.05).passed
    assert not null_rates_stable({"dependents": 0.09}, {"dependents": 0.03}, 0.05).passed


def test_feature_absent_from_the_reference_counts_as_never_empty() -> None:
    assert not null_rates_stable({"new_feature": 0.2}, {}, 0.05).passed
    assert null_rates_stable({"new_feature": 0.01}, {}, 0.05).passed


# ----------------------------------------------------------------------------------------- model and fallback


def test_model_answered_passes_without_error_and_fails_with_it() -> None:
    assert model_answered(None, "abc123").passed
    failed = model_answered("model abc123 exceeded its time budget of 300 s", "abc123")
    assert not failed.passed
    assert failed.severity == "ERROR"
    assert "exceeded its time budget" in failed.description


@pytest.mark.parametrize(
    ("counts", "passed"),
    [
        ({"model": 95, "fallback": 3, "quarantine": 2}, True),
        ({"model": 94, "fallback": 4, "quarantine": 2}, False),
        ({"model": 0, "fallback": 100, "quarantine": 0}, False),
        ({"model": 0, "fallback": 0, "quarantine": 0}, True),
    ],
)
def test_fallback_rate_counts_every_row_not_answered_by_the_model(counts: dict[str, int], passed: bool) -> None:
    outcome = fallback_rate_within_limit(counts, 0.05)
    assert outcome.passed is passed
    assert outcome.severity == "WARN"


# -------------------------------------------------------------------------------------------- rows conserved


def test_rows_conserved_when_every_night_has_one_outcome_per_raw_row() -> None:
    outcome = rows_conserved([(date(2024, 5, 1), 100, 100, 100), (date(2024, 5, 2), 0, 0, 0)])
    assert outcome.passed
    assert outcome.metadata == {"nights": 2, "broken_nights": 0}


@pytest.mark.parametrize(
    "night", [(date(2024, 5, 2), 100, 99, 99), (date(2024, 5, 2), 100, 101, 100), (date(2024, 5, 2), 0, 5, 5)]
)
def test_rows_not_conserved_on_a_night_fails_naming_it(night: tuple[date, int, int, int]) -> None:
    outcome = rows_conserved([(date(2024, 5, 1), 100, 100, 100), night])
    assert not outcome.passed
    assert outcome.severity == "ERROR"
    assert outcome.description.startswith("2024-05-02:")
    assert outcome.metadata == {"nights": 2, "broken_nights": 1}
