"""The code location loads cleanly in Dagster's own tools, and the CLI drives a short demo end to end."""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
import yaml
from pipeline_harness import REPO, example_config
from typer.testing import CliRunner, Result

from nightkeeper.cli import app

BIN = Path(sys.executable).parent
OUR_CODE = ("/assets/", "/jobs/", "/nightkeeper/")


def _env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout's code first, whatever the venv's editable install names."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> subprocess.CompletedProcess:
    """`dagster definitions validate` of the repository's workspace, run once, while $NIGHTKEEPER_CONFIG names a file
    that does not exist."""
    home = tmp_path_factory.mktemp("validate")
    env = {**os.environ, "DAGSTER_HOME": str(home), "NIGHTKEEPER_CONFIG": str(home / "elsewhere.yaml")}
    return subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_definitions_validate_passes_without_warnings_from_our_code(validated):
    output = validated.stdout + validated.stderr
    assert validated.returncode == 0, output
    ours = [line for line in output.splitlines() if "Warning" in line and any(part in line for part in OUR_CODE)]
    assert not ours, ours
    assert "All code locations passed validation" in output


def test_repository_workspace_loads_its_own_config_whatever_nightkeeper_config_says(validated):
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_ui_workspace_names_the_given_config_and_validates_from_any_folder(tmp_path):
    from jobs.instance import write_workspace
    from nightkeeper.config import load_config

    config_path = tmp_path / "project" / "nightkeeper.yaml"
    config_path.parent.mkdir()
    config_path.write_text(yaml.safe_dump(example_config(storage={"warehouse": "store/w.duckdb"}), sort_keys=False))
    home = load_config(config_path).dagster_home

    workspace = write_workspace(config_path, home)
    done = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", str(workspace)],
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(home), "NIGHTKEEPER_CONFIG": str(tmp_path / "other.yaml")},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    defs = runpy.run_path(str(workspace.parent / "nightkeeper_location.py"))["defs"]
    assert defs.resources["warehouse"].database == str(config_path.parent / "store" / "w.duckdb")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow  # starts dagster dev (webserver and daemon). In the default suite the code location loads in
# Dagster's own tools (test_definitions_validate_passes_without_warnings_from_our_code) and nightly tests run the job
def test_dagster_dev_serves_the_code_location_with_the_nightly_job(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    server = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        entries = None
        while time.monotonic() < deadline:
            try:
                answer = _graphql(
                    port,
                    """{ workspaceOrError { ... on Workspace { locationEntries {
                    name loadStatus locationOrLoadError { __typename ... on PythonError { message }
                    ... on RepositoryLocation { repositories { jobs { name } assetNodes { assetKey { path } } } } }
                    } } } }""",
                )
                entries = answer["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert entries, "dagster dev never answered"
        location = entries[0]["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", location
        repository = location["repositories"][0]
        assert "nightly_batch" in {job["name"] for job in repository["jobs"]}
        assets = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
        assert {"raw_batch", "validated_batch", "quarantine", "scored_batch", "outcomes"} <= assets
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def _other_project(root: Path) -> Path:
    """A real-looking project elsewhere: config, warehouse, landing, labels, models and Dagster home with content."""
    config = root / "nightkeeper.yaml"
    (root / "data").mkdir(parents=True)
    config.write_text(yaml.safe_dump(example_config(), sort_keys=False))
    with duckdb.connect(str(root / "data" / "warehouse.duckdb")) as connection:
        connection.execute("create table precious as select 42 as answer")
    for folder, name in (
        ("landing/2026-01-01", "batch.csv"),
        ("labels", "labels.csv"),
        ("models/v1", "model.txt"),
        ("dagster", "dagster.yaml"),
    ):
        (root / "data" / folder).mkdir(parents=True)
        (root / "data" / folder / name).write_text(f"{folder} content\n")
    return config


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


# The 4-night demo (a 120k-row champion, the nights on a persistent instance, the monthly review notebooks: minutes
# on the shared box) is behind 'slow' with the 30-night demo. In the default suite: test_demo_storage (the demo's
# folder, config copy and storage ownership) and test_demo_refuses_to_reset_storage_it_did_not_create.
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`nightkeeper demo` (4 small nights, a small model in its folder's config) from a folder of its own, while
    $NIGHTKEEPER_CONFIG names another project; returns the finished process, the work folder and that project."""
    tmp_path = tmp_path_factory.mktemp("demo_run")
    project = tmp_path / "project"
    project_config = _other_project(project)
    before = _snapshot(project)
    work = tmp_path / "work"
    (work / "demo").mkdir(parents=True)
    (work / "demo" / "nightkeeper.yaml").write_text(yaml.safe_dump(example_config(), sort_keys=False))

    done = subprocess.run(
        [str(BIN / "nightkeeper"), "demo", "--nights", "4", "--rows", "600", "--bad-night", "2"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(COLUMNS="120", NIGHTKEEPER_CONFIG=str(project_config)),
    )
    return done, work, project, before


@pytest.mark.slow
def test_demo_command_runs_nights_through_dagster_in_its_folder_and_prints_the_summary(demo_run):
    done, work, _, _ = demo_run

    assert done.returncode == 0, done.stdout + done.stderr
    assert "2026-01-03: failed checks:" in done.stdout
    assert "dagster dev" in done.stdout and f"ui --config {work / 'demo' / 'nightkeeper.yaml'}" in done.stdout
    with duckdb.connect(str(work / "demo" / "data" / "warehouse.duckdb"), read_only=True) as connection:
        per_night = connection.execute(
            "select partition_date, count(*) from nightly.outcomes group by 1 order by 1"
        ).fetchall()
        raw = connection.execute("select count(*) from nightly.raw_batch").fetchone()[0]
    assert len(per_night) == 4 and sum(count for _, count in per_night) == raw
    runs = list((work / "demo" / "data" / "dagster").rglob("runs.db")) + list(
        (work / "demo" / "data" / "dagster").rglob("runs")
    )
    assert runs, "the demo's runs must be stored in the persistent Dagster instance"


@pytest.mark.slow
def test_demo_leaves_the_project_named_by_nightkeeper_config_untouched(demo_run):
    done, _, project, before = demo_run

    assert done.returncode == 0, done.stdout + done.stderr
    assert _snapshot(project) == before


def test_demo_refuses_to_reset_storage_it_did_not_create(tmp_path):
    project = tmp_path / "project"
    _other_project(project)
    before = _snapshot(project)
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "nightkeeper.yaml").write_text(
        yaml.safe_dump(
            example_config(storage={"warehouse": str(project / "data" / "warehouse.duckdb")}), sort_keys=False
        )
    )

    done = CliRunner().invoke(app, ["demo", "--dir", str(demo)], terminal_width=200)

    assert done.exit_code == 2, done.output
    assert f"--reset {project / 'data' / 'warehouse.duckdb'}" in done.output
    assert _snapshot(project) == before


def _check_config(config: Path) -> Result:
    """`nightkeeper check-config` in this interpreter: the command's code without a second Python start-up (the
    command runs as a process of its own in the slow demo, fault-injection and guide tests)."""
    return CliRunner().invoke(app, ["check-config", "--config", str(config)], terminal_width=200)


def test_check_config_names_the_bad_field(tmp_path):
    raw = example_config()
    raw["contract"]["features"]["age"]["dtype"] = "integer"
    config = tmp_path / "nightkeeper.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))

    done = _check_config(config)

    assert done.exit_code == 2
    assert "contract.features.age.dtype" in done.output and "'integer'" in done.output


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes of real nights; pytest's 600 s default is for one test of the default suite
def test_full_demo_completes_thirty_nights_including_the_bad_data_night(tmp_path):
    # the README's command as written: the demo copies the shipped config, model size included, into ./demo/
    done = subprocess.run(
        [str(BIN / "nightkeeper"), "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1500,
        env=_env(COLUMNS="120"),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "run(s) failed" not in done.stdout
    with duckdb.connect(str(tmp_path / "demo" / "data" / "warehouse.duckdb"), read_only=True) as connection:
        nights = connection.execute(
            """select r.partition_date, r.rows_in, o.rows_out from
               (select partition_date, count(*) rows_in from nightly.raw_batch group by 1) r
               join (select partition_date, count(*) rows_out from nightly.outcomes group by 1) o
               using (partition_date)"""
        ).fetchall()
        quarantined = connection.execute("select count(distinct partition_date) from nightly.quarantine").fetchone()[0]
    assert len(nights) == 30
    assert all(rows_in == rows_out for _, rows_in, rows_out in nights)
    assert quarantined == 1


def _project_with_champion(root: Path, raw: dict) -> Path:
    from pipeline_harness import bootstrap_example_champion, make_project

    project = make_project(root, raw)
    bootstrap_example_champion(project)
    return project.config_path


def test_check_config_refuses_a_threshold_that_disagrees_with_the_serving_champion(tmp_path):
    raw = example_config()
    config = _project_with_champion(tmp_path, raw)
    raw["model"]["decision"]["threshold"] = 0.42
    config.write_text(yaml.safe_dump(raw, sort_keys=False))

    done = _check_config(config)

    assert done.exit_code == 2, done.output
    assert "model.decision.threshold: the config says 0.42" in done.output and "card says 0.3" in done.output
    assert "new model version" in done.output and "nightkeeper models promote" in done.output


def test_check_config_refuses_decision_labels_that_disagree_with_the_serving_champion(tmp_path):
    raw = example_config()
    config = _project_with_champion(tmp_path, raw)
    raw["model"]["decision"]["at_or_above_threshold"] = "reject"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))

    done = _check_config(config)

    assert done.exit_code == 2, done.output
    assert (
        "model.decision.at_or_above_threshold: the config says 'reject'" in done.output and "'decline'" in done.output
    )


def test_check_config_passes_when_the_decision_agrees_with_the_serving_champion(tmp_path):
    config = _project_with_champion(tmp_path, example_config())

    done = _check_config(config)

    assert done.exit_code == 0, done.output
    assert "decision agrees with champion" in done.output


def test_definitions_of_a_sharded_config_run_a_night_in_one_op_per_shard_under_the_same_assets_and_checks(tmp_path):
    from jobs.definitions import NIGHTLY_JOB, build_definitions

    def nightly(shards: int):
        raw = yaml.safe_load((REPO / "nightkeeper.yaml").read_text())
        raw["scale"] = {"shards": shards}
        config_path = tmp_path / f"shards{shards}" / "nightkeeper.yaml"
        config_path.parent.mkdir()
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return build_definitions(config_path).resolve_job_def(NIGHTLY_JOB)

    whole, sharded = nightly(1), nightly(4)

    ops = sorted(node.name for node in sharded.all_node_defs if node.name.startswith("answer_shard_"))
    assert ops == [f"answer_shard_{shard}" for shard in range(4)]
    assert sharded.executor_def.name == "multiprocess" and whole.executor_def.name == "in_process"
    assert sharded.asset_layer.executable_asset_keys == whole.asset_layer.executable_asset_keys
    assert set(sharded.asset_layer.asset_graph.asset_check_keys) == set(whole.asset_layer.asset_graph.asset_check_keys)
