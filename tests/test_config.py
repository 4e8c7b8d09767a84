"""The project config: the shipped file loads, and every kind of bad config fails at load with a ConfigError whose
message names the field path, the value found and what is allowed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from nightkeeper.config import CONFIG_ENV_VAR, ConfigError, ProjectConfig, load_config, parse_config

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
SHIPPED: dict[str, Any] = yaml.safe_load(CONFIG_PATH.read_text())


def config_error(edit: Callable[[dict[str, Any]], None]) -> str:
    """The ConfigError message for the shipped config changed by ``edit``."""
    raw = copy.deepcopy(SHIPPED)
    edit(raw)
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, root=CONFIG_PATH.parent, source="nightkeeper.yaml")
    return str(caught.value)


def feature(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return raw["contract"]["features"][name]


# ------------------------------------------------------------------------------------------------ the shipped file


def test_shipped_config_loads() -> None:
    config = load_config(CONFIG_PATH)
    assert isinstance(config, ProjectConfig)
    assert config.name == "credit-default"
    assert config.contract.entity_id == "application_id"
    assert config.contract.target == "defaulted"
    assert len(config.contract.feature_names) == 18
    assert config.fallback.segment_by == ["employment_type", "channel"]
    assert config.model.decision.threshold == 0.30


def test_shipped_config_paths_resolve_against_the_config_folder() -> None:
    config = load_config(CONFIG_PATH)
    assert config.warehouse_path == CONFIG_PATH.parent / "data" / "warehouse.duckdb"
    assert config.models_path == CONFIG_PATH.parent / "data" / "models"
    assert config.landing_path == CONFIG_PATH.parent / "data" / "landing"


def test_config_path_comes_from_the_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere.yaml"
    moved.write_text(CONFIG_PATH.read_text())
    monkeypatch.setenv(CONFIG_ENV_VAR, str(moved))
    config = load_config()
    assert config.root == tmp_path
    assert config.warehouse_path == tmp_path / "data" / "warehouse.duckdb"


# ------------------------------------------------------------------------------------------------- bad contracts


def test_bad_dtype_names_field_value_and_allowed_dtypes() -> None:
    message = config_error(lambda raw: feature(raw, "age").update(dtype="integer"))
    assert "contract.features.age.dtype" in message
    assert "'integer'" in message
    assert "'float', 'int', 'bool' or 'category'" in message


def test_unknown_field_typo_names_field_and_value() -> None:
    message = config_error(lambda raw: feature(raw, "age").update(maximum=99))
    assert "contract.features.age.maximum" in message
    assert "99" in message
    assert "not allowed" in message


def test_unknown_field_typo_lists_the_allowed_fields() -> None:
    message = config_error(lambda raw: raw["model"].update(chunk_row=5))
    assert "model.chunk_row" in message
    assert "chunk_rows" in message


def test_category_feature_without_categories_names_the_feature() -> None:
    message = config_error(lambda raw: feature(raw, "region").pop("categories"))
    assert "contract.features.region" in message
    assert "'dtype': 'category'" in message
    assert "non-empty `categories` list" in message


def test_category_feature_with_duplicate_levels_is_rejected() -> None:
    message = config_error(lambda raw: feature(raw, "region").update(categories=["north", "south", "north"]))
    assert "contract.features.region" in message
    assert "duplicates" in message


def test_categories_on_a_numeric_feature_are_rejected() -> None:
    message = config_error(lambda raw: feature(raw, "age").update(categories=["young", "old"]))
    assert "contract.features.age" in message
    assert "dtype 'category' only" in message


def test_min_greater_than_max_names_feature_and_both_bounds() -> None:
    message = config_error(lambda raw: feature(raw, "age").update(min=65, max=18))
    assert "contract.features.age" in message
    assert "`min` (65.0) is greater than `max` (18.0)" in message


def test_min_equal_to_max_is_allowed() -> None:
    raw = copy.deepcopy(SHIPPED)
    feature(raw, "age").update(min=40, max=40)
    assert parse_config(raw, root=CONFIG_PATH.parent).contract.features["age"].min == 40


def test_cross_field_rule_naming_a_non_feature_names_rule_column_and_features() -> None:
    message = config_error(lambda raw: raw["contract"]["rules"][0].update(expression="loan_amount <= 40 * salary"))
    assert "contract" in message
    assert "rule 'loan_within_income_multiple' uses ['salary']" in message
    assert "features are ['income', 'age'" in message


def test_cross_field_rule_that_is_not_sql_names_the_expression() -> None:
    message = config_error(lambda raw: raw["contract"]["rules"][0].update(expression="loan_amount <= <= income"))
    assert "contract.rules.0.expression" in message
    assert "'loan_amount <= <= income'" in message
    assert "not a valid SQL expression" in message


def rule_error(expression: str) -> str:
    return config_error(lambda raw: raw["contract"]["rules"][0].update(expression=expression))


def test_cross_field_rule_with_a_subquery_reading_a_file_is_refused_at_load() -> None:
    message = rule_error("income > (select count(*) from read_csv('/some/file')) * 100000")
    assert "contract.rules.0.expression" in message
    assert "rule 'loan_within_income_multiple' must be an expression over the row's columns only" in message
    assert "a subquery reading read_csv('/some/file')" in message


def test_cross_field_rule_calling_a_function_outside_the_allowed_set_is_refused() -> None:
    message = rule_error("getenv('HOME') = income")
    assert "rule 'loan_within_income_multiple'" in message
    assert "function 'getenv'" in message
    assert "allowed functions: abs" in message


def test_cross_field_rule_smuggling_a_from_clause_is_refused() -> None:
    message = rule_error("income > 0) from read_csv('/etc/passwd') --")
    assert "rule 'loan_within_income_multiple'" in message
    assert "SQL beyond one expression" in message


def test_cross_field_rule_with_a_qualified_column_is_refused() -> None:
    assert "qualified name 'applications.income'" in rule_error("loan_amount <= 40 * applications.income")


def test_cross_field_rules_over_the_rows_columns_load() -> None:
    raw = copy.deepcopy(SHIPPED)
    expressions = [
        "loan_amount <= 40 * abs(income) and coalesce(dependents, 0) between 0 and 20",
        "case when employment_type in ('unemployed', 'student') then loan_amount < 50000 else true end",
        "purpose not like 'x%' and monthly_expenses is not null and cast(age as double) >= 18",
    ]
    raw["contract"]["rules"] = [{"name": f"rule_{i}", "expression": e} for i, e in enumerate(expressions)]
    config = parse_config(raw, root=CONFIG_PATH.parent)
    assert [rule.expression for rule in config.contract.rules] == expressions


def test_target_listed_as_a_feature_is_rejected() -> None:
    message = config_error(lambda raw: raw["contract"].update(target="age"))
    assert "target column 'age' must not also be listed as a feature" in message


def test_feature_named_like_a_framework_column_is_rejected() -> None:
    def rename(raw: dict[str, Any]) -> None:
        raw["contract"]["features"]["row_number"] = raw["contract"]["features"].pop("open_accounts")

    message = config_error(rename)
    assert "row_number" in message


# ---------------------------------------------------------------------------------------- model, fallback, checks


@pytest.mark.parametrize(("threshold", "allowed"), [(1.5, "less than 1"), (0, "greater than 0"), (1, "less than 1")])
def test_threshold_out_of_range_names_field_value_and_range(threshold: float, allowed: str) -> None:
    message = config_error(lambda raw: raw["model"]["decision"].update(threshold=threshold))
    assert "model.decision.threshold" in message
    assert f"found {threshold!r}" in message
    assert allowed in message


def test_decision_labels_must_be_distinct() -> None:
    message = config_error(lambda raw: raw["model"]["decision"].update(undecided="approve"))
    assert "model.decision" in message
    assert "decision labels must be distinct" in message
    assert "['decline', 'approve', 'approve']" in message


def test_non_binary_objective_is_rejected() -> None:
    message = config_error(lambda raw: raw["model"]["params"].update(objective="regression"))
    assert "model.params" in message
    assert "objective 'regression' is not supported" in message
    assert "'binary'" in message


def test_chunk_rows_must_be_positive() -> None:
    message = config_error(lambda raw: raw["model"].update(chunk_rows=0))
    assert "model.chunk_rows" in message
    assert "found 0" in message
    assert "greater than or equal to 1" in message


def test_fallback_segment_by_a_numeric_feature_names_field_value_and_allowed_columns() -> None:
    message = config_error(lambda raw: raw["fallback"].update(segment_by=["employment_type", "income"]))
    assert "fallback.segment_by" in message
    assert "'income' must be a category or bool feature" in message
    assert "['employment_type', 'purpose', 'region', 'channel', 'home_ownership', 'has_cosigner']" in message


def test_fallback_segment_by_an_unknown_column_is_rejected() -> None:
    message = config_error(lambda raw: raw["fallback"].update(segment_by=["postcode"]))
    assert "fallback.segment_by: 'postcode'" in message


def test_source_pattern_without_date_placeholder_is_rejected() -> None:
    message = config_error(lambda raw: raw["source"].update(pattern="*.parquet"))
    assert "source.pattern" in message
    assert "'*.parquet'" in message
    assert "{date}" in message


def test_check_threshold_out_of_range_is_rejected() -> None:
    message = config_error(lambda raw: raw["checks"].update(max_fallback_rate=1.5))
    assert "checks.max_fallback_rate" in message
    assert "1.5" in message
    assert "less than or equal to 1" in message


def test_missing_required_field_is_named() -> None:
    message = config_error(lambda raw: raw.pop("name"))
    assert "name: missing; this field is required" in message


def test_every_invalid_field_is_reported_at_once() -> None:
    def two_errors(raw: dict[str, Any]) -> None:
        feature(raw, "age").update(dtype="integer")
        raw["model"]["decision"].update(threshold=2)

    message = config_error(two_errors)
    assert "2 invalid field(s)" in message
    assert "contract.features.age.dtype" in message
    assert "model.decision.threshold" in message


def test_error_message_names_the_source_file(tmp_path: Path) -> None:
    raw = copy.deepcopy(SHIPPED)
    feature(raw, "age").update(dtype="integer")
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


# ------------------------------------------------------------------------------------------------ unreadable files


def test_missing_file_raises_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "nightkeeper.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(missing) in str(caught.value)
    assert "does not exist" in str(caught.value)


def test_invalid_yaml_raises_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ncontract: [entity_id, target\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert "not valid YAML" in str(caught.value)


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- name\n- contract\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, found list"):
        load_config(path)


# ------------------------------------------------------------------------------------------------ defaults applied


def test_config_without_a_model_section_says_which_defaults_applied() -> None:
    raw = copy.deepcopy(SHIPPED)
    del raw["model"]
    config = parse_config(raw, root=CONFIG_PATH.parent)
    [line] = config.defaults_applied
    assert line.startswith("model: not in the file; defaults apply:")
    assert "decision.threshold=0.5" in line and "decision.at_or_above_threshold=positive" in line


def test_a_left_out_nested_section_is_named_by_its_dotted_path() -> None:
    raw = copy.deepcopy(SHIPPED)
    del raw["model"]["decision"]
    del raw["review"]
    lines = parse_config(raw, root=CONFIG_PATH.parent).defaults_applied
    assert [line.split(":")[0] for line in lines] == ["model.decision", "review"]


def test_the_shipped_config_spells_out_every_section() -> None:
    assert load_config(CONFIG_PATH).defaults_applied == []


def test_check_config_prints_a_warning_for_each_defaulted_section(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nightkeeper.cli import app

    raw = copy.deepcopy(SHIPPED)
    del raw["model"]
    config = tmp_path / "nightkeeper.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    done = CliRunner().invoke(app, ["check-config", "--config", str(config)], terminal_width=400)
    assert done.exit_code == 0, done.output
    assert "warning model: not in the file; defaults apply:" in done.output
    assert "decision.threshold=0.5" in done.output


def test_integer_category_codes_are_accepted_unquoted_and_compared_as_text() -> None:
    raw = yaml.safe_load(CONFIG_PATH.read_text())
    raw["contract"]["features"]["grade"] = {"dtype": "category", "categories": [1, 2, 3]}

    config = parse_config(raw, root=CONFIG_PATH.parent)

    assert config.contract.features["grade"].categories == ["1", "2", "3"]


@pytest.mark.parametrize(
    "pattern", ["../../etc/{date}*", "/etc/{date}/*.parquet", "{date}/../../../*.csv", "~/{date}/*.parquet"]
)
def test_source_pattern_escaping_the_landing_folder_is_refused(pattern: str) -> None:
    message = config_error(lambda raw: raw["source"].update(pattern=pattern))
    assert "source.pattern" in message
    assert "must stay inside the landing folder" in message


def test_source_pattern_suffix_is_case_insensitive() -> None:
    raw = copy.deepcopy(SHIPPED)
    raw["source"]["pattern"] = "{date}/*.PARQUET"
    assert parse_config(raw, root=CONFIG_PATH.parent).source.pattern == "{date}/*.PARQUET"
