"""Dagster-facing renderings of core results: asset check results and markdown previews for metadata."""

from __future__ import annotations

import base64
import io
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


INLINE_IMAGE_WIDTH = 900
"""Widest a plot is shown in asset metadata, in pixels: the image travels inside every materialization event."""


def image_markdown(path: Path) -> MetadataValue:
    """The PNG at ``path`` shown in the Dagster UI: a markdown image whose bytes are inline (a ``data:`` URI, which the
    UI's markdown allows; a page served over http cannot show a local file), shrunk to ``INLINE_IMAGE_WIDTH`` pixels
    wide, with the file's path under it."""
    from PIL import Image

    with Image.open(path) as image:
        image.thumbnail((INLINE_IMAGE_WIDTH, INLINE_IMAGE_WIDTH * 4))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return MetadataValue.md(f"![{path.stem}](data:image/png;base64,{data})\n\n`{path}`")


REPORT_LINK = "html"
"""The metadata key of a rendered report's ``file_link`` (the monthly review, a model card); the demo prints it."""


def file_link(path: Path) -> MetadataValue:
    """A report file as a ``file://`` link (the UI shows it as a link; the browser opens it from a local page or a
    new tab) — for the HTML reports people read."""
    return MetadataValue.url(Path(path).resolve().as_uri())


def dagster_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """A core step's plain metadata as Dagster metadata: frames as markdown tables (all their rows: the step cut them),
    PNG plots as inline markdown images, HTML reports as file links, other paths as paths, lists and dicts as JSON;
    numbers and strings as they are."""

    def wrap(value: Any) -> Any:
        if isinstance(value, pl.DataFrame):
            return markdown_table(value, rows=value.height)
        if isinstance(value, Path) and value.suffix == ".png" and value.exists():
            return image_markdown(value)
        if isinstance(value, Path) and value.suffix == ".html":
            return file_link(value)
        if isinstance(value, Path):
            return MetadataValue.path(str(value))
        if isinstance(value, (list, dict)):
            return MetadataValue.json(value)
        return value

    return {name: wrap(value) for name, value in values.items()}
