"""The Dagster UI tells the truth, seen in a real browser: ``dagster-webserver`` on 127.0.0.1 over a short demo's
instance, driven by Debian's headless Chromium through the DevTools protocol.

One connected lineage from ``raw_batch`` to ``monthly_review`` (asserted on the webserver's GraphQL asset graph and on
the rendered global lineage page), an asset's partitions, an asset check's result and a run, each page asserted on
what it shows and saved as a screenshot under ``$NIGHTKEEPER_UI_SCREENSHOTS`` (default: the test's temp folder).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(1800)  # the first test waits for the demo: minutes on a loaded machine
PAGE_TIMEOUT = 120.0  # seconds a page may take to show what it should (the webserver is slow on a loaded machine)

# a short demo: a clean night, a bad-data night, a drifted one; a small history for a quick champion
DEMO = """
import sys
from pathlib import Path
from rich.console import Console
from jobs.demo import DemoPlan, run_demo
plan = DemoPlan(nights=3, rows_per_night=300, bad_data_night=1, concept_drift_night=2, history_days=20,
                history_rows_per_day=500)
run_demo(Path(sys.argv[1]), plan, Console(file=sys.stderr, width=200))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Webserver:
    url: str
    screenshots: Path

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql", json.dumps({"query": query}).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
        assert "errors" not in body, body
        return body["data"]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    folder = tmp_path_factory.mktemp("ui_demo")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    demo = subprocess.run(
        [sys.executable, "-c", DEMO, str(folder)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200
    )
    assert demo.returncode == 0, demo.stderr[-4000:]
    from jobs.instance import write_workspace
    from nightkeeper.config import load_config

    config = load_config(folder / "nightkeeper.yaml")
    workspace = write_workspace(folder / "nightkeeper.yaml", config.dagster_home)
    port = free_port()
    log = (folder / "webserver.log").open("w")
    # its own process group: dagster-webserver's code-server child ignores SIGTERM sent to the parent alone
    server = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)],
        env={**env, "DAGSTER_HOME": str(config.dagster_home)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    screenshots = Path(os.environ.get("NIGHTKEEPER_UI_SCREENSHOTS", folder / "screenshots"))
    screenshots.mkdir(parents=True, exist_ok=True)
    try:
        web = Webserver(f"http://127.0.0.1:{port}", screenshots)
        wait_for_location(web, server, folder / "webserver.log")
        web.graphql("mutation { setNuxSeen }")  # else a "join the community" dialog covers every page on localhost
        yield web
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        log.close()


def wait_for_location(web: Webserver, server: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    """Until the webserver answers and its one code location is loaded."""
    deadline = time.monotonic() + timeout
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    while time.monotonic() < deadline:
        assert server.poll() is None, f"dagster-webserver exited: {log.read_text()[-4000:]}"
        try:
            entries = web.graphql(query)["workspaceOrError"]["locationEntries"]
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"code location not loaded after {timeout:g} s: {log.read_text()[-4000:]}")


class Browser:
    """Headless Chromium driven over the DevTools protocol: open a page, wait until it shows given texts, save a
    screenshot. No network beyond 127.0.0.1, no GPU, no sandbox (root in CI), a throwaway profile."""

    def __init__(self, width: int = 1600, height: int = 1000) -> None:
        from websockets.sync.client import connect

        self.profile = Path(tempfile.mkdtemp(prefix="nightkeeper-chromium-"))
        self.process = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and self.process.poll() is None, "chromium did not start"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            page = next(target for target in json.load(response) if target["type"] == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.next_id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, expression: str, what: str) -> None:
        """Until the JavaScript ``expression`` is truthy; fails saying ``what`` never happened and what the page
        shows."""
        deadline = time.monotonic() + PAGE_TIMEOUT
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} never happened; the page shows:\n{self.text()[:3000]}")
            time.sleep(0.5)

    def open(self, url: str, expected: list[str]) -> str:
        """Open ``url`` and wait until its text holds every one of ``expected``; returns the page's text."""
        self.call("Page.navigate", url=url)
        self.wait_for(
            f"(() => {{ const t = document.body ? document.body.innerText : ''; return {json.dumps(expected)}"
            ".every(e => t.includes(e)); })()",
            f"{url} showing {expected}",
        )
        return self.text()

    def click(self, finder: str) -> None:
        """Click the element the JavaScript expression ``finder`` finds."""
        assert self.evaluate(f"(() => {{ const e = {finder}; if (e) e.click(); return !!e; }})()"), finder

    def screenshot(self, png: Path, settle: float = 2.0) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=0, y=0)  # no hover overlays in the picture
        time.sleep(settle)  # layout, fit-to-screen of graphs and dialogs finish after their text is there
        png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.socket.close()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(webserver: Webserver) -> Iterator[Browser]:
    browser = Browser()
    try:
        yield browser
    finally:
        browser.close()


def asset_graph(web: Webserver) -> dict[str, set[str]]:
    """Each asset's upstream assets, as the webserver serves them to the UI."""
    nodes = web.graphql("{ assetNodes { assetKey { path } dependencyKeys { path } } }")["assetNodes"]
    return {
        "/".join(node["assetKey"]["path"]): {"/".join(dep["path"]) for dep in node["dependencyKeys"]} for node in nodes
    }


def downstream_of(graph: dict[str, set[str]], start: str) -> set[str]:
    children: dict[str, set[str]] = {name: set() for name in graph}
    for name, parents in graph.items():
        for parent in parents:
            children[parent].add(name)
    seen, frontier = {start}, [start]
    while frontier:
        for child in children[frontier.pop()]:
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return seen


def by_text(text: str, selector: str = "*") -> str:
    """A JavaScript expression finding the innermost ``selector`` element whose text is ``text``."""
    return (
        f"Array.from(document.querySelectorAll({json.dumps(selector)})).reverse()"
        f".find(e => e.innerText && e.innerText.trim() === {json.dumps(text)})"
    )


def metadata_value(label: str) -> str:
    """A JavaScript expression finding the value cell of the metadata row labelled ``label``."""
    return f"{by_text(label, 'td')}.closest('tr').children[1]"


@pytest.mark.slow
def test_every_asset_is_downstream_of_raw_batch_and_the_lineage_page_draws_them(webserver, browser):
    graph = asset_graph(webserver)

    assert downstream_of(graph, "raw_batch") == set(graph)
    assert {"month_snapshot"} <= graph["monthly_review"] and "outcomes" in graph["month_snapshot"]
    assert {"validated_batch", "labels"} <= graph["candidate_model"]
    expanded = ",".join(
        f"global@global:{group}" for group in ("nightly", "monitoring", "review", "lifecycle", "reports")
    )
    text = browser.open(f"{webserver.url}/asset-groups?expanded={expanded}", ["raw_batch", "monthly_review"])
    browser.screenshot(webserver.screenshots / "lineage.png", settle=4.0)
    # a long name is cut in the middle on its node; the graph draws every asset
    assert all(name in text or f"{name[:6]}…" in text or name[-6:] in text for name in graph)


@pytest.mark.slow
def test_a_partition_of_outcomes_shows_its_answers_by_source(webserver, browser):
    text = browser.open(
        f"{webserver.url}/assets/outcomes?view=partitions&partition=2026-01-02",
        ["Materialized (3)", "fallback_rows", "quarantine_rate"],
    )
    browser.screenshot(webserver.screenshots / "outcomes_partition.png")
    assert "nightly_batch" in text


@pytest.mark.slow
def test_the_schema_check_passes_tonight_and_its_history_shows_the_bad_data_night_failed(webserver, browser):
    text = browser.open(
        f"{webserver.url}/assets/raw_batch?view=checks&checkDetail=schema_matches_contract",
        ["schema_matches_contract", "Columns and types match the contract.", "Passed"],
    )
    browser.screenshot(webserver.screenshots / "schema_check.png")
    browser.click(by_text("Execution history"))
    browser.wait_for("document.body.innerText.includes('Failed')", "a failed evaluation in the history")
    browser.screenshot(webserver.screenshots / "schema_check_history.png")
    assert "Failed" not in text


@pytest.mark.slow
def test_a_nightly_run_page_shows_its_steps_and_success(webserver, browser):
    runs = webserver.graphql(
        '{ runsOrError(filter: {pipelineName: "nightly_batch"}, limit: 1) { ... on Runs { results { runId } } } }'
    )["runsOrError"]["results"]
    run_id = runs[0]["runId"]

    text = browser.open(f"{webserver.url}/runs/{run_id}", [run_id[:8], "raw_batch", "outcomes", "Success"])
    browser.screenshot(webserver.screenshots / "nightly_run.png")
    assert "nightly_batch" in text


@pytest.mark.slow
def test_a_drift_plot_is_a_picture_and_the_evidently_report_a_link_in_the_partitions_metadata(webserver, browser):
    browser.open(f"{webserver.url}/assets/drift_metrics?view=partitions&partition=2026-01-03", ["evidently_report"])
    link = browser.evaluate(f"{metadata_value('evidently_report')}.querySelector('a').href")
    browser.screenshot(webserver.screenshots / "drift_metadata.png")
    browser.click(
        f"Array.from({metadata_value('plot')}.querySelectorAll('*')).reverse()"
        ".find(e => e.innerText.trim() === '[Show Markdown]')"
    )
    browser.wait_for(
        "Array.from(document.images).some(i => i.src.startsWith('data:image/png') && i.naturalWidth > 0)",
        "the drift plot showing",
    )
    browser.screenshot(webserver.screenshots / "drift_plot.png")
    assert link.startswith("file://") and link.endswith("drift-2026-01-03.html")


@pytest.mark.slow
def test_the_monthly_review_links_its_html_report_and_lists_what_needs_attention(webserver, browser):
    browser.open(
        f"{webserver.url}/assets/monthly_review?view=partitions&partition=2026-01-01",
        ["what_needs_attention", "notebook"],
    )
    link = browser.evaluate(f"{metadata_value('html')}.querySelector('a').href")
    browser.screenshot(webserver.screenshots / "monthly_review.png")
    assert link.startswith("file://") and link.endswith("monthly_review-2026-01.html")


def test_a_plot_becomes_an_inline_image_at_most_900_pixels_wide_and_a_report_a_file_link(tmp_path):
    from PIL import Image

    from assets.checks import INLINE_IMAGE_WIDTH, dagster_metadata

    plot, report = tmp_path / "drift-2026-01-03.png", tmp_path / "drift-2026-01-03.html"
    Image.new("RGB", (1800, 900), "white").save(plot)
    report.write_text("<html></html>")

    metadata = dagster_metadata({"plot": plot, "evidently_report": report})

    markdown = metadata["plot"].value
    data = markdown.split("data:image/png;base64,", 1)[1].split(")", 1)[0]
    with Image.open(io.BytesIO(base64.b64decode(data))) as shown:
        assert shown.size == (INLINE_IMAGE_WIDTH, INLINE_IMAGE_WIDTH // 2)
    assert str(plot) in markdown
    assert metadata["evidently_report"].value == report.resolve().as_uri()
