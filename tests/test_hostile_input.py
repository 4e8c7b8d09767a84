"""Hostile and broken landing folders degrade with a clear message instead of failing the night: unreadable files
are quarantined as one reason per file while the good files are answered, files that are not read are reported,
links out of the landing folder are refused, nested columns and bad event times are quarantined naming the column."""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from nightkeeper.config import ProjectConfig
from nightkeeper.examples.simulator import simulate_night
from nightkeeper.ingest import FILE_ROW, read_night, scan_landing
from nightkeeper.outcomes import Fallback, assemble_outcomes
from nightkeeper.scoring import score_batch
from nightkeeper.training import TrainedModel
from nightkeeper.validation import FILE_COLUMN, UNREADABLE_FILE, validate

NIGHT = date(2024, 5, 1)
PATTERN = "{date}/*.parquet"


@pytest.fixture
def applications() -> pl.DataFrame:
    return simulate_night(NIGHT, 40, 3).applications


@pytest.fixture
def night_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "landing" / NIGHT.isoformat()
    folder.mkdir(parents=True)
    return folder


def answered(batch_frame: pl.DataFrame, config: ProjectConfig, trained: TrainedModel) -> pl.DataFrame:
    """The night's outcomes, through validation, real scoring and the fallback."""
    result = validate(batch_frame, config.contract)
    scored = score_batch(result.valid, trained.booster, trained.card, chunk_rows=1000, time_budget_seconds=60).frame
    fallback = Fallback(trained.card.fallback, trained.card.version)
    return assemble_outcomes(batch_frame, result.quarantine, scored, fallback, config.model.decision, True)


# --------------------------------------------------------------------------------------------- unreadable files

UNREADABLE = {
    "zero-byte.parquet": b"",
    "truncated.parquet": None,  # the good file cut in half
    "not-parquet.parquet": b"PAR1 this is not really parquet",
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_an_unreadable_parquet_file_is_quarantined_and_the_good_file_answered(
    name: str, night_folder: Path, applications: pl.DataFrame, core_config: ProjectConfig, core_trained: TrainedModel
) -> None:
    good = night_folder / "good.parquet"
    applications.write_parquet(good)
    content = UNREADABLE[name]
    (night_folder / name).write_bytes(good.read_bytes()[: good.stat().st_size // 2] if content is None else content)

    batch = read_night(night_folder.parent, PATTERN, NIGHT, core_config.contract, night_folder.parent.parent)
    outcomes = answered(batch.frame, core_config, core_trained)

    assert batch.frame.height == applications.height + 1
    bad = outcomes.filter(pl.col("source_file") == f"landing/{NIGHT}/{name}")
    assert bad.select("row_number", "source", "decision").rows() == [
        (FILE_ROW, "quarantine", core_config.model.decision.undecided)
    ]
    assert bad["reason"].item() == f"quarantined: {FILE_COLUMN} {UNREADABLE_FILE}"
    assert (
        outcomes.filter(pl.col("source_file") == f"landing/{NIGHT}/good.parquet")["source"]
        .is_in(["model", "fallback"])
        .all()
    )
    assert any(name in warning and "unreadable" in warning for warning in batch.warnings)


CSV_FILES = {
    "latin1.csv": ("application_id,income\nA1,caf\xe9\n".encode("latin-1"), "utf-8"),
    "ragged.csv": (b"application_id,income\nA1,1\nA2,2,3,4\n", "more fields"),
    "repeated-header.csv": (b"application_id,income,income\nA1,1,2\n", "CSV header repeats column(s) ['income']"),
    "zero-byte.csv": (b"", "the file is empty (0 bytes)"),
}


@pytest.mark.parametrize("name", list(CSV_FILES))
def test_an_unreadable_csv_file_is_one_quarantine_row_with_its_reason(
    name: str, night_folder: Path, applications: pl.DataFrame, core_config: ProjectConfig
) -> None:
    applications.write_csv(night_folder / "good.csv")
    content, reason = CSV_FILES[name]
    (night_folder / name).write_bytes(content)

    batch = read_night(night_folder.parent, "{date}/*.csv", NIGHT, core_config.contract)
    result = validate(batch.frame, core_config.contract)

    [row] = result.quarantine.filter(pl.col("source_file").str.ends_with(name)).to_dicts()
    assert (row["row_number"], row["column"], row["rule"]) == (FILE_ROW, FILE_COLUMN, UNREADABLE_FILE)
    assert reason.lower() in row["value"].lower()
    assert result.valid.height == applications.height


# ------------------------------------------------------------------------------------------ which files are read


def test_a_parquet_file_with_an_upper_case_suffix_is_read(night_folder: Path, applications: pl.DataFrame) -> None:
    applications.write_parquet(night_folder / "APPLICATIONS.PARQUET")
    assert [p.name for p in scan_landing(night_folder.parent, PATTERN, NIGHT).files] == ["APPLICATIONS.PARQUET"]


def test_data_files_the_pattern_does_not_match_are_reported_not_skipped_silently(
    night_folder: Path, applications: pl.DataFrame, core_config: ProjectConfig
) -> None:
    applications.write_parquet(night_folder / "applications.parquet")
    applications.write_csv(night_folder / "late.csv")
    (night_folder / "archive.csv.gz").write_bytes(b"\x1f\x8b")
    (night_folder / "_SUCCESS").write_text("")

    batch = read_night(night_folder.parent, PATTERN, NIGHT, core_config.contract)

    assert [f.path.rsplit("/", 1)[-1] for f in batch.files] == ["applications.parquet"]
    assert {s.path.rsplit("/", 1)[-1] for s in batch.skipped} == {"late.csv", "archive.csv.gz"}
    assert all("does not match source.pattern '{date}/*.parquet'" in s.reason for s in batch.skipped)
    assert sum("not read" in warning for warning in batch.warnings) == 2


def test_a_link_to_a_file_outside_the_landing_folder_is_refused(
    tmp_path: Path, night_folder: Path, applications: pl.DataFrame, core_config: ProjectConfig
) -> None:
    secret = tmp_path / "outside" / "secret.parquet"
    secret.parent.mkdir()
    applications.write_parquet(secret)
    os.symlink(secret, night_folder / "innocent.parquet")

    batch = read_night(night_folder.parent, PATTERN, NIGHT, core_config.contract)

    assert batch.frame.height == 0 and batch.files == []
    [refused] = batch.skipped
    assert refused.path.endswith("innocent.parquet") and "resolves outside the landing folder" in refused.reason


def test_a_linked_night_folder_pointing_outside_the_landing_folder_is_refused(
    tmp_path: Path, applications: pl.DataFrame
) -> None:
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    applications.write_parquet(elsewhere / "passwd.parquet")
    (tmp_path / "landing").mkdir()
    os.symlink(elsewhere, tmp_path / "landing" / NIGHT.isoformat())

    landing = scan_landing(tmp_path / "landing", PATTERN, NIGHT)

    assert landing.files == [] and len(landing.skipped) == 1


def test_source_file_is_relative_to_the_project_root(
    tmp_path: Path, night_folder: Path, applications: pl.DataFrame, core_config: ProjectConfig
) -> None:
    applications.write_parquet(night_folder / "applications.parquet")
    batch = read_night(night_folder.parent, PATTERN, NIGHT, core_config.contract, root=tmp_path)
    assert set(batch.frame["source_file"]) == {f"landing/{NIGHT}/applications.parquet"}


# --------------------------------------------------------------------------------------------- values in files


def test_a_list_column_quarantines_its_rows_naming_file_and_column(
    night_folder: Path, applications: pl.DataFrame, core_config: ProjectConfig
) -> None:
    nested = applications.with_columns(pl.concat_list("income", "income").alias("income"))
    nested.write_parquet(night_folder / "nested.parquet")

    batch = read_night(night_folder.parent, PATTERN, NIGHT, core_config.contract)
    result = validate(batch.frame, core_config.contract)

    assert result.valid.height == 0
    assert set(result.quarantine.filter(pl.col("column") == "income")["rule"]) == {"type"}
    assert result.quarantine.filter(pl.col("column") == "income").height == applications.height
    assert any("nested.parquet: column 'income' holds nested values (List(Float64))" in w for w in batch.warnings)


def test_a_struct_column_is_kept_as_json_text(
    night_folder: Path, applications: pl.DataFrame, core_config: ProjectConfig
) -> None:
    applications.with_columns(pl.struct("age", "region").alias("region")).write_parquet(night_folder / "s.parquet")
    batch = read_night(night_folder.parent, PATTERN, NIGHT, core_config.contract)
    result = validate(batch.frame, core_config.contract)
    values = result.quarantine.filter(pl.col("column") == "region")["value"].to_list()
    assert len(values) == applications.height and values[0].startswith('{"age":')


def test_an_unparseable_event_time_quarantines_the_row(
    night_folder: Path, applications: pl.DataFrame, core_config: ProjectConfig
) -> None:
    times = applications["applied_at"].cast(pl.String).to_list()
    times[0], times[1], times[2] = "not a time", "2024-05-01T10:00:00Z", None
    applications.with_columns(pl.Series("applied_at", times)).write_parquet(night_folder / "a.parquet")

    result = validate(read_night(night_folder.parent, PATTERN, NIGHT, core_config.contract).frame, core_config.contract)

    [row] = result.quarantine.to_dicts()
    assert (row["row_number"], row["column"], row["rule"], row["value"]) == (1, "applied_at", "type", "not a time")
    assert "ISO 8601" in row["expected"]
    assert result.valid.filter(pl.col("row_number") == 2)["event_time"].item() == datetime(2024, 5, 1, 10, 0)
    assert result.valid.filter(pl.col("row_number") == 3)["event_time"].item() is None


# ------------------------------------------------------------------------------------------ through the nightly job


@pytest.mark.slow
def test_a_night_with_an_unreadable_file_a_stray_csv_and_a_link_out_completes_through_dagster(tmp_path: Path) -> None:
    from pipeline_harness import FIRST_NIGHT, bootstrap_example_champion, make_project

    project = make_project(tmp_path / "project")
    bootstrap_example_champion(project)
    data = project.land_night(FIRST_NIGHT, rows=800)
    folder = project.config.landing_path / FIRST_NIGHT.isoformat()
    (folder / "truncated.parquet").write_bytes(b"PAR1\x00\x00")
    data.applications.head(5).write_csv(folder / "late.csv")
    (tmp_path / "secret.parquet").write_bytes(
        (folder / next(p.name for p in folder.glob("*.parquet") if p.name != "truncated.parquet")).read_bytes()
    )
    os.symlink(tmp_path / "secret.parquet", folder / "link.parquet")

    result = project.run_night(FIRST_NIGHT)

    assert result.success
    raw, outcomes = project.table("raw_batch", FIRST_NIGHT), project.table("outcomes", FIRST_NIGHT)
    assert raw.height == 800 + 1 and outcomes.height == raw.height
    assert not raw["source_file"].str.starts_with("/").any()
    bad = outcomes.filter(pl.col("source_file").str.ends_with("truncated.parquet"))
    assert bad.select("row_number", "source").rows() == [(FILE_ROW, "quarantine")]
    metadata = result.asset_materializations_for_node("raw_batch")[0].metadata
    assert {entry["path"].rsplit("/", 1)[-1] for entry in metadata["files_not_read"].value} == {
        "late.csv",
        "link.parquet",
    }
