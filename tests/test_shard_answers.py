"""A night answered shard by shard: the union of the shards' validated rows, quarantine, champion scores, shadow
scores and outcomes equals what the nightly steps make of the whole night, row for row.

Real warehouse, real registry, a real LightGBM champion and a challenger in a 20 % canary; the night is the
simulator's bad-data night, so quarantined, fallback and canary rows all occur.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from nightkeeper import registry
from nightkeeper import summaries as drift_summaries
from nightkeeper.artifacts import save_artifact
from nightkeeper.config import ProjectConfig, parse_config
from nightkeeper.examples.simulator import Scenario, simulate_history, simulate_night
from nightkeeper.ingest import read_raw_batch
from nightkeeper.pipeline.monitoring import drift_night, drift_shards_night, drift_stored_night, drift_summary_of_shard
from nightkeeper.pipeline.nightly import answer_night, score_night, shadow_night, validate_night
from nightkeeper.pipeline.shard import ShardAnswers, answer_shard, serving_of
from nightkeeper.sharding import shard_of
from nightkeeper.training import TrainedModel, train_model
from nightkeeper.validation import ROW_KEY
from nightkeeper.warehouse import NIGHTLY_SCHEMA, connect, store_partition

NIGHT = dt.date(2024, 5, 1)
ROWS = 2_000
SHARDS = 4
TIMING = ["latency_ms"]  # measured per chunk: the one column that differs between any two runs


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, core_config: ProjectConfig) -> ProjectConfig:
    raw = core_config.model_dump(mode="json")
    raw["scale"] = {"shards": SHARDS}
    raw["monitoring"]["drift"]["evidently_report"] = False
    return parse_config(raw, root=tmp_path_factory.mktemp("shard_answers"))


@pytest.fixture(scope="module")
def warehouse(config: ProjectConfig, core_trained: TrainedModel) -> Iterator[duckdb.DuckDBPyConnection]:
    """A warehouse serving ``core_trained`` as champion and a model trained on other nights in a 20 % canary."""
    challenger = train_model(simulate_history(NIGHT - dt.timedelta(days=1), days=10, rows_per_day=500, seed=3), config)
    serving = ((core_trained, registry.CHAMPION, None), (challenger, registry.CHALLENGER, "canary:20"))
    with connect(config.warehouse_path) as connection:
        for model, alias, stage in serving:
            record = registry.register(connection, model.card, save_artifact(model, config.root / "models"))
            registry.set_alias(connection, alias, record.version, NIGHT, "test", "set up", stage)
        yield connection


@pytest.fixture(scope="module")
def raw_batch(config: ProjectConfig) -> pl.DataFrame:
    path = config.root / "night.parquet"
    simulate_night(NIGHT, ROWS, 5, Scenario(bad_data=True)).applications.write_parquet(path)
    return read_raw_batch([path], NIGHT, config.contract).frame


@pytest.fixture(scope="module")
def shards(config: ProjectConfig, warehouse: duckdb.DuckDBPyConnection, raw_batch: pl.DataFrame) -> list[ShardAnswers]:
    serving = serving_of(config, warehouse, NIGHT)
    return [answer_shard(config, serving, NIGHT, raw_batch, shard) for shard in range(SHARDS)]


@pytest.fixture(scope="module")
def whole(config: ProjectConfig, warehouse: duckdb.DuckDBPyConnection, raw_batch: pl.DataFrame) -> dict[str, Any]:
    return whole_night(config, warehouse, raw_batch)


def whole_night(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, raw: pl.DataFrame) -> dict[str, Any]:
    """The nightly steps' tables for the whole night."""
    validated = validate_night(config, connection, NIGHT, raw).tables
    scored = score_night(config, connection, NIGHT, validated["validated_batch"]).tables["scored_batch"]
    shadow = shadow_night(config, connection, NIGHT, validated["validated_batch"], scored).tables["shadow_scores"]
    outcomes = answer_night(config, connection, NIGHT, raw, validated["quarantine"], scored, shadow).tables
    return {**validated, "scored_batch": scored, "shadow_scores": shadow, **outcomes}


def union(shards: list[ShardAnswers], table: str) -> pl.DataFrame:
    return pl.concat([getattr(s, table) for s in shards])


@pytest.mark.parametrize("table", ["validated_batch", "quarantine", "scored_batch", "shadow_scores", "outcomes"])
def test_the_union_of_the_shards_tables_is_the_whole_nights(
    shards: list[ShardAnswers], whole: dict[str, Any], table: str
) -> None:
    order = [*ROW_KEY, "column", "rule"] if table == "quarantine" else ROW_KEY
    assert_frame_equal(
        union(shards, table).drop(TIMING, strict=False).sort(order),
        whole[table].drop(TIMING, strict=False).sort(order),
    )


def test_the_night_has_every_kind_of_answer_and_each_shard_holds_only_its_ids(
    shards: list[ShardAnswers], raw_batch: pl.DataFrame
) -> None:
    assert {"model", "canary", "fallback"} <= set(union(shards, "outcomes")["source"])
    assert union(shards, "quarantine").height > 0
    assert union(shards, "outcomes").height == raw_batch.height
    for shard, answers in enumerate(shards):
        ids = answers.outcomes["entity_id"].drop_nulls()
        assert ids.len() > 0 and (shard_of(ids, SHARDS) == shard).all()


@pytest.mark.parametrize(
    ("chunk_rows", "scored_rows"),
    [
        (drift_summaries.CHUNK_ROWS, "all, in another order"),
        (300, "all, in another order"),  # a night of several chunks
        (300, "all but some"),  # scores paired with their rows by the row key
    ],
)
def test_the_drift_step_on_the_stored_night_equals_the_drift_step_on_its_frames(
    config: ProjectConfig,
    warehouse: duckdb.DuckDBPyConnection,
    whole: dict[str, Any],
    chunk_rows: int,
    scored_rows: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(drift_summaries, "CHUNK_ROWS", chunk_rows)
    scored = whole["scored_batch"].reverse() if scored_rows.startswith("all,") else whole["scored_batch"].slice(150)
    store_partition(warehouse, NIGHTLY_SCHEMA, "validated_batch", NIGHT, whole["validated_batch"].reverse())
    store_partition(warehouse, NIGHTLY_SCHEMA, "scored_batch", NIGHT, scored)
    frames = drift_night(config, warehouse, NIGHT, whole["validated_batch"], scored, plots=False)

    stored = drift_stored_night(config, warehouse, NIGHT, plots=False)

    assert_frame_equal(stored.tables["drift_metrics"], frames.tables["drift_metrics"])
    assert stored.metadata["rows"] == whole["validated_batch"].height
    assert stored.metadata["multivariate_auc"] == frames.metadata["multivariate_auc"] is not None
    assert stored.metadata["prediction_psi"] == frames.metadata["prediction_psi"] is not None
    assert {k: c.passed for k, c in stored.checks.items()} == {k: c.passed for k, c in frames.checks.items()}


def test_the_drift_step_on_the_shards_summaries_equals_the_whole_nights(
    config: ProjectConfig,
    warehouse: duckdb.DuckDBPyConnection,
    shards: list[ShardAnswers],
    whole: dict[str, Any],
) -> None:
    night = drift_night(config, warehouse, NIGHT, whole["validated_batch"], whole["scored_batch"], plots=False)

    summaries = [drift_summary_of_shard(config, warehouse, NIGHT, s.validated_batch, s.scored_batch) for s in shards]
    sharded = drift_shards_night(config, warehouse, NIGHT, [s for s in summaries if s], plots=False)

    assert_frame_equal(sharded.tables["drift_metrics"], night.tables["drift_metrics"], abs_tol=1e-12, rel_tol=0)
    assert sharded.metadata["multivariate_auc"] == night.metadata["multivariate_auc"] is not None
    assert {k: c.passed for k, c in sharded.checks.items()} == {k: c.passed for k, c in night.checks.items()}
