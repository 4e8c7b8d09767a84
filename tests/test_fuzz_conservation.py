"""Row conservation under fuzzed input: whatever a landed file holds — junk text, nulls, unknown levels, repeated ids,
missing or extra columns, CSV or Parquet — every raw row ends in exactly one outcome."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nightkeeper.ingest import read_raw_batch
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
    return pl.DataFrame(values, schema={c: pl.String for c in values}) if values else pl.DataFrame({"x": [None] * rows}, schema={"x": pl.String}), draw(st.booleans())


def test_every_fuzzed_row_gets_exactly_one_outcome(core_config, core_trained, tmp_path_factory):
    contract = core_config.contract
    decision = core_config.model.decision
    fallback = Fallback(core_trained.card.fallback, core_trained.card.version)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(landed_files(contract))
    def check(drawn):
        frame, as_csv = drawn
        folder = tmp_path_factory.mktemp("fuzz")
        path = folder / ("night.csv" if as_csv else "night.parquet")
        frame.write_csv(path) if as_csv else frame.write_parquet(path)

        raw = read_raw_batch([path], NIGHT, contract.entity_id).frame
        result = validate(raw, contract)
        scored = score_batch(result.valid, core_trained.booster, core_trained.card, chunk_rows=7, time_budget_seconds=60).frame
        outcomes = assemble_outcomes(raw, result.quarantine, scored, fallback, contract, decision, answer_quarantined=True)

        assert outcomes.height == raw.height == frame.height
        assert outcomes.select("source_file", "row_number").is_unique().all()
        assert outcomes["decision"].null_count() == 0

    check()
