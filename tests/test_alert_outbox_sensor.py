"""The alert outbox is drained every few minutes, not once a night: the ``alert_outbox`` sensor asks for a
``deliver_alert_outbox`` run while the event log says events are pending, and that job delivers them to a real HTTP
server on 127.0.0.1 once the endpoint is back."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from dagster import AssetMaterialization, RunRequest, SkipReason, build_sensor_context
from pipeline_harness import QUIET, make_project

from jobs.webhook import ALERT_OUTBOX_JOB, ALERT_OUTBOX_SENSOR
from nightkeeper import warehouse, webhook

ENV = "NIGHTKEEPER_WEBHOOK_URL"


class _Recorder(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def free_port() -> int:
    probe = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    port = probe.server_address[1]
    probe.server_close()  # known port, nobody listening: the webhook is down
    return port


def serve(port: int) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Recorder)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def evaluate(project) -> RunRequest | SkipReason:
    defs = project.defs
    sensor = defs.get_sensor_def(ALERT_OUTBOX_SENSOR)
    result = sensor.evaluate_tick(build_sensor_context(instance=project.instance, definitions=defs))
    return result.run_requests[0] if result.run_requests else SkipReason(result.skip_message)


def drain(project):
    return project.defs.resolve_job_def(ALERT_OUTBOX_JOB).execute_in_process(
        instance=project.instance, run_config=QUIET
    )


def test_pending_alert_events_are_drained_by_the_sensor_once_the_webhook_is_back(
    tmp_path, monkeypatch, free_port
) -> None:
    project = make_project(tmp_path / "project")
    monkeypatch.setenv(ENV, f"http://127.0.0.1:{free_port}/hooks/T0KEN")
    with warehouse.connect(project.config.warehouse_path) as connection:
        webhook.enqueue(
            connection, "rule@2026-01-01:opened", {"text": "an alert", "nightkeeper": {"alert_id": "rule@2026-01-01"}}
        )

    assert isinstance(evaluate(project), SkipReason)  # nothing in the event log says events are pending yet
    assert drain(project).success  # the endpoint is down: the event stays pending, the observation says so
    assert isinstance(evaluate(project), RunRequest)

    with warehouse.connect(project.config.warehouse_path) as connection:  # the backoff has elapsed
        connection.execute("update monitoring.alert_outbox set next_attempt_at = now() - interval 1 minute")
    _Recorder.received = []
    server = serve(free_port)
    try:
        assert drain(project).success
    finally:
        server.shutdown()
        server.server_close()

    assert [body["text"] for body in _Recorder.received] == ["an alert"]
    assert isinstance(evaluate(project), SkipReason)


def test_the_sensor_skips_without_a_webhook_url(tmp_path, monkeypatch) -> None:
    project = make_project(tmp_path / "project")
    monkeypatch.delenv(ENV, raising=False)
    skipped = evaluate(project)
    assert isinstance(skipped, SkipReason) and "no webhook URL configured" in skipped.skip_message


def test_a_lifecycle_run_after_the_last_drain_makes_the_sensor_drain(tmp_path, monkeypatch, free_port) -> None:
    project = make_project(tmp_path / "project")
    monkeypatch.setenv(ENV, f"http://127.0.0.1:{free_port}/hooks/T0KEN")
    with warehouse.connect(project.config.warehouse_path):
        pass  # opening the warehouse creates its tables, the outbox among them
    assert drain(project).success  # the outbox is empty: the observation says 0 pending
    assert isinstance(evaluate(project), SkipReason)

    # a rollback run materializes the registry; its alert went to the outbox inside the run, unposted
    project.instance.report_runless_asset_event(AssetMaterialization(asset_key="model_registry"))

    assert isinstance(evaluate(project), RunRequest)
