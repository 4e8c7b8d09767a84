"""Production on one machine: Dagster's webserver and daemon for one project, supervised together.

``dagster dev`` is for development (and ignores SIGTERM for its children); here each child runs in its own process
group, and the whole group is ended when either child exits or ``serve`` itself is asked to stop, so no run worker
or code server outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.instance import write_workspace

STOP_GRACE_SECONDS = 20
"""How long a child's process group gets to exit after SIGTERM before it is killed."""


def serve(config_path: Path, home: Path, host: str, port: int) -> int:
    """Run ``dagster-webserver`` on ``host:port`` and ``dagster-daemon`` on the Dagster home ``home`` with a workspace
    naming ``config_path``, until either exits or this process gets SIGTERM/SIGINT. Returns the exit code: the
    first child's that exited on its own, or 0 when stopped by a signal."""
    workspace = write_workspace(config_path, home)
    env = {**os.environ, "DAGSTER_HOME": str(home.resolve())}
    bin_dir = Path(sys.executable).parent
    commands = {
        "dagster-webserver": [str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)],
        "dagster-daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
    }
    stopping: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: stopping.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    children = {name: subprocess.Popen(command, env=env, start_new_session=True) for name, command in commands.items()}
    try:
        while not stopping:
            exited = [(name, child.returncode) for name, child in children.items() if child.poll() is not None]
            if exited:
                name, code = exited[0]
                print(f"nightkeeper serve: {name} exited with code {code}; stopping", file=sys.stderr)
                return code or 1
            time.sleep(0.5)
        return 0
    finally:
        _stop(list(children.values()))
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(children: list[subprocess.Popen]) -> None:
    """SIGTERM each child's process group, then SIGKILL whatever is left after the grace period."""
    for child in children:
        _signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
    # the group outlives its leader when a grandchild (a run worker, a code server) is still running
    for child in children:
        _signal_group(child.pid, signal.SIGKILL)
        child.wait()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pgid, sig)
