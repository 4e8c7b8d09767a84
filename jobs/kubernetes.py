"""The code location of a Kubernetes deployment: the project's definitions, unchanged, with every step of a run in a
Kubernetes job of its own (dagster-k8s's ``k8s_job_executor``). See docs/deploy.md.

Needs ``pip install 'nightkeeper[kubernetes]'``. The project config is ``$NIGHTKEEPER_CONFIG``. Steps run in pods on
any node, so the warehouse must be one they all write: a DuckLake (``storage.kind: ducklake``) whose PostgreSQL
catalog they reach and whose data path is object storage (or a volume every pod mounts). A config with the
single-file warehouse is refused here, at load, rather than failing in a pod.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions
from dagster_k8s import k8s_job_executor

from jobs.definitions import build_definitions
from nightkeeper.config import ConfigError, default_config_path, load_config


def build_kubernetes_definitions(config_path: Path) -> Definitions:
    """``build_definitions`` for the config at ``config_path`` with the Kubernetes executor. Raises ConfigError when
    the config's warehouse is the single DuckDB file, which pods on several nodes cannot share."""
    config = load_config(config_path)
    if config.storage.kind != "ducklake":
        raise ConfigError(
            f"{config_path}: storage.kind is {config.storage.kind!r}; a Kubernetes deployment runs each step in its "
            "own pod, so the warehouse must be one they all write: set storage.kind: ducklake with a lake: section "
            "(docs/deploy.md)"
        )
    return build_definitions(config_path, executor=k8s_job_executor)


defs = build_kubernetes_definitions(default_config_path())
