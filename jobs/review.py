"""The review import job and the sensor that watches the reviewers' inbox folder."""

from __future__ import annotations

from pathlib import Path

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    sensor,
)

from nightkeeper.config import ProjectConfig
from nightkeeper.review.files import is_rejects_file

REVIEW_IMPORT_JOB = "review_import"

review_import_job = define_asset_job(
    REVIEW_IMPORT_JOB, selection=AssetSelection.assets("review_labels"), description="Import one filled-in review file."
)


def review_import_run_config(path: Path) -> dict:
    return {"ops": {"review_labels": {"config": {"path": str(path)}}}}


def build_review_inbox_sensor(config: ProjectConfig):
    inbox = config.path(config.review.inbox)

    @sensor(
        name="review_inbox",
        job=review_import_job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Imports each review CSV dropped into {inbox} (once per file version; rejects files are ignored).",
    )
    def review_inbox(context: SensorEvaluationContext):
        if not inbox.is_dir():
            return SkipReason(f"{inbox} does not exist yet")
        files = sorted(p for p in inbox.glob("*.csv") if not is_rejects_file(p))
        requests = [
            RunRequest(run_key=f"{path.name}:{path.stat().st_mtime_ns}", run_config=review_import_run_config(path))
            for path in files
        ]
        return requests or SkipReason("no review files in the inbox")

    return review_inbox
