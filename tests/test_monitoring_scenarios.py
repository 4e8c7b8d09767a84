"""Monitoring scenarios through Dagster: steady nights stay silent, shifts alert fast, concept drift is caught by
performance, bad data alerts on validation — each on the simulator's world, with the shipped alert rules."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest
from pipeline_harness import (
    FIRST_NIGHT,
    alerts_table,
    bootstrap_example_champion,
    example_config,
    make_project,
    run_plan,
)

from nightkeeper.examples import simulator


def quiet_project(tmp_path, **drift):
    raw = example_config()
    raw["monitoring"]["drift"] = {**raw["monitoring"]["drift"], "evidently_report": False, **drift}
    project = make_project(tmp_path / "project", raw)
    bootstrap_example_champion(project)
    return project


def opened_on(alerts: pl.DataFrame, night: dt.date) -> pl.DataFrame:
    return alerts.filter(pl.col("opened_night") == night)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes of real nights; pytest's 600 s default is for one test of the default suite
def test_thirty_stable_nights_raise_no_alert(tmp_path):
    project = quiet_project(tmp_path)

    results = run_plan(project, simulator.ScenarioPlan.clean(), nights=30, rows=2000)

    assert all(result.success for result in results)
    assert alerts_table(project).height == 0


@pytest.mark.slow  # Dagster nights (~14 s). In the default suite: test_drift_alerts (the drift rules on stored metrics)
def test_sudden_shift_alerts_on_its_first_night(tmp_path):
    project = quiet_project(tmp_path)
    onset = 1  # one clean night before: the rules alert on a single night, more clean nights add no evidence

    run_plan(project, simulator.ScenarioPlan.sudden_shift(onset, share=0.3), nights=onset + 1, rows=2000)

    alerts = alerts_table(project)
    assert alerts.filter(pl.col("opened_night") < FIRST_NIGHT + dt.timedelta(days=onset)).height == 0
    shift = opened_on(alerts, FIRST_NIGHT + dt.timedelta(days=onset))
    assert "drift" in set(shift["category"]), alerts


@pytest.mark.slow  # two Dagster nights of 2,000 rows. In the default suite: test_report's month (Dagster nights with a
# bad-data night whose population and prediction drift are attributed to its validation alerts), test_alerts (the rule)
def test_bad_data_night_alerts_on_validation_not_on_drift(tmp_path):
    project = quiet_project(tmp_path)
    bad = 1

    run_plan(project, simulator.ScenarioPlan.bad_data_at(bad), nights=bad + 1, rows=2000)

    night = opened_on(alerts_table(project), FIRST_NIGHT + dt.timedelta(days=bad))
    assert {"schema-break", "quarantine-spike"} <= set(night["rule"])
    assert "drift" not in set(night["category"]), night


@pytest.mark.slow  # 16 nights: realized AUC is pooled over a week of labels before it alerts. In the default suite:
# test_performance::test_cbpe_cannot_see_concept_drift_but_realized_can (the metric) and test_alerts (the rule)
def test_concept_drift_without_input_shift_is_caught_by_performance(tmp_path):
    project = quiet_project(tmp_path)
    onset = 2

    run_plan(project, simulator.ScenarioPlan.concept_drift(onset, shift=1.0), nights=16, rows=2000, label_delay_days=2)

    alerts = alerts_table(project)
    performance = alerts.filter(pl.col("category") == "performance")
    assert performance.height >= 1, alerts
    assert performance["opened_night"].min() > FIRST_NIGHT + dt.timedelta(days=onset)
    assert alerts.filter(pl.col("category") == "drift").height == 0, "concept drift leaves the inputs unchanged"


@pytest.mark.slow
def test_gradual_income_inflation_alerts_before_realized_auc_falls_by_three_points(tmp_path):
    project = quiet_project(tmp_path)

    run_plan(
        project,
        simulator.ScenarioPlan.gradual_income_inflation(2, per_night_rate=0.02),
        nights=25,
        rows=2000,
        label_delay_days=2,
    )

    alerts = alerts_table(project)
    drift = alerts.filter(pl.col("category") == "drift")
    assert drift.height >= 1, alerts
    first_alert = drift["opened_night"].min()
    realized = project.query(
        "select partition_date, auc from monitoring.performance_realized "
        "where source = 'model' and auc is not null order by 1"
    )
    reference = project.query(
        "select cast(json_extract(card_json, '$.holdout_metrics.auc') as double) as auc from registry.model_versions"
    )["auc"][0]
    before = realized.filter(pl.col("partition_date") <= first_alert)
    assert (reference - before["auc"]).max() <= 0.03 + 0.02  # one night's AUC also wanders ±0.02 by chance


class _Recorder(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow  # two Dagster nights; the default suite delivers and retries webhooks in test_webhook
def test_webhook_down_during_the_night_delivers_the_alert_on_a_later_night(tmp_path, monkeypatch):
    project = quiet_project(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    port = server.server_address[1]
    server.server_close()  # the port is known but nobody listens yet: the webhook is down
    monkeypatch.setenv("NIGHTKEEPER_WEBHOOK_URL", f"http://127.0.0.1:{port}/hooks/T0KEN-secret")
    config = project.config
    nights = simulator.simulate_to_folders(
        FIRST_NIGHT, 2, 2000, 11, simulator.ScenarioPlan.bad_data_at(0), config.landing_path, config.labels_path
    )

    down = project.run_night(nights[0])

    assert down.success
    pending = project.query("select * from monitoring.alert_outbox where delivered_at is null")
    assert pending.height >= 1
    assert not any("T0KEN" in (error or "") for error in pending["last_error"])
    project.query("update monitoring.alert_outbox set next_attempt_at = now() - interval 1 minute")  # backoff elapsed

    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", port), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        up = project.run_night(nights[1])
    finally:
        server.shutdown()
        server.server_close()

    assert up.success
    assert project.query("select count(*) as n from monitoring.alert_outbox where delivered_at is null")["n"][0] == 0
    delivered = [(body["nightkeeper"]["alert_id"], body["nightkeeper"]["event"]) for body in _Recorder.received]
    assert len(delivered) == len(set(delivered)), "each event is delivered exactly once"
    assert set(pending["event_id"]) <= {f"{alert_id}:{event}" for alert_id, event in delivered}
    assert all("text" in body for body in _Recorder.received)
