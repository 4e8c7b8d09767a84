"""A sharded night gives the figures of the whole night: each shard summarises its own rows (drift value and level
counts, a hash-ordered domain sample; performance counts per score and label), the summaries merge, and every drift
and performance statistic computed from the merged summary equals the one computed on the whole night.

Nights are the simulator's, read, validated and scored by a real LightGBM model as the pipeline does; labels are
the simulator's true outcomes.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import roc_auc_score

from nightkeeper.config import BusinessValue, ProjectConfig
from nightkeeper.drift import DriftResult, drift_of_summary, measure_drift
from nightkeeper.examples.simulator import ENTITY_ID, TARGET, Scenario, simulate_night
from nightkeeper.ingest import read_raw_batch
from nightkeeper.outcomes import Fallback, assemble_outcomes
from nightkeeper.performance import (
    auc,
    estimated_counts,
    estimated_from_counts,
    estimated_performance,
    merge_counts,
    realized_counts,
    realized_from_counts,
    realized_performance,
    scored_with_labels,
)
from nightkeeper.scoring import score_batch
from nightkeeper.sharding import entity_hash, split_by_shard
from nightkeeper.summaries import (
    DRIFT_COUNTS_SCHEMA,
    DriftSummary,
    drift_summary_of,
    drift_summary_table,
    merge_drift_summaries,
    summarise_drift,
    summarise_drift_chunks,
)
from nightkeeper.training import TrainedModel
from nightkeeper.validation import validate

NIGHTS = [date(2024, 5, 1), date(2024, 5, 2)]
SCENARIOS = [Scenario(income_factor=1.3, young_mobile_share=0.2), Scenario(bad_data=True)]
ROWS = 3_000
SEED = 11
TOLERANCE = 1e-12
VALUE = BusinessValue(true_positive=0.0, false_positive=-100.0, true_negative=40.0, false_negative=-500.0)


@pytest.fixture(scope="module")
def nights(
    tmp_path_factory: pytest.TempPathFactory, core_config: ProjectConfig, core_trained: TrainedModel
) -> list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]]:
    """Per night: the validated rows with their champion score (column ``score``), the outcomes, and the labels."""
    folder = tmp_path_factory.mktemp("sharded")
    out = []
    for night, scenario in zip(NIGHTS, SCENARIOS, strict=True):
        data = simulate_night(night, ROWS, SEED, scenario)
        path = folder / f"{night}.parquet"
        data.applications.write_parquet(path)
        raw = read_raw_batch([Path(path)], night, core_config.contract).frame
        validation = validate(raw, core_config.contract)
        scored = score_batch(validation.valid, core_trained.booster, core_trained.card, 1_000, 300).frame
        outcomes = assemble_outcomes(
            raw,
            validation.quarantine,
            scored,
            Fallback(core_trained.card.fallback, core_trained.card.version),
            core_config.model.decision,
            True,
        )
        labels = data.labels.select(
            pl.col(ENTITY_ID).alias("entity_id"), pl.lit(night).alias("partition_date"), pl.col(TARGET).alias("label")
        )
        scored_rows = validation.valid.join(
            scored.select("source_file", "row_number", "score"), on=["source_file", "row_number"], how="left"
        )
        out.append((scored_rows, outcomes, labels))
    return out


def drift_summary(rows: pl.DataFrame, trained: TrainedModel) -> DriftSummary:
    return summarise_drift(rows, rows["score"].fill_null(float("nan")).to_numpy(), trained.card.features, 10_000)


def drift_metrics_equal(sharded: DriftResult, whole: DriftResult) -> None:
    left, right = sharded.metrics(), whole.metrics()
    assert left.keys() == right.keys()
    for name, value in right.items():
        assert (math.isnan(value) and math.isnan(left[name])) or abs(left[name] - value) <= TOLERANCE, name


# --------------------------------------------------------------------------------------------------------- drift


@pytest.mark.parametrize("shards", [2, 4, 7])
def test_drift_of_merged_shard_summaries_equals_the_whole_nights_drift(
    nights: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]], core_trained: TrainedModel, shards: int
) -> None:
    rows = nights[0][0]
    card = core_trained.card
    whole = measure_drift(
        card.profile,
        rows,
        rows["score"].fill_null(float("nan")).to_numpy(),
        card.features,
        core_trained.reference_sample,
    )

    merged = merge_drift_summaries([drift_summary(part, core_trained) for part in split_by_shard(rows, shards)])
    sharded = drift_of_summary(card.profile, merged, card.features, core_trained.reference_sample)

    drift_metrics_equal(sharded, whole)
    assert_frame_equal(sharded.features, whole.features, abs_tol=TOLERANCE, rel_tol=0)
    assert_frame_equal(sharded.levels, whole.levels, abs_tol=TOLERANCE, rel_tol=0)
    assert whole.multivariate_auc is not None and sharded.multivariate_auc == whole.multivariate_auc
    assert whole.drifted_features()  # the night moved: the figures compared are not all zero


def assert_same_summary(summary: DriftSummary, whole: DriftSummary) -> None:
    """``summary`` holds exactly ``whole``'s counts, categories, scores and domain sample."""
    assert summary.rows == whole.rows
    for name, counts in whole.numbers.items():
        assert np.array_equal(summary.numbers[name].values, counts.values), name
        assert np.array_equal(summary.numbers[name].counts, counts.counts), name
    assert all(np.array_equal(summary.categories[name], c) for name, c in whole.categories.items())
    assert summary.scores is not None and whole.scores is not None
    assert np.array_equal(summary.scores.values, whole.scores.values)
    assert np.array_equal(summary.scores.counts, whole.scores.counts)
    assert summary.domain_sample.equals(whole.domain_sample)


def test_merged_shard_summaries_are_the_whole_nights_summary(
    nights: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]], core_trained: TrainedModel
) -> None:
    rows = nights[1][0]  # the bad-data night: missing values and quarantined rows
    whole = drift_summary(rows, core_trained)

    merged = merge_drift_summaries([drift_summary(part, core_trained) for part in split_by_shard(rows, 4)])

    assert_same_summary(merged, whole)


def test_a_night_summarised_in_chunks_in_any_order_is_the_whole_nights_summary(
    nights: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]], core_trained: TrainedModel
) -> None:
    rows = nights[1][0]  # the bad-data night: missing values and quarantined rows
    # one id repeated on many rows, among them the one with the smallest hash: the domain sample's ties
    first_id = rows["entity_id"][int(entity_hash(rows["entity_id"]).arg_min())]
    rows = rows.with_columns(
        pl.when(pl.col("row_number") % 5 == 0).then(pl.lit(first_id)).otherwise(pl.col("entity_id")).alias("entity_id")
    )
    whole = summarise_drift(rows, rows["score"].fill_null(float("nan")).to_numpy(), core_trained.card.features, 300)
    shuffled = rows.sample(fraction=1.0, shuffle=True, seed=3)
    chunks = [shuffled.slice(start, 700) for start in range(0, shuffled.height, 700)][::-1]

    chunked = summarise_drift_chunks(
        chunks,
        (chunk["score"].fill_null(float("nan")).to_numpy() for chunk in chunks[::-1]),
        core_trained.card.features,
        300,
    )

    assert (whole.domain_sample["entity_id"] == first_id).sum() > 1
    assert_same_summary(chunked, whole)


def test_an_empty_shard_adds_nothing(
    nights: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]], core_trained: TrainedModel
) -> None:
    rows = nights[0][0]
    whole = drift_summary(rows, core_trained)

    merged = merge_drift_summaries([whole, drift_summary(rows.head(0), core_trained)])

    card = core_trained.card
    drift_metrics_equal(
        drift_of_summary(card.profile, merged, card.features), drift_of_summary(card.profile, whole, card.features)
    )


def test_summaries_of_different_features_do_not_merge(
    nights: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]], core_trained: TrainedModel
) -> None:
    rows = nights[0][0]
    features = core_trained.card.features
    fewer = summarise_drift(rows, None, features[:3], 10_000)

    with pytest.raises(ValueError, match="must share features"):
        merge_drift_summaries([summarise_drift(rows, None, features, 10_000), fewer])


def test_the_domain_sample_is_drawn_by_the_entity_hash_not_by_position(
    nights: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]], core_trained: TrainedModel
) -> None:
    rows = nights[0][0]
    features = core_trained.card.features

    forward = summarise_drift(rows, None, features, 500).domain_sample
    backward = summarise_drift(rows.reverse(), None, features, 500).domain_sample

    assert forward.height == 500 and forward.equals(backward)


# --------------------------------------------------------------------------------------------------- performance


@pytest.mark.parametrize("shards", [3, 8])
def test_realized_performance_of_merged_shard_counts_equals_the_whole_nights(
    nights: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]], core_config: ProjectConfig, shards: int
) -> None:
    outcomes = pl.concat([n[1] for n in nights])
    labels = pl.concat([n[2] for n in nights])
    decision = core_config.model.decision
    whole = realized_performance(outcomes, labels, decision, VALUE, min_labeled_rows=100)

    counts = [
        realized_counts(scored_with_labels(part, labels_part))
        for part, labels_part in zip(split_by_shard(outcomes, shards), split_by_shard(labels, shards), strict=True)
    ]
    sharded = realized_from_counts(merge_counts(counts), decision, VALUE, min_labeled_rows=100)

    assert_frame_equal(sharded, whole, abs_tol=TOLERANCE, rel_tol=0)
    assert whole["auc"].null_count() == 0 and whole.height == len(NIGHTS)


@pytest.mark.parametrize("shards", [3, 8])
def test_estimated_performance_of_merged_shard_counts_equals_the_whole_nights(
    nights: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]], core_config: ProjectConfig, shards: int
) -> None:
    outcomes = pl.concat([n[1] for n in nights])
    decision = core_config.model.decision
    whole = estimated_performance(outcomes, decision, VALUE)

    merged = merge_counts([estimated_counts(part) for part in split_by_shard(outcomes, shards)])
    sharded = estimated_from_counts(merged, decision, VALUE)

    assert_frame_equal(sharded, whole, abs_tol=TOLERANCE, rel_tol=0)
    assert merged.equals(estimated_counts(outcomes))


def test_realized_auc_from_counts_equals_scikit_learns_with_ties() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 40, 5_000) / 40  # many ties
    labels = (rng.random(5_000) < scores).astype(np.int8)

    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=TOLERANCE)


def test_a_drift_summary_stored_as_a_table_reads_back_the_same(
    nights: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]], core_trained: TrainedModel
) -> None:
    card = core_trained.card
    summary = drift_summary(nights[1][0], core_trained)

    table = drift_summary_table(summary)
    stored = drift_summary_of(table, summary.domain_sample, card.features)

    assert dict(table.schema) == DRIFT_COUNTS_SCHEMA
    drift_metrics_equal(
        drift_of_summary(card.profile, stored, card.features, core_trained.reference_sample),
        drift_of_summary(card.profile, summary, card.features, core_trained.reference_sample),
    )
    assert drift_summary_table(stored).equals(table)


def test_an_unscored_empty_shards_summary_reads_back_unscored_and_empty(core_trained: TrainedModel) -> None:
    features = core_trained.card.features
    empty = pl.DataFrame(schema={"entity_id": pl.String, **{f.name: pl.Float64 for f in features}})
    empty = empty.with_columns(pl.col(f.name).cast(pl.String) for f in features if f.dtype == "category")
    summary = summarise_drift(empty, None, features, 10_000)

    stored = drift_summary_of(drift_summary_table(summary), summary.domain_sample, features)

    assert stored.rows == 0 and stored.scores is None and stored.domain_rows == 10_000
    assert all(c.total == 0 for c in stored.numbers.values()) and all(c.sum() == 0 for c in stored.categories.values())
