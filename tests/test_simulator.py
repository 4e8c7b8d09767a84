"""The credit simulator: deterministic clean nights inside the contract, bad-data nights with every defect kind,
labeled history, and the landing/labels folder layout."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from nightkeeper.config import Contract, ProjectConfig, load_config
from nightkeeper.simulator import (
    DEFECTS,
    NightData,
    Scenario,
    ScenarioPlan,
    simulate_history,
    simulate_night,
    simulate_to_folders,
    write_labels,
    write_landing,
)

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
NIGHT = date(2024, 5, 1)
SEED = 7
DTYPES = {"float": pl.Float64(), "int": pl.Int64(), "category": pl.String(), "bool": pl.Boolean()}


@pytest.fixture(scope="module")
def config() -> ProjectConfig:
    return load_config(CONFIG_PATH)


@pytest.fixture(scope="module")
def contract(config: ProjectConfig) -> Contract:
    return config.contract


@pytest.fixture(scope="module")
def clean() -> NightData:
    return simulate_night(NIGHT, 20_000, SEED, Scenario())


@pytest.fixture(scope="module")
def bad() -> NightData:
    return simulate_night(NIGHT, 20_000, SEED, Scenario(bad_data=True))


def contract_schema(contract: Contract) -> dict[str, pl.DataType]:
    return {
        contract.entity_id: pl.String(),
        contract.event_time: pl.Datetime("us"),
        **{name: DTYPES[spec.dtype] for name, spec in contract.features.items()},
    }


# ------------------------------------------------------------------------------------------------- clean nights


def test_same_seed_gives_identical_night() -> None:
    first = simulate_night(NIGHT, 2_000, SEED, Scenario(bad_data=True))
    second = simulate_night(NIGHT, 2_000, SEED, Scenario(bad_data=True))
    assert_frame_equal(first.applications, second.applications)
    assert_frame_equal(first.labels, second.labels)


def test_different_seed_gives_different_night() -> None:
    first = simulate_night(NIGHT, 2_000, SEED)
    second = simulate_night(NIGHT, 2_000, SEED + 1)
    assert not first.applications.equals(second.applications)


def test_different_nights_differ() -> None:
    first = simulate_night(NIGHT, 2_000, SEED)
    second = simulate_night(NIGHT + timedelta(days=1), 2_000, SEED)
    assert not first.applications.drop("application_id", "applied_at").equals(
        second.applications.drop("application_id", "applied_at")
    )


def test_night_does_not_depend_on_other_nights_generated() -> None:
    history = simulate_history(NIGHT + timedelta(days=2), days=5, rows_per_day=500, seed=SEED)
    alone = simulate_night(NIGHT, 500, SEED)
    from_history = history.filter(pl.col("applied_at").dt.date() == NIGHT)
    assert_frame_equal(from_history.drop("defaulted"), alone.applications)


def test_clean_night_has_exactly_the_contract_columns_and_dtypes(clean: NightData, contract: Contract) -> None:
    assert dict(clean.applications.schema) == contract_schema(contract)


def test_applications_do_not_contain_the_target(clean: NightData, contract: Contract) -> None:
    assert contract.target not in clean.applications.columns


def test_application_ids_are_unique_and_carry_the_night(clean: NightData) -> None:
    ids = clean.applications["application_id"]
    assert ids.n_unique() == clean.applications.height == 20_000
    assert ids.str.starts_with("A20240501-").all()


def test_application_ids_are_unique_across_nights() -> None:
    first = simulate_night(NIGHT, 100, SEED).applications["application_id"]
    second = simulate_night(NIGHT + timedelta(days=1), 100, SEED).applications["application_id"]
    assert not set(first) & set(second)


def test_applied_at_lies_within_the_night(clean: NightData) -> None:
    applied = clean.applications["applied_at"]
    assert applied.min() >= datetime(2024, 5, 1)
    assert applied.max() < datetime(2024, 5, 2)


def test_numeric_values_lie_within_contract_ranges(clean: NightData, contract: Contract) -> None:
    for name, spec in contract.features.items():
        if spec.dtype in ("float", "int"):
            values = clean.applications[name].drop_nulls()
            assert values.min() >= spec.min, name
            assert values.max() <= spec.max, name


def test_categories_come_from_declared_levels(clean: NightData, contract: Contract) -> None:
    for name, spec in contract.features.items():
        if spec.dtype == "category":
            assert set(clean.applications[name].unique()) <= set(spec.categories or []), name


def test_every_category_level_occurs(clean: NightData, contract: Contract) -> None:
    for name, spec in contract.features.items():
        if spec.dtype == "category":
            assert set(clean.applications[name].unique()) == set(spec.categories or []), name


def test_required_features_are_never_null(clean: NightData, contract: Contract) -> None:
    for name, spec in contract.features.items():
        if spec.required:
            assert clean.applications[name].null_count() == 0, name


def test_optional_dependents_are_sometimes_null(clean: NightData) -> None:
    assert 0.02 <= clean.applications["dependents"].null_count() / clean.applications.height <= 0.04


def test_clean_night_satisfies_every_cross_field_rule(clean: NightData, contract: Contract) -> None:
    assert contract.rules
    for rule in contract.rules:
        assert clean.applications.select(pl.sql_expr(rule.expression)).to_series().all(), rule.name


def test_base_default_rate_is_realistic(clean: NightData) -> None:
    assert 0.08 <= clean.labels["defaulted"].mean() <= 0.15


def test_defaults_rise_with_risk_factors(clean: NightData) -> None:
    labeled = clean.applications.join(clean.labels, on="application_id")

    def rate(condition: pl.Expr) -> float:
        return labeled.filter(condition)["defaulted"].mean()

    assert rate(pl.col("credit_score") < 600) > 2 * rate(pl.col("credit_score") >= 700)
    assert rate(pl.col("previous_defaults") > 0) > 2 * rate(pl.col("previous_defaults") == 0)
    assert rate(pl.col("debt_to_income") > 0.6) > 2 * rate(pl.col("debt_to_income") < 0.3)
    assert rate(pl.col("employment_type") == "unemployed") > 2 * rate(pl.col("employment_type") == "salaried")


def test_default_risk_is_u_shaped_in_age(clean: NightData) -> None:
    labeled = clean.applications.join(clean.labels, on="application_id")
    by_age = {
        band: labeled.filter(condition)["defaulted"].mean()
        for band, condition in {
            "young": pl.col("age") < 28,
            "middle": pl.col("age").is_between(40, 55),
            "old": pl.col("age") >= 70,
        }.items()
    }
    assert by_age["young"] > by_age["middle"] < by_age["old"]


def test_labels_hold_one_int8_target_per_application(clean: NightData) -> None:
    assert dict(clean.labels.schema) == {"application_id": pl.String(), "defaulted": pl.Int8()}
    assert clean.labels["application_id"].sort().equals(clean.applications["application_id"].sort())
    assert set(clean.labels["defaulted"].unique()) == {0, 1}


def test_clean_night_reports_no_defects(clean: NightData) -> None:
    assert clean.defects.is_empty()


def test_a_million_rows_generate_in_a_few_seconds() -> None:
    started = time.perf_counter()
    night = simulate_night(NIGHT, 1_000_000, SEED)
    assert night.applications.height == 1_000_000
    assert time.perf_counter() - started < 10


# --------------------------------------------------------------------------------------------- bad-data nights


def test_bad_night_has_negative_incomes(bad: NightData) -> None:
    assert bad.applications.filter(pl.col("income") < 0).height > 0


def test_bad_night_has_nulls_in_required_fields(bad: NightData) -> None:
    assert bad.applications["age"].null_count() > 0
    assert bad.applications["credit_score"].null_count() > 0


def test_bad_night_has_an_unknown_category(bad: NightData, contract: Contract) -> None:
    unknown = set(bad.applications["purpose"].unique()) - set(contract.features["purpose"].categories or [])
    assert unknown == {"crypto"}


def test_bad_night_has_fully_duplicated_rows(bad: NightData) -> None:
    assert bad.applications.is_duplicated().sum() > 0


def test_bad_night_has_same_id_with_different_values(bad: NightData) -> None:
    distinct_rows = bad.applications.unique()
    assert distinct_rows["application_id"].is_duplicated().sum() > 0


def test_bad_night_has_a_numeric_column_as_mostly_parseable_text(bad: NightData) -> None:
    loan_amount = bad.applications["loan_amount"]
    assert loan_amount.dtype == pl.String
    parsed = loan_amount.cast(pl.Float64, strict=False)
    unparseable = parsed.is_null().sum()
    assert 0 < unparseable < 0.05 * len(loan_amount)
    assert set(loan_amount.filter(parsed.is_null())) <= {"12k", "n/a", "unknown", "1.2e+04 EUR"}


def test_bad_night_has_an_extra_column(bad: NightData, contract: Contract) -> None:
    extra = set(bad.applications.columns) - set(contract_schema(contract))
    assert extra == {"utm_campaign"}


def test_bad_night_misses_the_optional_column(bad: NightData) -> None:
    assert "dependents" not in bad.applications.columns


def test_missing_column_is_configurable() -> None:
    night = simulate_night(NIGHT, 1_000, SEED, Scenario(bad_data=True, missing_column="region"))
    assert "region" not in night.applications.columns
    assert "dependents" in night.applications.columns


def test_defects_can_be_chosen_one_kind_at_a_time() -> None:
    night = simulate_night(NIGHT, 1_000, SEED, Scenario(bad_data=True, defects=frozenset({"negative_income"})))
    assert night.applications.filter(pl.col("income") < 0).height > 0
    assert night.applications.columns == simulate_night(NIGHT, 10, SEED).applications.columns
    assert set(night.defects["defect"]) == {"negative_income"}


def test_each_row_defect_touches_a_small_share_of_rows(bad: NightData) -> None:
    counts = dict(bad.defects.group_by("defect").len().iter_rows())
    assert set(counts) == {d for d in DEFECTS if d not in ("numeric_as_text", "extra_column", "missing_column")}
    for defect, rows in counts.items():
        share = rows / 20_000 / (2 if defect == "null_required" else 1)  # age and credit_score each
        assert 0.005 <= share <= 0.02, defect


def test_reported_defect_ids_are_the_broken_rows(bad: NightData) -> None:
    negative = bad.defects.filter(pl.col("defect") == "negative_income")["application_id"]
    assert set(negative) == set(bad.applications.filter(pl.col("income") < 0)["application_id"])


def test_bad_night_rows_are_the_clean_night_plus_defects(clean: NightData, bad: NightData) -> None:
    broken = set(bad.defects["application_id"])
    untouched = bad.applications.filter(~pl.col("application_id").is_in(list(broken)))
    expected = clean.applications.filter(~pl.col("application_id").is_in(list(broken)))
    assert_frame_equal(
        untouched.drop("utm_campaign").with_columns(pl.col("loan_amount").cast(pl.Float64)),
        expected.drop("dependents"),
    )


def test_bad_night_labels_cover_each_unique_id_once(bad: NightData) -> None:
    assert bad.labels["application_id"].is_unique().all()
    assert set(bad.labels["application_id"]) == set(bad.applications["application_id"])


def test_bad_data_night_needs_enough_rows() -> None:
    with pytest.raises(ValueError, match="rows"):
        simulate_night(NIGHT, 10, SEED, Scenario(bad_data=True))


def test_scenario_rejects_an_unknown_defect() -> None:
    with pytest.raises(ValueError, match="unknown defects"):
        Scenario(bad_data=True, defects=frozenset({"meteor"}))


# ---------------------------------------------------------------------------------------------------- the plan


def test_plan_defaults_every_night_to_clean() -> None:
    plan = ScenarioPlan.clean()
    assert all(plan.scenario_for_night(i) == Scenario() for i in range(10))


def test_plan_puts_the_bad_data_night_at_its_index() -> None:
    plan = ScenarioPlan.bad_data_at(3, missing_column="region")
    assert plan.scenario_for_night(3) == Scenario(bad_data=True, missing_column="region")
    assert not plan.scenario_for_night(2).bad_data
    assert not plan.scenario_for_night(4).bad_data


def test_plan_with_night_adds_a_scenario_without_changing_the_original() -> None:
    plan = ScenarioPlan.clean()
    changed = plan.with_night(1, Scenario(bad_data=True))
    assert changed.scenario_for_night(1).bad_data
    assert not plan.scenario_for_night(1).bad_data


# ------------------------------------------------------------------------------------------------------ history


def test_history_is_labeled_clean_and_spans_the_days(contract: Contract) -> None:
    history = simulate_history(date(2024, 4, 30), days=3, rows_per_day=400, seed=SEED)
    assert dict(history.schema) == {**contract_schema(contract), contract.target: pl.Int8()}
    assert history.height == 1_200
    assert history[contract.target].null_count() == 0
    assert history["application_id"].is_unique().all()
    assert sorted(history["applied_at"].dt.date().unique()) == [date(2024, 4, 28), date(2024, 4, 29), date(2024, 4, 30)]


# ------------------------------------------------------------------------------------------------------ folders


def test_simulate_to_folders_writes_landing_files_and_delayed_labels(tmp_path: Path, config: ProjectConfig) -> None:
    landing, labels = tmp_path / "landing", tmp_path / "labels"
    nights = simulate_to_folders(
        date(2024, 5, 1), 3, 300, SEED, ScenarioPlan.bad_data_at(1), landing, labels, label_delay_days=7
    )
    assert nights == [date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)]
    for night in nights:
        files = sorted(landing.glob(config.source.pattern.format(date=night.isoformat())))
        assert files == [landing / night.isoformat() / "applications.parquet"]
        expected = simulate_night(night, 300, SEED, Scenario(bad_data=night.day == 2))
        assert_frame_equal(pl.read_parquet(files[0]), expected.applications)
        arrived = pl.read_parquet(labels / (night + timedelta(days=7)).isoformat() / "labels.parquet")
        assert set(arrived["application_id"]) == set(pl.read_parquet(files[0])["application_id"])
    assert sorted(p.name for p in labels.iterdir()) == ["2024-05-08", "2024-05-09", "2024-05-10"]


def test_rewriting_folders_is_idempotent(tmp_path: Path) -> None:
    args = (date(2024, 5, 1), 2, 200, SEED, ScenarioPlan.clean(), tmp_path / "landing", tmp_path / "labels")
    simulate_to_folders(*args)
    first = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    simulate_to_folders(*args)
    second = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert first == second
    assert len(first) == 4


def test_write_landing_and_write_labels_use_the_date_folders(tmp_path: Path, clean: NightData) -> None:
    landing_file = write_landing(clean, NIGHT, tmp_path / "landing")
    labels_file = write_labels(clean.labels, date(2024, 5, 8), tmp_path / "labels")
    assert landing_file == tmp_path / "landing" / "2024-05-01" / "applications.parquet"
    assert labels_file == tmp_path / "labels" / "2024-05-08" / "labels.parquet"
    assert_frame_equal(pl.read_parquet(labels_file), clean.labels)
