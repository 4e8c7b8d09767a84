"""The code location of this repository's own project: workspace.yaml loads ``defs`` from here.

It names the repository's nightkeeper.yaml explicitly, so ``dagster dev`` from the repository root never depends on
$NIGHTKEEPER_CONFIG or the current folder. Another project's code location is written by ``nightkeeper ui --config``.
"""

from __future__ import annotations

from jobs.definitions import REPOSITORY_CONFIG, build_definitions

defs = build_definitions(REPOSITORY_CONFIG)
