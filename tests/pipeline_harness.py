"""A real project on disk for integration tests: config, landing folder, warehouse, champion, Dagster definitions.

Nothing here is a stand-in: the config is the shipped example's (with a smaller model so tests stay fast), the
warehouse is a DuckDB file, the champion is a LightGBM model trained on simulated history, and nights run through
the real ``nightly_batch`` job.
"""

from __future__ import annotations

import atexit
import copy
import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import yaml
from dagster import (
    DagsterEventType,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    JobDefinition,
    JobExecutionResult,
    build_reconstructable_job,
    execute_job,
)

from jobs.definitions import NIGHTLY_JOB, build_definitions
from jobs.resources import NIGHTLY_SCHEMA
from nightkeeper import registry, warehouse
from nightkeeper.config import ProjectConfig, load_config
from nightkeeper.examples import simulator
from nightkeeper.models import bootstrap_champion
from nightkeeper.registry import ModelRecord

REPO = Path(__file__).resolve().parents[1]
FIRST_NIGHT = dt.date(2026, 1, 1)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


_SHIPPED_CONFIG = yaml.load(
    (REPO / "nightkeeper.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
)


def example_config(**overrides: Any) -> dict[str, Any]:
    """The shipped nightkeeper.yaml as a dict, with a small one-thread model and any top-level section overrides merged
    in."""
    raw = copy.deepcopy(_SHIPPED_CONFIG)
    raw["model"]["num_boost_round"] = 40
    raw["model"]["params"]["num_threads"] = 1  # no OpenMP spin-waits burning a shared machine's second core
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
        with duckdb.connect(str(self.config.warehouse_path), config=warehouse.FILE_CONFIG) as connection:
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


def nightly_job_of(config_path: str) -> JobDefinition:
    """The nightly job of the project config at ``config_path``: what each step's process rebuilds."""
    return build_definitions(Path(config_path)).resolve_job_def(NIGHTLY_JOB)


def run_in_processes(project: Project, night: dt.date, instance: DagsterInstance) -> JobExecutionResult:
    """The nightly job of ``project`` for ``night`` through the definitions' executor (the multiprocess executor for
    a sharded config: each step in a process of its own), as a run the Dagster daemon launches executes, on
    ``instance`` (a persistent one: steps in other processes write its event log). The job is rebuilt from the
    config's path, which names it: another project's job, built earlier in this process, is not reused."""
    job = build_reconstructable_job(
        "pipeline_harness",
        nightly_job_of.__name__,
        reconstructable_args=(str(project.config_path),),
        reconstructor_working_directory=str(Path(__file__).parent),
    )
    with execute_job(
        job,
        instance=instance,
        run_config=QUIET,
        tags={"dagster/partition": night.isoformat()},
        raise_on_error=False,
    ) as result:
        return result


def shard_processes_alive_at_once(instance: DagsterInstance, run_id: str) -> int:
    """How many of the run's shard ops had their worker process started before the first shard op ended. (Not their
    op spans: on a small test night an op computes for ~1 s after seconds of loading code, so whether two spans
    overlap is the machine's chance.)"""
    alive = 0
    for record in instance.all_logs(run_id):
        if not (record.step_key or "").startswith("night_shards.answer_shard_"):
            continue
        if record.dagster_event_type == DagsterEventType.STEP_SUCCESS:
            break
        alive += record.dagster_event_type == DagsterEventType.STEP_WORKER_STARTED
    return alive


def make_project(root: Path, raw_config: dict[str, Any] | None = None) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "nightkeeper.yaml"
    config_path.write_text(yaml.safe_dump(raw_config or example_config(), sort_keys=False))
    return Project(root=root, config_path=config_path, instance=DagsterInstance.ephemeral())


# config file text -> a project folder (under one session temp folder) whose warehouse holds nothing but the champion
# bootstrapped for that config
_CHAMPIONS: dict[str, Path] = {}
_CHAMPIONS_ROOT: Path | None = None


def bootstrap_example_champion(project: Project) -> ModelRecord:
    """Make a LightGBM model trained on 20 simulated nights of history the project's champion from FIRST_NIGHT on.

    Training is the slow part and a config always trains the same model, so each config is bootstrapped once per
    session, for real, in a folder of its own; a project with that config and no warehouse yet gets a copy of that
    warehouse file and model folder (the registry stores model paths relative to the warehouse). A project whose
    warehouse exists already is bootstrapped in place, as ``nightkeeper.models.bootstrap_champion`` does.
    """
    config = project.config
    storage = (config.storage.warehouse, config.storage.models)
    if config.warehouse_path.exists() or any(path.is_absolute() for path in storage):
        return bootstrap_champion(config, _example_history(), FIRST_NIGHT)
    key = project.config_path.read_text()
    if key not in _CHAMPIONS:
        template = make_project(_champions_root() / f"config{len(_CHAMPIONS)}", yaml.safe_load(key))
        bootstrap_champion(template.config, _example_history(), FIRST_NIGHT)
        _CHAMPIONS[key] = template.root
    template_root = _CHAMPIONS[key]
    for relative in storage:
        source, target = template_root / relative, project.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
            assert not source.with_name(source.name + ".wal").exists(), "the template's warehouse was not checkpointed"
    return champion_of(project)


def champion_of(project: Project) -> ModelRecord:
    """The project's champion on FIRST_NIGHT, as the registry has it."""
    with warehouse.connect(project.config.warehouse_path) as connection:
        record = registry.alias_record(connection, registry.CHAMPION, FIRST_NIGHT)
    assert record is not None, f"{project.root} has no champion on {FIRST_NIGHT}"
    return record


def _example_history() -> pl.DataFrame:
    return simulator.simulate_history(FIRST_NIGHT - dt.timedelta(days=1), days=20, rows_per_day=500, seed=3)


def _champions_root() -> Path:
    global _CHAMPIONS_ROOT
    if _CHAMPIONS_ROOT is None:
        _CHAMPIONS_ROOT = Path(tempfile.mkdtemp(prefix="nightkeeper-test-champions-"))
        atexit.register(shutil.rmtree, _CHAMPIONS_ROOT, ignore_errors=True)
    return _CHAMPIONS_ROOT


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
