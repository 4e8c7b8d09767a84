"""The laptop's Dagster instance: a DAGSTER_HOME folder whose dagster.yaml serialises warehouse steps, and the
workspace that opens one project's code location in ``dagster dev``."""

from __future__ import annotations

import fcntl
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


# Held while a process writes the dagster.yaml and creates the instance's storage (see prepare_dagster_home).
CREATION_LOCK = ".nightkeeper-creating.lock"
# The databases of Dagster's default storage (DagsterSqliteStorage) in a home, in the order it creates them.
SQLITE_STORAGE = ("history/runs.db", "history/runs/index.db", "schedules/schedules.db")


def prepare_dagster_home(home: Path) -> Path:
    """Create ``home`` with Nightkeeper's dagster.yaml (kept if the user already wrote one) and the instance's storage,
    one process at a time.

    Dagster's SQLite storage creates its databases on first open without guarding against a second process doing the
    same: two commands opening a fresh home at once (``nightkeeper run`` twice, the webserver and daemon of
    ``nightkeeper serve``) fail with "table runs already exists" or "database is locked" — the run and schedule
    storages create their tables and switch to WAL with no retry, and while the database is still in rollback-journal
    mode SQLite answers a lock upgrade that would deadlock with an immediate "database is locked", whatever the busy
    timeout. So the first opening happens here, under an exclusive lock on a file in ``home``; once created, concurrent
    opens only read the schema, and concurrent writes wait on SQLite's busy timeout as usual. (A home whose dagster.yaml
    names other storage has none of these files: it is opened here, under the lock, on every call.)
    """
    home.mkdir(parents=True, exist_ok=True)
    with (home / CREATION_LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text(DAGSTER_YAML)
        if not all((home / database).exists() for database in SQLITE_STORAGE):
            with DagsterInstance.from_config(str(home)):
                pass
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
