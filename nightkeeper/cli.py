"""The ``nightkeeper`` command line: simulate, bootstrap, run the demo, check a config, open the UI."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from nightkeeper.config import ConfigError, ProjectConfig, default_config_path, load_config
from nightkeeper.project_root import ProjectRootMissing, require_project_root
from nightkeeper.warehouse import Lake

if TYPE_CHECKING:
    import duckdb

    from jobs.nights import NightRun

app = typer.Typer(help="Keep a tabular ML model trustworthy in nightly batch production.", no_args_is_help=True)
console = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Project config (default: $NIGHTKEEPER_CONFIG or ./nightkeeper.yaml)."),
]


def _config_path(config: Path | None) -> Path:
    return (config or default_config_path()).resolve()


def _load(config: Path | None) -> ProjectConfig:
    try:
        return load_config(_config_path(config))
    except ConfigError as exc:
        console.print(f"[red]invalid config[/]\n{exc}")
        raise typer.Exit(2) from None


def _dagster_layer() -> None:
    """Make the project root's Dagster layer (``assets/``, ``jobs/``) importable for the running command, or end the
    command (exit code 2) saying where to run it from: ``pip install`` does not put that layer in site-packages."""
    try:
        root = require_project_root("This command runs Nightkeeper's Dagster layer (assets/, jobs/), which")
    except ProjectRootMissing as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


@contextmanager
def _warehouse(project: ProjectConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse for a command: waits while a run holds it, saying who (jobs/warehouse_wait.py), and after
    ``storage.lock_wait_seconds`` ends the command with exit code 75 and that message instead of a lock traceback."""
    _dagster_layer()
    from jobs.warehouse_wait import WarehouseBusy, command_connection

    try:
        with command_connection(project) as connection:
            yield connection
    except WarehouseBusy as exc:  # raised only while connecting: the command has not started its work
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(75) from None


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the project config, and that its decision agrees with the serving champion's card; print what it
    describes."""
    project = _load(config)
    champion_note = "no warehouse yet"
    if isinstance(project.warehouse, Lake) or project.warehouse_path.exists():
        from nightkeeper.config_check import decision_conflicts, serving_champion

        with _warehouse(project) as connection:
            champion = serving_champion(connection)
        if champion is not None:
            problems = decision_conflicts(project, champion.card)
            if problems:
                console.print(
                    f"[red]config disagrees with the serving champion[/] ({_config_path(config)})", soft_wrap=True
                )
                for problem in problems:
                    console.print(f"  {problem}", soft_wrap=True)
                raise typer.Exit(2)
        champion_note = (
            f"decision agrees with champion {champion.version}" if champion else "no champion registered yet"
        )
    console.print(
        f"[green]ok[/] {_config_path(config)}: project {project.name!r}, {len(project.contract.features)} features, "
        f"{len(project.contract.rules)} cross-field rule(s), threshold {project.model.decision.threshold}; "
        f"{champion_note}",
        soft_wrap=True,
    )
    for line in project.defaults_applied:
        console.print(f"[yellow]warning[/] {line}", soft_wrap=True)


@app.command()
def init(
    sample: Annotated[Path, typer.Option("--sample", help="A Parquet or CSV sample of your data, labeled.")],
    target: Annotated[str, typer.Option("--target", help="The label column (0/1 or true/false).")],
    id_column: Annotated[
        str | None, typer.Option("--id", help="The row id column; default: a unique column named like an id.")
    ] = None,
    time_column: Annotated[
        str | None,
        typer.Option(
            "--time",
            help="The event time column: gives the nights, and so the "
            "rows per night every size setting is derived from.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write; default nightkeeper.yaml next to the sample.")
    ] = None,
) -> None:
    """Draft a project config from a sample of your data: dtypes, categories, ranges, nulls and sizes, with comments
    on every placeholder. `check-config` accepts it unchanged; read it before going live."""
    from nightkeeper.draft import DraftError, write_draft

    try:
        written = write_draft(sample, target, id_column, time_column, out)
    except (DraftError, ProjectRootMissing) as exc:
        console.print(f"[red]cannot draft a config:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    project = _load(written)
    console.print(
        f"[green]wrote[/] {written}: {len(project.contract.features)} features, entity id "
        f"{project.contract.entity_id!r}; read its comments, then `nightkeeper check-config --config {written}`",
        soft_wrap=True,
    )


@app.command()
def simulate(
    config: ConfigOption = None,
    nights: Annotated[int, typer.Option(help="Nights to simulate.")] = 30,
    start: Annotated[
        str | None, typer.Option(help="First night (YYYY-MM-DD); default: the config's schedule.start_date.")
    ] = None,
    rows: Annotated[int, typer.Option(help="Applications per night.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 7,
    bad_night: Annotated[int | None, typer.Option(help="Index (0-based) of a bad-data night, if any.")] = None,
    label_delay: Annotated[int, typer.Option(help="Days until a night's labels land.")] = 7,
) -> None:
    """Write simulated credit applications (one Parquet file per night) and their late labels to the config's
    folders."""
    from nightkeeper.examples import simulator

    project = _load(config)
    first = dt.date.fromisoformat(start) if start else project.schedule.start_date
    plan = simulator.ScenarioPlan.bad_data_at(bad_night) if bad_night is not None else simulator.ScenarioPlan.clean()
    written = simulator.simulate_to_folders(
        first, nights, rows, seed, plan, project.landing_path, project.labels_path, label_delay_days=label_delay
    )
    console.print(
        f"wrote {len(written)} nights ({written[0]} … {written[-1]}) to {project.landing_path}, labels to "
        f"{project.labels_path}"
    )


@app.command()
def world(
    name: Annotated[
        str,
        typer.Argument(
            help="The scenario world: base-rate-drift, duplicate-codes, vanishing-category, "
            "seasonal-shares, weak-model, small-nights or support-tickets (the docs' example)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the config, history, batches/ and labels/ into.")],
    nights: Annotated[int | None, typer.Option(help="Batch nights; default: the world's own.")] = None,
    rows: Annotated[int | None, typer.Option(help="Rows per night; default: the world's own.")] = None,
    start: Annotated[str | None, typer.Option(help="First batch night (YYYY-MM-DD); default 2026-01-01.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    cadence: Annotated[str, typer.Option(help="daily or weekly batches.")] = "daily",
    label_delay: Annotated[
        int,
        typer.Option(
            help="Batch nights until a night's labels land: labels/ is filed by arrival day, "
            "as a production labels folder; 0 files each night's labels under that "
            "night, the layout `backtest --labels` expects."
        ),
    ] = 5,
    file_format: Annotated[str, typer.Option("--format", help="parquet or csv files.")] = "parquet",
) -> None:
    """Write a synthetic non-credit dataset: a labeled history, nightly batch files, late label files and a project
    config listing its columns (see nightkeeper/examples/worlds.py for what each world exercises)."""
    from nightkeeper.examples.worlds import WORLDS, write_world

    if name not in WORLDS:
        console.print(f"[red]unknown world {name!r}[/]; worlds are {', '.join(WORLDS)}")
        raise typer.Exit(2)
    overrides: dict[str, object] = {"seed": seed, "cadence": cadence}
    if nights is not None:
        overrides["nights"] = nights
    if rows is not None:
        overrides["rows_per_night"] = rows
    if start is not None:
        overrides["start"] = dt.date.fromisoformat(start)
    try:
        built = WORLDS[name](**overrides)
        files = write_world(built, out, label_delay=label_delay, file_format=file_format)  # type: ignore[arg-type]
    except (ValueError, ProjectRootMissing) as exc:
        console.print(f"[red]cannot write world {name!r}:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(
        f"wrote {name}: config {files.config}, history {files.history}, {len(files.nights)} nights "
        f"({files.nights[0]} … {files.nights[-1]}) in {files.batches}, labels {label_delay} nights late in "
        f"{files.labels}",
        soft_wrap=True,
    )


@app.command()
def bootstrap(
    config: ConfigOption = None,
    history_days: Annotated[int, typer.Option(help="Days of simulated labeled history to train on.")] = 60,
    rows_per_day: Annotated[int, typer.Option(help="Applications per history day.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Train the first champion on simulated history, register it, and make it champion from the first night on."""
    from nightkeeper.examples import simulator
    from nightkeeper.models import register_bootstrap_champion
    from nightkeeper.training import train_model

    project = _load(config)
    start = project.schedule.start_date
    history = simulator.simulate_history(start - dt.timedelta(days=1), history_days, rows_per_day, seed)
    trained = train_model(history, project)
    with _warehouse(project) as connection:
        record = register_bootstrap_champion(connection, trained, project, start)
    console.print(
        f"champion {record.version} registered (holdout AUC {record.card.holdout_metrics['auc']:.3f}), serving from "
        f"{start}"
    )


@app.command()
def train(
    history: Annotated[
        Path,
        typer.Option(
            "--history",
            help="Your labeled history (Parquet or CSV): the contract's id, target, features and a date per row.",
        ),
    ],
    config: ConfigOption = None,
    date_column: Annotated[
        str | None,
        typer.Option("--date-column", help="The column giving each row's date; default: the contract's event_time."),
    ] = None,
) -> None:
    """Train the first champion on your labeled history: rows checked against the contract (bad rows reported and left
    out), the behaviour tests as a gate, then registered and champion from schedule.start_date. The history is kept in
    the warehouse and is part of every later retrain window."""
    from nightkeeper.models import train_first_champion
    from nightkeeper.training_data import HistoryFileError, read_history_file

    project = _load(config)
    try:
        checked = read_history_file(history.resolve(), project.contract, date_column, project.root)
    except HistoryFileError as exc:
        console.print(f"[red]cannot use the history:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    left_out = checked.file_rows - checked.rows.height
    console.print(
        f"{history}: {checked.file_rows:,} rows, {checked.rows.height:,} usable, {left_out:,} left out", soft_wrap=True
    )
    if left_out:
        table = Table(
            "column",
            "rule",
            "rows",
            "example",
            "expected",
            title="Rows left out (fix them and run again to use them)",
            box=box.SIMPLE,
        )
        for row in checked.rejected_summary().head(20).iter_rows(named=True):
            table.add_row(row["column"], row["rule"], f"{row['rows']:,}", str(row["example"]), row["expected"])
        console.print(table)
    try:
        with _warehouse(project) as connection:
            result = train_first_champion(project, connection, checked)
    except ValueError as exc:
        console.print(f"[red]cannot train:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    for name, outcome in result.checks.items():
        console.print(
            f"  {'[green]pass[/]' if outcome.passed else '[red]FAIL[/]'} {name}: {outcome.description}", soft_wrap=True
        )
    if result.record is None:
        console.print("[red]no champion:[/] a behaviour test failed; nothing was registered", soft_wrap=True)
        raise typer.Exit(1)
    card = result.record.card
    console.print(
        f"[green]champion {card.version}[/] (holdout AUC {card.holdout_metrics['auc']:.3f}, "
        f"{card.training_window.rows:,} training rows), serving from {project.schedule.start_date}",
        soft_wrap=True,
    )


@app.command()
def demo(
    folder: Annotated[
        Path,
        typer.Option(
            "--dir",
            help="The demo's own folder: its config (a copy of the credit example "
            "unless one is there) and all its storage. $NIGHTKEEPER_CONFIG is never read.",
        ),
    ] = Path("demo"),
    reset: Annotated[
        list[Path] | None,
        typer.Option(
            "--reset",
            help="Storage path the demo may delete although it did "
            "not create it (repeatable); without it such storage is refused.",
        ),
    ] = None,
    nights: Annotated[int, typer.Option(help="Nights to simulate and run.")] = 30,
    rows: Annotated[int, typer.Option(help="Applications per night.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    bad_night: Annotated[int, typer.Option(help="Index (0-based) of the bad-data night.")] = 3,
    drift_night: Annotated[int, typer.Option(help="Index (0-based) of the first night of concept drift.")] = 6,
) -> None:
    """In its own folder: reset the demo's storage, simulate nights and drive them through the real Dagster schedule,
    job and sensors."""
    _dagster_layer()
    from jobs.demo import DemoPlan, StorageNotOwned, run_demo

    plan = DemoPlan(
        nights=nights, rows_per_night=rows, seed=seed, bad_data_night=bad_night, concept_drift_night=drift_night
    )
    try:
        path, summary = run_demo(folder, plan, console, reset or ())
    except StorageNotOwned as exc:
        console.print(f"[red]refused:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    project = _load(path)
    table = Table(
        title="Nights (rows answered by model, canary, fallback; quarantined; undecided; serving version)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("night", "rows", "model", "canary", "quar.", "fallb.", "undec.", "version", "✗chk"):
        table.add_column(
            column, justify="left" if column in ("night", "version") else "right", no_wrap=True, min_width=len(column)
        )
    for row in summary.iter_rows(named=True):
        failed = [name for name in (row["failed_checks"] or "").split(", ") if name]
        table.add_row(
            str(row["night"]),
            f"{row['rows']:,}",
            f"{row['model']:,}",
            f"{row['canary']:,}",
            f"{row['quarantined']:,}",
            f"{row['fallback']:,}",
            f"{row['undecided']:,}",
            (row["model_version"] or "-")[:8],
            str(len(failed)) if failed else "",
        )
    console.print(table)
    for row in summary.filter(summary["failed_checks"].str.len_chars() > 0).iter_rows(named=True):
        console.print(f"  {row['night']}: failed checks: {row['failed_checks']}", soft_wrap=True)
    console.print(
        f"Warehouse: {project.warehouse}\n"
        f"See every run, asset, check and its metadata in the Dagster UI (dagster dev):\n"
        f"  [bold]{Path(sys.executable).parent / 'nightkeeper'} ui --config {path}[/]",
        soft_wrap=True,
    )


def _night(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        console.print(f"[red]{option}: found {text!r}; expected a date YYYY-MM-DD[/]")
        raise typer.Exit(2) from None


def _print_night_runs(runs: list[NightRun], home: Path) -> None:
    for run in runs:
        status = "[green]ok[/]" if run.success else "[red]FAILED[/]"
        checks = f"; failed checks: {', '.join(run.failed_checks)}" if run.failed_checks else ""
        console.print(f"  {run.partition}: {status} run {run.run_id}{checks}", soft_wrap=True)
    console.print(f"Runs are in the Dagster instance at {home} (`nightkeeper ui` shows them).", soft_wrap=True)


@app.command()
def run(
    night: Annotated[
        str, typer.Option("--night", help="The night (YYYY-MM-DD); with a weekly cadence, any day of the week.")
    ],
    config: ConfigOption = None,
) -> None:
    """Run one night through the nightly job now: a real Dagster run on the config's instance, shown in the UI."""
    _dagster_layer()
    from jobs.nights import run_night

    project = _load(config)
    try:
        result = run_night(_config_path(config), _night(night, "--night"))
    except ValueError as exc:
        console.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    _print_night_runs([result], project.dagster_home)
    if not result.success:
        raise typer.Exit(1)


@app.command()
def backfill(
    first: Annotated[str, typer.Option("--from", help="First night (YYYY-MM-DD).")],
    last: Annotated[str, typer.Option("--to", help="Last night (YYYY-MM-DD), inclusive.")],
    config: ConfigOption = None,
) -> None:
    """Run every night from --from to --to in order, as one Dagster backfill on the config's instance (the UI's
    Backfills page lists it with its runs)."""
    _dagster_layer()
    from jobs.nights import backfill_nights

    project = _load(config)
    try:
        done = backfill_nights(_config_path(config), _night(first, "--from"), _night(last, "--to"))
    except ValueError as exc:
        console.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    failed = sum(not run.success for run in done.runs)
    console.print(f"backfill {done.backfill_id}: {len(done.runs)} run(s), {failed} failed")
    _print_night_runs(done.runs, project.dagster_home)
    if failed:
        raise typer.Exit(1)


@app.command()
def ui(config: ConfigOption = None) -> None:
    """Open the Dagster UI (``dagster dev``) on the config's Dagster home, with a workspace naming that config."""
    project = _load(config)
    _dagster_layer()
    from jobs.instance import write_workspace

    workspace = write_workspace(_config_path(config), project.dagster_home)
    env = {**os.environ, "DAGSTER_HOME": str(project.dagster_home)}
    dagster = str(Path(sys.executable).parent / "dagster")
    os.execvpe(dagster, [dagster, "dev", "-w", str(workspace)], env)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address the webserver listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the webserver listens on.")] = 3000,
    config: ConfigOption = None,
) -> None:
    """Run the project in production on this machine: ``dagster-webserver`` and ``dagster-daemon`` on the config's
    Dagster home, so schedules and sensors run by themselves; stops both on Ctrl-C or SIGTERM."""
    project = _load(config)
    _dagster_layer()
    from jobs.serve import serve as serve_project

    raise typer.Exit(serve_project(_config_path(config), project.dagster_home, host, port))


@app.command()
def backtest(
    history: Annotated[Path, typer.Option(help="Labeled history (Parquet or CSV) the first champion is trained on.")],
    batches: Annotated[
        Path, typer.Option(help="Folder of nightly batch files, laid out per the config's source.pattern.")
    ],
    labels: Annotated[
        Path,
        typer.Option(
            help="Folder of label files: one YYYY-MM-DD folder per scoring night, holding the "
            "labels of that night's rows (entity id and target); the backtest delays them."
        ),
    ],
    label_delay: Annotated[
        int, typer.Option(help="Nights (of the cadence) after which a night's labels become visible.")
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for the backtest's project, warehouse, summary.json and report.html.")
    ],
    cadence: Annotated[
        str | None,
        typer.Option(
            help="daily or weekly: the replayed nights are this far apart (default: the config's schedule.cadence)."
        ),
    ] = None,
    skip_reason_codes: Annotated[
        bool,
        typer.Option(
            "--skip-reason-codes",
            help="Leave out the reason codes step (no decision reads it): a faster replay while tuning thresholds.",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Replay the batches night by night through the pipeline core, with the sensors' decisions and labels arriving
    late, and report what would have happened against the first champion left alone."""
    from nightkeeper.backtest import Cadence, run_backtest

    project = _load(config)
    try:
        result = run_backtest(
            project,
            history,
            batches,
            labels,
            label_delay,
            cast(Cadence, cadence or project.schedule.cadence),  # run_backtest refuses a value that is no cadence
            out,
            skip_reason_codes=skip_reason_codes,
        )
    except ValueError as exc:
        console.print(f"[red]backtest refused:[/] {exc}")
        raise typer.Exit(2) from None
    summary = result.summary
    nights, timing, lag = summary["nights"], summary["timing"], summary["label_lag_days"]
    step = 7 if summary["settings"]["cadence"] == "weekly" else 1
    if lag and lag["median"] > label_delay * step:
        console.print(
            f"[yellow]labels arrived {lag['median']:g} days after their night (median), more than --label-delay "
            f"{label_delay}: is {labels} laid out by arrival day already? Give one folder per scoring night.[/]",
            soft_wrap=True,
        )
    table = Table(title="Served vs first champion left alone (realized AUC, pooled per block)", box=box.SIMPLE_HEAD)
    for column in ("nights", "labeled", "served", "first champion", "difference"):
        table.add_column(column, justify="left" if column == "nights" else "right")
    for block in summary["blocks"]:
        table.add_row(
            f"{block['first_night']} … {block['last_night']}",
            f"{block['labeled_rows']:,}",
            *(
                ("–" if block[k] is None else f"{block[k]:+.3f}" if k == "served_minus_first" else f"{block[k]:.3f}")
                for k in ("served_auc", "first_champion_auc", "served_minus_first")
            ),
        )
    console.print(table)
    opened = sum(event["event"] == "opened" for event in summary["alerts"])
    promotions = sum(event["event"] == "champion" for event in summary["lifecycle"]) - 1
    console.print(
        f"{len(nights)} nights; {opened} alert(s) opened; {promotions} promotion(s) or rollback(s) of the champion; "
        f"{timing['median_seconds_per_night_without_retrain']:.2f} s a night (median, without retrains).\n"
        f"Report: {result.report_path}\nSummary: {result.summary_path}\nProject: {result.config_path}",
        soft_wrap=True,
    )


models_app = typer.Typer(help="The model registry: list, show, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(config: ConfigOption = None) -> None:
    """Registered versions, newest first, and which one serves as champion / challenger today."""
    from nightkeeper import registry

    project = _load(config)
    today = dt.date.today()
    with _warehouse(project) as connection:
        versions = registry.versions(connection)
        champion = registry.alias_state(connection, registry.CHAMPION, today)
        challenger = registry.alias_state(connection, registry.CHALLENGER, today)
    table = Table(title="Model versions")
    for column in ("version", "role", "registered", "holdout AUC", "training rows", "window"):
        table.add_column(column)
    for row in versions.iter_rows(named=True):
        role = (
            "champion"
            if row["version"] == champion.version
            else (f"challenger ({challenger.stage})" if row["version"] == challenger.version else "")
        )
        table.add_row(
            row["version"],
            role,
            str(row["registered_at"])[:19],
            f"{row['holdout_auc']:.4f}",
            f"{row['training_rows']:,}",
            f"{(row['window_start'] or '')[:10]} … {(row['window_end'] or '')[:10]}",
        )
    console.print(table)


@models_app.command("show")
def models_show(version: str, config: ConfigOption = None) -> None:
    """A version's card (lineage, metrics, fallback) and its lines in the alias log."""
    import polars as pl

    from nightkeeper import registry

    project = _load(config)
    with _warehouse(project) as connection:
        try:
            record = registry.get_version(connection, version)
        except KeyError as exc:
            console.print(f"[red]{exc.args[0]}[/]")
            raise typer.Exit(2) from None
        log = registry.alias_log(connection).filter(pl.col("version") == version)
    card = record.card
    console.print(
        f"[bold]{card.version}[/] ({card.project}) created {card.created_at:%Y-%m-%d %H:%M} — {record.model_path}"
    )
    console.print(
        f"training window {card.training_window.start} … {card.training_window.end}, {card.training_window.rows:,} "
        f"rows, fingerprint {card.data_fingerprint[:16]}…"
    )
    console.print("holdout: " + ", ".join(f"{k} {v:.4f}" for k, v in card.holdout_metrics.items()))
    console.print("libraries: " + ", ".join(f"{k} {v}" for k, v in card.library_versions.items()))
    for row in log.iter_rows(named=True):
        console.print(
            f"  {row['effective_from']}: {row['alias']} {row['stage'] or ''} by {row['actor']}: {row['reason']}",
            soft_wrap=True,
        )


def _run_registry_job(
    config: Path | None, job_name: str, action: str, version: str, effective: str, reason: str, actor: str
) -> None:
    _dagster_layer()
    from jobs.definitions import build_definitions
    from jobs.instance import persistent_instance
    from jobs.lifecycle import registry_run_config
    from jobs.run_guard import launch_run

    path = _config_path(config)
    project = _load(config)
    defs = build_definitions(path)
    result = launch_run(
        defs.resolve_job_def(job_name),
        persistent_instance(project.dagster_home),
        project.storage.lock_wait_seconds,
        run_config={
            **registry_run_config(action, version, effective, reason, actor=actor),
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        },
        tags={"nightkeeper/actor": actor},
    )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_failure), None)
        console.print(f"[red]{job_name} failed[/]: {failure.message if failure else 'see the run in the UI'}")
        raise typer.Exit(1)
    change = result.asset_materializations_for_node("model_registry")[0].metadata["change"].value
    console.print(f"[green]{change}[/] (run {result.run_id})", soft_wrap=True)


@models_app.command("promote")
def models_promote(
    version: str,
    config: ConfigOption = None,
    effective: Annotated[str | None, typer.Option(help="First night it serves (YYYY-MM-DD); default tomorrow.")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the log.")] = "promoted by hand",
    actor: Annotated[str, typer.Option(help="Who, for the log.")] = os.environ.get("USER", "operator"),
) -> None:
    """Make VERSION champion (a run of the `promote` job, visible in the Dagster UI)."""
    when = effective or (dt.date.today() + dt.timedelta(days=1)).isoformat()
    _run_registry_job(config, "promote", "promote", version, when, reason, actor)


@models_app.command("rollback")
def models_rollback(
    config: ConfigOption = None,
    effective: Annotated[
        str | None, typer.Option(help="First night the previous champion serves again; default tomorrow.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the log.")] = "rolled back by hand",
    actor: Annotated[str, typer.Option(help="Who, for the log.")] = os.environ.get("USER", "operator"),
) -> None:
    """Restore the previous champion in one command (a run of the `rollback` job, logged with who and why; it
    alerts)."""
    when = effective or (dt.date.today() + dt.timedelta(days=1)).isoformat()
    _run_registry_job(config, "rollback", "rollback_champion", "", when, reason, actor)


review_app = typer.Typer(
    help="The human review queue: export it for reviewers, import their labels.", no_args_is_help=True
)
app.add_typer(review_app, name="review")


@review_app.command("export")
def review_export(
    date: Annotated[str, typer.Option("--date", help="The night (YYYY-MM-DD) whose queue to export.")],
    config: ConfigOption = None,
    out: Annotated[
        Path | None, typer.Option(help="CSV to write; default review-<date>.csv in the current folder.")
    ] = None,
) -> None:
    """Write the night's review queue as a CSV with empty label / reviewer / note columns to fill in."""
    from nightkeeper.review.files import export_review_csv
    from nightkeeper.review.storage import queue_for

    project = _load(config)
    night = dt.date.fromisoformat(date)
    with _warehouse(project) as connection:
        queue = queue_for(connection, night)
    path = export_review_csv(queue, out or Path(f"review-{night}.csv"))
    console.print(
        f"{queue.height} row(s) to review written to {path}; fill in 'label' and 'reviewer', then "
        f"`nightkeeper review import {path}` or drop it into {project.path(project.review.inbox)}",
        soft_wrap=True,
    )


@review_app.command("import")
def review_import(file: Path, config: ConfigOption = None) -> None:
    """Import a filled-in review CSV (a run of the `review_import` job): good rows recorded, bad rows to a rejects
    file."""
    _dagster_layer()
    from jobs.definitions import build_definitions
    from jobs.instance import persistent_instance
    from jobs.review import REVIEW_IMPORT_JOB, review_import_run_config
    from jobs.run_guard import launch_run

    path = _config_path(config)
    project = _load(config)
    result = launch_run(
        build_definitions(path).resolve_job_def(REVIEW_IMPORT_JOB),
        persistent_instance(project.dagster_home),
        project.storage.lock_wait_seconds,
        run_config={
            **review_import_run_config(file.resolve()),
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        },
    )
    if not result.success:
        console.print(f"[red]import failed[/] (run {result.run_id})")
        raise typer.Exit(1)
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("review_labels")[0].metadata.items()}
    console.print(
        f"accepted {metadata['accepted']} ({metadata['new_labels']} new), rejected {metadata['rejected']} "
        f"(see {metadata['rejects_file']}), skipped {metadata['skipped_unlabeled']} without a label",
        soft_wrap=True,
    )
    if metadata["file_problem"]:
        console.print(f"[red]{metadata['file_problem']}[/]")


alerts_app = typer.Typer(help="Alerts: list them, acknowledge one so that it stops paging.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(
    config: ConfigOption = None,
    all_alerts: Annotated[
        bool, typer.Option("--all", help="Also resolved alerts (default: open and acknowledged).")
    ] = False,
) -> None:
    """Alerts that are open or acknowledged (all with --all), oldest first, with what moved and any acknowledgement."""
    from nightkeeper import alerts

    project = _load(config)
    with _warehouse(project) as connection:
        found = alerts.list_alerts(connection, None if all_alerts else alerts.UNRESOLVED)
    if not found.height:
        console.print("no alerts" if all_alerts else "no open or acknowledged alerts")
        return
    table = Table(title="Alerts", box=box.SIMPLE_HEAD)
    table.add_column("alert_id", no_wrap=True)  # whole, so it can be copied into `alerts ack`
    for column in ("status", "severity", "opened", "closed", "message"):
        table.add_column(column, overflow="fold")
    for row in found.iter_rows(named=True):
        status = row["status"]
        if row["acknowledged_by"]:
            status += f" by {row['acknowledged_by']} {row['acknowledged_at']:%Y-%m-%d %H:%M}: {row['ack_reason']}"
        table.add_row(
            row["alert_id"],
            status,
            row["severity"],
            str(row["opened_night"]),
            str(row["closed_night"] or ""),
            row["message"],
        )
    console.print(table)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[
        str, typer.Argument(help="The alert's id, as `nightkeeper alerts list` shows it (rule@night).")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why it may stop paging (kept in the alert log).")],
    by: Annotated[str | None, typer.Option("--by", help="Who acknowledges (default: the login name).")] = None,
    config: ConfigOption = None,
) -> None:
    """Acknowledge an open alert: it stops paging while its condition persists, resolves as usual when it clears, and
    a later re-opening pages again. Who, when and why go to the alert log."""
    import getpass

    from nightkeeper import alerts

    project = _load(config)
    with _warehouse(project) as connection:
        try:
            row = alerts.acknowledge(connection, alert_id, by or getpass.getuser(), reason, dt.datetime.now(dt.UTC))
        except ValueError as exc:
            console.print(f"[red]{exc}[/]", soft_wrap=True)
            raise typer.Exit(2) from None
    console.print(f"acknowledged {row['alert_id']} by {row['acknowledged_by']}: {row['ack_reason']}", soft_wrap=True)


if __name__ == "__main__":
    app()
