"""Shared pytest fixtures. Each block below belongs to one group of test files; keep blocks self-contained."""

from __future__ import annotations

# =====================================================================================================================
# Core unit-test fixtures (core_*), used by test_config, test_validation, test_fallback, test_scoring, test_outcomes,
# test_training_and_registry and test_batch_checks. Real simulator data and a real (small) LightGBM model; no mocks.
# =====================================================================================================================
import copy as _core_copy
from collections.abc import Callable as _CoreCallable
from datetime import date as _core_date
from pathlib import Path as _CorePath
from typing import Any as _CoreAny

import polars as _core_pl
import pytest as _core_pytest
import yaml as _core_yaml

CORE_CONFIG_PATH = _CorePath(__file__).resolve().parents[1] / "nightkeeper.yaml"
CORE_SEED = 7
CORE_HISTORY_END = _core_date(2024, 4, 30)
CORE_NUM_BOOST_ROUND = 20


def _core_shipped_dict() -> dict[str, _CoreAny]:
    return _core_yaml.safe_load(CORE_CONFIG_PATH.read_text())


def _core_small(raw: dict[str, _CoreAny]) -> dict[str, _CoreAny]:
    """Few boosting rounds and one LightGBM thread: fast, and immune to OpenMP spin-waits on a busy machine."""
    raw["model"]["num_boost_round"] = CORE_NUM_BOOST_ROUND
    raw["model"]["params"]["num_threads"] = 1
    return raw


@_core_pytest.fixture
def core_make_config() -> _CoreCallable[..., _CoreAny]:
    """Build a ProjectConfig rooted at ``root`` from the shipped YAML (small num_boost_round, one thread); ``edit``
    mutates the raw dict first."""
    from nightkeeper.config import parse_config

    def make(root: _CorePath, edit: _CoreCallable[[dict[str, _CoreAny]], None] | None = None) -> _CoreAny:
        raw = _core_small(_core_copy.deepcopy(_core_shipped_dict()))
        if edit is not None:
            edit(raw)
        return parse_config(raw, root=root)

    return make


@_core_pytest.fixture(scope="session")
def core_config(tmp_path_factory: _core_pytest.TempPathFactory) -> _CoreAny:
    """The shipped config with num_boost_round=20 and num_threads=1, rooted in a session temp folder."""
    from nightkeeper.config import parse_config

    raw = _core_small(_core_copy.deepcopy(_core_shipped_dict()))
    return parse_config(raw, root=tmp_path_factory.mktemp("core_config"))


@_core_pytest.fixture(scope="session")
def core_history() -> _core_pl.DataFrame:
    """Clean labeled simulator history: 20 nights x 500 rows ending 2024-04-30."""
    from nightkeeper.examples.simulator import simulate_history

    return simulate_history(CORE_HISTORY_END, days=20, rows_per_day=500, seed=CORE_SEED)


@_core_pytest.fixture(scope="session")
def core_trained(core_history: _core_pl.DataFrame, core_config: _CoreAny) -> _CoreAny:
    """A real LightGBM model (TrainedModel) trained on ``core_history`` with ``core_config``."""
    from nightkeeper.training import train_model

    return train_model(core_history, core_config)


# ============================================================ end of core unit-test fixtures =========================


# =====================================================================================================================
# Hypothesis profiles (test_fuzz_conservation). "ci": the same examples on every run, so a red suite is reproducible
# and CI's time is stable; selected when CI=true and by default. "search": random examples, more of them, to look for
# new failures by hand (NIGHTKEEPER_FUZZ_SEARCH=1, or HYPOTHESIS_PROFILE=search). No deadline in either: one example
# scores a LightGBM model, whose time follows the machine's load, not the code.
# =====================================================================================================================
import os as _hypothesis_os  # noqa: E402 (each block of this file keeps its own imports)

from hypothesis import HealthCheck as _HealthCheck  # noqa: E402
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_HYPOTHESIS_SLOW_IS_FINE = [_HealthCheck.too_slow, _HealthCheck.function_scoped_fixture]
_hypothesis_settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=30,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_HYPOTHESIS_SLOW_IS_FINE,
)
_hypothesis_settings.register_profile(
    "search", max_examples=300, deadline=None, suppress_health_check=_HYPOTHESIS_SLOW_IS_FINE
)


def _hypothesis_profile() -> str:
    chosen = _hypothesis_os.environ.get("HYPOTHESIS_PROFILE")
    if chosen:
        return chosen
    if _hypothesis_os.environ.get("CI", "").lower() == "true":
        return "ci"
    return "search" if _hypothesis_os.environ.get("NIGHTKEEPER_FUZZ_SEARCH") else "ci"


_hypothesis_settings.load_profile(_hypothesis_profile())
# ============================================================ end of hypothesis profiles =============================


# =====================================================================================================================
# Temporary files in memory. The integration tests write real DuckDB warehouses and Dagster's SQLite run storage,
# which commit with fsync; on a busy shared disk half of a run on a persistent instance was waiting for the disk
# (sqlite commits and closes: 11 s of a 51 s night). On Linux the session's temp folder (pytest's tmp_path and
# everything using `tempfile`, subprocesses included) goes to /dev/shm and is removed when the session ends;
# NIGHTKEEPER_TEST_TMP=disk, or an explicit --basetemp, keeps pytest's default.
# =====================================================================================================================
import os as _tmp_os  # noqa: E402
import shutil as _tmp_shutil  # noqa: E402
import tempfile as _tmp_tempfile  # noqa: E402
from pathlib import Path as _TmpPath  # noqa: E402

import pytest as _tmp_pytest  # noqa: E402

_TMP_MEMORY = _TmpPath("/dev/shm")
_TMP_PREFIX = "nightkeeper-tests-"


def _tmp_owner_alive(folder: _TmpPath) -> bool:
    pid = folder.name.removeprefix(_TMP_PREFIX).split("-", 1)[0]
    return not pid.isdigit() or _TmpPath(f"/proc/{pid}").exists()


@_tmp_pytest.hookimpl(tryfirst=True)
def pytest_configure(config: _tmp_pytest.Config) -> None:
    if config.option.basetemp is not None or _tmp_os.environ.get("NIGHTKEEPER_TEST_TMP") == "disk":
        return
    if not (_TMP_MEMORY.is_dir() and _tmp_os.access(_TMP_MEMORY, _tmp_os.W_OK)):
        return
    for stale in _TMP_MEMORY.glob(f"{_TMP_PREFIX}*"):  # left by a session that was killed: memory, not disk
        if not _tmp_owner_alive(stale):
            _tmp_shutil.rmtree(stale, ignore_errors=True)
    root = _TmpPath(_tmp_tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{_tmp_os.getpid()}-", dir=_TMP_MEMORY))
    config.option.basetemp = str(root / "pytest")
    previous = _tmp_os.environ.get("TMPDIR")
    _tmp_os.environ["TMPDIR"] = str(root)
    _tmp_tempfile.tempdir = None  # re-read TMPDIR

    def restore() -> None:
        if previous is None:
            _tmp_os.environ.pop("TMPDIR", None)
        else:
            _tmp_os.environ["TMPDIR"] = previous
        _tmp_tempfile.tempdir = None
        _tmp_shutil.rmtree(root, ignore_errors=True)

    config.add_cleanup(restore)


# ============================================================ end of temporary files in memory =======================


# =====================================================================================================================
# How pytest-xdist shares the tests between workers. Each module runs on one worker, in order, because several build
# one project in a module fixture and read it test after test (spread over two workers, such a fixture is built on
# each); the modules below hold independent integration tests (each builds its own project), and one worker running
# all of one of them was the default suite's long pole, so their tests are spread over the workers. (xdist's own
# `--dist loadgroup` marks do not group under pytest 9.2: xdist 3.8 renames a test through an attribute pytest no
# longer reads; this hook is xdist's public way to schedule.)
# =====================================================================================================================
_SPREAD_MODULES = frozenset(
    {
        "test_run_and_backfill.py",
        "test_lifecycle_scenarios.py",
        "test_monitoring_scenarios.py",
        "test_candidate_evaluation.py",
    }
)


def pytest_xdist_make_scheduler(config: _core_pytest.Config, log: _CoreAny) -> _CoreAny:
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        """A module per worker, except the tests of _SPREAD_MODULES, each a unit of its own."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return nodeid if _CorePath(module).name in _SPREAD_MODULES else module

    return ModuleScheduling(config, log)
