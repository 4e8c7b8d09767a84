"""The credit simulator: deterministic clean nights inside the contract, bad-data nights with every defect kind,
world effects (income inflation, a sudden young-mobile shift, concept drift, a bot attack) and the plans that
schedule and combine them, labeled history, and the landing/labels folder layout."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from nightkeeper.config import Contract, ProjectConfig, load_config
from nightkeeper.encoding import categorical_indices, feature_cards, feature_matrix
from nightkeeper.examples.simulator import (
    DEFECTS,
    KnobSchedule,
    NightData,
    Scenario,
    ScenarioPlan,
    merge_scenarios,
    simulate_history,
    simulate_night,
    simulate_to_folders,
    write_labels,
    write_landing,
)
from nightkeeper.ingest import read_raw_batch
from nightkeeper.validation import ValidationResult, validate

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


# ----------------------------------------------------------------------------------------------- world effects

WORLD_ROWS = 10_000


def labeled(night: NightData) -> pl.DataFrame:
    return night.applications.join(night.labels, on="application_id")


def validated_landing_file(night: NightData, contract: Contract, tmp_path: Path) -> ValidationResult:
    """The night's landing file as written, read and validated by the real pipeline steps."""
    path = write_landing(night, night.night, tmp_path / "landing")
    return validate(read_raw_batch([path], night.night, contract).frame, contract)


@pytest.fixture(scope="module")
def clean_world() -> NightData:
    return simulate_night(NIGHT, WORLD_ROWS, SEED)


@pytest.fixture(scope="module")
def attacked() -> NightData:
    return simulate_night(NIGHT, WORLD_ROWS, SEED, Scenario(bot_attack_share=0.3))


@pytest.mark.parametrize(
    "scenario",
    [
        Scenario(income_factor=1.5),
        Scenario(young_mobile_share=0.4),
        Scenario(concept_shift=1.0),
        Scenario(bot_attack_share=0.3),
        Scenario(income_factor=2.0, young_mobile_share=1.0, concept_shift=0.5, bot_attack_share=1.0),
    ],
    ids=["inflation", "sudden_shift", "concept_drift", "bot_attack", "all_at_once"],
)
def test_world_effects_pass_validation_with_nothing_quarantined(
    scenario: Scenario, contract: Contract, tmp_path: Path
) -> None:
    night = simulate_night(NIGHT, 3_000, SEED, scenario)
    assert dict(night.applications.schema) == contract_schema(contract)
    result = validated_landing_file(night, contract, tmp_path)
    assert result.quarantined_rows == 0, result.quarantine.head(5)
    assert result.valid.height == night.applications.height


@pytest.mark.parametrize(
    "knob, value",
    [
        ("income_factor", 0.0),
        ("income_factor", float("inf")),
        ("young_mobile_share", 1.5),
        ("concept_shift", -0.1),
        ("bot_attack_share", 2.0),
    ],
)
def test_scenario_rejects_a_knob_out_of_its_range(knob: str, value: float) -> None:
    with pytest.raises(ValueError, match=knob):
        Scenario(**{knob: value})  # type: ignore[arg-type]


def test_night_with_world_effects_is_deterministic() -> None:
    scenario = Scenario(income_factor=1.2, young_mobile_share=0.3, concept_shift=0.5, bot_attack_share=0.3)
    first = simulate_night(NIGHT, 2_000, SEED, scenario)
    second = simulate_night(NIGHT, 2_000, SEED, scenario)
    assert_frame_equal(first.applications, second.applications)
    assert_frame_equal(first.labels, second.labels)
    assert_frame_equal(first.bots, second.bots)


# income inflation (gradual drift)


def test_income_inflation_raises_median_income_by_the_factor(clean_world: NightData) -> None:
    inflated = simulate_night(NIGHT, WORLD_ROWS, SEED, Scenario(income_factor=1.3))
    ratio = inflated.applications["income"].median() / clean_world.applications["income"].median()
    assert ratio == pytest.approx(1.3, rel=0.01)


def test_income_inflation_moves_expenses_fully_and_loans_partially(clean_world: NightData) -> None:
    inflated = simulate_night(NIGHT, WORLD_ROWS, SEED, Scenario(income_factor=1.3)).applications
    clean = clean_world.applications
    assert inflated["monthly_expenses"].median() / clean["monthly_expenses"].median() == pytest.approx(1.3, rel=0.02)
    assert 1.05 < inflated["loan_amount"].median() / clean["loan_amount"].median() < 1.25


def test_extreme_income_inflation_stays_within_contract_ranges(contract: Contract) -> None:
    inflated = simulate_night(NIGHT, WORLD_ROWS, SEED, Scenario(income_factor=60.0)).applications
    assert inflated["income"].max() == 5_000_000  # clipped at the cap, not beyond the contract's max
    for name, spec in contract.features.items():
        if spec.dtype in ("float", "int"):
            values = inflated[name].drop_nulls()
            assert spec.min <= values.min() and values.max() <= spec.max, name
    for rule in contract.rules:
        assert inflated.select(pl.sql_expr(rule.expression)).to_series().all(), rule.name


def test_income_inflation_plan_compounds_from_its_start_night() -> None:
    plan = ScenarioPlan.gradual_income_inflation(start_index=2, per_night_rate=0.01)
    assert plan.scenario_for_night(0) == plan.scenario_for_night(1) == Scenario()
    assert plan.scenario_for_night(2).income_factor == pytest.approx(1.01)
    assert plan.scenario_for_night(5).income_factor == pytest.approx(1.01**4)
    assert plan.scenario_for_night(400).income_factor == pytest.approx(1.01**399)


# sudden shift


def test_sudden_shift_raises_mobile_share_and_lowers_median_age_only_from_its_start_night() -> None:
    plan = ScenarioPlan.sudden_shift(start_index=2, share=0.3)
    nights = [simulate_night(NIGHT + timedelta(days=i), 5_000, SEED, plan.scenario_for_night(i)) for i in range(4)]
    mobile = [(n.applications["channel"] == "mobile").mean() for n in nights]
    median_age = [n.applications["age"].median() for n in nights]
    for before in (0, 1):
        for after in (2, 3):
            assert mobile[after] - mobile[before] > 0.15
            assert median_age[before] - median_age[after] >= 4


def test_sudden_shift_population_is_young_thin_file_and_mobile(clean_world: NightData) -> None:
    shifted = simulate_night(NIGHT, WORLD_ROWS, SEED, Scenario(young_mobile_share=1.0)).applications
    young_today = clean_world.applications.filter(pl.col("age") <= 25)
    assert shifted["age"].min() >= 18 and shifted["age"].max() <= 25
    assert (shifted["channel"] == "mobile").all()
    assert shifted["credit_score"].median() < young_today["credit_score"].median() - 15
    assert shifted["open_accounts"].mean() < 0.5 * young_today["open_accounts"].mean()
    assert shifted["employment_years"].mean() < 0.5 * young_today["employment_years"].mean()


def test_sudden_shift_replaces_the_share_of_rows_and_keeps_the_rest(clean_world: NightData) -> None:
    shifted = simulate_night(NIGHT, WORLD_ROWS, SEED, Scenario(young_mobile_share=0.25)).applications
    assert shifted["application_id"].equals(clean_world.applications["application_id"])
    clean = clean_world.applications
    changed = shifted.select(pl.any_horizontal(pl.col(c).ne_missing(clean[c]) for c in shifted.columns)).to_series()
    assert changed.mean() == pytest.approx(0.25, abs=0.01)


# concept drift


def test_concept_drift_keeps_the_feature_distributions(clean_world: NightData) -> None:
    drifted = simulate_night(NIGHT, WORLD_ROWS, SEED, Scenario(concept_shift=1.0)).applications
    assert_frame_equal(drifted, clean_world.applications)  # the very same applicants, so no input drift at all
    another_clean = simulate_night(NIGHT + timedelta(days=1), WORLD_ROWS, SEED).applications
    for name in ("income", "age", "credit_score", "debt_to_income", "loan_amount"):
        assert ks_2samp(drifted[name].to_numpy(), another_clean[name].to_numpy()).statistic < 0.03, name


def test_concept_drift_keeps_the_base_rate_roughly_similar(clean_world: NightData) -> None:
    drifted = simulate_night(NIGHT, WORLD_ROWS, SEED, Scenario(concept_shift=1.0))
    assert abs(drifted.labels["defaulted"].mean() - clean_world.labels["defaulted"].mean()) < 0.03


def test_concept_drift_costs_a_model_trained_on_clean_history_at_least_five_auc_points(contract: Contract) -> None:
    cards = feature_cards(contract)
    history = simulate_history(NIGHT - timedelta(days=1), days=4, rows_per_day=5_000, seed=SEED)
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "learning_rate": 0.1,
        "min_data_in_leaf": 50,
        "verbose": -1,
        "num_threads": 1,
        "seed": 1,
    }  # one thread: fast and immune to OpenMP spin-waits
    matrix = feature_matrix(history, cards)
    dataset = lgb.Dataset(matrix, history["defaulted"].to_numpy(), categorical_feature=categorical_indices(cards))
    model = lgb.train(params, dataset, num_boost_round=100)

    def auc(scenario: Scenario) -> float:
        night = labeled(simulate_night(NIGHT, 20_000, SEED + 1, scenario))
        return float(roc_auc_score(night["defaulted"].to_numpy(), model.predict(feature_matrix(night, cards))))

    assert auc(Scenario()) - auc(Scenario(concept_shift=1.0)) >= 0.05


def test_concept_drift_plan_starts_at_its_night() -> None:
    plan = ScenarioPlan.concept_drift(start_index=3, shift=0.7)
    assert [plan.scenario_for_night(i).concept_shift for i in range(2, 6)] == [0.0, 0.7, 0.7, 0.7]


# bot attack


def test_bot_attack_adds_the_stated_share_of_rows_on_top_of_normal_traffic(attacked: NightData) -> None:
    assert attacked.applications.height == round(1.3 * WORLD_ROWS)
    assert attacked.bots.height == round(0.3 * WORLD_ROWS)
    assert attacked.applications["application_id"].is_unique().all()
    assert attacked.bots["application_id"].str.starts_with("B20240501-").all()
    assert set(attacked.bots["application_id"]) <= set(attacked.applications["application_id"])


def test_bot_attack_leaves_the_normal_rows_as_on_a_clean_night(attacked: NightData, clean_world: NightData) -> None:
    normal = attacked.applications.filter(~pl.col("application_id").is_in(attacked.bots["application_id"].implode()))
    assert_frame_equal(normal, clean_world.applications)


def test_bot_rows_pass_validation_without_quarantine(attacked: NightData, contract: Contract, tmp_path: Path) -> None:
    result = validated_landing_file(attacked, contract, tmp_path)
    assert result.quarantine.is_empty()
    assert set(attacked.bots["application_id"]) <= set(result.valid["entity_id"])


def test_bots_are_mostly_labeled_defaulted(attacked: NightData) -> None:
    bot_labels = attacked.labels.join(attacked.bots, on="application_id", how="semi")
    assert bot_labels.height == attacked.bots.height
    assert bot_labels["defaulted"].mean() >= 0.8


def test_bots_are_near_duplicates_from_one_channel_and_purpose(attacked: NightData) -> None:
    bots = attacked.applications.join(attacked.bots, on="application_id", how="semi")
    assert set(bots["channel"]) == {"web"}
    assert bots["purpose"].n_unique() == 1
    assert bots["age"].max() - bots["age"].min() <= 2
    assert (bots["loan_amount"] % 5_000 == 0).all()
    assert bots["income"].std() / bots["income"].mean() < 0.05
    assert bots["applied_at"].max() - bots["applied_at"].min() <= timedelta(hours=2)


def test_bot_attack_plan_lasts_its_nights() -> None:
    plan = ScenarioPlan.bot_attack(start_index=3, nights=7, share=0.3)
    shares = [plan.scenario_for_night(i).bot_attack_share for i in range(12)]
    assert shares == [0.0] * 3 + [0.3] * 7 + [0.0] * 2


def test_bad_data_night_during_a_bot_attack_labels_each_id_once() -> None:
    night = simulate_night(NIGHT, 2_000, SEED, Scenario(bad_data=True, bot_attack_share=0.3))
    assert night.bots.height == 600
    assert night.labels["application_id"].is_unique().all()
    assert set(night.labels["application_id"]) == set(night.applications["application_id"])


def test_night_data_without_bots_is_still_built_from_four_fields(clean: NightData) -> None:
    night = NightData(NIGHT, clean.applications, clean.labels, clean.defects)
    assert night.bots.is_empty()
    assert clean.bots.is_empty()


# combining plans


def test_merge_takes_each_non_default_field_from_the_last_scenario_setting_it() -> None:
    merged = merge_scenarios(
        Scenario(bad_data=True, missing_column="region", young_mobile_share=0.2),
        Scenario(young_mobile_share=0.5, bot_attack_share=0.3),
    )
    assert merged == Scenario(bad_data=True, missing_column="region", young_mobile_share=0.5, bot_attack_share=0.3)


def test_combined_plan_runs_a_bad_night_a_stable_stretch_then_a_shift_and_an_attack() -> None:
    plan = ScenarioPlan.combine(
        ScenarioPlan.bad_data_at(1),
        ScenarioPlan.sudden_shift(start_index=5, share=0.3),
        ScenarioPlan.bot_attack(start_index=8, nights=2),
        ScenarioPlan.gradual_income_inflation(start_index=6, per_night_rate=0.02),
    )
    assert plan.scenario_for_night(0) == Scenario()
    assert plan.scenario_for_night(1) == Scenario(bad_data=True)
    assert all(plan.scenario_for_night(i) == Scenario() for i in range(2, 5))
    assert plan.scenario_for_night(5) == Scenario(young_mobile_share=0.3)
    assert plan.scenario_for_night(8) == Scenario(young_mobile_share=0.3, bot_attack_share=0.3, income_factor=1.02**3)
    assert plan.scenario_for_night(10).bot_attack_share == 0.0


def test_combined_plans_merge_fields_on_a_shared_night() -> None:
    plan = ScenarioPlan.bad_data_at(4, missing_column="region").then(ScenarioPlan.sudden_shift(4, share=0.2))
    assert plan.scenario_for_night(4) == Scenario(bad_data=True, missing_column="region", young_mobile_share=0.2)


def test_later_plan_wins_when_two_plans_set_the_same_knob() -> None:
    plan = ScenarioPlan.combine(ScenarioPlan.sudden_shift(0, 0.2), ScenarioPlan.sudden_shift(3, 0.6))
    assert [plan.scenario_for_night(i).young_mobile_share for i in range(2, 5)] == [0.2, 0.6, 0.6]


def test_with_night_on_a_combined_plan_adds_its_fields_on_top() -> None:
    plan = ScenarioPlan.combine(ScenarioPlan.concept_drift(0, 0.5)).with_night(2, Scenario(bad_data=True))
    assert plan.scenario_for_night(2) == Scenario(bad_data=True, concept_shift=0.5)
    assert plan.scenario_for_night(3) == Scenario(concept_shift=0.5)


def test_knob_schedule_rejects_an_unknown_knob() -> None:
    with pytest.raises(ValueError, match="unknown knob"):
        KnobSchedule("bad_data", start_index=0, value=1.0)


def test_night_written_by_a_combined_plan_equals_the_night_simulated_alone(tmp_path: Path) -> None:
    plan = ScenarioPlan.combine(
        ScenarioPlan.gradual_income_inflation(0, 0.05),
        ScenarioPlan.sudden_shift(1, 0.3),
        ScenarioPlan.bot_attack(2, nights=1),
        ScenarioPlan.concept_drift(2, 1.0),
    )
    simulate_to_folders(NIGHT, 3, 500, SEED, plan, tmp_path / "landing", tmp_path / "labels", label_delay_days=0)
    for index in range(3):
        night = NIGHT + timedelta(days=index)
        alone = simulate_night(night, 500, SEED, plan.scenario_for_night(index))
        landed = pl.read_parquet(tmp_path / "landing" / night.isoformat() / "applications.parquet")
        arrived = pl.read_parquet(tmp_path / "labels" / night.isoformat() / "labels.parquet")
        assert_frame_equal(landed, alone.applications)
        assert_frame_equal(arrived, alone.labels)


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
