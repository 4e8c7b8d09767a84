"""Webhook delivery from the alert outbox against a real HTTP server on 127.0.0.1: delivery, retries with backoff,
night safety when the endpoint is down or failing, no duplicates, and the URL (a secret) never stored or logged."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest

from nightkeeper.alerts import run_alerts
from nightkeeper.config import AlertRule
from nightkeeper.metrics_store import record_metrics
from nightkeeper.warehouse import connect
from nightkeeper.webhook import deliver, retry_delay, webhook_url

NIGHT = dt.date(2026, 2, 4)
NOW = dt.datetime(2026, 2, 5, 2, 30, tzinfo=dt.UTC)
TOKEN = "s3cr3tT0KENxyz"


class RecordingServer:
    """A real HTTP server in a thread: records every POST (path, JSON body) and answers with queued statuses
    (200 once the queue is empty); ``delay`` seconds of sleep before answering simulate a slow endpoint."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        self.port = 0
        self.received = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append(
                    {
                        "path": self.path,
                        "content_type": self.headers.get("Content-Type"),
                        "json": json.loads(body),
                        "authorization": self.headers.get("Authorization"),
                        "idempotency_key": self.headers.get("Idempotency-Key"),
                    }
                )
                recorder.received.set()
                time.sleep(recorder.delay)
                status = recorder.statuses.pop(0) if recorder.statuses else 200
                answer = b"ok" if status < 300 else f"failed for {self.path}".encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str = "/hooks/T000/B000") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    recording.start()
    yield recording
    recording.stop()


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(tmp_path / "warehouse.duckdb") as connection:
        yield connection


def open_alerts_tonight(conn: duckdb.DuckDBPyConnection, count: int = 1) -> None:
    """Drive ``count`` real alerts through the engine so the outbox holds ``count`` opened events."""
    metrics = ["outcomes.fallback_rate", "outcomes.undecided_rate", "validation.quarantine_rate"][:count]
    rules = [
        AlertRule(
            name=f"rate_{i}", metric=metric, comparison=">", threshold=0.05, category="operations", runbook="fallback"
        )
        for i, metric in enumerate(metrics)
    ]
    record_metrics(conn, NIGHT, {rule.metric: 0.2 for rule in rules}, "v1")
    assert len(run_alerts(conn, rules, NIGHT)) == count


def outbox(conn: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cursor = conn.execute(
        "select event_id, attempts, last_error, delivered_at, next_attempt_at from monitoring.alert_outbox order by seq"
    )
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_webhook_delivers_alert_json_with_text_to_the_server(
    conn: duckdb.DuckDBPyConnection, server: RecordingServer
) -> None:
    open_alerts_tonight(conn)
    report = deliver(lambda: nullcontext(conn), server.url(), timeout=5, now=NOW)

    assert (report.delivered, report.failed, report.pending, report.webhook_configured) == (1, 0, 0, True)
    [request] = server.requests
    assert request["content_type"].startswith("application/json")
    body = request["json"]
    assert body["text"].startswith("[warning] outcomes.fallback_rate = 0.2 > 0.05 for 1 night (2026-02-04)")
    assert body["nightkeeper"]["alert_id"] == "rate_0@2026-02-04"
    assert body["nightkeeper"]["event"] == "opened"
    [row] = outbox(conn)
    assert row["delivered_at"] == NOW and row["attempts"] == 1


def test_server_error_leaves_the_event_pending_and_it_is_retried_after_backoff(
    conn: duckdb.DuckDBPyConnection, server: RecordingServer
) -> None:
    open_alerts_tonight(conn)
    server.statuses = [500]
    report = deliver(lambda: nullcontext(conn), server.url(), timeout=5, now=NOW)

    assert (report.delivered, report.failed, report.pending) == (0, 1, 1)
    [row] = outbox(conn)
    assert row["attempts"] == 1 and row["delivered_at"] is None
    assert row["last_error"].startswith("HTTP 500")
    assert row["next_attempt_at"] == NOW + retry_delay(1)

    too_early = deliver(lambda: nullcontext(conn), server.url(), timeout=5, now=NOW + dt.timedelta(seconds=30))
    assert (too_early.delivered, too_early.failed, too_early.pending) == (0, 0, 1)
    assert len(server.requests) == 1

    later = deliver(lambda: nullcontext(conn), server.url(), timeout=5, now=NOW + retry_delay(1))
    assert (later.delivered, later.pending) == (1, 0)
    assert len(server.requests) == 2
    assert outbox(conn)[0]["attempts"] == 2


def test_server_down_is_night_safe_and_the_event_is_delivered_exactly_once_when_it_is_back(
    conn: duckdb.DuckDBPyConnection, server: RecordingServer
) -> None:
    open_alerts_tonight(conn, count=2)
    url = server.url()
    port = server.port
    server.stop()

    down = deliver(lambda: nullcontext(conn), url, timeout=2, now=NOW)
    assert (down.delivered, down.failed, down.pending) == (0, 1, 2)
    first, second = outbox(conn)
    assert first["attempts"] == 1 and first["last_error"].startswith("connection failed")
    assert second["attempts"] == 0  # a dead endpoint is tried once per call, not once per event

    server.start(port=port)
    back = deliver(lambda: nullcontext(conn), url, timeout=2, now=NOW + dt.timedelta(hours=2))
    again = deliver(lambda: nullcontext(conn), url, timeout=2, now=NOW + dt.timedelta(hours=3))

    assert (back.delivered, back.pending) == (2, 0)
    assert (again.delivered, again.failed, again.pending) == (0, 0, 0)
    delivered_ids = [request["json"]["nightkeeper"]["alert_id"] for request in server.requests]
    assert delivered_ids == ["rate_0@2026-02-04", "rate_1@2026-02-04"]


def test_slow_server_times_out_without_raising_and_stays_pending(
    conn: duckdb.DuckDBPyConnection, server: RecordingServer
) -> None:
    open_alerts_tonight(conn)
    server.delay = 1.5
    report = deliver(lambda: nullcontext(conn), server.url(), timeout=0.3, now=NOW)

    assert (report.delivered, report.failed, report.pending) == (0, 1, 1)
    assert outbox(conn)[0]["last_error"] == "timed out after 0.3 s"


def test_a_rejected_event_does_not_hold_back_the_next_one(
    conn: duckdb.DuckDBPyConnection, server: RecordingServer
) -> None:
    open_alerts_tonight(conn, count=2)
    server.statuses = [400]
    report = deliver(lambda: nullcontext(conn), server.url(), timeout=5, now=NOW)

    assert (report.delivered, report.failed, report.pending) == (1, 1, 1)
    first, second = outbox(conn)
    assert first["last_error"].startswith("HTTP 400") and first["delivered_at"] is None
    assert second["delivered_at"] == NOW


def test_malformed_url_is_recorded_as_a_failure_without_raising_or_leaking(
    conn: duckdb.DuckDBPyConnection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    open_alerts_tonight(conn)
    report = deliver(lambda: nullcontext(conn), f"htp:/hooks/{TOKEN}", timeout=5, now=NOW)

    assert (report.delivered, report.failed, report.pending) == (0, 1, 1)
    error = outbox(conn)[0]["last_error"]
    assert error.startswith("connection failed")
    assert TOKEN not in error and TOKEN not in caplog.text


def test_webhook_url_never_appears_in_stored_errors_or_logs(
    conn: duckdb.DuckDBPyConnection, server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    open_alerts_tonight(conn)
    secret_url = server.url(f"/hooks/T000/B000/{TOKEN}?token={TOKEN}")
    server.statuses = [500]  # the server echoes the request path (with the token) in its error body

    deliver(lambda: nullcontext(conn), secret_url, timeout=5, now=NOW)
    echoed_error = outbox(conn)[0]["last_error"]
    server.stop()
    deliver(lambda: nullcontext(conn), secret_url, timeout=5, now=NOW + dt.timedelta(hours=2))
    refused_error = outbox(conn)[0]["last_error"]

    assert server.requests[0]["path"].endswith(f"?token={TOKEN}")  # the token really was sent to the server
    assert "[redacted]" in echoed_error
    for text in (echoed_error, refused_error, caplog.text):
        assert TOKEN not in text
        assert secret_url not in text
    assert "failed (attempt 2)" in caplog.text


def test_without_a_webhook_url_nothing_is_sent_and_events_stay_pending(
    conn: duckdb.DuckDBPyConnection, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NIGHTKEEPER_TEST_WEBHOOK_URL", raising=False)
    open_alerts_tonight(conn, count=2)
    url = webhook_url("NIGHTKEEPER_TEST_WEBHOOK_URL")
    report = deliver(lambda: nullcontext(conn), url, timeout=5, now=NOW)

    assert url is None
    assert (report.delivered, report.failed, report.pending, report.webhook_configured) == (0, 0, 2, False)
    assert server.requests == []
    assert [row["attempts"] for row in outbox(conn)] == [0, 0]


def test_webhook_url_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTKEEPER_TEST_WEBHOOK_URL", " https://hooks.example.test/abc \n")
    assert webhook_url("NIGHTKEEPER_TEST_WEBHOOK_URL") == "https://hooks.example.test/abc"


def test_retry_delay_doubles_per_attempt_and_is_capped_at_an_hour() -> None:
    delays = [retry_delay(attempts) for attempts in (1, 2, 3, 7, 50)]
    assert delays == [
        dt.timedelta(minutes=1),
        dt.timedelta(minutes=2),
        dt.timedelta(minutes=4),
        dt.timedelta(hours=1),
        dt.timedelta(hours=1),
    ]


# ------------------------------------------------------------------------------ credentials, keys, the warehouse


def test_credentials_in_the_url_are_sent_as_an_authorization_header(
    conn: duckdb.DuckDBPyConnection, server: RecordingServer
) -> None:
    open_alerts_tonight(conn)
    url = f"http://hook%40user:p%3Ass@127.0.0.1:{server.port}/hooks/T000"

    report = deliver(lambda: nullcontext(conn), url, timeout=5, now=NOW)

    assert report.delivered == 1
    [request] = server.requests
    assert request["path"] == "/hooks/T000"
    assert request["authorization"] == "Basic " + base64.b64encode(b"hook@user:p:ss").decode()


def test_every_attempt_at_an_event_carries_the_same_idempotency_key(
    conn: duckdb.DuckDBPyConnection, server: RecordingServer
) -> None:
    open_alerts_tonight(conn, count=2)
    server.statuses = [500]
    deliver(lambda: nullcontext(conn), server.url(), timeout=5, now=NOW)
    deliver(lambda: nullcontext(conn), server.url(), timeout=5, now=NOW + retry_delay(1))

    keys = [request["idempotency_key"] for request in server.requests]
    events = [request["json"]["nightkeeper"]["alert_id"] for request in server.requests]
    assert events == ["rate_0@2026-02-04", "rate_0@2026-02-04", "rate_1@2026-02-04"]
    assert keys[0] == keys[1] and keys[0] != keys[2]
    assert all(key and key.startswith("nightkeeper-") for key in keys)


def test_delivery_does_not_hold_the_warehouse_while_posting(tmp_path: Path, server: RecordingServer) -> None:
    path = tmp_path / "warehouse.duckdb"
    with connect(path) as connection:
        open_alerts_tonight(connection)
    server.delay = 6.0
    posting = threading.Thread(target=lambda: deliver(lambda: connect(path), server.url(), timeout=10, now=NOW))
    posting.start()
    assert server.received.wait(10)

    # another process (DuckDB locks the file per process) opens the warehouse while the POST is in flight
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import duckdb; print(duckdb.connect({str(path)!r}).execute('select 1').fetchone()[0])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    still_posting = posting.is_alive()
    posting.join(30)

    assert still_posting, "the other process ran after the POST: the test proves nothing on a machine this slow"
    assert other.returncode == 0, other.stderr
    with connect(path) as connection:
        [row] = outbox(connection)
    assert row["delivered_at"] == NOW
