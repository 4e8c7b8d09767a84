"""evidently's HTML drift report (about 4.6 MB a night) is kept for the last ``monitoring.drift.keep_report_nights``
nights: the drift step that writes tonight's deletes the older ones."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import polars as pl
import pytest
import yaml

from nightkeeper import registry
from nightkeeper.artifacts import save_artifact
from nightkeeper.config import ProjectConfig, parse_config
from nightkeeper.encoding import feature_matrix
from nightkeeper.examples.simulator import simulate_history, simulate_night
from nightkeeper.pipeline.monitoring import REPORTS_FOLDER, drift_night, prune_drift_reports
from nightkeeper.training import TrainedModel, train_model, training_frame
from nightkeeper.warehouse import connect

CONFIG_PATH = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"
FIRST = dt.date(2026, 3, 1)
SEED = 11


def project_config(root: Path, keep_report_nights: int | None) -> ProjectConfig:
    raw = copy.deepcopy(yaml.safe_load(CONFIG_PATH.read_text()))
    raw["model"]["num_boost_round"] = 20
    raw["model"]["params"]["num_threads"] = 1
    raw["monitoring"]["drift"].update(
        evidently_report=True, keep_report_nights=keep_report_nights, report_sample_rows=200
    )
    return parse_config(raw, root=root)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    config = project_config(tmp_path_factory.mktemp("retention_model"), None)
    history = simulate_history(FIRST - dt.timedelta(days=1), days=10, rows_per_day=500, seed=SEED)
    return train_model(training_frame(history, config), config)


def run_drift_nights(config: ProjectConfig, trained: TrainedModel, nights: list[dt.date]) -> list[object]:
    """The drift step of each night in turn against ``trained`` as the serving champion; returns each night's
    ``evidently_report`` metadata."""
    reports = []
    with connect(config.warehouse_path) as connection:
        champion = registry.register(connection, trained.card, save_artifact(trained, config.models_path))
        registry.set_alias(connection, registry.CHAMPION, champion.version, FIRST, "test", "bootstrap")
        for offset, night in enumerate(nights):
            rows = simulate_night(night, 300, SEED + offset).applications.with_columns(  # as validated rows are
                pl.lit("night.parquet").alias("source_file"),
                pl.int_range(pl.len()).alias("row_number"),
                pl.col("application_id").alias("entity_id"),
            )
            scored = rows.with_columns(
                pl.Series("score", trained.booster.predict(feature_matrix(rows, trained.card.features)))
            )
            result = drift_night(config, connection, night, rows, scored, plots=False)
            reports.append(result.metadata["evidently_report"])
    return reports


@pytest.mark.slow
def test_the_drift_step_keeps_the_evidently_reports_of_the_last_n_nights_only(tmp_path: Path, trained: TrainedModel):
    config = project_config(tmp_path, keep_report_nights=2)
    nights = [FIRST + dt.timedelta(days=i) for i in range(4)]

    reports = run_drift_nights(config, trained, nights)

    folder = config.path(Path(REPORTS_FOLDER))
    assert sorted(path.name for path in folder.glob("drift-*.html")) == [f"drift-{n}.html" for n in nights[-2:]]
    assert reports[-1] == folder / f"drift-{nights[-1]}.html"


def test_a_backfilled_night_keeps_the_reports_of_later_nights_and_its_own(tmp_path: Path):
    nights = [FIRST + dt.timedelta(days=i) for i in range(10)]
    for night in nights:
        (tmp_path / f"drift-{night}.html").write_text("<html></html>")
    (tmp_path / "drift-notes.html").write_text("a person's file")

    deleted = prune_drift_reports(tmp_path, nights[5], keep_nights=3)

    assert sorted(path.name for path in deleted) == [f"drift-{n}.html" for n in nights[:3]]
    kept = sorted(path.name for path in tmp_path.glob("drift-*.html"))
    assert kept == [*(f"drift-{n}.html" for n in nights[3:]), "drift-notes.html"]


def test_a_month_of_reports_is_kept_by_default_and_a_limit_below_one_night_is_refused_naming_the_field(tmp_path: Path):
    raw = yaml.safe_load(CONFIG_PATH.read_text())
    assert parse_config(raw, root=tmp_path).monitoring.drift.keep_report_nights == 30

    raw["monitoring"]["drift"]["keep_report_nights"] = 0
    with pytest.raises(ValueError, match="keep_report_nights"):
        parse_config(raw, root=tmp_path)
