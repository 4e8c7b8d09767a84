"""Humans in the loop: the nightly review queue and the import of reviewers' labels."""

import datetime as dt
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, TimeWindowPartitionsDefinition, asset
from pydantic import Field

from assets.checks import dagster_metadata, markdown_table
from assets.nightly import night_of
from jobs.resources import WAREHOUSE_POOL, ProjectResource, WarehouseResource
from nightkeeper.pipeline import chunked
from nightkeeper.review.files import import_review_file
from nightkeeper.review.storage import commit_import, stored_queue, stored_review_labels


class ReviewImportRequest(Config):
    path: str = Field(description="The filled-in review CSV to import.")


def build_review_assets(partitions: TimeWindowPartitionsDefinition) -> list:
    @asset(
        name="review_queue",
        partitions_def=partitions,
        pool=WAREHOUSE_POOL,
        group_name="review",
        # read from the warehouse a block of rows at a time by the step (chunked), not loaded whole: flat memory
        deps=[AssetKey("outcomes"), AssetKey("quarantine")],
        description="Tonight's answers a person should look at: model answers within the review band of the threshold "
        "(most uncertain first), then quarantined rows a person could decide, capped at the nightly capacity.",
    )
    def review_queue(
        context: AssetExecutionContext, project: ProjectResource, warehouse: WarehouseResource
    ) -> MaterializeResult:
        with warehouse.connect() as connection:
            result = chunked.review_stored_night(project.load(), connection, night_of(context))
        return MaterializeResult(metadata=dagster_metadata(result.metadata))

    return [review_queue]


@asset(
    name="review_labels",
    group_name="review",
    pool=WAREHOUSE_POOL,
    deps=[AssetKey("review_queue")],  # a returned label is accepted only for a row the queue asked about
    description="Labels reviewers returned: valid rows recorded with reviewer and time (they feed the next retrain, "
    "with provenance); unknown ids, labels outside the allowed set, duplicates, conflicts and malformed files are "
    "rejected row by row into a rejects file beside the input.",
)
def review_labels(
    context: AssetExecutionContext, config: ReviewImportRequest, project: ProjectResource, warehouse: WarehouseResource
) -> MaterializeResult:
    settings = project.load()
    path = Path(config.path)
    with warehouse.connect() as connection:
        queue = stored_queue(connection)
        already = stored_review_labels(connection)
    result = import_review_file(path, queue, already, settings.review.labels, dt.datetime.now(dt.UTC))
    with warehouse.connect() as connection:
        added, rejects = commit_import(connection, result, path)
    if result.file_problem:
        context.log.error(f"{path.name}: {result.file_problem}")
    reasons = (
        result.rejected.group_by("reason").len().sort("len", descending=True)
        if result.rejected.height
        else pl.DataFrame()
    )
    return MaterializeResult(
        metadata={
            "file": str(path),
            "accepted": result.accepted.height,
            "new_labels": added,
            "rejected": result.rejected.height,
            "skipped_unlabeled": result.skipped,
            "unchanged": result.unchanged,
            "file_problem": result.file_problem or "",
            "rejects_file": str(rejects),
            "rejections": markdown_table(reasons, rows=20),
        }
    )
