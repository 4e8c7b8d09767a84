"""A real project on disk for integration tests: config, landing folder, warehouse, champion, Dagster definitions.

Nothing here is a stand-in: the config is the shipped example's (with a smaller model so tests stay fast), the
warehouse is a DuckDB file, the champion is a LightGBM model trained on simulated history, and nights run through
the real ``nightly_batch`` job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import yaml
from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from jobs.definitions import NIGHTLY_JOB, build_definitions
from jobs.resources import NIGHTLY_SCHEMA
from nightkeeper import simulator
from nightkeeper.config import ProjectConfig, load_config
from nightkeeper.models import bootstrap_champion
from nightkeeper.registry import ModelRecord

REPO = Path(__file__).resolve().parents[1]
FIRST_NIGHT = dt.date(2026, 1, 1)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def example_config(**overrides: Any) -> dict[str, Any]:
    """The shipped nightkeeper.yaml as a dict, with a small model and any top-level section overrides merged in."""
    raw = yaml.safe_load((REPO / "nightkeeper.yaml").read_text())
    raw["model"]["num_boost_round"] = 40
    raw["monitoring"]["drift"]["evidently_report"] = False  # a few seconds a night; its own tests turn it on
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **values}
        else:
            raw[section] = values
    return raw


@dataclass
class Project:
    """A project folder with its config, a Dagster instance and its definitions."""

    root: Path
    config_path: Path
    instance: DagsterInstance

    @property
    def config(self) -> ProjectConfig:
        return load_config(self.config_path)

    @property
    def defs(self) -> Definitions:
        return build_definitions(self.config_path)

    def run_night(self, night: dt.date) -> ExecuteInProcessResult:
        job = self.defs.resolve_job_def(NIGHTLY_JOB)
        return job.execute_in_process(
            partition_key=night.isoformat(), instance=self.instance, run_config=QUIET, raise_on_error=False
        )

    def query(self, sql: str, params: list | dict | None = None) -> pl.DataFrame:
        with duckdb.connect(str(self.config.warehouse_path)) as connection:
            return connection.execute(sql, params or []).pl()

    def table(self, name: str, night: dt.date) -> pl.DataFrame:
        return self.query(f"select * from {NIGHTLY_SCHEMA}.{name} where partition_date = ?", [night])

    def land(self, night_data: simulator.NightData) -> Path:
        return simulator.write_landing(night_data, night_data.night, self.config.landing_path)

    def land_night(
        self, night: dt.date, rows: int = 1500, scenario: simulator.Scenario = simulator.CLEAN
    ) -> simulator.NightData:
        data = simulator.simulate_night(night, rows, seed=11, scenario=scenario)
        self.land(data)
        return data


def make_project(root: Path, raw_config: dict[str, Any] | None = None) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "nightkeeper.yaml"
    config_path.write_text(yaml.safe_dump(raw_config or example_config(), sort_keys=False))
    return Project(root=root, config_path=config_path, instance=DagsterInstance.ephemeral())


def bootstrap_example_champion(project: Project) -> ModelRecord:
    history = simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), days=20, rows_per_day=500, seed=3)
    return bootstrap_champion(project.config, history, FIRST_NIGHT)


def check_results(result: ExecuteInProcessResult) -> dict[str, Any]:
    """Asset check evaluations of a run by check name."""
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def row_keys(frame: pl.DataFrame) -> set[tuple[str, int]]:
    return set(frame.select("source_file", "row_number").iter_rows())


def run_plan(project: Project, plan: simulator.ScenarioPlan, nights: int, rows: int, label_delay_days: int = 3) -> list:
    """Simulate ``nights`` nights of ``plan`` into the project's folders and run each through the nightly job."""
    config = project.config
    dates = simulator.simulate_to_folders(
        FIRST_NIGHT, nights, rows, 11, plan, config.landing_path, config.labels_path, label_delay_days=label_delay_days
    )
    return [project.run_night(night) for night in dates]


def alerts_table(project: Project) -> pl.DataFrame:
    return project.query("select * from monitoring.alerts order by opened_night, alert_id")
