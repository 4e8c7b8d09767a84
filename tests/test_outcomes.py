"""Outcomes: exactly one answer per raw row, from the model, the fallback or quarantine, with the reason whenever the
model did not answer; any break of row conservation raises."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from nightkeeper.config import ProjectConfig
from nightkeeper.examples.simulator import Scenario, simulate_night
from nightkeeper.ingest import read_raw_batch
from nightkeeper.outcomes import (
    OUTCOME_SCHEMA,
    Fallback,
    RowConservationError,
    assemble_outcomes,
    assert_conserved,
    outcome_summary,
)
from nightkeeper.scoring import score_batch, unscored
from nightkeeper.training import TrainedModel
from nightkeeper.validation import ROW_KEY, ValidationResult, validate

NIGHT = date(2024, 5, 1)
ROWS = 300
# Rows broken on purpose (0-based index in the landing file; row_number is index + 1).
AGE_NULL = 0  # a non-segment column broken: the segment is still known
CHANNEL_UNKNOWN = 1  # a segment column broken
TWO_RULES = 2  # age null and purpose unknown
EMPLOYMENT_NULL = 3  # a segment column empty


@dataclass(frozen=True)
class Night:
    raw: pl.DataFrame
    validation: ValidationResult
    scored: pl.DataFrame


def _set(frame: pl.DataFrame, index: int, column: str, value: str | None) -> pl.DataFrame:
    at_row = pl.int_range(pl.len()) == index
    return frame.with_columns(
        pl.when(at_row).then(pl.lit(value, dtype=pl.String)).otherwise(pl.col(column).cast(pl.String)).alias(column)
    )


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory, core_config: ProjectConfig, core_trained: TrainedModel) -> Night:
    frame = simulate_night(NIGHT, ROWS, 7).applications
    frame = _set(frame, AGE_NULL, "age", None)
    frame = _set(frame, CHANNEL_UNKNOWN, "channel", "fax")
    frame = _set(_set(frame, TWO_RULES, "age", None), TWO_RULES, "purpose", "crypto")
    frame = _set(frame, EMPLOYMENT_NULL, "employment_type", None)
    path = tmp_path_factory.mktemp("outcomes") / "applications.parquet"
    frame.write_parquet(path)
    raw = read_raw_batch([path], NIGHT, core_config.contract).frame
    validation = validate(raw, core_config.contract)
    assert validation.quarantined_rows == 4
    scored = score_batch(validation.valid, core_trained.booster, core_trained.card, 1_000, 300).frame
    return Night(raw, validation, scored)


def assemble(
    night: Night,
    config: ProjectConfig,
    trained: TrainedModel,
    *,
    scored: pl.DataFrame | None = None,
    fallback: Fallback | None = None,
    answer_quarantined: bool = True,
) -> pl.DataFrame:
    return assemble_outcomes(
        night.raw,
        night.validation.quarantine,
        night.scored if scored is None else scored,
        Fallback(trained.card.fallback, trained.card.version) if fallback is None else fallback,
        config.model.decision,
        answer_quarantined,
    )


def outcome(outcomes: pl.DataFrame, index: int) -> dict[str, object]:
    return outcomes.filter(pl.col("row_number") == index + 1).row(0, named=True)


def fallback_score(trained: TrainedModel, employment_type: str | None, channel: str | None) -> float:
    segment = pl.DataFrame(
        {"employment_type": [employment_type], "channel": [channel]},
        schema={"employment_type": pl.String, "channel": pl.String},
    )
    return trained.card.fallback.scores(segment)[0]


def test_one_outcome_per_raw_row(night: Night, core_config: ProjectConfig, core_trained: TrainedModel) -> None:
    outcomes = assemble(night, core_config, core_trained)
    assert dict(outcomes.schema) == OUTCOME_SCHEMA
    assert outcomes.height == night.raw.height == ROWS
    assert outcomes.select(ROW_KEY).equals(night.raw.select(ROW_KEY).sort(ROW_KEY))
    assert outcomes["entity_id"].to_list() == night.raw.sort(ROW_KEY)["entity_id"].to_list()


def test_model_answers_every_valid_row_with_its_score(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    outcomes = assemble(night, core_config, core_trained)
    from_model = outcomes.filter(pl.col("source") == "model")
    assert from_model.height == night.validation.valid.height == ROWS - 4
    expected = night.scored.sort(ROW_KEY)
    assert from_model["score"].equals(expected["score"])
    assert from_model["decision"].equals(expected["decision"])
    assert from_model["confidence"].equals(expected["confidence"])
    assert from_model["reason"].null_count() == from_model.height
    assert set(from_model["model_version"]) == {core_trained.card.version}


def test_quarantined_row_with_a_valid_segment_is_answered_by_the_fallback(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    outcomes = assemble(night, core_config, core_trained, answer_quarantined=True)
    row = outcome(outcomes, AGE_NULL)
    applicant = night.raw.sort(ROW_KEY).row(AGE_NULL, named=True)
    assert row["entity_id"] == applicant["entity_id"]
    assert row["source"] == "fallback"
    assert row["reason"] == "quarantined: age required"
    expected_score = fallback_score(core_trained, applicant["employment_type"], applicant["channel"])
    assert row["score"] == expected_score
    assert expected_score != core_trained.card.fallback.global_rate
    threshold = core_config.model.decision.threshold
    assert row["decision"] == ("decline" if expected_score >= threshold else "approve")
    assert row["model_version"] == core_trained.card.version


def test_reason_lists_every_rule_the_row_broke(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    outcomes = assemble(night, core_config, core_trained)
    assert outcome(outcomes, TWO_RULES)["reason"] == "quarantined: age required; purpose category"
    assert outcome(outcomes, TWO_RULES)["source"] == "fallback"


def test_quarantined_row_with_a_broken_segment_column_is_left_undecided(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    outcomes = assemble(night, core_config, core_trained, answer_quarantined=True)
    for index, reason in [
        (CHANNEL_UNKNOWN, "quarantined: channel category"),
        (EMPLOYMENT_NULL, "quarantined: employment_type required"),
    ]:
        row = outcome(outcomes, index)
        assert row["source"] == "quarantine"
        assert row["decision"] == core_config.model.decision.undecided
        assert row["score"] is None
        assert row["reason"] == reason


def test_quarantined_rows_are_left_undecided_when_not_answering_quarantined(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    outcomes = assemble(night, core_config, core_trained, answer_quarantined=False)
    quarantined = outcomes.filter(pl.col("source") == "quarantine")
    assert sorted(quarantined["row_number"]) == [AGE_NULL + 1, CHANNEL_UNKNOWN + 1, TWO_RULES + 1, EMPLOYMENT_NULL + 1]
    assert set(quarantined["decision"]) == {"refer"}
    assert quarantined["score"].null_count() == 4
    assert outcome(outcomes, AGE_NULL)["reason"] == "quarantined: age required"
    assert outcomes.filter(pl.col("source") == "fallback").is_empty()


def test_model_error_sends_every_valid_row_to_the_fallback_with_the_reason(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    error = f"model {core_trained.card.version} exceeded its time budget of 1 s"
    outcomes = assemble(
        night, core_config, core_trained, scored=unscored(night.validation.valid, core_trained.card.version, error)
    )
    answered = outcomes.join(night.validation.valid.select(ROW_KEY), on=ROW_KEY)
    assert answered.height == night.validation.valid.height
    assert set(answered["source"]) == {"fallback"}
    assert set(answered["reason"]) == {error}
    expected = core_trained.card.fallback.scores(night.validation.valid.sort(ROW_KEY))
    assert answered.sort(ROW_KEY)["score"].to_list() == expected.to_list()
    threshold = core_config.model.decision.threshold
    assert answered["decision"].to_list() == ["decline" if s >= threshold else "approve" for s in answered["score"]]
    assert outcome_summary(outcomes) == {"model": 0, "canary": 0, "fallback": ROWS - 2, "quarantine": 2}


def test_without_a_fallback_rule_unanswered_rows_are_undecided(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    error = "no champion model is registered for this night"
    outcomes = assemble(
        night,
        core_config,
        core_trained,
        scored=unscored(night.validation.valid, None, error),
        fallback=Fallback(None, None),
    )
    assert outcomes.height == ROWS
    assert set(outcomes["decision"]) == {"refer"}
    assert outcomes["score"].null_count() == ROWS
    assert outcome(outcomes, 10)["reason"] == f"{error}; no fitted fallback rule"
    assert outcome(outcomes, AGE_NULL)["reason"] == "quarantined: age required; no fitted fallback rule"


def test_outcome_summary_counts_rows_by_source(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    outcomes = assemble(night, core_config, core_trained)
    assert outcome_summary(outcomes) == {"model": ROWS - 4, "canary": 0, "fallback": 2, "quarantine": 2}


def test_bad_data_night_conserves_rows(tmp_path: Path, core_config: ProjectConfig, core_trained: TrainedModel) -> None:
    path = tmp_path / "applications.parquet"
    simulate_night(NIGHT, 2_000, 7, Scenario(bad_data=True)).applications.write_parquet(path)
    raw = read_raw_batch([path], NIGHT, core_config.contract).frame
    validation = validate(raw, core_config.contract)
    scored = score_batch(validation.valid, core_trained.booster, core_trained.card, 500, 300).frame
    outcomes = assemble(Night(raw, validation, scored), core_config, core_trained)
    assert outcomes.height == raw.height
    counts = outcome_summary(outcomes)
    assert counts["model"] == validation.valid.height
    assert counts["fallback"] + counts["quarantine"] == validation.quarantined_rows > 0


# ------------------------------------------------------------------------------------------------ conservation


def test_assert_conserved_accepts_exactly_one_outcome_per_raw_row(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    assert_conserved(night.raw, assemble(night, core_config, core_trained))


def test_assert_conserved_raises_on_a_missing_row(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    outcomes = assemble(night, core_config, core_trained)
    with pytest.raises(RowConservationError, match="1 raw rows without an outcome"):
        assert_conserved(night.raw, outcomes.slice(1))


def test_assert_conserved_raises_on_a_duplicated_row(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    outcomes = assemble(night, core_config, core_trained)
    with pytest.raises(RowConservationError, match="2 duplicated outcomes"):
        assert_conserved(night.raw, pl.concat([outcomes, outcomes.slice(5, 1)]))


def test_assert_conserved_raises_on_a_swapped_row(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    outcomes = assemble(night, core_config, core_trained)
    swapped = pl.concat(
        [outcomes.slice(1), outcomes.head(1).with_columns(pl.lit(ROWS + 1, dtype=pl.Int64).alias("row_number"))]
    )
    with pytest.raises(RowConservationError, match="1 outcomes without a raw row"):
        assert_conserved(night.raw, swapped)


def test_assembling_a_row_scored_twice_raises(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    doubled = pl.concat([night.scored, night.scored.head(1)])
    with pytest.raises(RowConservationError):
        assemble(night, core_config, core_trained, scored=doubled)


def test_assembling_a_row_both_scored_and_quarantined_raises(
    night: Night, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    # a model answer for the quarantined AGE_NULL row, as if it had also passed validation
    passed_too = night.validation.valid.head(1).with_columns(pl.lit(AGE_NULL + 1, dtype=pl.Int64).alias("row_number"))
    scored_quarantined = score_batch(passed_too, core_trained.booster, core_trained.card, 10, 300).frame
    with pytest.raises(RowConservationError):
        assemble(night, core_config, core_trained, scored=pl.concat([night.scored, scored_quarantined]))
