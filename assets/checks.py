"""Dagster-facing renderings of core results: asset check results and markdown previews for metadata."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from nightkeeper.batch_checks import CheckOutcome


def check_result(name: str, outcome: CheckOutcome, asset_key: str | None = None) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=name,
        asset_key=asset_key,
        passed=outcome.passed,
        severity=AssetCheckSeverity[outcome.severity],
        description=outcome.description,
        metadata=dict(outcome.metadata),
    )


def markdown_table(frame: pl.DataFrame, rows: int = 10) -> MetadataValue:
    """The first ``rows`` rows of ``frame`` as a markdown table for the Dagster UI."""
    if frame.height == 0:
        return MetadataValue.md("_no rows_")
    head = frame.head(rows)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += [
        "| " + " | ".join("" if v is None else str(v).replace("|", "\\|") for v in row) + " |"
        for row in head.iter_rows()
    ]
    return MetadataValue.md("\n".join(lines))


def dagster_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """A core step's plain metadata as Dagster metadata: frames as markdown tables (all their rows: the step cut them),
    paths as path links, lists and dicts as JSON; numbers and strings as they are."""

    def wrap(value: Any) -> Any:
        if isinstance(value, pl.DataFrame):
            return markdown_table(value, rows=value.height)
        if isinstance(value, Path):
            return MetadataValue.path(str(value))
        if isinstance(value, (list, dict)):
            return MetadataValue.json(value)
        return value

    return {name: wrap(value) for name, value in values.items()}
