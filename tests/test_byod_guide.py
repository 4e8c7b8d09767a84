"""docs/bring-your-own-data.md, followed as written: its shell commands take a generated non-credit dataset from files
to a backtest report and nightly runs.

The commands are the guide's fenced ``bash`` blocks, run in order in an empty folder. The only substitution is the
interpreter: the guide's ``.venv/bin/nightkeeper`` and ``.venv/bin/python`` (the README's set-up) become this test's
Python running this checkout's code. ``nightkeeper ui`` starts a server that never returns, so it is the one command
left out.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "bring-your-own-data.md"
NOT_RUN = (".venv/bin/nightkeeper ui",)  # starts `dagster dev` and serves until stopped
MIN_BACKTEST_NIGHTS = 60


def guide_commands() -> list[str]:
    """The guide's shell commands, in order: every non-blank, non-comment line of its ```bash blocks."""
    blocks = re.findall(r"^```bash\n(.*?)^```", GUIDE.read_text(), flags=re.S | re.M)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def as_run_here(command: str) -> str:
    """``command`` with the README's virtualenv replaced by this interpreter (and this checkout's code)."""
    python = shlex.quote(sys.executable)
    here = {"nightkeeper": f"{python} -m nightkeeper.cli", "python": python}
    return re.sub(r"(?<![\w/.])\.venv/bin/(nightkeeper|python)\b", lambda found: here[found.group(1)], command)


def test_guide_names_the_commands_it_promises() -> None:
    commands = " ".join(guide_commands())
    for step in (
        "world support-tickets",
        "init",
        "check-config",
        "backtest",
        "train --config",
        "run --config",
        "backfill --config",
        "ui --config",
    ):
        assert f".venv/bin/nightkeeper {step}" in commands, f"the guide has no `nightkeeper {step}` command"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes of real nights; pytest's 600 s default is for one test of the default suite
def test_guide_commands_take_a_dataset_from_files_to_a_backtest_report(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("NIGHTKEEPER_CONFIG", None)  # the guide names its config on every command
    for command in guide_commands():
        if command.startswith(NOT_RUN):
            continue
        done = subprocess.run(
            as_run_here(command), shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, (
            f"guide command failed ({done.returncode}): {command}\n{done.stdout}\n{done.stderr}"
        )

    backtest = tmp_path / "tickets-backtest"
    assert (backtest / "report.html").stat().st_size > 0
    summary = json.loads((backtest / "summary.json").read_text())
    nights = summary["nights"]
    assert len(nights) >= MIN_BACKTEST_NIGHTS
    for night in nights:
        assert night["rows"] > 0, f"{night['night']}: no rows replayed"
        assert sum(night["sources"].values()) == night["rows"], (
            f"{night['night']}: sources {night['sources']} != rows {night['rows']}"
        )
    assert any(night["served_auc"] is not None for night in nights), "no night's served scores were judged by labels"

    # the project the guide went live with: every landed row answered once, and the late labels matched
    with duckdb.connect(str(tmp_path / "tickets" / "data" / "warehouse.duckdb"), read_only=True) as connection:
        raw = dict(
            connection.sql("select partition_date::varchar, count(*) from nightly.raw_batch group by 1").fetchall()
        )
        answered = dict(
            connection.sql("select partition_date::varchar, count(*) from nightly.outcomes group by 1").fetchall()
        )
        labeled = connection.sql(
            "select count(*) from monitoring.labels where partition_date = '2026-01-01'"
        ).fetchone()[0]
    assert raw == answered and set(raw) == {"2026-01-01", "2026-01-02"}
    assert labeled == raw["2026-01-01"]
