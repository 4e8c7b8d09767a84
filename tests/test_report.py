"""The monthly review and the model card, end to end: nights run through the real Dagster job into a DuckDB warehouse,
a snapshot is exported, papermill executes the notebooks on it, nbconvert renders HTML without code.

One small project serves every test (module fixture): 4 nights of 800 rows with a bad-data night, labels 2 nights
late. After 2 nights no label has landed (the "no labels yet" snapshot); after 4 nights the month has realized
performance, alerts, and — stored with the core review functions — a review queue with some reviewed rows.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest
from pipeline_harness import (
    FIRST_NIGHT,
    REPO,
    alerts_table,
    bootstrap_example_champion,
    example_config,
    make_project,
)

from nightkeeper import lifecycle, warehouse
from nightkeeper.config import ReviewConfig
from nightkeeper.examples import simulator
from nightkeeper.report.attention import attention_items
from nightkeeper.report.execution import (
    MODEL_CARD_SECTIONS,
    MONTHLY_SECTIONS,
    kernel_name,
    run_model_card,
    run_monthly_review,
)
from nightkeeper.report.snapshot import (
    MANIFEST,
    SECTION_SCHEMAS,
    Snapshot,
    export_model_snapshot,
    export_month_snapshot,
    load_snapshot,
    month_bounds,
)
from nightkeeper.report.views import alias_timeline, lifecycle_events, quarantine_rates_by_rule
from nightkeeper.review.queue import build_review_queue
from nightkeeper.review.storage import store_queue, store_review_labels

MONTH = f"{FIRST_NIGHT:%Y-%m}"
NIGHTS = 4
ROWS = 800
LABEL_DELAY = 2
BAD_NIGHT = 2
CHROMIUM = Path("/usr/bin/chromium")


def _store_review(project, nights: list[dt.date]) -> None:
    """A review queue for each night (as the review step stores it) and labels for the first half of it."""
    config = project.config
    with warehouse.connect(config.warehouse_path) as connection:
        outcomes = connection.execute("select * from nightly.outcomes").pl()
        quarantine = connection.execute("select * from nightly.quarantine").pl()
        queue = build_review_queue(outcomes, quarantine, config.model.decision.threshold, ReviewConfig(capacity=60))
        for night in nights:
            store_queue(connection, night, queue.filter(pl.col("partition_date") == night))
        answered = queue.filter(pl.col("score").is_not_null()).head(queue.height // 2)
        labels = answered.select(
            "entity_id",
            "partition_date",
            (pl.col("score") >= config.model.decision.threshold).cast(pl.Int8).alias("label"),
            pl.lit("ana").alias("reviewer"),
            pl.lit(None, dtype=pl.String).alias("note"),
            (
                pl.col("partition_date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
                + pl.duration(days=1, hours=9)
            ).alias("reviewed_at"),
            pl.lit("review-2026-01.csv").alias("source_file"),
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row_number"),
        )
        store_review_labels(connection, labels)


def _alias_history(project, version: str) -> None:
    """A challenger that went to shadow and was rejected, so the timeline has lifecycle events to draw."""
    with warehouse.connect(project.config.warehouse_path) as connection:
        lifecycle.start_shadow(
            connection, version, FIRST_NIGHT + dt.timedelta(days=1), "retrain", "candidate passed the gates"
        )
        lifecycle.reject_challenger(
            connection, FIRST_NIGHT + dt.timedelta(days=3), "rollout", "shadow failed its health check"
        )


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    raw = example_config()
    raw["monitoring"]["drift"] = {**raw["monitoring"]["drift"], "evidently_report": False}
    project = make_project(root / "project", raw)
    champion = bootstrap_example_champion(project)
    config = project.config
    nights = simulator.simulate_to_folders(
        FIRST_NIGHT,
        NIGHTS,
        ROWS,
        11,
        simulator.ScenarioPlan.bad_data_at(BAD_NIGHT),
        config.landing_path,
        config.labels_path,
        label_delay_days=LABEL_DELAY,
    )
    for night in nights[:LABEL_DELAY]:
        assert project.run_night(night).success
    early = export_month_snapshot(config.warehouse_path, MONTH, root / "early", config=config)
    for night in nights[LABEL_DELAY:]:
        assert project.run_night(night).success
    _store_review(project, nights)
    _alias_history(project, champion.version)
    full = export_month_snapshot(config.warehouse_path, MONTH, root / "full", config=config)
    return {"root": root, "project": project, "champion": champion, "early": early, "full": full}


@pytest.fixture(scope="module")
def full_report(month):
    return run_monthly_review(month["full"], MONTH, month["root"] / "full")


def _problems(executed: Path) -> list[str]:
    """Error outputs and stderr text of an executed notebook (a report must not show either)."""
    notebook = json.loads(executed.read_text())
    found = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                found.append(f"{output['ename']}: {output['evalue']}")
            elif output["output_type"] == "stream" and output.get("name") == "stderr":
                found.append("".join(output["text"]))
    return found


def _text(html: str) -> str:
    """The visible text of an HTML page, roughly (tags and images dropped, whitespace folded)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<img[^>]*>", "", html)))


def test_snapshot_holds_the_month_and_the_warehouse_is_closed(month):
    snapshot = month["full"]
    manifest = json.loads((snapshot / MANIFEST).read_text())
    assert manifest["month"] == MONTH
    assert manifest["nights_with_data"] == [(FIRST_NIGHT + dt.timedelta(days=i)).isoformat() for i in range(NIGHTS)]
    volume = pl.read_parquet(snapshot / "volume.parquet")
    assert volume["raw_rows"].to_list() == volume["outcome_rows"].to_list()  # row conservation, seen from the report
    assert volume.height == NIGHTS
    assert pl.read_parquet(snapshot / "performance_realized.parquet")["labeled_rows"].sum() > 0
    assert pl.read_parquet(snapshot / "review_queue.parquet").height > 0
    assert {"registry.model_aliases", "monitoring.alerts"}.isdisjoint(manifest["missing_tables"])
    # the export let go of the file: another connection opens it at once
    with duckdb.connect(str(month["project"].config.warehouse_path)) as connection:
        assert connection.execute("select count(*) from nightly.outcomes").fetchone()[0] == volume["raw_rows"].sum()


def test_full_month_renders_every_section_with_plots_and_no_code(month, full_report):
    html = full_report.html.read_text()
    text = _text(html)
    for heading in MONTHLY_SECTIONS:
        assert re.search(rf"<h2[^>]*>\s*{re.escape(heading)}", html), f"missing section {heading!r}"
    assert full_report.images >= 6
    assert full_report.images == html.count("<img")
    assert "data:image/png;base64," in html  # images embedded, not linked
    assert "import polars" not in html and "load_snapshot(" not in html  # no code cells
    assert _problems(full_report.executed_notebook) == []
    assert "Traceback" not in html
    assert 'src="http' not in html  # self-contained: no script or image fetched from the network
    assert full_report.executed_notebook.exists()
    # what needs attention is computed from the data: the bad night quarantined rows and opened alerts
    assert "quarantine" in text.lower()
    assert "runbook.md#quarantine-spike" in html
    assert "no labels yet" not in text.lower()
    assert "Reviewers agreed with the model" in text


def test_attention_list_is_computed_from_the_snapshot(month):
    items = attention_items(load_snapshot(month["full"]))
    texts = " | ".join(item.text for item in items)
    bad = (FIRST_NIGHT + dt.timedelta(days=BAD_NIGHT)).isoformat()
    assert any("**quarantine-spike**" in item.text and bad in item.text for item in items), texts
    assert [item.level for item in items] == sorted(
        (item.level for item in items), key=["critical", "warning", "info"].index
    )

    early = attention_items(load_snapshot(month["early"]))
    assert any("No labels yet" in item.text for item in early)


def test_every_alert_opened_in_the_month_is_listed_under_what_needs_attention(month, full_report):
    snapshot = load_snapshot(month["full"])
    first, last = month_bounds(MONTH)
    opened = snapshot["alerts"].filter(pl.col("opened_night").is_between(first, last))
    assert "critical" in opened["severity"].to_list()  # the bad-data night breaks the schema: a critical alert
    items = attention_items(snapshot)
    page = full_report.html.read_text()
    section = _text(page[page.index("What needs attention") : page.index("Nightly volume")])
    for alert in opened.iter_rows(named=True):
        listed = [i for i in items if f"**{alert['rule']}**" in i.text and str(alert["opened_night"]) in i.text]
        assert listed, f"alert {alert['alert_id']} is not under what needs attention: {[i.text for i in items]}"
        assert listed[0].level == alert["severity"]
        assert f"{alert['rule']} " in section and str(alert["opened_night"]) in section, alert["alert_id"]


def test_the_bad_data_night_alerts_on_validation_not_on_drift(month):
    project, night = month["project"], FIRST_NIGHT + dt.timedelta(days=BAD_NIGHT)
    bad = alerts_table(project).filter(pl.col("opened_night") == night)
    assert {"schema-break", "quarantine-spike"} <= set(bad["rule"])
    assert "drift" not in set(bad["category"]), bad
    # the test must tell: the night's drift crossed the population-shift and prediction-drift rules' thresholds (1),
    # and was attributed to the data-quality alerts instead of paging
    drifted = project.query(
        "select metric from monitoring.night_metrics where night = ? and value >= 1 and metric in "
        "('drift.population_shifted', 'drift.prediction_drifted')",
        [night],
    )
    assert drifted.height > 0


@pytest.mark.slow  # a third notebook run; the default suite checks the early snapshot's attention list
def test_month_without_labels_says_so(month):
    result = run_monthly_review(month["early"], MONTH, month["root"] / "early")
    text = _text(result.html.read_text()).lower()
    assert "no labels yet" in text
    assert _problems(result.executed_notebook) == []
    assert result.images >= 4


def test_empty_month_says_no_data_and_still_renders(month):
    root = month["root"] / "empty"
    snapshot = export_month_snapshot(month["project"].config.warehouse_path, "2025-12", root)
    result = run_monthly_review(snapshot, "2025-12", root)
    html = result.html.read_text()
    text = _text(html)
    assert "No data for 2025-12" in text
    assert _problems(result.executed_notebook) == []
    for heading in MONTHLY_SECTIONS:
        assert heading in text


def test_export_tolerates_a_warehouse_without_tables(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(path)).close()
    snapshot = export_month_snapshot(path, "2026-02", tmp_path / "out")
    manifest = json.loads((snapshot / MANIFEST).read_text())
    # opening the warehouse creates the side tables (empty); tables written from frames are still missing
    assert {"nightly.outcomes", "monitoring.performance_realized"} <= set(manifest["missing_tables"])
    assert "review.queue" not in manifest["missing_tables"]
    assert manifest["nights_with_data"] == []
    loaded = load_snapshot(snapshot)
    assert not loaded.has_data
    assert all(frame.height == 0 for frame in loaded.sections.values())
    assert set(loaded.sections) == set(SECTION_SCHEMAS)
    assert attention_items(loaded)[0].text.startswith("No data for 2026-02")
    with pytest.raises(ValueError, match="YYYY-MM"):
        export_month_snapshot(path, "2026-13", tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        export_month_snapshot(tmp_path / "absent.duckdb", "2026-02", tmp_path / "out")


def test_model_card_shows_metrics_lineage_importance_and_calibration(month):
    champion = month["champion"]
    config = month["project"].config
    out = month["root"] / "card"
    snapshot = export_model_snapshot(config.warehouse_path, champion.version, out)
    result = run_model_card(champion.version, snapshot, champion.model_path.parent, out)
    html = result.html.read_text()
    text = _text(html)
    for heading in MODEL_CARD_SECTIONS:
        assert re.search(rf"<h2[^>]*>\s*{re.escape(heading)}", html), f"missing section {heading!r}"
    assert champion.card.data_fingerprint[:16] in text
    assert champion.version in text
    assert result.images >= 2  # feature importance, calibration + ROC on labeled production rows
    assert _problems(result.executed_notebook) == [] and "import polars" not in html


def _aliases(rows: list[tuple]) -> pl.DataFrame:
    stamp = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return pl.DataFrame(
        [
            (seq, alias, version, dt.date.fromisoformat(night), stamp, actor, reason, stage)
            for seq, (alias, version, night, actor, reason, stage) in enumerate(rows, start=1)
        ],
        schema=SECTION_SCHEMAS["model_aliases"],
        orient="row",
    )


def test_alias_log_reads_as_promotions_rollbacks_and_stretches():
    log = _aliases(
        [
            ("champion", "aaa", "2026-01-01", "bootstrap", "bootstrap champion", None),
            ("challenger", "bbb", "2026-02-03", "retrain", "passed the gates", "shadow"),
            ("challenger", "bbb", "2026-02-06", "rollout", "shadow held 3 healthy nights", "canary:5"),
            ("champion", "bbb", "2026-02-10", "rollout", "canary held; promoting", None),
            ("challenger", None, "2026-02-10", "rollout", "promoted bbb", None),
            ("champion", "aaa", "2026-02-20", "rollout", "canary health check failed", None),
        ]
    )
    snapshot = Snapshot(Path("."), {"month": "2026-02"}, {"model_aliases": log})
    first, last = month_bounds("2026-02")

    events = lifecycle_events(snapshot, first, last)
    assert events["event"].to_list() == ["shadow", "canary", "promotion", "challenger promoted", "rollback"]

    stretches = alias_timeline(snapshot, first, last)
    champion = stretches.filter(pl.col("alias") == "champion").select("version", "start", "end").rows()
    assert champion == [
        ("aaa", dt.date(2026, 2, 1), dt.date(2026, 2, 9)),  # carried into the month
        ("bbb", dt.date(2026, 2, 10), dt.date(2026, 2, 19)),
        ("aaa", dt.date(2026, 2, 20), dt.date(2026, 2, 28)),
    ]
    challenger = stretches.filter(pl.col("alias") == "challenger").select("stage", "start", "end").rows()
    assert challenger == [
        ("shadow", dt.date(2026, 2, 3), dt.date(2026, 2, 5)),
        ("canary:5", dt.date(2026, 2, 6), dt.date(2026, 2, 9)),
    ]


def test_attention_does_not_judge_metrics_the_alert_engine_did_not_alert_on():
    nights = [dt.date(2026, 3, d) for d in (1, 2, 3)]
    metrics = pl.DataFrame(
        {
            "night": nights * 2,
            "metric": ["validation.quarantine_rate"] * 3 + ["drift.prediction_psi"] * 3,
            "value": [0.001, 0.30, 0.001, 0.01, 0.50, 0.01],
            "model_version": ["v"] * 6,
        },
        schema=SECTION_SCHEMAS["night_metrics"],
    )
    snapshot = Snapshot(
        Path("."), {"month": "2026-03", "nights_with_data": [n.isoformat() for n in nights]}, {"night_metrics": metrics}
    )
    texts = [item.text for item in attention_items(snapshot)]
    assert not any("uarantine" in text or "PSI" in text or "Score distribution" in text for text in texts), texts


def test_quarantine_rates_by_rule_keep_the_most_broken_rules_and_fold_the_rest_into_other():
    nights = [dt.date(2026, 3, 1), dt.date(2026, 3, 2)]
    rules = pl.DataFrame(
        {
            "night": [nights[0], nights[1], nights[1], nights[1]],
            "column": ["income", "income", "age", "region"],
            "rule": ["not_null", "not_null", "range", "levels"],
            "rows": [5, 40, 3, 1],
            "violations": [5, 40, 3, 1],
        },
        schema=SECTION_SCHEMAS["quarantine_rules"],
    )
    volume = pl.DataFrame({"night": nights, "raw_rows": [100, 200]}).with_columns(
        pl.lit(0).alias(name) for name in SECTION_SCHEMAS["volume"] if name not in ("night", "raw_rows")
    )
    snapshot = Snapshot(Path("."), {}, {"quarantine_rules": rules, "volume": volume.cast(SECTION_SCHEMAS["volume"])})

    rates = quarantine_rates_by_rule(snapshot, top=2)

    assert rates.rows() == [
        (nights[0], "income not_null", 0.05),
        (nights[1], "income not_null", 0.2),
        (nights[1], "age range", 0.015),
        (nights[1], "other", 0.005),
    ]


def _github_slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_runbook_has_a_section_for_every_alert_rule():
    from nightkeeper.config import load_config

    text = (REPO / "docs" / "runbook.md").read_text()
    anchors = {_github_slug(line[3:]) for line in text.splitlines() if line.startswith("## ")}
    rules = load_config(REPO / "nightkeeper.yaml").monitoring.alerts.rules
    assert rules
    for rule in rules:
        assert rule.runbook in anchors, f"rule {rule.name}: no '## {rule.runbook}' section in docs/runbook.md"
    for anchor in ("rollback", "candidate-rejected", "retrain-refused"):
        assert anchor in anchors


def test_the_notebook_kernel_imports_the_nightkeeper_of_the_caller(tmp_path):
    import nbformat

    import nightkeeper

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("import nightkeeper\nprint(nightkeeper.__file__)")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "which.ipynb"
    nbformat.write(notebook, str(path))

    result = run_monthly_review(tmp_path / "no-snapshot", MONTH, tmp_path / "out", notebook=path)

    outputs = json.loads(result.executed_notebook.read_text())["cells"][-1]["outputs"]
    printed = "".join("".join(o["text"]) for o in outputs if o.get("name") == "stdout").strip()
    assert Path(printed).resolve() == Path(nightkeeper.__file__).resolve()


def test_kernel_runs_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    name = kernel_name()
    spec = KernelSpecManager().get_kernel_spec(name)
    assert (
        spec.argv[0] in {"python", "python3", sys.executable}
        or Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
    )


@pytest.mark.slow
def test_report_screenshot_in_headless_chromium(full_report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    png = tmp_path / "monthly.png"
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "screenshot_report.py"), str(full_report.html), str(png)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 50_000  # a rendered page of charts, not a blank canvas
