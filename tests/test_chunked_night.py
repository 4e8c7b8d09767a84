"""The answer steps on the stored night, a block of rows at a time (``nightkeeper.pipeline.chunked``), store the
tables, metadata and checks of the whole-night steps (``nightkeeper.pipeline.nightly``), whatever the chunk size.

One project (a bootstrapped LightGBM champion, a challenger in a 20 % canary), one landed night of the simulator's
bad-data scenario in three files and an unreadable one (so quarantined, fallback, undecided and canary answers all
occur, and blocks span files): the
whole-night steps run on frames and store their tables; then each chunked step runs on a copy of that warehouse with
chunk sizes from a few blocks a file to more than the night.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import lightgbm
import polars as pl
import pytest
import yaml
from pipeline_harness import FIRST_NIGHT, Project, bootstrap_example_champion, example_config, make_project
from polars.testing import assert_frame_equal

from nightkeeper import reasons, registry, treeshap, warehouse
from nightkeeper.artifacts import save_artifact
from nightkeeper.config import ProjectConfig, parse_config
from nightkeeper.examples import simulator
from nightkeeper.pipeline import chunked, monitoring, nightly
from nightkeeper.pipeline.step import StepResult
from nightkeeper.review.storage import REVIEW_QUEUE
from nightkeeper.scoring import latency_percentiles
from nightkeeper.training import train_model
from nightkeeper.validation import ROW_KEY
from nightkeeper.warehouse import NIGHTLY_SCHEMA, RowBlock, read_block, row_blocks, store_chunks, store_partition

NIGHT = FIRST_NIGHT + dt.timedelta(days=1)
ROWS = 1500
FILES = 3
# blocks that end mid-file and span files (files of 600 rows), with duplicate ids in different blocks; and one block
# holding the whole night. (A 7-row case, ~260 blocks, cost as much as the rest of the module for no other situation.)
CHUNK_SIZES = [250, 10 * ROWS]
REVIEWED = 25
ANSWERS = {"partition_date": pl.Date(), "entity_id": pl.String()}
ORDER = {"quarantine": [*ROW_KEY, "column", "rule"]}
WALL_CLOCK = "latency_ms"  # measured per chunk of predictions: the one stored column two runs differ in
# fewer rows than either model has due tonight: the compiled TreeSHAP engine explains them (a block of
# REASON_BLOCK_ROWS rows has fewer: a few due answers each)
ENGINE_MIN_DUE_ROWS = 20
REASON_BLOCK_ROWS = 50
WALL_CLOCK_METADATA = frozenset({"latency_ms", "latency_p50_ms", "latency_p95_ms"})


@dataclass
class WholeNight:
    project: Project
    results: dict[str, StepResult]  # by stored table: the whole-night step that made it
    review: StepResult


@pytest.fixture(scope="module")
def whole_night(tmp_path_factory: pytest.TempPathFactory) -> WholeNight:
    # a small review capacity, so the queue is cut and rows compete for places across blocks
    raw = example_config()
    project = make_project(
        tmp_path_factory.mktemp("chunked") / "project", example_config(review={**raw["review"], "capacity": REVIEWED})
    )
    bootstrap_example_champion(project)
    add_canary_challenger(project)
    landed = simulator.simulate_night(NIGHT, ROWS, seed=11, scenario=simulator.Scenario(bad_data=True))
    folder = project.config.landing_path / NIGHT.isoformat()
    folder.mkdir(parents=True)
    for part in range(FILES):  # files of unequal length, so blocks of small chunk sizes end mid-file and span files
        landed.applications.slice(part * 600, 600).write_parquet(folder / f"part-{part}.parquet")
    (folder / "part-9.parquet").write_bytes(b"not a parquet file")  # unreadable: one row nobody can decide
    config = project.config
    results: dict[str, StepResult] = {}
    with warehouse.connect(config.warehouse_path) as connection:

        def stored(result: StepResult) -> dict[str, pl.DataFrame]:
            for name, frame in result.tables.items():
                store_partition(connection, NIGHTLY_SCHEMA, name, NIGHT, frame)
                results[name] = result
            return result.tables

        raw = stored(nightly.ingest_night(config, connection, NIGHT))["raw_batch"]
        valid = stored(nightly.validate_night(config, connection, NIGHT, raw))
        rows = valid["validated_batch"]
        scored = stored(nightly.score_night(config, connection, NIGHT, rows))["scored_batch"]
        shadow = stored(nightly.shadow_night(config, connection, NIGHT, rows, scored))["shadow_scores"]
        answers = stored(nightly.answer_night(config, connection, NIGHT, raw, valid["quarantine"], scored, shadow))
        queue = monitoring.review_queue_night(config, connection, NIGHT, answers["outcomes"], valid["quarantine"])
    return WholeNight(project, results, queue)


def add_canary_challenger(project: Project) -> None:
    """A model trained on other nights, serving a 20 % canary from NIGHT on."""
    config = project.config
    history = simulator.simulate_history(NIGHT - dt.timedelta(days=1), days=10, rows_per_day=500, seed=5)
    model = train_model(history, config)
    with warehouse.connect(config.warehouse_path) as connection:
        record = registry.register(connection, model.card, save_artifact(model, config.path(config.storage.models)))
        registry.set_alias(connection, registry.CHALLENGER, record.version, NIGHT, "test", "set up", "canary:20")


def chunked_copy(whole: WholeNight, tmp_path: Path, chunk_rows: int) -> ProjectConfig:
    """A copy of the whole night's project (its stored tables included) whose answer steps hold ``chunk_rows`` rows."""
    root = tmp_path / "copy"
    shutil.copytree(whole.project.root, root)
    raw = yaml.safe_load((root / "nightkeeper.yaml").read_text())
    raw["scale"] = {**raw.get("scale", {}), "chunk_rows": chunk_rows}
    return parse_config(raw, root=root)


def stored_table(config: ProjectConfig, table: str) -> pl.DataFrame:
    with duckdb.connect(str(config.warehouse_path), read_only=True) as connection:
        frame = connection.execute(f"select * from {NIGHTLY_SCHEMA}.{table} where partition_date = ?", [NIGHT]).pl()
    return frame.sort(ORDER.get(table, ROW_KEY))


def test_the_night_has_every_kind_of_answer(whole_night: WholeNight) -> None:
    sources = set(whole_night.results["outcomes"].tables["outcomes"]["source"])
    assert sources == {"model", "canary", "fallback", "quarantine"}


@pytest.mark.parametrize("chunk_rows", CHUNK_SIZES)
def test_outcomes_answered_in_chunks_are_the_whole_nights(
    whole_night: WholeNight, tmp_path: Path, chunk_rows: int
) -> None:
    config = chunked_copy(whole_night, tmp_path, chunk_rows)
    expected = whole_night.results["outcomes"]
    with warehouse.connect(config.warehouse_path) as connection:
        result = chunked.answer_stored_night(config, connection, NIGHT)

    assert_frame_equal(stored_table(config, "outcomes"), expected.tables["outcomes"])
    assert result.tables == {}
    assert_same_metadata(result.metadata, expected.metadata)
    assert result.checks == expected.checks


@pytest.mark.parametrize("chunk_rows", CHUNK_SIZES)
def test_the_night_read_in_chunks_is_the_whole_nights(whole_night: WholeNight, tmp_path: Path, chunk_rows: int) -> None:
    config = chunked_copy(whole_night, tmp_path, chunk_rows)
    expected = whole_night.results["raw_batch"]
    with warehouse.connect(config.warehouse_path) as connection:
        result = chunked.ingest_stored_night(config, connection, NIGHT)

    assert_frame_equal(stored_table(config, "raw_batch"), expected.tables["raw_batch"])
    assert_same_metadata(result.metadata, expected.metadata)
    assert result.checks == expected.checks


@pytest.mark.parametrize("chunk_rows", CHUNK_SIZES)
def test_rows_validated_in_chunks_are_the_whole_nights(
    whole_night: WholeNight, tmp_path: Path, chunk_rows: int
) -> None:
    config = chunked_copy(whole_night, tmp_path, chunk_rows)
    expected = whole_night.results["validated_batch"]
    with warehouse.connect(config.warehouse_path) as connection:
        result = chunked.validate_stored_night(config, connection, NIGHT)

    for table in ("validated_batch", "quarantine"):
        assert_frame_equal(stored_table(config, table), expected.tables[table])
    assert_same_metadata(result.metadata, expected.metadata)
    assert result.checks == expected.checks


def test_the_night_repeats_ids_across_blocks_and_files(whole_night: WholeNight) -> None:
    quarantine = whole_night.results["quarantine"].tables["quarantine"]
    assert quarantine.filter(pl.col("rule") == "duplicate_id")["source_file"].n_unique() > 1


@pytest.mark.parametrize("chunk_rows", CHUNK_SIZES)
def test_champion_and_challenger_scores_in_chunks_are_the_whole_nights(
    whole_night: WholeNight, tmp_path: Path, chunk_rows: int
) -> None:
    config = chunked_copy(whole_night, tmp_path, chunk_rows)
    with warehouse.connect(config.warehouse_path) as connection:
        scoring = chunked.score_stored_night(config, connection, NIGHT)
        shadow = chunked.shadow_stored_night(config, connection, NIGHT)

    for table, result in (("scored_batch", scoring), ("shadow_scores", shadow)):
        expected = whole_night.results[table]
        assert_frame_equal(
            stored_table(config, table).drop(WALL_CLOCK), expected.tables[table].drop(WALL_CLOCK), check_dtypes=True
        )
        assert_same_metadata(result.metadata, expected.metadata, ignore=WALL_CLOCK_METADATA)
        assert result.checks == expected.checks


def test_the_latency_percentiles_of_a_stored_night_are_those_of_its_rows(
    whole_night: WholeNight, tmp_path: Path
) -> None:
    # read from each distinct latency's row count, not from every row: the stored rows' own percentiles
    config = chunked_copy(whole_night, tmp_path, CHUNK_SIZES[0])
    with warehouse.connect(config.warehouse_path) as connection:
        chunked.score_stored_night(config, connection, NIGHT)
        summary = chunked.stored_scores(connection, NIGHT)

    stored = stored_table(config, "scored_batch")
    assert stored[WALL_CLOCK].n_unique() > 1
    assert summary.latency == latency_percentiles(stored)


def test_a_model_overrunning_the_nights_budget_leaves_every_row_unscored(
    whole_night: WholeNight, tmp_path: Path
) -> None:
    config = chunked_copy(whole_night, tmp_path, 100)
    config = config.model_copy(update={"model": config.model.model_copy(update={"time_budget_seconds": 1e-4})})
    with warehouse.connect(config.warehouse_path) as connection:
        result = chunked.score_stored_night(config, connection, NIGHT)

    scored = stored_table(config, "scored_batch")
    assert scored.height == whole_night.results["scored_batch"].tables["scored_batch"].height
    assert scored["score"].is_null().all()
    assert scored["model_error"].str.ends_with("exceeded its time budget of 0.0001 s").all()
    assert result.metadata["degraded"] and not result.checks["champion_answered"].passed


@pytest.mark.parametrize("chunk_rows", CHUNK_SIZES)
def test_the_review_queue_of_the_night_in_chunks_is_the_whole_nights(
    whole_night: WholeNight, tmp_path: Path, chunk_rows: int
) -> None:
    config = chunked_copy(whole_night, tmp_path, chunk_rows)
    with warehouse.connect(config.warehouse_path) as connection:
        result = chunked.review_stored_night(config, connection, NIGHT)

    assert whole_night.review.metadata["queued"] == REVIEWED
    assert_same_metadata(result.metadata, whole_night.review.metadata)
    assert_frame_equal(stored_queue(config), stored_queue(whole_night.project.config))


@pytest.mark.parametrize("engine_min_rows", [reasons.ENGINE_MIN_ROWS, ENGINE_MIN_DUE_ROWS])
@pytest.mark.parametrize("chunk_rows", [REASON_BLOCK_ROWS, 10 * ROWS])
def test_the_reason_codes_explained_in_chunks_are_the_whole_nights(
    whole_night: WholeNight, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int, engine_min_rows: int
) -> None:
    # at ENGINE_MIN_DUE_ROWS each version's due rows take the compiled engine, which no block's due rows would alone
    monkeypatch.setattr(reasons, "ENGINE_MIN_ROWS", engine_min_rows)
    config = chunked_copy(whole_night, tmp_path, chunk_rows)
    outcomes = whole_night.results["outcomes"].tables["outcomes"]
    with warehouse.connect(config.warehouse_path) as connection:
        expected = nightly.explain_stored_night(config, connection, NIGHT, outcomes)
        result = chunked.explain_stored_answers(config, connection, NIGHT)

    assert expected.tables["reason_codes"].height > 0
    assert_frame_equal(stored_table(config, "reason_codes"), expected.tables["reason_codes"], check_exact=True)
    assert result.tables == {}
    assert_same_metadata(result.metadata, expected.metadata, ignore=frozenset({"seconds"}))


def test_the_reason_codes_of_a_night_in_chunks_compile_each_model_once(
    whole_night: WholeNight, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[str] = []

    def counted_compile(booster: lightgbm.Booster) -> treeshap.CompiledForest:
        compiled.append(booster.model_to_string())
        return treeshap.compile_forest(booster)

    monkeypatch.setattr(reasons, "ENGINE_MIN_ROWS", ENGINE_MIN_DUE_ROWS)
    monkeypatch.setattr(reasons, "compile_forest", counted_compile)
    config = chunked_copy(whole_night, tmp_path, REASON_BLOCK_ROWS)
    with warehouse.connect(config.warehouse_path) as connection:
        result = chunked.explain_stored_answers(config, connection, NIGHT)

    assert len(result.metadata["by_version"]) == 2  # the champion's answers and the canary's
    assert len(compiled) == len(set(compiled)) == 2


def stored_queue(config: ProjectConfig) -> pl.DataFrame:
    with duckdb.connect(str(config.warehouse_path), read_only=True) as connection:
        return connection.execute(f"select * from {REVIEW_QUEUE} order by partition_date, priority").pl()


def test_blocks_cover_every_row_of_the_night_once_and_hold_at_most_the_chunk(whole_night: WholeNight) -> None:
    config = whole_night.project.config
    with warehouse.connect(config.warehouse_path) as connection:
        blocks = row_blocks(connection, NIGHTLY_SCHEMA, "raw_batch", NIGHT, 100)
        parts = [read_block(connection, NIGHTLY_SCHEMA, "raw_batch", NIGHT, block, ROW_KEY) for block in blocks]

    assert all(part.height <= 100 for part in parts)
    assert any(block.first_file != block.last_file for block in blocks)
    assert_frame_equal(pl.concat(parts), stored_table(config, "raw_batch").select(ROW_KEY))


def test_a_block_of_an_empty_night_reads_no_rows(whole_night: WholeNight) -> None:
    config = whole_night.project.config
    with warehouse.connect(config.warehouse_path) as connection:
        assert row_blocks(connection, NIGHTLY_SCHEMA, "raw_batch", NIGHT + dt.timedelta(days=1), 100) == []
        block = RowBlock("a", 0, "z", 10**9)
        assert read_block(connection, NIGHTLY_SCHEMA, "raw_batch", NIGHT - dt.timedelta(days=1), block).height == 0


def test_a_block_reads_its_rows_in_key_order_whatever_order_they_are_stored_in(tmp_path: Path) -> None:
    keys = [("b.parquet", 2), ("a.parquet", 3), ("b.parquet", 1), ("a.parquet", 1), ("a.parquet", 2), ("c.parquet", 1)]
    stored = pl.DataFrame(
        {
            "partition_date": [NIGHT] * len(keys),
            "source_file": [file for file, _ in keys],
            "row_number": [row for _, row in keys],
        },
        schema={"partition_date": pl.Date(), "source_file": pl.String(), "row_number": pl.Int64()},
    )
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        store_partition(connection, NIGHTLY_SCHEMA, "rows", NIGHT, stored)
        one_file = read_block(connection, NIGHTLY_SCHEMA, "rows", NIGHT, RowBlock("a.parquet", 1, "a.parquet", 3))
        two_files = read_block(connection, NIGHTLY_SCHEMA, "rows", NIGHT, RowBlock("a.parquet", 2, "b.parquet", 1))

    assert one_file.select(ROW_KEY).rows() == [("a.parquet", 1), ("a.parquet", 2), ("a.parquet", 3)]
    assert two_files.select(ROW_KEY).rows() == [("a.parquet", 2), ("a.parquet", 3), ("b.parquet", 1)]


def assert_same_metadata(found: dict, expected: dict, ignore: frozenset[str] = frozenset()) -> None:
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        if key in ignore:
            continue
        if isinstance(value, pl.DataFrame):
            assert_frame_equal(found[key].drop(ignore, strict=False), value.drop(ignore, strict=False))
        elif isinstance(value, dict):
            assert_same_metadata(found[key], value, ignore)
        else:
            assert found[key] == value, key


def test_a_night_failing_part_way_through_its_chunks_leaves_the_stored_partition_and_no_spooled_chunk(
    tmp_path: Path,
) -> None:
    def rows(ids: list[str]) -> pl.DataFrame:
        return pl.DataFrame({"partition_date": [NIGHT] * len(ids), "entity_id": ids}, schema=ANSWERS)

    def chunks() -> Iterator[dict[str, pl.DataFrame]]:
        yield {"answers": rows(["c", "d"])}
        raise RuntimeError("the model failed on the second chunk")

    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        store_partition(connection, NIGHTLY_SCHEMA, "answers", NIGHT, rows(["a", "b"]))
        with pytest.raises(RuntimeError, match="second chunk"):
            store_chunks(connection, NIGHTLY_SCHEMA, NIGHT, {"answers": rows([])}, chunks)
        stored = connection.execute(f"select entity_id from {NIGHTLY_SCHEMA}.answers order by 1").pl()
        tables = connection.execute("select table_name from information_schema.tables").pl()["table_name"].to_list()

    assert stored["entity_id"].to_list() == ["a", "b"]
    assert tables == ["answers"]
    assert list(tmp_path.glob("**/*.parquet")) == []


def test_a_night_stored_in_chunks_replaces_only_that_nights_rows(tmp_path: Path) -> None:
    def rows(night: dt.date, ids: list[str]) -> pl.DataFrame:
        return pl.DataFrame({"partition_date": [night] * len(ids), "entity_id": ids}, schema=ANSWERS)

    other = NIGHT + dt.timedelta(days=1)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        store_partition(connection, NIGHTLY_SCHEMA, "answers", NIGHT, rows(NIGHT, ["a", "b"]))
        store_partition(connection, NIGHTLY_SCHEMA, "answers", other, rows(other, ["x"]))
        store_chunks(
            connection,
            NIGHTLY_SCHEMA,
            NIGHT,
            {"answers": rows(NIGHT, [])},
            lambda: iter([{"answers": rows(NIGHT, ["c"])}, {"answers": rows(NIGHT, ["d", "e"])}]),
        )
        stored = connection.execute(
            f"select partition_date, entity_id from {NIGHTLY_SCHEMA}.answers order by 1, 2"
        ).pl()

    assert stored.rows() == [(NIGHT, "c"), (NIGHT, "d"), (NIGHT, "e"), (other, "x")]
