"""The laptop's Dagster instance: a DAGSTER_HOME folder whose dagster.yaml serialises warehouse steps, and the
workspace that opens one project's code location in ``dagster dev``."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from dagster import DagsterInstance

from jobs.resources import WAREHOUSE_POOL

DAGSTER_YAML = f"""# Written by nightkeeper. DuckDB lets one process open the warehouse at a time, so every step in the
# '{WAREHOUSE_POOL}' pool runs alone, across runs too.
concurrency:
  pools:
    default_limit: 1
# The daemon (nightkeeper serve, dagster dev) watches its runs: a run whose worker never started is failed after
# start_timeout_seconds, one stuck cancelling after cancel_timeout_seconds, and the pool slots a finished run still
# holds are freed after free_slots_after_run_end_seconds. A run whose worker was killed while STARTED is marked failed
# by nightkeeper's reap_dead_runs sensor (the default run launcher cannot report a worker's health). No
# max_runtime_seconds: a long night is not a dead one.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  free_slots_after_run_end_seconds: 60
  poll_interval_seconds: 60
telemetry:
  enabled: false
"""


def prepare_dagster_home(home: Path) -> Path:
    """Create ``home`` with Nightkeeper's dagster.yaml (kept if the user already wrote one)."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home


def persistent_instance(home: Path) -> DagsterInstance:
    """The Dagster instance stored in ``home`` (which ``dagster dev`` with DAGSTER_HOME=home opens too)."""
    prepare_dagster_home(home)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return DagsterInstance.get()


LOCATION_MODULE = "nightkeeper_location.py"
WORKSPACE_FILE = "workspace.yaml"


def write_workspace(config_path: Path, home: Path) -> Path:
    """Write into ``home`` a code location that builds the definitions of ``config_path`` (named explicitly, so no
    environment variable or current folder decides which project opens) and the workspace.yaml that loads it.

    The location imports ``jobs`` from the same code tree as the caller. Returns the workspace.yaml's path.
    """
    prepare_dagster_home(home)
    config = Path(config_path).resolve()
    code_root = Path(__file__).resolve().parents[1]
    (home / LOCATION_MODULE).write_text(
        "# Written by nightkeeper: the code location of the project config named below.\n"
        "from pathlib import Path\n\n"
        "from jobs.definitions import build_definitions\n\n"
        f"defs = build_definitions(Path({str(config)!r}))\n"
    )
    workspace = home / WORKSPACE_FILE
    location = {
        "relative_path": LOCATION_MODULE,
        "attribute": "defs",
        "working_directory": str(code_root),
        "location_name": f"nightkeeper:{config.parent.name}",
    }
    workspace.write_text(
        f"# Written by nightkeeper for {config}.\n"
        + yaml.safe_dump({"load_from": [{"python_file": location}]}, sort_keys=False)
    )
    return workspace
