"""What `pip install` puts into site-packages, and how an installed package finds the project root's Dagster layer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from pipeline_harness import REPO, example_config
from setuptools.config.pyprojecttoml import read_configuration


def test_install_claims_only_the_nightkeeper_import_name():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # setuptools calls its [tool.setuptools] table beta
        packages = read_configuration(REPO / "pyproject.toml")["tool"]["setuptools"]["packages"]

    assert {name.split(".")[0] for name in packages} == {"nightkeeper"}
    assert {"nightkeeper.examples", "nightkeeper.testing"} <= set(packages)


_IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import nightkeeper
core = sorted(m.name for m in pkgutil.walk_packages(nightkeeper.__path__, "nightkeeper."))
for name in core:
    importlib.import_module(name)
dagster_after_core = sorted(m for m in sys.modules if m.split(".")[0] == "dagster")
import jobs.definitions, jobs.demo
jobs = sorted(m for m in sys.modules if m.split(".")[0] == "jobs")
print(json.dumps({"core": core, "dagster_after_core": dagster_after_core, "jobs": jobs}))
"""


@pytest.fixture(scope="module")
def imported_from_elsewhere(tmp_path_factory) -> dict:
    """Every module of the core package imported, then the job modules, in one interpreter started in an empty
    folder with no NIGHTKEEPER_CONFIG (one start: each costs seconds of imports)."""
    env = {key: value for key, value in os.environ.items() if key != "NIGHTKEEPER_CONFIG"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING],
        cwd=tmp_path_factory.mktemp("elsewhere"),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_no_module_of_the_core_package_imports_dagster(imported_from_elsewhere):
    assert {"nightkeeper.lifecycle", "nightkeeper.pipeline.lifecycle", "nightkeeper.gates"} <= set(
        imported_from_elsewhere["core"]
    )
    assert imported_from_elsewhere["dagster_after_core"] == []


def test_job_modules_import_without_a_config_in_the_current_folder(imported_from_elsewhere):
    assert {"jobs.definitions", "jobs.demo"} <= set(imported_from_elsewhere["jobs"])


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A site-packages folder holding a copy of the package alone, as a non-editable install lays it out."""
    site = tmp_path_factory.mktemp("site-packages")
    shutil.copytree(REPO / "nightkeeper", site / "nightkeeper", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _nightkeeper(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI of the installed copy in ``site`` (it comes first on the path), run in ``cwd``."""
    env = {key: value for key, value in os.environ.items() if key != "NIGHTKEEPER_CONFIG"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-c", "from nightkeeper.cli import app; app()", *args],
        cwd=cwd,
        env={**env, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("project")
    path = folder / "nightkeeper.yaml"
    path.write_text(yaml.safe_dump(example_config(storage={"warehouse": "w.duckdb"}), sort_keys=False))
    return path


def test_a_dagster_command_outside_the_project_root_says_it_needs_the_project_root(installed, config_path):
    done = _nightkeeper(installed, config_path.parent, "alerts", "list", "--config", str(config_path))

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Dagster layer (assets/, jobs/)" in done.stdout
    assert "Run this from the project root" in done.stdout


def test_a_dagster_command_run_from_the_project_root_loads_the_layer_from_there(installed, config_path):
    done = _nightkeeper(installed, REPO, "alerts", "list", "--config", str(config_path))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "no open or acknowledged alerts" in done.stdout.lower()


def test_the_example_simulator_runs_from_any_folder(installed, config_path):
    done = _nightkeeper(
        installed, config_path.parent, "simulate", "--nights", "1", "--rows", "50", "--config", str(config_path)
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "project root" not in done.stdout
