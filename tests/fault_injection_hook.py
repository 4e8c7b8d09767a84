"""Fault-injection hook (tests only): SIGKILL the run's own process at a chosen Dagster event of a chosen step.

Not a stand-in for any component: the real run executes unchanged, and this logging handler — installed through the
Dagster instance's own ``python_logs.dagster_handler_config`` (see ``install``) — only watches the run's events. When
the environment variable ``NIGHTKEEPER_FAULT_KILL`` is ``<step key>:<EVENT_TYPE>`` (e.g. ``outcomes:STEP_START`` or
``validate_batch:ASSET_MATERIALIZATION``), the process kills itself with SIGKILL as soon as that step logs its first
event of that type: deterministic, unlike a kill sent from outside while steps race past. With ``:group`` appended it
kills its whole process group instead (under a Dagster daemon: the daemon, its code server and the run worker at once,
as a power loss or the OOM killer would). Dagster hands each event to
the event log's handler before this one, so the killing event itself is stored, as it would be when the process dies
an instant later. Without the variable the handler does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import yaml

ENV_VAR = "NIGHTKEEPER_FAULT_KILL"


class KillAtStepEvent(logging.Handler):
    """SIGKILLs this process at the step event named by ``$NIGHTKEEPER_FAULT_KILL`` (``<step key>:<EVENT_TYPE>``)."""

    def emit(self, record: logging.LogRecord) -> None:
        target = os.environ.get(ENV_VAR)
        meta = getattr(record, "dagster_meta", None)
        if not target or not meta or meta.get("dagster_event") is None:
            return
        step_key, event_type, *scope = target.split(":")
        event = meta["dagster_event"]
        if event.step_key == step_key and event.event_type_value == event_type:
            if scope == ["group"]:
                os.killpg(os.getpgid(0), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


def install(dagster_home: Path) -> None:
    """Add the handler to the dagster.yaml in ``dagster_home`` (every run on that instance then carries it)."""
    config_file = dagster_home / "dagster.yaml"
    config = yaml.safe_load(config_file.read_text()) or {}
    config.setdefault("python_logs", {})["dagster_handler_config"] = {
        "handlers": {"fault_injection": {"class": f"{__name__}.{KillAtStepEvent.__name__}"}}
    }
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
