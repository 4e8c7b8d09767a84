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

BIN = Path(sys.executable).parent
OUR_CODE = ("/assets/", "/jobs/", "/nightkeeper/")


def test_definitions_validate_passes_without_warnings_from_our_code(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    ours = [line for line in output.splitlines() if "Warning" in line and any(part in line for part in OUR_CODE)]
    assert not ours, ours
    assert "All code locations passed validation" in output


def test_job_modules_import_without_a_config_in_the_current_folder(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "NIGHTKEEPER_CONFIG"}
    env["PYTHONPATH"] = str(REPO)

    done = subprocess.run([sys.executable, "-c", "import jobs.definitions, jobs.demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr


def test_repository_workspace_loads_its_own_config_whatever_nightkeeper_config_says(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "NIGHTKEEPER_CONFIG": str(tmp_path / "elsewhere.yaml")}

    done = subprocess.run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr


def test_ui_workspace_names_the_given_config_and_validates_from_any_folder(tmp_path):
    from jobs.instance import write_workspace
    from nightkeeper.config import load_config

    config_path = tmp_path / "project" / "nightkeeper.yaml"
    config_path.parent.mkdir()
    config_path.write_text(yaml.safe_dump(example_config(storage={"warehouse": "store/w.duckdb"}), sort_keys=False))
    home = load_config(config_path).dagster_home

    workspace = write_workspace(config_path, home)
    done = subprocess.run([str(BIN / "dagster"), "definitions", "validate", "-w", str(workspace)], cwd=tmp_path,
                          env={**os.environ, "DAGSTER_HOME": str(home), "NIGHTKEEPER_CONFIG": str(tmp_path / "other.yaml")},
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    defs = runpy.run_path(str(workspace.parent / "nightkeeper_location.py"))["defs"]
    assert defs.resources["warehouse"].database == str(config_path.parent / "store" / "w.duckdb")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_dagster_dev_serves_the_code_location_with_the_nightly_job(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    server = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        entries = None
        while time.monotonic() < deadline:
            try:
                answer = _graphql(port, """{ workspaceOrError { ... on Workspace { locationEntries {
                    name loadStatus locationOrLoadError { __typename ... on PythonError { message }
                    ... on RepositoryLocation { repositories { jobs { name } assetNodes { assetKey { path } } } } } } } } }""")
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


def test_demo_command_runs_nights_through_dagster_and_prints_the_summary(tmp_path):
    config = tmp_path / "nightkeeper.yaml"
    config.write_text(yaml.safe_dump(example_config(), sort_keys=False))

    done = subprocess.run(
        [str(BIN / "nightkeeper"), "demo", "--config", str(config), "--nights", "4", "--rows", "600", "--bad-night", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "120"},
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "2026-01-03: failed checks:" in done.stdout
    assert "dagster dev" in done.stdout
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as connection:
        per_night = connection.execute(
            "select partition_date, count(*) from nightly.outcomes group by 1 order by 1"
        ).fetchall()
        raw = connection.execute("select count(*) from nightly.raw_batch").fetchone()[0]
    assert len(per_night) == 4 and sum(count for _, count in per_night) == raw
    runs = list((tmp_path / "data" / "dagster").rglob("runs.db")) + list((tmp_path / "data" / "dagster").rglob("runs"))
    assert runs, "the demo's runs must be stored in the persistent Dagster instance"


def test_check_config_names_the_bad_field(tmp_path):
    raw = example_config()
    raw["contract"]["features"]["age"]["dtype"] = "integer"
    config = tmp_path / "nightkeeper.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))

    done = subprocess.run([str(BIN / "nightkeeper"), "check-config", "--config", str(config)], capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert "contract.features.age.dtype" in done.stdout and "'integer'" in done.stdout


@pytest.mark.slow
def test_full_demo_completes_thirty_nights_including_the_bad_data_night(tmp_path):
    config = tmp_path / "nightkeeper.yaml"
    raw = yaml.safe_load((REPO / "nightkeeper.yaml").read_text())  # the shipped config, model size included
    config.write_text(yaml.safe_dump(raw, sort_keys=False))

    done = subprocess.run(
        [str(BIN / "nightkeeper"), "demo", "--config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "120"},
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "run(s) failed" not in done.stdout
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as connection:
        nights = connection.execute(
            """select r.partition_date, r.rows_in, o.rows_out from
               (select partition_date, count(*) rows_in from nightly.raw_batch group by 1) r
               join (select partition_date, count(*) rows_out from nightly.outcomes group by 1) o using (partition_date)"""
        ).fetchall()
        quarantined = connection.execute("select count(distinct partition_date) from nightly.quarantine").fetchone()[0]
    assert len(nights) == 30
    assert all(rows_in == rows_out for _, rows_in, rows_out in nights)
    assert quarantined == 1
