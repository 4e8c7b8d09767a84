"""Running the report notebooks: papermill executes a notebook on a snapshot, nbconvert turns the executed notebook
into one self-contained HTML page (no code cells, images embedded, nothing fetched from the network)."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nightkeeper.project_root import require_project_root
from nightkeeper.report.snapshot import export_month_snapshot, month_bounds

KERNEL_NAME = "python3"
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
"""The folder the running ``nightkeeper`` package was imported from (a checkout, or site-packages)."""
MONTHLY_NOTEBOOK = Path("notebooks/monthly_review.ipynb")
MODEL_CARD_NOTEBOOK = Path("notebooks/model_card.ipynb")
EXECUTION_TIMEOUT_SECONDS = 600

# The headings of the monthly review, in order (the notebook's markdown cells; tests check the HTML has each).
MONTHLY_SECTIONS: tuple[str, ...] = (
    "What needs attention",
    "Nightly volume",
    "Quarantine and fallback rates by reason",
    "Scoring latency",
    "Drift",
    "Score distribution over time",
    "Realized vs estimated performance",
    "Business value",
    "Model versions, promotions and rollbacks",
    "Alerts opened and closed",
    "Review queue",
)

MODEL_CARD_SECTIONS: tuple[str, ...] = (
    "Summary",
    "Metrics",
    "Lineage",
    "Feature importance",
    "Calibration and ROC",
    "Gate results",
    "Alias history",
)


@dataclass(frozen=True)
class ReportResult:
    """An executed report: the executed notebook, its HTML (no code, images embedded) and how many images it holds."""

    executed_notebook: Path
    html: Path
    images: int


def run_monthly_review(
    snapshot_dir: Path, month: str, output_dir: Path, notebook: Path = MONTHLY_NOTEBOOK
) -> ReportResult:
    """Execute the monthly review notebook on a snapshot (papermill; parameters month, snapshot_dir, output_dir) and
    write ``output_dir/monthly_review-<month>.ipynb`` and ``.html`` (no code cells, images embedded)."""
    month_bounds(month)
    output_dir = Path(output_dir)
    parameters = {
        "month": month,
        "snapshot_dir": str(Path(snapshot_dir).resolve()),
        "output_dir": str(output_dir.resolve()),
    }
    return _execute(
        _notebook_path(notebook), output_dir, f"monthly_review-{month}", parameters, f"Monthly review {month}"
    )


def run_model_card(
    version: str, snapshot_dir: Path, model_dir: Path, output_dir: Path, notebook: Path = MODEL_CARD_NOTEBOOK
) -> ReportResult:
    """Execute the model card notebook for ``version`` (parameters version, snapshot_dir — a snapshot with registry
    rows, from ``export_model_snapshot`` or ``export_month_snapshot`` — model_dir holding card.json, output_dir) and
    write ``output_dir/model_card-<version>.ipynb`` and ``.html``."""
    output_dir = Path(output_dir)
    parameters = {
        "version": version,
        "snapshot_dir": str(Path(snapshot_dir).resolve()),
        "model_dir": str(Path(model_dir).resolve()),
        "output_dir": str(output_dir.resolve()),
    }
    return _execute(_notebook_path(notebook), output_dir, f"model_card-{version}", parameters, f"Model card {version}")


def monthly_review(config: Any, month: str, out_dir: Path | None = None) -> ReportResult:
    """Both steps for a ``ProjectConfig``: export the month's snapshot from its warehouse into ``out_dir`` (default
    ``<project>/reports/monthly/<month>/``), then render the review there. For a command line or the demo; a Dagster
    deployment runs the two steps as two assets so only the export holds the warehouse pool."""
    target = Path(out_dir) if out_dir is not None else config.path(Path("reports") / "monthly" / month)
    snapshot = export_month_snapshot(config.warehouse, month, target, config=config)
    return run_monthly_review(snapshot, month, target)


def kernel_name() -> str:
    """A Jupyter kernel that runs this interpreter: 'python3' when its spec launches this Python (a fresh venv with
    ipykernel has one under ``<venv>/share/jupyter/kernels``; jupyter_client swaps a bare ``python`` for
    ``sys.executable``). Otherwise a 'nightkeeper-python' spec is installed into ``sys.prefix`` and used."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(KERNEL_NAME)
        launcher = spec.argv[0] if spec.argv else ""
        if launcher in {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"} or _same_file(
            launcher, sys.executable
        ):
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    name = "nightkeeper-python"
    try:
        if _same_file(manager.get_kernel_spec(name).argv[0], sys.executable):
            return name
    except NoSuchKernel:
        pass
    install(kernel_name=name, display_name="Python (nightkeeper)", prefix=sys.prefix)
    return name


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() and Path(a).exists()
    except OSError:
        return False


def _notebook_path(notebook: Path) -> Path:
    """``notebook`` as given (absolute, or relative to the current folder) if it exists, else relative to the project
    root (where the shipped ``notebooks/`` live)."""
    notebook = Path(notebook)
    if notebook.exists():
        return notebook.resolve()
    if notebook.is_absolute():
        raise FileNotFoundError(f"notebook {notebook} not found")
    candidate = require_project_root(f"The report notebook {notebook}") / notebook
    if not candidate.exists():
        raise FileNotFoundError(f"notebook {notebook} not found (looked in {Path.cwd()} and {candidate.parent})")
    return candidate


def _execute(notebook: Path, output_dir: Path, stem: str, parameters: dict[str, Any], title: str) -> ReportResult:
    import papermill
    from traitlets.config import Config

    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / f"{stem}.ipynb"
    # The kernel talks to us over Unix sockets (IPC), not TCP ports on localhost: nothing else on the machine can
    # connect to it, and ipykernel has no "running over TCP without encryption" warning to print into every run's
    # log. The socket paths are absolute (the kernel runs in output_dir, we do not) and short (a Unix socket path
    # has at most 107 bytes), hence a fresh folder under the system's temp dir.
    with _kernel_imports_this_package(), tempfile.TemporaryDirectory(prefix="nk-kernel-") as sockets:
        papermill.execute_notebook(
            str(notebook),
            str(executed),
            parameters=parameters,
            kernel_name=kernel_name(),
            cwd=str(output_dir),
            progress_bar=False,
            log_output=False,
            execution_timeout=EXECUTION_TIMEOUT_SECONDS,
            config=Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "kernel")}}),
        )
    page = output_dir / f"{stem}.html"
    text = notebook_html(executed, title)
    page.write_text(text, encoding="utf-8")
    return ReportResult(executed, page, count_images(text))


@contextmanager
def _kernel_imports_this_package() -> Iterator[None]:
    """While papermill starts its kernel (a new process, inheriting this environment), put the folder this
    ``nightkeeper`` was imported from first on PYTHONPATH: the kernel's Python would otherwise import whichever
    nightkeeper it finds first (an editable install may point at another checkout), and render the report with
    other code than the caller's."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT), *([before] if before else [])])
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def notebook_html(executed: Path, title: str) -> str:
    """The executed notebook as one self-contained HTML page: no code cells or prompts, images inline (data URIs),
    no script fetched from the network (MathJax and require.js left out)."""
    import nbformat
    from nbconvert import HTMLExporter

    node = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(
        template_name="lab",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    exporter.mathjax_url = ""
    body, _ = exporter.from_notebook_node(node, resources={"metadata": {"name": title}})
    body = re.sub(r"<script[^>]*src=\"(https?://[^\"]*)?\"[^>]*>\s*</script>", "", body)
    return body


def count_images(text: str) -> int:
    """How many <img> tags an HTML text holds."""
    return len(re.findall(r"<img\b", text, flags=re.IGNORECASE))
