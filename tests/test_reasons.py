"""Reason codes and global importance on simulator data with a real LightGBM model trained like the product's."""

from __future__ import annotations

import copy
import math
import re
from datetime import date
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
import yaml

from nightkeeper.config import parse_config
from nightkeeper.encoding import FeatureCard, feature_matrix
from nightkeeper.examples.simulator import simulate_history, simulate_night
from nightkeeper.reasons import REASON_SCHEMA, format_value, reason_codes
from nightkeeper.training import train_model

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
SEED = 7
ALL = 18  # every feature of the shipped contract
PHRASE = re.compile(
    r"^(?P<feature>[a-z_0-9]+) (?P<value>\S+) (?P<effect>raised|lowered) risk by (?P<amount>\d+\.\d+|\d(\.\d+)?e-\d+)$"
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[lgb.Booster, list[FeatureCard]]:
    raw = copy.deepcopy(yaml.safe_load(CONFIG_PATH.read_text()))
    raw["model"]["num_boost_round"] = 40
    raw["model"]["params"]["num_threads"] = 1
    config = parse_config(raw, root=tmp_path_factory.mktemp("reasons"))
    trained = train_model(simulate_history(date(2024, 4, 30), days=8, rows_per_day=1500, seed=SEED), config)
    return trained.booster, trained.card.features


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    return simulate_night(date(2024, 5, 1), rows=240, seed=SEED).applications


@pytest.fixture(scope="module")
def every_reason(model: tuple[lgb.Booster, list[FeatureCard]], rows: pl.DataFrame) -> pl.DataFrame:
    booster, features = model
    return reason_codes(rows, booster, features, top_k=ALL, num_threads=1)


def test_contributions_and_base_value_add_up_to_the_raw_score_of_every_row(
    model: tuple[lgb.Booster, list[FeatureCard]], rows: pl.DataFrame, every_reason: pl.DataFrame
) -> None:
    booster, features = model
    raw_score = booster.predict(feature_matrix(rows, features), raw_score=True, num_threads=1)
    contributions = pl.col("reason_codes").list.eval(pl.element().struct.field("contribution"))
    explained = every_reason.select(contributions.list.sum() + pl.col("shap_base_value")).to_series().to_numpy()
    assert every_reason.height == rows.height
    np.testing.assert_allclose(explained, raw_score, rtol=0, atol=1e-6)


def test_top_k_reasons_are_the_largest_absolute_contributions_in_order(
    model: tuple[lgb.Booster, list[FeatureCard]], rows: pl.DataFrame, every_reason: pl.DataFrame
) -> None:
    booster, features = model
    top = reason_codes(rows, booster, features, top_k=3, num_threads=1)
    assert top["reason_codes"].list.len().to_list() == [3] * rows.height
    for reasons, everything in zip(top["reason_codes"].to_list(), every_reason["reason_codes"].to_list(), strict=True):
        sizes = [abs(reason["contribution"]) for reason in reasons]
        assert sizes == sorted(sizes, reverse=True)
        assert sizes[-1] >= max(abs(reason["contribution"]) for reason in everything[3:])
        assert reasons == everything[:3]


def test_a_category_feature_shows_its_level_name_not_its_code(rows: pl.DataFrame, every_reason: pl.DataFrame) -> None:
    shown = [
        next(reason["value"] for reason in reasons if reason["feature"] == "employment_type")
        for reasons in every_reason["reason_codes"].to_list()
    ]
    assert shown == rows["employment_type"].to_list()


def test_a_missing_value_shows_as_missing(rows: pl.DataFrame, every_reason: pl.DataFrame) -> None:
    missing = rows["dependents"].is_null().to_list()
    assert any(missing)
    shown = [
        next(reason["value"] for reason in reasons if reason["feature"] == "dependents")
        for reasons in every_reason["reason_codes"].to_list()
    ]
    assert [value == "missing" for value in shown] == missing


def test_reason_text_is_one_readable_phrase_per_reason_naming_feature_value_and_direction(
    model: tuple[lgb.Booster, list[FeatureCard]], rows: pl.DataFrame
) -> None:
    booster, features = model
    result = reason_codes(rows, booster, features, top_k=3, num_threads=1)
    for text, reasons in zip(result["reason_text"].to_list(), result["reason_codes"].to_list(), strict=True):
        phrases = text.split("; ")
        assert len(phrases) == 3
        for phrase, reason in zip(phrases, reasons, strict=True):
            match = PHRASE.match(phrase)
            assert match, phrase
            assert match["feature"] == reason["feature"] and match["value"] == reason["value"]
            assert match["effect"] == ("raised" if reason["contribution"] > 0 else "lowered")
            assert float(match["amount"]) == pytest.approx(abs(reason["contribution"]), abs=0.006)


def test_numbers_are_formatted_for_people() -> None:
    income = FeatureCard(name="income", dtype="float")
    age = FeatureCard(name="age", dtype="int")
    cosigner = FeatureCard(name="has_cosigner", dtype="bool")
    channel = FeatureCard(name="channel", dtype="category", categories=["branch", "web"])
    assert format_value(income, 18000.0) == "18,000"
    assert format_value(income, 1234567.89) == "1,234,568"
    assert format_value(FeatureCard(name="debt_to_income", dtype="float"), 0.45231) == "0.452"
    assert format_value(age, 44.0) == "44"
    assert format_value(cosigner, 1.0) == "true"
    assert format_value(channel, 1.0) == "web"
    assert format_value(income, math.nan) == "missing"


def test_chunking_does_not_change_any_result(model: tuple[lgb.Booster, list[FeatureCard]], rows: pl.DataFrame) -> None:
    booster, features = model
    whole = reason_codes(rows, booster, features, num_threads=1)
    chunked = reason_codes(rows, booster, features, chunk_rows=7, num_threads=1)
    assert chunked.equals(whole)


def test_an_empty_frame_gives_an_empty_result_with_the_schema(
    model: tuple[lgb.Booster, list[FeatureCard]], rows: pl.DataFrame
) -> None:
    booster, features = model
    result = reason_codes(rows.head(0), booster, features)
    assert result.height == 0
    assert result.schema == pl.Schema(REASON_SCHEMA)


def test_feature_cards_that_do_not_match_the_booster_are_refused(
    model: tuple[lgb.Booster, list[FeatureCard]], rows: pl.DataFrame
) -> None:
    booster, features = model
    with pytest.raises(ValueError, match="do not match the booster"):
        reason_codes(rows, booster, list(reversed(features)))
