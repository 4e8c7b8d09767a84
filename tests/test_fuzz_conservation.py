"""Row conservation under fuzzed input: whatever a landed file holds — junk text, nulls, unknown levels, repeated ids,
missing or extra columns, CSV or Parquet — every raw row ends in exactly one outcome. And whatever a landing folder
holds — good files, unreadable ones (zero-byte, truncated, latin-1, ragged, repeated header), list and struct columns,
unparseable event times, files the pattern does not read, links out of the folder — the night is answered: one
outcome per raw row, one raw row per unreadable file, every file not read reported.

How many examples, and which, is the Hypothesis profile's (tests/conftest.py): the same ones on every run, as in CI;
NIGHTKEEPER_FUZZ_SEARCH=1 searches more of them at random.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from nightkeeper.ingest import FILE_ROW, read_night, read_raw_batch
from nightkeeper.outcomes import Fallback, assemble_outcomes
from nightkeeper.scoring import score_batch
from nightkeeper.validation import validate

NIGHT = dt.date(2024, 5, 1)
JUNK = ["", " ", "n/a", "NaN", "inf", "-1", "0", "1e400", "12k", "true", "🙂", "null", "3.5", "-0.0", "999999999999"]


@st.composite
def landed_files(draw, contract):
    columns = [contract.entity_id, *contract.features]
    kept = draw(st.lists(st.sampled_from(columns), unique=True, min_size=0, max_size=len(columns)))
    extra = draw(st.lists(st.sampled_from(["utm", "note", "x"]), unique=True, max_size=2))
    rows = draw(st.integers(min_value=0, max_value=25))
    values = {}
    for column in [*kept, *extra]:
        spec = contract.features.get(column)
        levels = list(spec.categories or []) if spec is not None else []
        pool = JUNK + levels + [f"A{i}" for i in range(5)]
        values[column] = draw(st.lists(st.one_of(st.none(), st.sampled_from(pool)), min_size=rows, max_size=rows))
    return pl.DataFrame(values, schema={c: pl.String for c in values}) if values else pl.DataFrame(
        {"x": [None] * rows}, schema={"x": pl.String}
    ), draw(st.booleans())


def test_every_fuzzed_row_gets_exactly_one_outcome(core_config, core_trained, tmp_path_factory):
    contract = core_config.contract
    decision = core_config.model.decision
    fallback = Fallback(core_trained.card.fallback, core_trained.card.version)

    @given(landed_files(contract))
    def check(drawn):
        frame, as_csv = drawn
        folder = tmp_path_factory.mktemp("fuzz")
        path = folder / ("night.csv" if as_csv else "night.parquet")
        frame.write_csv(path) if as_csv else frame.write_parquet(path)

        raw = read_raw_batch([path], NIGHT, contract).frame
        result = validate(raw, contract)
        scored = score_batch(
            result.valid, core_trained.booster, core_trained.card, chunk_rows=7, time_budget_seconds=60
        ).frame
        outcomes = assemble_outcomes(raw, result.quarantine, scored, fallback, decision, answer_quarantined=True)

        assert outcomes.height == raw.height == frame.height
        assert outcomes.select("source_file", "row_number").is_unique().all()
        assert outcomes["decision"].null_count() == 0

    check()


# file kind -> (is read, is unreadable): how the landing folder should treat it
FILE_KINDS = {
    "parquet": (True, False),
    "csv": (True, False),
    "upper_parquet": (True, False),
    "nested_parquet": (True, False),
    "struct_parquet": (True, False),
    "bad_event_time_csv": (True, False),
    "zero_byte": (True, True),
    "truncated_parquet": (True, True),
    "latin1_csv": (True, True),
    "ragged_csv": (True, True),
    "repeated_header_csv": (True, True),
    "csv_gz": (False, False),
    "link_outside": (False, False),
}


def file_name(kind: str, index: int) -> str:
    return f"f{index:02d}.csv" if kind == "bad_event_time_csv" else f"f{index:02d}"


def write_kind(kind: str, folder: Path, index: int, frame: pl.DataFrame, outside: Path, event_time: str) -> int:
    """Write one file of ``kind`` into ``folder``; returns the data rows it holds when read (0 for the others)."""
    name = f"f{index:02d}"
    if kind == "parquet":
        frame.write_parquet(folder / f"{name}.parquet")
    elif kind == "csv":
        frame.write_csv(folder / f"{name}.csv")
    elif kind == "upper_parquet":
        frame.write_parquet(folder / f"{name}.PARQUET")
    elif kind == "nested_parquet":
        frame.with_columns(
            pl.concat_list(pl.col(frame.columns[0]), pl.col(frame.columns[0])).alias(frame.columns[0])
        ).write_parquet(folder / f"{name}.parquet")
    elif kind == "struct_parquet":
        first = frame.columns[0]
        frame.with_columns(pl.struct(first).alias(first)).write_parquet(folder / f"{name}.parquet")
    elif kind == "bad_event_time_csv":
        frame.with_columns(pl.lit("2024-02-31 25:61").alias(event_time)).write_csv(folder / file_name(kind, index))
    elif kind == "zero_byte":
        (folder / f"{name}.parquet").write_bytes(b"")
    elif kind == "truncated_parquet":
        frame.write_parquet(folder / f"{name}.parquet")
        data = (folder / f"{name}.parquet").read_bytes()
        (folder / f"{name}.parquet").write_bytes(data[: len(data) // 2])
    elif kind == "latin1_csv":
        (folder / f"{name}.csv").write_bytes("application_id,income\nA1,caf\xe9\n".encode("latin-1"))
    elif kind == "ragged_csv":
        (folder / f"{name}.csv").write_bytes(b"application_id,income\nA1,1\nA2,2,3,4\n")
    elif kind == "repeated_header_csv":
        (folder / f"{name}.csv").write_bytes(b"application_id,age,age\nA1,30,31\n")
    elif kind == "csv_gz":
        (folder / f"{name}.csv.gz").write_bytes(b"\x1f\x8b not really gzip")
    elif kind == "link_outside":
        target = outside / f"{name}.parquet"
        frame.write_parquet(target)
        os.symlink(target, folder / f"{name}.parquet")
    return frame.height if FILE_KINDS[kind] == (True, False) else 0


def test_every_row_of_a_fuzzed_landing_folder_gets_exactly_one_outcome(core_config, core_trained, tmp_path_factory):
    contract = core_config.contract
    fallback = Fallback(core_trained.card.fallback, core_trained.card.version)

    @given(st.lists(st.tuples(st.sampled_from(sorted(FILE_KINDS)), landed_files(contract)), min_size=0, max_size=5))
    def check(drawn):
        root = tmp_path_factory.mktemp("landing_fuzz")
        folder, outside = root / "landing" / NIGHT.isoformat(), root / "outside"
        folder.mkdir(parents=True)
        outside.mkdir()
        data_rows = sum(
            write_kind(kind, folder, i, frame, outside, contract.event_time)
            for i, (kind, (frame, _)) in enumerate(drawn)
        )

        batch = read_night(root / "landing", "{date}/*", NIGHT, contract, root)
        result = validate(batch.frame, contract)
        scored = score_batch(
            result.valid, core_trained.booster, core_trained.card, chunk_rows=7, time_budget_seconds=60
        ).frame
        outcomes = assemble_outcomes(batch.frame, result.quarantine, scored, fallback, core_config.model.decision, True)

        unreadable = sum(FILE_KINDS[kind][1] for kind, _ in drawn)
        assert batch.frame.height == data_rows + unreadable
        assert batch.frame.filter(pl.col("row_number") == FILE_ROW).height == unreadable
        assert len(batch.skipped) == sum(not FILE_KINDS[kind][0] for kind, _ in drawn)
        assert outcomes.height == batch.frame.height
        assert outcomes.select("source_file", "row_number").is_unique().all()
        assert outcomes["decision"].null_count() == 0
        assert outcomes.filter(pl.col("row_number") == FILE_ROW)["source"].eq("quarantine").all()
        bad_times = [file_name(kind, i) for i, (kind, _) in enumerate(drawn) if kind == "bad_event_time_csv"]
        read_as_valid = result.valid.filter(pl.col("source_file").str.split("/").list.last().is_in(bad_times))
        assert read_as_valid.height == 0  # a row whose event time cannot be read is quarantined

    check()
