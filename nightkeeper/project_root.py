"""The project root: the folder holding Nightkeeper's Dagster layer (``assets/``, ``jobs/``), the report notebooks
(``notebooks/``) and the shipped example config (``nightkeeper.yaml``), beside the ``nightkeeper`` package.

``pip install`` copies only the ``nightkeeper`` package into site-packages (the generic names ``assets`` and ``jobs``
are not ours to claim there); the rest is loaded from the project root, as ``workspace.yaml`` does for
``dagster dev``. A source checkout (an editable install, or the checkout on ``PYTHONPATH``) finds its root beside
the package; a non-editable install finds it only in the current folder, so the commands that need it run from the
project root.
"""

from __future__ import annotations

from pathlib import Path

MARKERS = (Path("assets") / "__init__.py", Path("jobs") / "definitions.py")
"""Files whose presence makes a folder a project root."""


class ProjectRootMissing(RuntimeError):
    """Something loaded from the project root was asked for, and no project root was found; the message says where
    it was looked for and how to run from one."""


def find_project_root() -> Path | None:
    """The folder above the imported ``nightkeeper`` package if it is a project root (a source checkout), else the
    current folder if it is one, else None."""
    for folder in (Path(__file__).resolve().parents[1], Path.cwd().resolve()):
        if all((folder / marker).is_file() for marker in MARKERS):
            return folder
    return None


def require_project_root(what: str) -> Path:
    """The project root, or ProjectRootMissing naming ``what`` (e.g. "the Dagster layer (assets/, jobs/)") as the
    thing that needs it."""
    root = find_project_root()
    if root is None:
        package = Path(__file__).resolve().parent
        raise ProjectRootMissing(
            f"{what} is loaded from Nightkeeper's project root (the folder holding assets/, jobs/, notebooks/ and "
            f"nightkeeper.yaml), found neither beside the installed package {package} nor in the current folder "
            f"{Path.cwd()}: `pip install` copies only the nightkeeper package into site-packages. Run this from the "
            "project root, or install the project editable (`pip install -e PROJECT_ROOT`)."
        )
    return root
