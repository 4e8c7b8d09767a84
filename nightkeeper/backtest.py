"""Replay history night by night through the pipeline core, with a simulated clock and no Dagster run per step.

``run_backtest`` is what ``nightkeeper backtest`` runs. Given a project config, a labeled history file, a folder of
nightly batches and a folder of labels, it builds a normal project under ``out_dir`` (its own config, warehouse,
models and staged labels), trains the first champion on the history, and then for each night, in order:

1. stages the label files that have arrived by that night (labels of night D arrive ``label_delay`` nights later:
   they are copied into ``out_dir/labels/<arrival night>/``, the layout the ``labels`` step reads, so no step can see
   a label before its arrival);
2. calls the nightly job's steps (nightkeeper.pipeline) in the order the Dagster in-process executor runs
   ``nightly_batch``, storing each partition table with ``warehouse.store_partition`` exactly as the IO manager does;
3. scores the night's validated rows with the first champion too (never served): the counterfactual "first
   champion left alone", stored in ``backtest.first_champion_scores``;
4. makes the decisions the sensors and schedules make after that night (retrain on open alerts, start the shadow of an
   approved candidate, the rollout step, the monthly retrain) and carries them out through the lifecycle core,
   effective from the next night as the sensors' runs are.

Every night's tables are therefore the ones a Dagster night would have written on the same input
(tests/test_backtest_equivalence.py compares them table by table). What the backtest skips: the model-card notebook
of each candidate and the monthly review notebooks (reports for people, seconds each), and sensor cursors / run
keys (each decision is taken once, in order). Afterwards ``summary.json`` and ``report.html`` are written.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import duckdb
import lightgbm as lgb
import polars as pl
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nightkeeper import backtest_report, labels, registry, warehouse
from nightkeeper.artifacts import load_verified
from nightkeeper.config import ProjectConfig, load_config
from nightkeeper.models import train_first_champion
from nightkeeper.pipeline import lifecycle as lifecycle_steps
from nightkeeper.pipeline import metadata_keys as keys
from nightkeeper.pipeline import monitoring as monitoring_steps
from nightkeeper.pipeline import nightly as nightly_steps
from nightkeeper.pipeline.step import StepResult
from nightkeeper.scoring import score_batch
from nightkeeper.training_data import read_history_file
from nightkeeper.warehouse import NIGHTLY_SCHEMA, store_partition

Cadence = Literal["daily", "weekly"]
CADENCE_DAYS: dict[str, int] = {"daily": 1, "weekly": 7}
MARKER = ".nightkeeper-backtest"  # written into out_dir: only a folder carrying it is ever cleared by a later backtest
CONFIG_NAME = "nightkeeper.yaml"
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.html"
MONTHLY_TRIGGER = lifecycle_steps.SCHEDULED_TRIGGER
BOOTSTRAP_ACTOR = "backtest"  # who the alias log says made the first champion
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class BacktestResult:
    """Where the backtest wrote its project and reports, and the summary it computed."""

    out_dir: Path
    config_path: Path
    summary_path: Path
    report_path: Path
    summary: dict[str, Any]


def run_backtest(
    config: ProjectConfig,
    history_file: Path,
    batches_dir: Path,
    labels_dir: Path,
    label_delay: int,
    cadence: Cadence,
    out_dir: Path,
    progress: bool = True,
    skip_reason_codes: bool = False,
) -> BacktestResult:
    """Replay every night of ``batches_dir`` (files laid out per ``config.source.pattern``) from a first champion
    trained on ``history_file``; write the project, ``summary.json`` and ``report.html`` under ``out_dir``.

    ``labels_dir`` holds one ``YYYY-MM-DD`` folder per scoring night with label files for that night's rows (the
    contract's entity id and target, as ``nightkeeper.labels`` reads them: e.g. ``simulator.simulate_to_folders`` or
    ``worlds.write_world`` with a label delay of 0); they become visible ``label_delay`` nights (of the cadence) later,
    staged into the project's labels folder in the production layout (one folder per arrival day).
    ``cadence`` is written into the project's ``schedule.cadence``. ``out_dir`` must be empty, missing, or the
    output of an earlier backtest (which is replaced). Raises ValueError
    for a bad argument, naming it. ``skip_reason_codes`` leaves out the ``reason_codes`` step (exact TreeSHAP, the
    costliest step of a night), which no decision reads: for replaying faster while tuning thresholds.
    """
    if cadence not in CADENCE_DAYS:
        raise ValueError(f"cadence must be one of {sorted(CADENCE_DAYS)}, got {cadence!r}")
    if label_delay < 0:
        raise ValueError(f"label_delay must be >= 0 nights, got {label_delay}")
    for name, folder in (("batches_dir", batches_dir), ("labels_dir", labels_dir)):
        if not Path(folder).is_dir():
            raise ValueError(f"{name}: {folder} is not a folder")
    if not Path(history_file).is_file():
        raise ValueError(f"history_file: {history_file} is not a file")
    step = dt.timedelta(days=CADENCE_DAYS[cadence])
    nights = replay_nights(Path(batches_dir), config.source.pattern, step)
    out_dir = _fresh_out_dir(Path(out_dir))
    project = _project_config(config, Path(batches_dir), out_dir, nights[0], cadence)
    console = Console(quiet=not progress)

    replay = _Replay(project, Path(labels_dir), nights, step, label_delay * step, explain=not skip_reason_codes)
    with warehouse.connect(project.warehouse_path) as connection:
        first = replay.bootstrap(connection, Path(history_file))
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not progress,
        )
        with bar:
            task = bar.add_task("backtest", total=len(nights))
            for night in nights:
                replay.run_night(connection, night)
                bar.update(task, advance=1, description=f"night {night}")
        replay.store_counterfactual(connection)
        summary = backtest_report.summarize(
            connection,
            nights,
            first.version,
            replay.truth(),
            replay.timing,
            {
                "project": project.name,
                "history_file": str(history_file),
                "history_rows": replay.history_rows,
                "batches_dir": str(batches_dir),
                "labels_dir": str(labels_dir),
                "label_delay": label_delay,
                "cadence": cadence,
            },
        )
    summary_path = backtest_report.write_summary(summary, out_dir / SUMMARY_NAME)
    report_path = backtest_report.write_report(summary, out_dir / REPORT_NAME)
    return BacktestResult(out_dir, project.root / CONFIG_NAME, summary_path, report_path, summary)


def replay_nights(batches_dir: Path, pattern: str, step: dt.timedelta) -> list[dt.date]:
    """Every night from the first to the last dated batch under ``batches_dir``, ``step`` apart (a night with no
    file is replayed as an empty night). Raises ValueError when no file matches ``pattern``."""
    dates = sorted(
        {
            dt.date.fromisoformat(found.group())
            for path in batches_dir.glob(pattern.format(date="*"))
            if path.is_file() and (found := _DATE.search(str(path.relative_to(batches_dir))))
        }
    )
    if not dates:
        raise ValueError(f"batches_dir: no file under {batches_dir} matches the source pattern {pattern!r}")
    nights = [dates[0]]
    while nights[-1] + step <= dates[-1]:
        nights.append(nights[-1] + step)
    return nights


class _Replay:
    """The state of one replay: the project, the label arrival plan, the counterfactual and the timings."""

    def __init__(
        self,
        config: ProjectConfig,
        labels_dir: Path,
        nights: list[dt.date],
        step: dt.timedelta,
        delay: dt.timedelta,
        explain: bool = True,
    ) -> None:
        self.config, self.labels_dir, self.nights, self.delay, self.explain = config, labels_dir, nights, delay, explain
        self.pending = self._label_folders()  # (scoring night, folder) not yet staged, oldest first
        self.first: registry.ModelRecord | None = None
        self.first_booster: lgb.Booster | None = None
        self.counterfactual: list[pl.DataFrame] = []
        self.history_rows: dict[str, int] = {}
        self.timing = backtest_report.ReplayTiming()
        self.results: dict[str, StepResult] = {}  # tonight's step results by step name
        self.automation = _Automation(config, step)

    def bootstrap(self, connection: duckdb.DuckDBPyConnection, history_file: Path) -> registry.ModelRecord:
        """The first champion, as ``nightkeeper train --history`` makes it: the history checked against the contract,
        trained, gated by the behaviour tests, champion from the first night and kept for every later retrain window.
        Raises ValueError when the history cannot be used or the model fails a behaviour test."""
        history = read_history_file(history_file, self.config.contract, root=self.config.root)
        self.history_rows = {"file_rows": history.file_rows, "usable_rows": history.rows.height}
        first = train_first_champion(self.config, connection, history, actor=BOOTSTRAP_ACTOR)
        if first.record is None:
            failed = "; ".join(f"{name}: {c.description}" for name, c in first.checks.items() if not c.passed)
            raise ValueError(f"history_file: the model trained on {history_file} failed its behaviour tests ({failed})")
        self.first, self.first_booster = first.record, load_verified(first.record)
        return first.record

    def run_night(self, connection: duckdb.DuckDBPyConnection, night: dt.date) -> None:
        """One night: stage arrived labels, run the nightly steps, score the counterfactual, then decide and act."""
        started, cpu = time.perf_counter(), time.process_time()
        self._stage_labels(night)
        step = self._timed_step(connection, night)
        raw = step("ingest", nightly_steps.ingest_night)["raw_batch"]
        validated = step("validate", nightly_steps.validate_night, raw)
        rows, quarantine = validated["validated_batch"], validated["quarantine"]
        scored = step("score", nightly_steps.score_night, rows)["scored_batch"]
        # the order of the Dagster in-process executor for nightly_batch (ties between independent steps included)
        # the steps' PNGs for the Dagster UI cost about a second a night each; the backtest draws its own report
        step("drift", monitoring_steps.drift_night, rows, scored, plots=False)
        shadow = step("shadow", nightly_steps.shadow_night, rows, scored)
        outcomes = step("answer", nightly_steps.answer_night, raw, quarantine, scored, shadow["shadow_scores"])[
            "outcomes"
        ]
        if self.explain:
            step("explain", nightly_steps.explain_night, rows, outcomes)
        step("labels", monitoring_steps.labels_night)
        step("review_queue", monitoring_steps.review_queue_night, outcomes, quarantine)
        step("performance", monitoring_steps.performance_night, plots=False)
        step("alerts", monitoring_steps.alerts_night)
        clock = time.perf_counter()
        self._score_counterfactual(night, rows, scored)
        self._add_time("counterfactual", time.perf_counter() - clock)
        clock = time.perf_counter()
        if self.automation.after_night(connection, night, self.results["shadow"], self.results["alerts"]):
            self.timing.retrain_nights.add(night)
        self._add_time("decisions and lifecycle", time.perf_counter() - clock)
        self.timing.wall[night] = time.perf_counter() - started
        self.timing.cpu[night] = time.process_time() - cpu

    def _timed_step(
        self, connection: duckdb.DuckDBPyConnection, night: dt.date
    ) -> Callable[..., dict[str, pl.DataFrame]]:
        """A caller of the night's steps: runs one, stores its partition tables, keeps its result and its time."""
        self.results = {}

        def step(
            name: str, function: Callable[..., StepResult], *inputs: pl.DataFrame, **options: Any
        ) -> dict[str, pl.DataFrame]:
            clock = time.perf_counter()
            result = function(self.config, connection, night, *inputs, **options)
            for table, frame in result.tables.items():
                store_partition(connection, NIGHTLY_SCHEMA, table, night, frame)
            self.results[name] = result
            self._add_time(name, time.perf_counter() - clock)
            return result.tables

        return step

    def _add_time(self, name: str, seconds: float) -> None:
        self.timing.by_step.setdefault(name, []).append(seconds)

    def store_counterfactual(self, connection: duckdb.DuckDBPyConnection) -> None:
        frame = (
            pl.concat(self.counterfactual)
            if self.counterfactual
            else pl.DataFrame(schema=backtest_report.FIRST_CHAMPION_SCHEMA)
        )
        connection.register("__first_champion", frame.cast(backtest_report.FIRST_CHAMPION_SCHEMA).to_arrow())
        connection.execute(f"create schema if not exists {backtest_report.SCHEMA}")
        connection.execute(
            f"create or replace table {backtest_report.FIRST_CHAMPION_TABLE} as select * from __first_champion"
        )
        connection.unregister("__first_champion")

    def truth(self) -> pl.DataFrame:
        """Every supplied label (valid 0/1 values), whether or not the replay reached its arrival."""
        frames = [
            labels.read_label_file(path, self.config.contract).select("entity_id", "label").drop_nulls()
            for _, folder in self._label_folders()
            for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix in labels.LABEL_SUFFIXES
        ]
        return pl.concat(frames) if frames else pl.DataFrame(schema=backtest_report.TRUTH_SCHEMA)

    def _label_folders(self) -> list[tuple[dt.date, Path]]:
        return sorted(
            (dt.date.fromisoformat(folder.name), folder)
            for folder in self.labels_dir.iterdir()
            if folder.is_dir() and _DATE.fullmatch(folder.name)
        )

    def _stage_labels(self, night: dt.date) -> None:
        """Copy the label folders that have arrived by ``night`` into the project's labels folder under ``night``
        (their arrival date), keeping the scoring night in the file name so names never collide."""
        while self.pending and self.pending[0][0] + self.delay <= night:
            scored_on, folder = self.pending.pop(0)
            target = self.config.labels_path / night.isoformat()
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix in labels.LABEL_SUFFIXES:
                    shutil.copyfile(path, target / f"{scored_on.isoformat()}-{path.name}")

    def _score_counterfactual(self, night: dt.date, validated: pl.DataFrame, scored: pl.DataFrame) -> None:
        """The first champion's scores on tonight's validated rows; reused from the served scores when it served."""
        assert self.first is not None and self.first_booster is not None  # set by bootstrap, before any night
        if (
            scored.height
            and scored["model_version"].drop_nulls().unique().to_list() == [self.first.version]
            and scored["model_error"].null_count() == scored.height
        ):
            frame = scored
        else:
            settings = self.config.model
            frame = score_batch(
                validated, self.first_booster, self.first.card, settings.chunk_rows, settings.time_budget_seconds
            ).frame
        self.counterfactual.append(frame.select(*backtest_report.FIRST_CHAMPION_SCHEMA))


class _Automation:
    """The decisions the sensors and the monthly schedule take after a night, through the same pure functions
    (nightkeeper.pipeline.lifecycle), in the order the sensors are evaluated (retrain on alerts, shadow start of an
    approved candidate, rollout step, then the monthly retrain at 04:00); each is carried out at once through the
    lifecycle steps, as the run the sensor requests would be. The books the sensors read from the event log (open
    alerts, the latest evaluation, the challenger, the last retrain) are kept here from the steps' metadata."""

    def __init__(self, config: ProjectConfig, step: dt.timedelta) -> None:
        self.config, self.step = config, step
        self.state = lifecycle_steps.LifecycleState()

    def after_night(
        self, connection: duckdb.DuckDBPyConnection, night: dt.date, shadow: StepResult, alerts: StepResult
    ) -> bool:
        """Decide and act after ``night`` (the last one too: the warehouse ends as production's would the morning
        after); returns whether a retrain was attempted."""
        challenger = shadow.metadata.get(keys.SHADOW_CHALLENGER, keys.NONE)
        self.state = replace(
            self.state,
            open_alerts=tuple(
                lifecycle_steps.OpenAlert.from_metadata(a) for a in alerts.metadata.get(keys.ALERTS_OPEN) or []
            ),
            challenger=None if challenger == keys.NONE else challenger,
            latest_scored_night=night,
        )
        policy = self.config.lifecycle
        retrained = self._retrain(connection, night, lifecycle_steps.decide_retrain(self.state, night, policy))
        self._apply(connection, lifecycle_steps.rollout_request(shadow.metadata))
        # the monthly schedule ticks on each 1st before the next night's run, looking back from the day before; the
        # schedule reads no alerts, so it asks the policy with its own trigger only
        for days in range(1, self.step.days + 1):
            tick = night + dt.timedelta(days=days)
            if tick.day == 1:
                as_of = tick - dt.timedelta(days=1)
                monthly = lifecycle_steps.decide_retrain(
                    replace(self.state, open_alerts=()), as_of, policy, MONTHLY_TRIGGER
                )
                retrained |= self._retrain(connection, as_of, monthly)
        return retrained

    def _retrain(
        self, connection: duckdb.DuckDBPyConnection, as_of: dt.date, decision: lifecycle_steps.RetrainDecision
    ) -> bool:
        """The retrain job (train, then judge against the champion) when ``decision`` says so, then the shadow start."""
        if not decision.retrain:
            return False
        trained = lifecycle_steps.train_candidate(self.config, connection, as_of, decision.trigger)
        self.state = replace(self.state, last_retrain_night=as_of)
        if trained.metadata.get(keys.CANDIDATE_STATUS) != lifecycle_steps.REFUSED:
            self.state = replace(self.state, last_candidate_night=as_of)
        # the candidate's behaviour checks are blocking: a failed ERROR check stops the evaluation, as in the job
        if any(not c.passed and c.severity == "ERROR" for c in trained.checks.values()):
            return True
        evaluation = lifecycle_steps.Evaluation.from_metadata(
            lifecycle_steps.evaluate_candidate(self.config, connection, as_of).metadata
        )
        self.state = replace(self.state, latest_evaluation=evaluation)
        self._apply(connection, lifecycle_steps.decide_shadow_start(evaluation))
        return True

    def _apply(self, connection: duckdb.DuckDBPyConnection, request: lifecycle_steps.RegistryRequest | str) -> None:
        if isinstance(request, lifecycle_steps.RegistryRequest):
            lifecycle_steps.apply_registry_change(self.config, connection, request.change, request.effective)


def _fresh_out_dir(out_dir: Path) -> Path:
    """``out_dir`` ready for a new backtest: created if missing, cleared if an earlier backtest made it."""
    out_dir = out_dir.resolve()
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"out_dir: {out_dir} is a file, not a folder")
        if any(out_dir.iterdir()):
            if not (out_dir / MARKER).exists():
                raise ValueError(
                    f"out_dir: {out_dir} is not empty and was not written by a backtest; choose an empty or new folder"
                )
            shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by nightkeeper backtest; a later backtest to this folder replaces it\n")
    return out_dir


def _project_config(
    config: ProjectConfig, batches_dir: Path, out_dir: Path, first_night: dt.date, cadence: Cadence
) -> ProjectConfig:
    """The backtest's own project config, written to ``out_dir``: the user's settings, with the landing folder at
    ``batches_dir``, every store (warehouse, models, staged labels, Dagster home) under ``out_dir``, and evidently's
    nightly report off."""
    raw = config.model_dump(mode="json")
    raw["source"] |= {"landing": str(batches_dir.resolve()), "labels": "labels"}
    raw["storage"] = {"warehouse": "warehouse.duckdb", "models": "models", "dagster_home": "dagster"}
    raw["schedule"] |= {"start_date": first_night.isoformat(), "cadence": cadence}
    # evidently's per-night HTML report costs seconds a night; the backtest draws its own report
    raw["monitoring"]["drift"]["evidently_report"] = False
    path = out_dir / CONFIG_NAME
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)
