"""Humans in the loop: the review queue (most uncertain first, capped, quarantined rows after), the reviewers' CSV
round trip with row-by-row rejections that never raise, the review tables in a real DuckDB file, review statistics
and training labels with provenance. Simulator ids and a real (small) LightGBM model; no mocks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from nightkeeper import warehouse
from nightkeeper.config import ProjectConfig, ReviewConfig
from nightkeeper.examples.simulator import Scenario, simulate_night
from nightkeeper.ingest import read_raw_batch
from nightkeeper.outcomes import OUTCOME_SCHEMA, Fallback, assemble_outcomes
from nightkeeper.review.files import (
    EXPORT_COLUMNS,
    LABEL_SCHEMA,
    REJECT_SCHEMA,
    ReviewImport,
    export_review_csv,
    import_review_file,
    is_rejects_file,
    write_rejects,
)
from nightkeeper.review.queue import QUEUE_SCHEMA, build_review_queue, review_stats
from nightkeeper.review.storage import (
    commit_import,
    queue_for,
    store_queue,
    store_rejects,
    store_review_labels,
    stored_queue,
    stored_rejects,
    stored_review_labels,
)
from nightkeeper.scoring import score_batch
from nightkeeper.training import TrainedModel
from nightkeeper.validation import QUARANTINE_SCHEMA, validate

NIGHT = dt.date(2024, 5, 1)
NEXT_NIGHT = dt.date(2024, 5, 2)
THRESHOLD = 0.30
POSITIVE, NEGATIVE, UNDECIDED = "decline", "approve", "refer"
LABELS = ["0", "1"]
NOW = dt.datetime(2024, 5, 2, 9, 30, tzinfo=dt.UTC)
NO_QUARANTINE = pl.DataFrame(schema=QUARANTINE_SCHEMA)


# ------------------------------------------------------------------------------------------------------- builders


def simulator_ids(rows: int, night: dt.date = NIGHT) -> list[str]:
    return simulate_night(night, rows, seed=7).applications["application_id"].to_list()


def outcomes_frame(
    ids: list[str],
    scores: list[float | None],
    *,
    night: dt.date = NIGHT,
    source: str | list[str] = "model",
    reason: str | None | list[str | None] = None,
    source_file: str = "applications.parquet",
) -> pl.DataFrame:
    """An OUTCOME_SCHEMA frame for ``ids`` with ``scores``; the decision follows the threshold like the scorer's."""
    n = len(ids)
    sources = source if isinstance(source, list) else [source] * n
    reasons = reason if isinstance(reason, list) else [reason] * n
    frame = pl.DataFrame(
        {
            "partition_date": [night] * n,
            "source_file": [source_file] * n,
            "row_number": list(range(1, n + 1)),
            "entity_id": ids,
            "source": sources,
            "score": scores,
            "reason": reasons,
        },
        schema_overrides={"score": pl.Float64, "reason": pl.String, "entity_id": pl.String},
    )
    return (
        frame.with_columns(
            pl.when(pl.col("score").is_null())
            .then(pl.lit(UNDECIDED))
            .when(pl.col("score") >= THRESHOLD)
            .then(pl.lit(POSITIVE))
            .otherwise(pl.lit(NEGATIVE))
            .alias("decision"),
            (pl.col("score") - THRESHOLD).abs().alias("confidence"),
            pl.lit("v1").alias("model_version"),
            pl.lit(1.0).alias("latency_ms"),
        )
        .select(list(OUTCOME_SCHEMA))
        .cast(OUTCOME_SCHEMA)
    )


def seeded_outcomes(rows: int = 400, seed: int = 11) -> pl.DataFrame:
    scores = np.random.default_rng(seed).uniform(0, 1, rows).tolist()
    return outcomes_frame(simulator_ids(rows), scores)


def small_queue(ids: list[str] | None = None, night: dt.date = NIGHT) -> pl.DataFrame:
    """A queue of the given ids (all within the band) for import tests."""
    ids = ids or simulator_ids(6)
    scores = [THRESHOLD + 0.01 * (i + 1) * (-1) ** i for i in range(len(ids))]
    return build_review_queue(outcomes_frame(ids, scores, night=night), NO_QUARANTINE, THRESHOLD, ReviewConfig())


def write_review(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    columns = columns or ["entity_id", "partition_date", "label", "reviewer", "note"]
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def fill(exported: Path, answers: dict[str, tuple[str, str]], to: Path | None = None) -> Path:
    """Fill ``label`` and ``reviewer`` of the exported sheet for the ids in ``answers``, as a reviewer would."""
    sheet = pl.read_csv(exported, infer_schema=False)
    labels = pl.DataFrame(
        {"entity_id": list(answers), "__l": [a[0] for a in answers.values()], "__r": [a[1] for a in answers.values()]}
    )
    filled = (
        sheet.join(labels, on="entity_id", how="left", maintain_order="left")
        .with_columns(pl.coalesce("__l", "label").alias("label"), pl.coalesce("__r", "reviewer").alias("reviewer"))
        .drop("__l", "__r")
    )
    target = to or exported
    filled.write_csv(target)
    return target


def import_file(path: Path, queue: pl.DataFrame, already: pl.DataFrame | None = None) -> ReviewImport:
    return import_review_file(
        path, queue, pl.DataFrame(schema=LABEL_SCHEMA) if already is None else already, LABELS, NOW
    )


def reason_of(result: ReviewImport, entity_id: str) -> str:
    return result.rejected.filter(pl.col("entity_id") == entity_id)["reason"].item()


# --------------------------------------------------------------------------------------- a real night, real model


@dataclass(frozen=True)
class RealNight:
    outcomes: pl.DataFrame
    quarantine: pl.DataFrame


@pytest.fixture(scope="module")
def real_night(
    tmp_path_factory: pytest.TempPathFactory, core_config: ProjectConfig, core_trained: TrainedModel
) -> RealNight:
    """A bad-data simulator night scored by a real LightGBM model: model answers, fallback and quarantined rows."""
    path = tmp_path_factory.mktemp("review_night") / "applications.parquet"
    simulate_night(NIGHT, 600, seed=7, scenario=Scenario(bad_data=True)).applications.write_parquet(path)
    raw = read_raw_batch([path], NIGHT, core_config.contract).frame
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
    assert validation.quarantined_rows > 0
    return RealNight(outcomes, validation.quarantine)


# ------------------------------------------------------------------------------------------------------- the queue


def test_queue_respects_capacity_most_uncertain_first() -> None:
    outcomes = seeded_outcomes()
    queue = build_review_queue(outcomes, NO_QUARANTINE, THRESHOLD, ReviewConfig(band=0.2, capacity=25))
    assert dict(queue.schema) == QUEUE_SCHEMA
    assert queue.height == 25
    assert queue["priority"].to_list() == list(range(1, 26))
    assert queue["distance"].is_sorted()
    in_band = outcomes.filter((pl.col("score") - THRESHOLD).abs() <= 0.2)
    assert in_band.height > 25
    nearest = in_band.with_columns((pl.col("score") - THRESHOLD).abs().alias("d")).sort("d").head(25)
    assert queue["entity_id"].to_list() == nearest["entity_id"].to_list()


def test_only_model_rows_within_the_band_enter(real_night: RealNight, core_config: ProjectConfig) -> None:
    threshold = core_config.model.decision.threshold
    config = ReviewConfig(band=0.05, capacity=10_000, include_quarantined=False)
    queue = build_review_queue(real_night.outcomes, real_night.quarantine, threshold, config)
    expected = real_night.outcomes.filter((pl.col("source") == "model") & ((pl.col("score") - threshold).abs() <= 0.05))
    assert 0 < queue.height == expected.height < real_night.outcomes.height
    assert set(queue["entity_id"]) == set(expected["entity_id"])
    assert (queue["distance"] <= 0.05).all()
    assert set(queue["queue_reason"]) == {"low_confidence"}


def test_fallback_answers_near_the_threshold_are_not_low_confidence_but_canary_answers_are() -> None:
    ids = simulator_ids(3)
    outcomes = outcomes_frame(
        ids, [0.31, 0.32, 0.33], source=["model", "canary", "fallback"], reason=[None, None, "model v1 raised"]
    )
    queue = build_review_queue(outcomes, NO_QUARANTINE, THRESHOLD, ReviewConfig())
    assert queue["entity_id"].to_list() == ids[:2]


def test_band_edge_is_inclusive() -> None:
    ids = simulator_ids(3)
    outcomes = outcomes_frame(ids, [THRESHOLD + 0.1, THRESHOLD - 0.1, THRESHOLD + 0.1001])
    queue = build_review_queue(outcomes, NO_QUARANTINE, THRESHOLD, ReviewConfig(band=0.1))
    assert sorted(queue["entity_id"]) == sorted(ids[:2])


def test_equal_distances_are_ordered_by_entity_id() -> None:
    ids = simulator_ids(4)
    outcomes = outcomes_frame(ids, [THRESHOLD + 0.05, THRESHOLD - 0.05, THRESHOLD + 0.05, THRESHOLD])
    queue = build_review_queue(outcomes, NO_QUARANTINE, THRESHOLD, ReviewConfig())
    assert queue["entity_id"].to_list() == [ids[3], *sorted(ids[:3])]


def test_quarantined_rows_follow_uncertain_ones_with_their_reasons(
    real_night: RealNight, core_config: ProjectConfig
) -> None:
    threshold = core_config.model.decision.threshold
    queue = build_review_queue(
        real_night.outcomes, real_night.quarantine, threshold, ReviewConfig(band=0.05, capacity=10_000)
    )
    reasons = queue["queue_reason"]
    uncertain = reasons == "low_confidence"
    quarantined = reasons.str.starts_with("quarantined: ")
    assert uncertain.any() and quarantined.any()
    assert (uncertain | quarantined).all()
    first_quarantined = quarantined.arg_true().min()
    assert not uncertain[first_quarantined:].any()
    # Every quarantined row a person could decide (it has an id) is queued once, with the rule it broke.
    could_decide = real_night.outcomes.filter(
        pl.col("reason").str.starts_with("quarantined:") & pl.col("entity_id").is_not_null()
    )
    assert set(queue.filter(quarantined)["entity_id"]) == set(could_decide["entity_id"])
    assert queue["entity_id"].n_unique() == queue.height
    negative_income = real_night.quarantine.filter((pl.col("column") == "income") & (pl.col("rule") == "range"))
    row = queue.join(negative_income.select("source_file", "row_number"), on=["source_file", "row_number"])
    assert row.height > 0
    assert all("income range (found '-" in reason for reason in row["queue_reason"])


def test_capacity_is_filled_by_uncertain_rows_before_quarantined_ones() -> None:
    ids = simulator_ids(6)
    outcomes = outcomes_frame(
        ids,
        [0.31, 0.29, 0.35, None, 0.2, 0.9],
        source=["model", "model", "model", "quarantine", "fallback", "model"],
        reason=[None, None, None, "quarantined: age required", "quarantined: purpose category", None],
    )
    assert (
        build_review_queue(outcomes, NO_QUARANTINE, THRESHOLD, ReviewConfig(capacity=3))["queue_reason"].to_list()
        == ["low_confidence"] * 3
    )
    queue = build_review_queue(outcomes, NO_QUARANTINE, THRESHOLD, ReviewConfig(capacity=4))
    assert queue["entity_id"].to_list() == [ids[0], ids[1], ids[2], ids[3]]
    assert queue["queue_reason"][3] == "quarantined: age required"
    assert queue["distance"][3] is None


def test_quarantined_rows_left_out_when_not_configured() -> None:
    ids = simulator_ids(2)
    outcomes = outcomes_frame(
        ids, [0.31, None], source=["model", "quarantine"], reason=[None, "quarantined: age required"]
    )
    queue = build_review_queue(outcomes, NO_QUARANTINE, THRESHOLD, ReviewConfig(include_quarantined=False))
    assert queue["entity_id"].to_list() == [ids[0]]


def test_rows_without_an_entity_id_never_enter() -> None:
    ids: list[str | None] = [*simulator_ids(1), None]
    outcomes = outcomes_frame(
        ids, [0.31, None], source=["model", "quarantine"], reason=[None, "quarantined: application_id required"]
    )
    queue = build_review_queue(outcomes, NO_QUARANTINE, THRESHOLD, ReviewConfig())
    assert queue["entity_id"].to_list() == ids[:1]


def test_capacity_and_priority_apply_per_night() -> None:
    first = outcomes_frame(simulator_ids(5, NIGHT), [0.31] * 5, night=NIGHT)
    second = outcomes_frame(simulator_ids(5, NEXT_NIGHT), [0.32] * 5, night=NEXT_NIGHT)
    queue = build_review_queue(pl.concat([first, second]), NO_QUARANTINE, THRESHOLD, ReviewConfig(capacity=3))
    assert queue.group_by("partition_date").len().sort("partition_date")["len"].to_list() == [3, 3]
    assert queue["priority"].to_list() == [1, 2, 3, 1, 2, 3]


# --------------------------------------------------------------------------------------------- export and import


def test_export_has_reviewer_columns_left_empty(tmp_path: Path) -> None:
    queue = small_queue()
    path = export_review_csv(queue, tmp_path / "sheets" / "review-2024-05-01.csv")
    sheet = pl.read_csv(path, infer_schema=False)
    assert sheet.columns == list(EXPORT_COLUMNS)
    assert sheet["entity_id"].to_list() == queue["entity_id"].to_list()
    assert sheet.select(pl.col("label", "reviewer", "note").is_null().all()).row(0) == (True, True, True)
    assert sheet["queue_reason"].to_list() == ["low_confidence"] * queue.height


def test_filled_export_is_accepted(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = fill(export_review_csv(queue, tmp_path / "review.csv"), {ids[0]: ("1", "alice"), ids[1]: ("0", "bob")})
    result = import_file(path, queue)
    assert dict(result.accepted.schema) == LABEL_SCHEMA
    assert result.rejected.height == 0 and result.file_problem is None
    assert result.accepted.select("entity_id", "label", "reviewer").rows() == [(ids[0], 1, "alice"), (ids[1], 0, "bob")]
    assert result.accepted["partition_date"].to_list() == [NIGHT, NIGHT]
    assert result.accepted["row_number"].to_list() == [1, 2]
    assert set(result.accepted["source_file"]) == {"review.csv"}
    assert set(result.accepted["reviewed_at"]) == {NOW}
    assert result.skipped == len(ids) - 2


def test_unknown_id_is_rejected(tmp_path: Path) -> None:
    queue = small_queue()
    path = write_review(tmp_path / "r.csv", [{"entity_id": "no-such-id", "label": "1", "reviewer": "alice"}])
    result = import_file(path, queue)
    assert result.accepted.height == 0
    assert reason_of(result, "no-such-id") == "entity_id 'no-such-id' is not in the review queue"


def test_label_outside_the_allowed_set_is_rejected_naming_value_and_set(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = write_review(
        tmp_path / "r.csv",
        [
            {"entity_id": ids[0], "label": "maybe", "reviewer": "alice"},
            {"entity_id": ids[1], "label": "1", "reviewer": "alice"},
        ],
    )
    result = import_file(path, queue)
    assert reason_of(result, ids[0]) == "label 'maybe' is not one of the allowed labels ['0', '1']"
    assert result.accepted["entity_id"].to_list() == [ids[1]]


def test_missing_reviewer_is_rejected(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = write_review(tmp_path / "r.csv", [{"entity_id": ids[0], "label": "1", "reviewer": "  "}])
    result = import_file(path, queue)
    assert reason_of(result, ids[0]) == "missing reviewer"


def test_duplicate_id_in_the_file_keeps_the_first_row(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = write_review(
        tmp_path / "r.csv",
        [
            {"entity_id": ids[0], "label": "1", "reviewer": "alice"},
            {"entity_id": ids[0], "label": "0", "reviewer": "bob"},
        ],
    )
    result = import_file(path, queue)
    assert result.accepted.select("label", "reviewer", "row_number").rows() == [(1, "alice", 1)]
    assert result.rejected["row_number"].to_list() == [2]
    assert reason_of(result, ids[0]) == f"duplicate entity_id '{ids[0]}' in this file; row 1 was kept"


def test_a_different_label_than_the_stored_one_is_a_conflict(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    first = import_file(
        write_review(tmp_path / "a.csv", [{"entity_id": ids[0], "label": "1", "reviewer": "alice"}]), queue
    )
    second = import_file(
        write_review(tmp_path / "b.csv", [{"entity_id": ids[0], "label": "0", "reviewer": "bob"}]),
        queue,
        first.accepted,
    )
    assert second.accepted.height == 0
    assert (
        reason_of(second, ids[0])
        == f"conflict: entity_id '{ids[0]}' was already reviewed with label 1 by alice; this row says 0"
    )


def test_every_problem_of_a_row_is_listed(tmp_path: Path) -> None:
    queue = small_queue()
    path = write_review(tmp_path / "r.csv", [{"entity_id": "ghost", "label": "2", "reviewer": ""}])
    reason = reason_of(import_file(path, queue), "ghost")
    assert reason == (
        "entity_id 'ghost' is not in the review queue; label '2' is not one of the allowed labels ['0', '1']; "
        "missing reviewer"
    )


def test_rows_with_an_empty_label_are_skipped_not_rejected(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = write_review(
        tmp_path / "r.csv",
        [
            {"entity_id": ids[0], "label": "", "reviewer": "alice"},
            {"entity_id": "unknown", "label": "", "reviewer": ""},
            {"entity_id": ids[1], "label": "0", "reviewer": "alice"},
        ],
    )
    result = import_file(path, queue)
    assert (result.skipped, result.rejected.height, result.accepted.height) == (2, 0, 1)


def test_a_file_without_the_label_column_rejects_every_row_without_raising(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = write_review(
        tmp_path / "r.csv", [{"entity_id": i, "reviewer": "alice"} for i in ids[:3]], ["entity_id", "reviewer"]
    )
    result = import_file(path, queue)
    assert result.accepted.height == 0
    assert result.rejected["row_number"].to_list() == [1, 2, 3]
    assert set(result.rejected["reason"]) == {
        "file lacks required column(s) ['label']; its columns are ['entity_id', 'reviewer']"
    }
    assert result.file_problem is not None and "['label']" in result.file_problem


def test_a_header_only_file_without_required_columns_is_one_rejection(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("id,verdict\n")
    result = import_file(path, small_queue())
    assert result.rejected.height == 1
    assert result.rejected["row_number"].to_list() == [None]
    assert "['entity_id', 'label', 'reviewer']" in result.rejected["reason"].item()


def test_a_binary_file_is_rejected_without_raising(tmp_path: Path) -> None:
    path = tmp_path / "review.csv"
    path.write_bytes(np.random.default_rng(3).bytes(2048))
    result = import_file(path, small_queue())
    assert dict(result.rejected.schema) == REJECT_SCHEMA
    assert result.accepted.height == 0 and result.rejected.height == 1
    assert result.rejected["reason"].item() == "file is not a CSV text file (it holds binary data)"
    assert result.rejected["source_file"].item() == "review.csv"


def test_a_non_utf8_file_is_rejected_without_raising(tmp_path: Path) -> None:
    path = tmp_path / "review.csv"
    path.write_bytes("entity_id,label,reviewer\nx,1,Jos\u00e9\n".encode("latin-1"))
    result = import_file(path, small_queue())
    assert result.rejected["reason"].item().startswith("file is not a UTF-8 text CSV file")


def test_an_empty_file_is_rejected_without_raising(tmp_path: Path) -> None:
    path = tmp_path / "review.csv"
    path.write_bytes(b"")
    assert import_file(path, small_queue()).rejected["reason"].item() == "file is empty: no header row"


def test_a_ragged_row_is_rejected_and_the_good_rows_kept(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = tmp_path / "r.csv"
    path.write_text(f"entity_id,label,reviewer\n{ids[0]},1,alice,extra\n{ids[1]},0,alice\n")
    result = import_file(path, queue)
    assert result.accepted["entity_id"].to_list() == [ids[1]]
    assert reason_of(result, ids[0]) == "row has 4 fields but the header has 3"


def test_semicolon_separated_file_with_bom_and_spaced_headers_is_read(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = tmp_path / "r.csv"
    path.write_bytes(f"\ufeffEntity_ID ; Label ; Reviewer\n{ids[0]} ; 1 ; alice\n".encode())
    result = import_file(path, queue)
    assert result.accepted.select("entity_id", "label", "reviewer").rows() == [(ids[0], 1, "alice")]


def test_partition_date_in_the_file_picks_the_night_when_an_entity_was_queued_twice(tmp_path: Path) -> None:
    ids = simulator_ids(2)
    queue = pl.concat([small_queue(ids, NIGHT), small_queue(ids, NEXT_NIGHT)])
    path = write_review(
        tmp_path / "r.csv",
        [
            {"entity_id": ids[0], "partition_date": NIGHT.isoformat(), "label": "1", "reviewer": "alice"},
            {"entity_id": ids[1], "label": "1", "reviewer": "alice"},
        ],
    )
    result = import_file(path, queue)
    assert result.accepted["partition_date"].to_list() == [NIGHT, NEXT_NIGHT]


def test_rejects_file_is_written_next_to_the_input(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = write_review(
        tmp_path / "review-2024-05-01.csv",
        [
            {"entity_id": "ghost", "label": "1", "reviewer": "alice"},
            {"entity_id": ids[0], "label": "1", "reviewer": "alice"},
        ],
    )
    written = write_rejects(import_file(path, queue).rejected, path)
    assert written == tmp_path / "review-2024-05-01.rejects.csv"
    assert is_rejects_file(written) and not is_rejects_file(path)
    rejects = pl.read_csv(written, infer_schema=False)
    assert rejects.select("row_number", "entity_id", "reason").rows() == [
        ("1", "ghost", "entity_id 'ghost' is not in the review queue")
    ]


FORMULA_IDS = ['=HYPERLINK("http://x.example","click")', "+41-1", "-7", "@SUM(A1)", "'=already-quoted", "plain-id"]


def test_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(tmp_path: Path) -> None:
    queue = small_queue(FORMULA_IDS)
    sheet = pl.read_csv(export_review_csv(queue, tmp_path / "review.csv"), infer_schema=False)
    by_original = dict(zip(queue["entity_id"], sheet["entity_id"], strict=True))
    assert by_original == {
        '=HYPERLINK("http://x.example","click")': '\'=HYPERLINK("http://x.example","click")',
        "+41-1": "'+41-1",
        "-7": "'-7",
        "@SUM(A1)": "'@SUM(A1)",
        "'=already-quoted": "''=already-quoted",
        "plain-id": "plain-id",
    }


def test_neutralised_ids_round_trip_through_import(tmp_path: Path) -> None:
    queue = small_queue(FORMULA_IDS)
    path = export_review_csv(queue, tmp_path / "review.csv")
    sheet = pl.read_csv(path, infer_schema=False).with_columns(
        pl.lit("1").alias("label"), pl.lit("alice").alias("reviewer")
    )
    sheet.write_csv(path)
    result = import_file(path, queue)
    assert result.rejected.height == 0
    assert sorted(result.accepted["entity_id"]) == sorted(FORMULA_IDS)


def test_rejects_file_neutralises_a_reviewers_formula(tmp_path: Path) -> None:
    queue = small_queue()
    path = write_review(
        tmp_path / "review.csv",
        [
            {
                "entity_id": "=cmd|' /C calc'!A0",
                "label": "1",
                "reviewer": "@mallory",
                "note": '=HYPERLINK("http://evil.example")',
            },
        ],
    )
    rejects = pl.read_csv(write_rejects(import_file(path, queue).rejected, path), infer_schema=False)
    assert rejects.select("entity_id", "reviewer", "note").row(0) == (
        "'=cmd|' /C calc'!A0",
        "'@mallory",
        '\'=HYPERLINK("http://evil.example")',
    )
    assert not any(str(cell).startswith(("=", "+", "-", "@")) for cell in rejects.row(0))


def test_review_config_rejects_labels_that_are_not_whole_numbers() -> None:
    with pytest.raises(ValueError, match="'no' is not a whole number"):
        ReviewConfig(labels=["no", "yes"])


# ------------------------------------------------------------------------------------------------------- storage


def test_storing_a_nights_queue_again_replaces_it(tmp_path: Path) -> None:
    queue = build_review_queue(seeded_outcomes(), NO_QUARANTINE, THRESHOLD, ReviewConfig(capacity=20))
    with warehouse.connect(tmp_path / "w.duckdb") as connection:
        store_queue(connection, NIGHT, queue)
        store_queue(connection, NIGHT, queue.head(5))
        store_queue(connection, NEXT_NIGHT, small_queue(simulator_ids(3, NEXT_NIGHT), NEXT_NIGHT))
    with warehouse.connect(tmp_path / "w.duckdb") as connection:
        assert queue_for(connection, NIGHT).equals(queue.head(5))
        assert queue_for(connection, NEXT_NIGHT).height == 3
        assert stored_queue(connection).height == 8
        with pytest.raises(ValueError, match="other night"):
            store_queue(connection, NEXT_NIGHT, queue)


def test_reimporting_the_same_file_adds_nothing(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = fill(export_review_csv(queue, tmp_path / "review.csv"), {ids[0]: ("1", "alice"), ids[1]: ("0", "bob")})
    database = tmp_path / "w.duckdb"
    with warehouse.connect(database) as connection:
        first = import_file(path, queue, stored_review_labels(connection))
        assert store_review_labels(connection, first.accepted) == 2
    with warehouse.connect(database) as connection:
        again = import_file(path, queue, stored_review_labels(connection))
        assert (again.accepted.height, again.rejected.height, again.unchanged) == (0, 0, 2)
        assert store_review_labels(connection, again.accepted) == 0
        assert store_review_labels(connection, first.accepted) == 0
        stored = stored_review_labels(connection)
    assert dict(stored.schema) == LABEL_SCHEMA
    assert stored.sort("row_number").equals(first.accepted)


def test_storing_a_conflicting_label_is_refused(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    accepted = import_file(
        write_review(tmp_path / "a.csv", [{"entity_id": ids[0], "label": "1", "reviewer": "alice"}]), queue
    ).accepted
    with warehouse.connect(tmp_path / "w.duckdb") as connection:
        store_review_labels(connection, accepted)
        with pytest.raises(ValueError, match="two different review labels"):
            store_review_labels(connection, accepted.with_columns(pl.lit(0, dtype=pl.Int8).alias("label")))
        assert stored_review_labels(connection)["label"].to_list() == [1]


def test_committing_an_import_stores_labels_and_rejects_and_then_writes_the_rejects_file(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = write_review(
        tmp_path / "review.csv",
        [
            {"entity_id": ids[0], "label": "1", "reviewer": "alice"},
            {"entity_id": "ghost", "label": "1", "reviewer": "alice"},
        ],
    )
    with warehouse.connect(tmp_path / "w.duckdb") as connection:
        added, rejects = commit_import(connection, import_file(path, queue), path)
        assert added == 1
        assert stored_review_labels(connection)["entity_id"].to_list() == [ids[0]]
        assert stored_rejects(connection)["entity_id"].to_list() == ["ghost"]
    assert pl.read_csv(rejects, infer_schema=False)["entity_id"].to_list() == ["ghost"]


def test_an_import_whose_rejects_cannot_be_stored_keeps_no_labels_and_writes_no_rejects_file(tmp_path: Path) -> None:
    queue = small_queue()
    ids = queue["entity_id"].to_list()
    path = write_review(
        tmp_path / "review.csv",
        [
            {"entity_id": ids[0], "label": "1", "reviewer": "alice"},
            {"entity_id": "ghost", "label": "1", "reviewer": "alice"},
        ],
    )
    with warehouse.connect(tmp_path / "w.duckdb") as connection:
        # a rejects table that refuses this rejection: the second write of the import fails
        connection.execute(
            """create or replace table review.rejects (source_file varchar not null, row_number bigint,
               entity_id varchar check (entity_id <> 'ghost'), label varchar, reviewer varchar, note varchar,
               reason varchar not null, rejected_at timestamptz not null)"""
        )
        with pytest.raises(Exception, match="CHECK constraint"):
            commit_import(connection, import_file(path, queue), path)
        assert stored_review_labels(connection).height == 0
    assert not (tmp_path / "review.rejects.csv").exists()


def test_stored_rejects_are_logged_once_per_rejection(tmp_path: Path) -> None:
    path = tmp_path / "review.csv"
    path.write_bytes(b"\x00\x01garbage")
    rejected = import_file(path, small_queue()).rejected
    later = rejected.with_columns(pl.lit(NOW + dt.timedelta(hours=1)).dt.cast_time_unit("us").alias("rejected_at"))
    with warehouse.connect(tmp_path / "w.duckdb") as connection:
        assert store_rejects(connection, rejected) == 1
        assert store_rejects(connection, later) == 0
        stored = stored_rejects(connection)
    assert dict(stored.schema) == REJECT_SCHEMA
    assert stored.equals(rejected)


# --------------------------------------------------------------------------------------------- stats and training


def test_review_stats_on_a_handmade_example() -> None:
    ids = ["a", "b", "c", "d"]
    outcomes = outcomes_frame(
        ids,
        [0.35, 0.25, 0.32, None],
        source=["model", "model", "model", "quarantine"],
        reason=[None, None, None, "quarantined: age required"],
    )
    queue = build_review_queue(outcomes, NO_QUARANTINE, THRESHOLD, ReviewConfig())
    assert queue.height == 4
    night_end = dt.datetime(2024, 5, 2, tzinfo=dt.UTC)
    labels = pl.DataFrame(
        {
            "entity_id": ["a", "b", "d", "zz"],
            "partition_date": [NIGHT] * 4,
            "label": [1, 1, 0, 1],  # a: model says decline -> 1, agrees; b: approve -> 0, disagrees
            "reviewer": ["alice"] * 4,
            "note": [None] * 4,
            "reviewed_at": [night_end + dt.timedelta(hours=h) for h in (2, 10, 6, 1)],
            "source_file": ["r.csv"] * 4,
            "row_number": [1, 2, 3, 4],
        },
        schema=LABEL_SCHEMA,
    )
    stats = review_stats(queue, labels, outcomes, positive_decision=POSITIVE)
    assert stats == {
        "queued": 4,
        "reviewed": 3,  # 'zz' was never queued
        "pending": 1,
        "turnaround_hours_median": 6.0,
        "agreement": 0.5,  # 'd' was quarantined: no model answer to agree with
        "agreement_rows": 2,
    }


def test_review_stats_with_nothing_reviewed() -> None:
    queue = small_queue()
    stats = review_stats(queue, pl.DataFrame(schema=LABEL_SCHEMA), outcomes_frame(simulator_ids(1), [0.3]), POSITIVE)
    assert stats["reviewed"] == 0 and stats["turnaround_hours_median"] is None and stats["agreement"] is None
