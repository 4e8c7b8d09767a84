"""The report notebooks' kernel talks to papermill over Unix sockets, not TCP: no port on the machine reaches it, and
no "running over TCP without encryption" warning lands in every run's log."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from nightkeeper.report.execution import run_monthly_review
from nightkeeper.report.snapshot import export_month_snapshot


@pytest.mark.slow
def test_a_report_runs_its_kernel_without_the_unencrypted_tcp_warning(tmp_path: Path, capfd: pytest.CaptureFixture):
    warehouse = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(warehouse)).close()
    snapshot = export_month_snapshot(warehouse, "2026-02", tmp_path / "report")

    result = run_monthly_review(snapshot, "2026-02", tmp_path / "report")

    assert result.html.exists()
    assert "running over TCP" not in capfd.readouterr().err
