"""The laptop's Dagster instance: a DAGSTER_HOME folder whose dagster.yaml serialises warehouse steps."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterInstance

from jobs.resources import WAREHOUSE_POOL

DAGSTER_YAML = f"""# Written by nightkeeper. DuckDB lets one process open the warehouse at a time, so every step in the
# '{WAREHOUSE_POOL}' pool runs alone, across runs too.
concurrency:
  pools:
    default_limit: 1
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
