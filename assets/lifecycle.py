"""Lifecycle assets: a retrain's candidate model, its evaluation against the champion, and the model registry.

Every change of a model's role is a materialization of ``model_registry`` by the ``promote`` or ``rollback`` job,
so the Dagster UI's history of that asset is the history of who served, when and why.
"""

import datetime as dt
from pathlib import Path

from dagster import AssetCheckSpec, AssetExecutionContext, AssetKey, Config, MaterializeResult, asset
from pydantic import Field

from assets.checks import REPORT_LINK, check_result, dagster_metadata, file_link, markdown_table
from jobs.resources import WAREHOUSE_POOL, ProjectResource, WarehouseResource
from nightkeeper import registry
from nightkeeper.pipeline import lifecycle as core
from nightkeeper.report.execution import run_model_card
from nightkeeper.report.snapshot import export_model_snapshot


class RetrainRequest(Config):
    as_of: str = Field(description="The night (YYYY-MM-DD) the retrain looks back from.")
    trigger: str = Field("manual", description="Why: the alert ids, the schedule, or a person.")


class RegistryChange(Config):
    action: str = Field(
        "refresh", description="start_shadow | advance | promote | reject_challenger | rollback_champion | refresh"
    )
    version: str = ""
    stage: str = ""
    effective_from: str = Field("", description="First night (YYYY-MM-DD) the change applies to.")
    reason: str = ""
    actor: str = "dagster"


@asset(
    name="candidate_model",
    group_name="lifecycle",
    pool=WAREHOUSE_POOL,
    # what training_data.labeled_history reads: the validated rows of every night, their delivered and reviewed labels
    deps=[AssetKey("validated_batch"), AssetKey("labels"), AssetKey("review_labels")],
    description="A LightGBM model retrained on the labeled window (delivered and reviewed labels), after the "
    "training-data gate excluded suspect nights or refused the window; registered with full lineage.",
    check_specs=[AssetCheckSpec(name, asset="candidate_model", blocking=True) for name in core.BEHAVIOUR_CHECKS],
)
def candidate_model(
    context: AssetExecutionContext, config: RetrainRequest, project: ProjectResource, warehouse: WarehouseResource
):
    with warehouse.connect() as connection:
        result = core.train_candidate(
            project.load(), connection, dt.date.fromisoformat(config.as_of), config.trigger, context.log
        )
    yield MaterializeResult(metadata=dagster_metadata(result.metadata))
    for name, outcome in result.checks.items():
        yield check_result(name, outcome)


@asset(
    name="candidate_evaluation",
    group_name="lifecycle",
    pool=WAREHOUSE_POOL,
    # the holdout is the latest labeled nights' validated rows with their delivered labels
    deps=[AssetKey("candidate_model"), AssetKey("validated_batch"), AssetKey("labels")],
    description="The never-worse gate: candidate and champion scored on the same recent labeled holdout (AUC with a "
    "bootstrap CI, every segment, Brier, business value, latency). Approved candidates go to shadow; rejected ones "
    "never serve and raise an alert.",
)
def candidate_evaluation(
    context: AssetExecutionContext, config: RetrainRequest, project: ProjectResource, warehouse: WarehouseResource
) -> MaterializeResult:
    with warehouse.connect() as connection:
        result = core.evaluate_candidate(project.load(), connection, dt.date.fromisoformat(config.as_of), context.log)
    return MaterializeResult(metadata=dagster_metadata(result.metadata))


@asset(
    name="candidate_model_card",
    group_name="lifecycle",
    deps=[AssetKey("candidate_evaluation")],
    description="notebooks/model_card.ipynb for the latest candidate, run by papermill and rendered to HTML: metrics, "
    "lineage, feature importance, calibration and the gates' verdicts.",
)
def candidate_model_card(
    context: AssetExecutionContext, config: RetrainRequest, project: ProjectResource, warehouse: WarehouseResource
) -> MaterializeResult:
    settings = project.load()
    with warehouse.connect() as connection:
        version = core.latest_candidate(
            connection, dt.date.fromisoformat(config.as_of), statuses=(core.TRAINED, core.APPROVED, core.REJECTED)
        )
        record = registry.get_version(connection, version) if version else None
    if record is None:
        return MaterializeResult(metadata={"card": "no candidate was trained"})
    folder = settings.path(Path("reports/models") / record.version)
    snapshot = export_model_snapshot(settings.warehouse, record.version, folder)
    result = run_model_card(record.version, snapshot, record.model_path.parent, folder)
    return MaterializeResult(
        metadata={"version": record.version, REPORT_LINK: file_link(result.html), "images": result.images}
    )


@asset(
    name="model_registry",
    group_name="lifecycle",
    pool=WAREHOUSE_POOL,
    # its changes are decided from an approved evaluation (shadow) and the challenger's nightly health (canary steps,
    # promotion, rollback); the nightly assets reading the registry back are not drawn: an asset graph has no cycles
    deps=[AssetKey("candidate_evaluation"), AssetKey("shadow_scores")],
    description="Registered model versions and the dated alias log (champion, challenger and its stage). Each "
    "materialization is one change of role — shadow, canary step, promotion, rejection or rollback — with who and why.",
)
def model_registry(
    context: AssetExecutionContext, config: RegistryChange, project: ProjectResource, warehouse: WarehouseResource
) -> MaterializeResult:
    effective = dt.date.fromisoformat(config.effective_from) if config.effective_from else dt.date.today()
    change = core.RegistryChange(config.action, config.version, config.stage, config.reason, config.actor)  # type: ignore[arg-type]
    with warehouse.connect() as connection:
        result = core.apply_registry_change(project.load(), connection, change, effective, context.log)
        versions = registry.versions(connection)
        log = registry.alias_log(connection)
    return MaterializeResult(
        metadata={
            **dagster_metadata(result.metadata),
            "versions": markdown_table(
                versions.select("version", "registered_at", "holdout_auc", "training_rows"), rows=20
            ),
            "alias_log": markdown_table(
                log.sort("seq", descending=True).select(
                    "effective_from", "alias", "version", "stage", "actor", "reason"
                ),
                rows=20,
            ),
        }
    )
