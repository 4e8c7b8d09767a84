"""Metric names have one owner (nightkeeper.metric_names): alert rules on a name nobody records are refused at load."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from nightkeeper import metric_names
from nightkeeper.config import ConfigError, parse_config
from nightkeeper.performance import performance_metrics

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
SHIPPED = yaml.safe_load(CONFIG_PATH.read_text())


def load_with_rule(**rule: Any) -> None:
    raw = copy.deepcopy(SHIPPED)
    raw["monitoring"]["alerts"]["rules"].append(
        {"name": "extra", "comparison": ">", "threshold": 0.1, "category": "drift", **rule}
    )
    parse_config(raw, root=CONFIG_PATH.parent, source="nightkeeper.yaml")


def test_the_shipped_rules_all_name_recorded_metrics() -> None:
    for rule in SHIPPED["monitoring"]["alerts"]["rules"]:
        assert metric_names.lookup(rule["metric"]) is not None, rule


def test_a_rule_on_a_misspelt_metric_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_with_rule(metric="drift.drifted_feature")

    message = str(caught.value)
    assert f"monitoring.alerts.rules.{len(SHIPPED['monitoring']['alerts']['rules'])}.metric" in message
    assert "unknown metric 'drift.drifted_feature'" in message
    assert "did you mean 'drift.drifted_features'" in message


def test_a_per_feature_rule_must_name_a_contract_feature() -> None:
    load_with_rule(metric="drift.feature.income.psi")  # a real feature loads

    with pytest.raises(ConfigError) as caught:
        load_with_rule(metric="drift.feature.incom.psi")

    assert "names feature 'incom', which is not a contract feature (did you mean 'income'?)" in str(caught.value)


def test_a_rule_on_a_p_value_is_refused_as_information_only() -> None:
    with pytest.raises(ConfigError) as caught:
        load_with_rule(metric="drift.feature.purpose.chi2_p_value", comparison="<", threshold=0.01)

    assert "information only" in str(caught.value)


def test_every_performance_metric_the_code_records_is_registered() -> None:
    names = performance_metrics(None, None, None, include_missing=True)

    assert [name for name in names if metric_names.lookup(name) is None] == []


def test_every_listed_metric_has_a_meaning() -> None:
    assert all(metric.meaning.strip() for metric in metric_names.METRICS)
