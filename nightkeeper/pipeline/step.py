from dataclasses import dataclass, field
from typing import Any

import polars as pl

from nightkeeper.batch_checks import CheckOutcome


@dataclass(frozen=True)
class StepResult:
    """What one step of a night produces: the partition tables to store, the materialization metadata, the checks."""

    tables: dict[str, pl.DataFrame] = field(default_factory=dict)  # asset name -> frame for this night's partition
    metadata: dict[str, Any] = field(default_factory=dict)  # plain Python values (assets wrap them for Dagster)
    checks: dict[str, CheckOutcome] = field(default_factory=dict)  # check name -> outcome
