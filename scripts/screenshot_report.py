#!/usr/bin/env python3
"""Render an HTML report to a PNG with headless Chromium, to look at it (or check it renders) without a desktop.

    python scripts/screenshot_report.py reports/2026-01/monthly_review-2026-01.html /tmp/monthly.png [--height 4000]

Needs the Debian package ``chromium`` (``apt-get install -y chromium``) at /usr/bin/chromium, or a browser named by
``--chromium`` / $CHROMIUM. Runs without network, GPU, sandbox or profile (a throwaway --user-data-dir), so it works
as root in CI containers. Exit status: 0 when the screenshot was written, 1 when Chromium failed or wrote nothing,
2 when the input is missing, 3 when no Chromium is installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "headless Chromium is not installed; install it with:  apt-get update && apt-get install -y chromium"


def chromium_command(browser: str, html: Path, png: Path, profile: Path, width: int, height: int) -> list[str]:
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={width},{height}",
        html.resolve().as_uri(),
    ]


def find_chromium(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get("CHROMIUM"), DEFAULT_CHROMIUM):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None if explicit else shutil.which("chromium")


def screenshot(
    html: Path, png: Path, browser: str, width: int = 1400, height: int = 4000, timeout: float = 120.0
) -> int:
    """Write ``png``; returns the process status to exit with (0 ok, 1 failure), printing why it failed."""
    png.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        png.unlink()
    with tempfile.TemporaryDirectory(prefix="nightkeeper-chromium-") as profile:
        command = chromium_command(browser, html, png.resolve(), Path(profile), width, height)
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"chromium did not finish within {timeout:g} s", file=sys.stderr)
            return 1
    if completed.returncode != 0:
        print(f"chromium exited with status {completed.returncode}:\n{completed.stderr[-4000:]}", file=sys.stderr)
        return 1
    if not png.exists() or png.stat().st_size == 0:
        print(f"chromium exited 0 but wrote no screenshot at {png}:\n{completed.stderr[-4000:]}", file=sys.stderr)
        return 1
    print(f"wrote {png} ({png.stat().st_size:,} bytes, {width}x{height})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot an HTML report with headless Chromium.")
    parser.add_argument("html", type=Path, help="the HTML file to render")
    parser.add_argument("png", type=Path, help="where to write the PNG")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before giving up on the browser")
    parser.add_argument(
        "--chromium", default=None, help=f"browser binary (default: $CHROMIUM, then {DEFAULT_CHROMIUM})"
    )
    args = parser.parse_args(argv)
    if not args.html.is_file():
        print(f"no such HTML file: {args.html}", file=sys.stderr)
        return 2
    browser = find_chromium(args.chromium)
    if browser is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 3
    return screenshot(args.html, args.png, browser, args.width, args.height, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
