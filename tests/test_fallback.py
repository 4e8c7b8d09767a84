"""The fallback rule: a positive rate per segment, shrunk toward the global rate, that answers when the model cannot."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_series_equal

from nightkeeper.config import DecisionConfig
from nightkeeper.examples.simulator import simulate_night
from nightkeeper.fallback import FallbackRule, decide, fit_fallback

TARGET = "defaulted"
SEGMENTS = ["employment_type", "channel"]
MIN_ROWS = 50
DECISION = DecisionConfig(threshold=0.3, at_or_above_threshold="decline", below_threshold="approve", undecided="refer")


@pytest.fixture(scope="module")
def rule(core_history: pl.DataFrame) -> FallbackRule:
    return fit_fallback(core_history, TARGET, SEGMENTS, MIN_ROWS)


@pytest.fixture(scope="module")
def observed(core_history: pl.DataFrame) -> pl.DataFrame:
    """Rows and positives of every segment in the history, computed independently of the rule."""
    return core_history.group_by(SEGMENTS).agg(
        pl.len().alias("rows"), pl.col(TARGET).cast(pl.Float64).sum().alias("positives")
    )


@pytest.fixture(scope="module")
def tonight() -> pl.DataFrame:
    return simulate_night(date(2024, 5, 1), 3_000, 7).applications


def rate_of(rule: FallbackRule, segment: list[str]) -> float:
    return rule.scores(pl.DataFrame([dict(zip(SEGMENTS, segment, strict=True))]))[0]


def test_global_rate_is_the_mean_target(rule: FallbackRule, core_history: pl.DataFrame) -> None:
    assert rule.global_rate == pytest.approx(core_history[TARGET].cast(pl.Float64).mean())


def test_each_segment_with_enough_rows_gets_its_rate_shrunk_toward_global(
    rule: FallbackRule, observed: pl.DataFrame
) -> None:
    big = observed.filter(pl.col("rows") >= MIN_ROWS)
    assert {tuple(r.segment) for r in rule.rates} == set(big.select(SEGMENTS).iter_rows())
    for row in big.iter_rows(named=True):
        expected = (row["positives"] + MIN_ROWS * rule.global_rate) / (row["rows"] + MIN_ROWS)
        assert rate_of(rule, [row[name] for name in SEGMENTS]) == pytest.approx(expected), row


def test_fitted_rate_lies_between_observed_rate_and_global_rate(rule: FallbackRule, observed: pl.DataFrame) -> None:
    by_segment = {(r["employment_type"], r["channel"]): r for r in observed.iter_rows(named=True)}
    assert rule.rates
    for fitted in rule.rates:
        row = by_segment[tuple(fitted.segment)]
        raw_rate = row["positives"] / row["rows"]
        low, high = sorted([raw_rate, rule.global_rate])
        assert low <= fitted.rate <= high, fitted
        assert abs(fitted.rate - rule.global_rate) < abs(raw_rate - rule.global_rate), fitted
        assert fitted.rows == row["rows"]


def test_more_pseudo_rows_shrink_harder(core_history: pl.DataFrame, rule: FallbackRule) -> None:
    strong = fit_fallback(core_history, TARGET, SEGMENTS, 400)
    strong_rates = {tuple(r.segment): r.rate for r in strong.rates}
    assert strong_rates
    for fitted in rule.rates:
        if tuple(fitted.segment) in strong_rates:
            assert abs(strong_rates[tuple(fitted.segment)] - rule.global_rate) <= abs(fitted.rate - rule.global_rate)


def test_segment_with_too_few_rows_gets_the_global_rate(rule: FallbackRule, observed: pl.DataFrame) -> None:
    small = observed.filter(pl.col("rows") < MIN_ROWS)
    assert small.height > 0, "the history must hold a small segment for this test to mean anything"
    for row in small.iter_rows(named=True):
        assert rate_of(rule, [row[name] for name in SEGMENTS]) == rule.global_rate


def test_segment_unseen_in_training_gets_the_global_rate(core_history: pl.DataFrame, tonight: pl.DataFrame) -> None:
    rule = fit_fallback(core_history.filter(pl.col("employment_type") != "student"), TARGET, SEGMENTS, MIN_ROWS)
    students = tonight.filter(pl.col("employment_type") == "student")
    assert students.height > 0
    assert rule.scores(students).to_list() == [rule.global_rate] * students.height
    others = tonight.filter(pl.col("employment_type") == "salaried")
    assert (rule.scores(others) != rule.global_rate).all()


def test_row_with_an_empty_segment_column_gets_the_global_rate(rule: FallbackRule, tonight: pl.DataFrame) -> None:
    frame = tonight.head(5).with_columns(pl.lit(None, dtype=pl.String).alias("channel"))
    assert rule.scores(frame).to_list() == [rule.global_rate] * 5


def test_scores_keep_the_row_order(rule: FallbackRule, tonight: pl.DataFrame) -> None:
    scores = rule.scores(tonight)
    reversed_scores = rule.scores(tonight.reverse())
    assert scores.len() == tonight.height
    assert scores.to_list() == reversed_scores.reverse().to_list()
    first = tonight.row(0, named=True)
    assert scores[0] == rate_of(rule, [first[name] for name in SEGMENTS])


def test_without_segments_every_row_gets_the_global_rate(core_history: pl.DataFrame, tonight: pl.DataFrame) -> None:
    rule = fit_fallback(core_history, TARGET, [], MIN_ROWS)
    assert rule.rates == []
    assert rule.scores(tonight).to_list() == [rule.global_rate] * tonight.height


def test_fitting_on_zero_rows_is_refused(core_history: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="zero labeled rows"):
        fit_fallback(core_history.clear(), TARGET, SEGMENTS, MIN_ROWS)


@pytest.mark.parametrize("segment_by", [SEGMENTS, ["has_cosigner", "region"]])
def test_json_round_trip_answers_identically(
    core_history: pl.DataFrame, tonight: pl.DataFrame, segment_by: list[str]
) -> None:
    rule = fit_fallback(core_history, TARGET, segment_by, MIN_ROWS)
    restored = FallbackRule.model_validate_json(rule.model_dump_json())
    assert restored == rule
    assert_series_equal(restored.scores(tonight), rule.scores(tonight))
    assert len(set(rule.scores(tonight))) > 1


def test_answer_decides_with_the_threshold(rule: FallbackRule, tonight: pl.DataFrame) -> None:
    answer = rule.answer(tonight, DECISION)
    assert answer.columns == ["score", "decision"]
    expected = ["decline" if score >= DECISION.threshold else "approve" for score in answer["score"]]
    assert answer["decision"].to_list() == expected


def test_decide_labels_each_side_of_the_threshold_and_missing_scores() -> None:
    frame = pl.DataFrame({"score": [0.0, 0.2999, 0.3, 0.95, None]}, schema={"score": pl.Float64})
    decided = frame.select(decide(pl.col("score"), DECISION).alias("decision"))["decision"].to_list()
    assert decided == ["approve", "approve", "decline", "decline", "refer"]
