"""A large CSV landed file is read a slice at a time: the memory reading it takes does not follow its size."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from nightkeeper.examples.simulator import simulate_night

NIGHT = dt.date(2024, 5, 1)
REPO = Path(__file__).resolve().parents[1]

READ_AND_MEASURE = """
import datetime as dt, json, resource, sys
from pathlib import Path
from nightkeeper.config import load_config
from nightkeeper.ingest import open_raw
contract = load_config(Path(sys.argv[1])).contract
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = sum(typed.height for typed in open_raw(Path(sys.argv[2]), dt.date(2024, 5, 1), contract).slices)
print(json.dumps({"rows": rows, "grown_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def read_in_a_fresh_process(path: Path) -> dict[str, float]:
    """The rows ``open_raw`` types from ``path`` and how much the reading process's peak RSS grew doing it."""
    done = subprocess.run(
        [sys.executable, "-c", READ_AND_MEASURE, str(REPO / "nightkeeper.yaml"), str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # writes and reads 660 MiB of CSV: ~25 s
def test_reading_a_csv_twice_as_large_takes_about_the_same_memory(tmp_path: Path) -> None:
    night = simulate_night(NIGHT, 50_000, 7).applications
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    pl.concat([night] * 32).write_csv(small)  # 1,600,000 rows, ~220 MiB of text
    pl.concat([night] * 64).write_csv(large)  # 3,200,000 rows, ~440 MiB

    read_small, read_large = read_in_a_fresh_process(small), read_in_a_fresh_process(large)

    assert (read_small["rows"], read_large["rows"]) == (1_600_000, 3_200_000)
    added_text_mib = (large.stat().st_size - small.stat().st_size) / 2**20
    assert read_large["grown_mib"] - read_small["grown_mib"] < added_text_mib / 2
