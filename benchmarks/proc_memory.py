"""Memory figures of this process and machine from Linux's /proc, for the benchmark scripts (imported by name:
a script's own folder is first on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

SELF_STATUS = "/proc/self/status"
MEMINFO = "/proc/meminfo"


def proc_mib(path: str, key: str) -> float | None:
    """The ``key:`` line of a /proc status file (KiB), in MiB; None where /proc is not available."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
