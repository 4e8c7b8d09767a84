"""Webhook delivery of alert events through an outbox table, never failing the night.

``monitoring.alert_outbox`` holds one row per alert event (``event_id`` like ``rule@2026-02-04:opened``) with the
exact JSON body to POST. ``deliver`` posts the rows that are due, oldest first, and marks a row delivered on
a 2xx answer. Any other outcome (connection refused, timeout, non-2xx, redirect, bad URL) is recorded on the row
(``attempts``, ``last_error``) and retried on a later call after an exponential backoff (60 s, 2 min, 4 min, ...
capped at 1 h). Delivery failures are never raised: alerts are kept in the warehouse whatever the webhook does.

Delivery is at-least-once: an endpoint that answers after the client timeout, or a crash between the answer and
marking the row, gets the event again. Every POST therefore carries an ``Idempotency-Key`` header, derived from the
event id and the same on every retry, so a receiver can drop repeats.

``deliver`` never holds the warehouse while posting: it reads the due events, closes the connection, posts, then
reopens it to record the results in one transaction, so a slow endpoint never blocks the nightly run or a CLI
command (DuckDB lets one process hold the file). ``outbox_report`` says what is pending without posting, for steps
that run inside a caller's connection; the ``alert_outbox`` sensor (jobs/webhook.py) drains the outbox every few
minutes, so backoff retries happen within the hour, not at the next night.

The URL often carries a secret (Slack/Teams tokens live in its path), so it is read from an environment variable
only, never stored, never logged, and redacted from every error text before that is stored or logged. Credentials
in it (``https://user:pass@host/...``) are sent as a Basic ``Authorization`` header, never as part of the address.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import duckdb

from nightkeeper.schema import ALERT_OUTBOX as OUTBOX
from nightkeeper.warehouse import run_transaction

BACKOFF_BASE = dt.timedelta(seconds=60)
BACKOFF_CAP = dt.timedelta(hours=1)
REDACTED = "[redacted]"
_MAX_ERROR_CHARS = 500

logger = logging.getLogger(__name__)

_COLORS = {"critical": "#d00000", "warning": "#f2c744", "info": "#439fe0", "resolved": "#2eb886"}


@dataclass(frozen=True)
class DeliveryReport:
    """What one ``deliver`` call did.

    ``delivered``: events posted with a 2xx answer in this call. ``failed``: attempts in this call that failed (now
    waiting for a retry). ``pending``: events not delivered after this call (failed, not yet due, or not tried).
    ``webhook_configured``: False when no URL was given, in which case nothing was sent and every event stays pending.
    """

    delivered: int
    failed: int
    pending: int
    webhook_configured: bool


@dataclass(frozen=True)
class _Attempt:
    error: str | None  # None: delivered (2xx)
    endpoint_down: bool  # the endpoint itself failed (no answer, 5xx, redirect): stop trying others this call


def webhook_url(env_var: str) -> str | None:
    """The webhook URL from environment variable ``env_var``; None when unset or blank. Never log the result."""
    value = os.environ.get(env_var, "").strip()
    return value or None


def webhook_body(alert: dict[str, Any]) -> dict[str, Any]:
    """The Slack-compatible JSON body for one structured alert event (as built by ``nightkeeper.alerts``).

    Top-level ``text`` (the human message, enough on its own for Slack, Teams or Mattermost), one colored
    ``attachments`` entry with the key fields, and ``nightkeeper``: the structured alert event, unchanged, for
    machine consumers. Expects at least the keys ``message``, ``event``, ``severity``, ``rule`` and ``metric``.
    """
    event = str(alert.get("event", ""))
    fields = [
        {"title": "Metric", "value": str(alert.get("metric", "")), "short": True},
        {"title": "Value", "value": _number(alert.get("value")), "short": True},
    ]
    if alert.get("threshold") is not None:
        fields.append(
            {
                "title": "Threshold",
                "value": f"{alert.get('comparison', '')} {_number(alert['threshold'])}",
                "short": True,
            }
        )
    if alert.get("nights"):
        fields.append({"title": "Nights", "value": ", ".join(alert["nights"]), "short": True})
    causes = alert.get("probable_causes") or []
    if causes:
        fields.append(
            {
                "title": "Probable causes",
                "value": "; ".join(
                    f"{c['metric']} = {_number(c['value'])} {c['comparison']} {_number(c['threshold'])}" for c in causes
                ),
                "short": False,
            }
        )
    if alert.get("runbook"):
        fields.append({"title": "Runbook", "value": str(alert["runbook"]), "short": False})
    color = _COLORS["resolved"] if event == "resolved" else _COLORS.get(str(alert.get("severity")), _COLORS["info"])
    return {
        "text": str(alert["message"]),
        "attachments": [
            {
                "color": color,
                "title": f"{alert.get('rule', '')} {event}".strip(),
                "fields": fields,
                "footer": "nightkeeper",
            }
        ],
        "nightkeeper": alert,
    }


def enqueue(connection: duckdb.DuckDBPyConnection, event_id: str, body: dict[str, Any]) -> bool:
    """Add one event to the outbox, due at once; False (and nothing written) if ``event_id`` is already there.

    Does not open a transaction, so callers can enqueue inside their own.
    """
    if connection.execute(f"select 1 from {OUTBOX} where event_id = ?", [event_id]).fetchone():
        return False
    connection.execute(
        f"""insert into {OUTBOX}
            select ?, coalesce(max(seq), 0) + 1, ?, 0, null, null, null, now() from {OUTBOX}""",
        [event_id, json.dumps(body, sort_keys=True)],
    )
    return True


def retry_delay(attempts: int, base: dt.timedelta = BACKOFF_BASE, cap: dt.timedelta = BACKOFF_CAP) -> dt.timedelta:
    """Wait after the ``attempts``-th failed attempt: ``base * 2**(attempts-1)``, at most ``cap``."""
    if attempts < 1:
        return dt.timedelta(0)
    return min(base * (2 ** min(attempts - 1, 30)), cap)


def deliver(
    connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
    url: str | None,
    timeout: float,
    now: dt.datetime,
    max_batch: int = 50,
) -> DeliveryReport:
    """POST every due outbox event (oldest first, at most ``max_batch``) to ``url``; never raises for delivery failures.

    ``connect()`` opens the warehouse (e.g. ``lambda: warehouse.connect(path)``); it is called twice and never held
    while posting: once to read the due events, once after posting to record every result in one transaction.

    An event is due when undelivered and its ``next_attempt_at`` is unset or ``<= now``. A 2xx answer marks it
    delivered (``delivered_at = now``). Any failure increments ``attempts``, stores a redacted ``last_error`` and sets
    ``next_attempt_at = now + retry_delay(attempts)``. After a failure where the endpoint itself is unhealthy (no
    connection, timeout, 5xx, redirect) the remaining events of the batch are not tried in this call (they stay due),
    so a dead endpoint costs at most one timeout per call; after a 4xx answer the batch continues. Each POST carries
    ``Idempotency-Key: idempotency_key(event_id)``.
    ``url=None``: nothing is sent, every row stays pending and the report says ``webhook_configured=False``.
    ``now`` should be timezone-aware; a naive value is taken as UTC. Warehouse errors (not delivery failures) propagate.
    """
    now = now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)
    with connect() as connection:
        if url is None:
            return outbox_report(connection, None)
        due = connection.execute(
            f"""select event_id, payload, attempts from {OUTBOX}
                where delivered_at is null and (next_attempt_at is null or next_attempt_at <= ?)
                order by seq limit ?""",
            [now, max_batch],
        ).fetchall()
    tried: list[tuple[str, int, _Attempt]] = []
    for event_id, payload, attempts in due:  # the warehouse is closed meanwhile: a slow endpoint blocks nobody
        attempt = _post(url, json.loads(payload), timeout, idempotency_key(event_id))
        tried.append((event_id, attempts, attempt))
        if attempt.error is not None and attempt.endpoint_down:
            break
    with connect() as connection:

        def record_attempts() -> None:
            for event_id, attempts, attempt in tried:
                _record(connection, event_id, attempts, attempt, now)

        run_transaction(connection, record_attempts)
        pending = _pending(connection)
    delivered = sum(attempt.error is None for _, _, attempt in tried)
    return DeliveryReport(delivered=delivered, failed=len(tried) - delivered, pending=pending, webhook_configured=True)


def outbox_report(connection: duckdb.DuckDBPyConnection, url: str | None) -> DeliveryReport:
    """What is pending in the outbox, without posting anything (``url`` only says whether a webhook is configured)."""
    pending = _pending(connection)
    if url is None and pending:
        logger.info("no webhook URL configured: %d alert event(s) stay pending in %s", pending, OUTBOX)
    return DeliveryReport(delivered=0, failed=0, pending=pending, webhook_configured=url is not None)


def idempotency_key(event_id: str) -> str:
    """The ``Idempotency-Key`` header of an event: the same on every retry, distinct per event, plain ASCII."""
    return "nightkeeper-" + hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:32]


def _record(
    connection: duckdb.DuckDBPyConnection, event_id: str, attempts: int, attempt: _Attempt, now: dt.datetime
) -> None:
    if attempt.error is None:
        connection.execute(
            f"update {OUTBOX} set attempts = attempts + 1, delivered_at = ?, next_attempt_at = null where event_id = ?",
            [now, event_id],
        )
        logger.info("delivered alert event %s to the webhook", event_id)
        return
    tries = attempts + 1
    retry_at = now + retry_delay(tries)
    connection.execute(
        f"update {OUTBOX} set attempts = ?, last_error = ?, next_attempt_at = ? where event_id = ?",
        [tries, attempt.error, retry_at, event_id],
    )
    logger.warning(
        "webhook delivery of alert event %s failed (attempt %d): %s; next attempt at %s",
        event_id,
        tries,
        attempt.error,
        retry_at.isoformat(),
    )


def redact(text: str, url: str) -> str:
    """``text`` with the URL and every distinctive part of it (credentials, host, path, segments, query values)
    replaced by ``[redacted]``, case-insensitively, also in percent-decoded form."""
    for secret in sorted(_url_parts(url), key=len, reverse=True):
        text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
    return text


def _post(url: str, body: dict[str, Any], timeout: float, key: str) -> _Attempt:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "nightkeeper-alerts",
        "Idempotency-Key": key,
    }
    try:
        address, credentials = _without_userinfo(url)
        if credentials is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        request = urllib.request.Request(address, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    except Exception as exc:  # e.g. ValueError for a malformed URL: never let delivery fail the night
        return _Attempt(_clean(f"{type(exc).__name__}: {exc}", url), True)
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
            answer = response.read(_MAX_ERROR_CHARS).decode("utf-8", "replace")
        if 200 <= status < 300:
            return _Attempt(None, False)
        return _Attempt(_clean(f"HTTP {status}: {answer}", url), True)
    except urllib.error.HTTPError as exc:
        try:
            answer = exc.read(_MAX_ERROR_CHARS).decode("utf-8", "replace")
        except Exception:  # the error body is best effort
            answer = ""
        text = f"HTTP {exc.code} {exc.reason}" + (f": {answer}" if answer.strip() else "")
        return _Attempt(_clean(text, url), not 400 <= exc.code < 500)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            return _Attempt(f"timed out after {timeout:g} s", True)
        return _Attempt(_clean(f"connection failed: {exc.reason}", url), True)
    except TimeoutError:
        return _Attempt(f"timed out after {timeout:g} s", True)
    except (OSError, http.client.HTTPException) as exc:
        return _Attempt(_clean(f"connection failed: {type(exc).__name__}: {exc}", url), True)
    except Exception as exc:  # e.g. ValueError for a malformed URL: never let delivery fail the night
        return _Attempt(_clean(f"{type(exc).__name__}: {exc}", url), True)


def _without_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` without ``user:pass@`` and the decoded ``user:pass`` (None when the URL has no credentials)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rsplit("@", 1)[1]
    credentials = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), credentials


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Treat a redirect as a failed delivery instead of following it (a POST must reach the configured endpoint)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _clean(text: str, url: str) -> str:
    return redact(" ".join(text.split()), url)[:_MAX_ERROR_CHARS]


def _url_parts(url: str) -> set[str]:
    parts = {url, url.split("://", 1)[-1]}
    try:
        parsed = urllib.parse.urlsplit(url)
        parts |= {parsed.netloc, parsed.path, parsed.query, parsed.fragment}
        parts |= {parsed.username or "", parsed.password or "", parsed.hostname or ""}
        parts |= set(parsed.path.split("/"))
        for key, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
            parts |= {key, value, f"{key}={value}"}
    except ValueError:  # unparsable URL: the whole string and its pieces between separators
        parts |= set(re.split(r"[/?&#=:@]", url))
    parts |= {urllib.parse.unquote(part) for part in parts}
    return {part for part in parts if len(part) >= 4 and part.lower() not in ("http", "https")}


def _pending(connection: duckdb.DuckDBPyConnection) -> int:
    row = connection.execute(f"select count(*) from {OUTBOX} where delivered_at is null").fetchone()
    return int(row[0]) if row else 0


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
