"""Monthly review reports: a snapshot of the month exported from the warehouse, then a papermill notebook rendered
to HTML from that snapshot (the notebook never opens the warehouse)."""

from pathlib import Path

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    MonthlyPartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
)

from assets.checks import REPORT_LINK, file_link
from jobs.resources import WAREHOUSE_POOL, ProjectResource
from nightkeeper.report.attention import attention_items, attention_markdown
from nightkeeper.report.execution import run_monthly_review
from nightkeeper.report.snapshot import SNAPSHOT_FOLDER, export_month_snapshot, load_snapshot

MONTHLY_FOLDER = Path("reports/monthly")

NIGHTLY_TABLES_READ = ("outcomes", "quarantine", "drift_metrics", "labels", "performance", "alerts", "review_queue")
"""The nightly assets whose tables the month snapshot exports: each month depends on the nights in it."""
UNPARTITIONED_TABLES_READ = ("model_registry", "review_labels")
"""The unpartitioned assets whose tables the month snapshot exports (the alias log, reviewers' labels)."""


def build_report_assets(monthly: MonthlyPartitionsDefinition) -> list:
    @asset(
        name="month_snapshot",
        partitions_def=monthly,
        pool=WAREHOUSE_POOL,
        group_name="reports",
        # a month reads the nights in it; the month's first partition starts on the 1st, maybe before the first night
        deps=[
            *(
                AssetDep(name, partition_mapping=TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True))
                for name in NIGHTLY_TABLES_READ
            ),
            *UNPARTITIONED_TABLES_READ,
        ],
        description="The month's figures exported from the warehouse as Parquet (per-night aggregates, alerts, alias "
        "log, review stats): what the monthly notebook reads, so it never holds the warehouse open.",
    )
    def month_snapshot(context: AssetExecutionContext, project: ProjectResource) -> MaterializeResult:
        config = project.load()
        month = context.partition_key[:7]
        folder = config.path(MONTHLY_FOLDER / month)
        snapshot = export_month_snapshot(config.warehouse, month, folder, config=config)
        return MaterializeResult(metadata={"month": month, "snapshot": MetadataValue.path(str(snapshot))})

    @asset(
        name="monthly_review",
        partitions_def=monthly,
        deps=[AssetKey("month_snapshot")],
        group_name="reports",
        description="notebooks/monthly_review.ipynb run by papermill for the month and rendered to self-contained HTML "
        "(no code): volume, quarantine and fallback, latency, drift heatmap, scores, performance, business value, "
        "model timeline, alerts, review load, and what needs attention.",
    )
    def monthly_review(context: AssetExecutionContext, project: ProjectResource) -> MaterializeResult:
        config = project.load()
        month = context.partition_key[:7]
        folder = config.path(MONTHLY_FOLDER / month)
        snapshot = folder / SNAPSHOT_FOLDER
        result = run_monthly_review(snapshot, month, folder)
        attention = attention_markdown(attention_items(load_snapshot(snapshot)))
        return MaterializeResult(
            metadata={
                REPORT_LINK: file_link(result.html),
                "notebook": MetadataValue.path(str(result.executed_notebook)),
                "images": result.images,
                "what_needs_attention": MetadataValue.md(attention),
            }
        )

    return [month_snapshot, monthly_review]
