"""Model artifacts on disk, content-addressed: ``<models>/<version>/model.txt`` (LightGBM text) and ``card.json``.

Never pickled. A model is loaded only after the sha256 of its file matches the one the registry recorded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightgbm as lgb
import polars as pl

from nightkeeper.registry import ModelRecord
from nightkeeper.training import TrainedModel, frame_sha256

REFERENCE_SAMPLE = "reference_sample.parquet"


class ModelUnavailable(RuntimeError):
    """The model cannot serve: its artifact is missing, fails its checksum or does not load. The message says which."""


def save_artifact(trained: TrainedModel, models_dir: Path) -> Path:
    """Write the model text and card under ``models_dir/<version>/``; returns the model file's path."""
    folder = models_dir / trained.card.version
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / "model.txt"
    model_path.write_text(trained.model_text)
    (folder / "card.json").write_text(trained.card.model_dump_json(indent=2))
    trained.reference_sample.write_parquet(folder / REFERENCE_SAMPLE)
    return model_path


def load_reference_sample(record: ModelRecord) -> pl.DataFrame:
    """The reference rows stored beside ``record``'s model, after checking them against the card's sha256.

    Raises ModelUnavailable when the file is missing or altered (drift's multivariate check then goes without).
    """
    path = record.model_path.parent / REFERENCE_SAMPLE
    try:
        sample = pl.read_parquet(path)
    except (FileNotFoundError, OSError, pl.exceptions.ComputeError) as exc:
        raise ModelUnavailable(f"model {record.version}: reference sample {path} cannot be read: {exc}") from None
    if frame_sha256(sample) != record.card.reference_sample_sha256:
        raise ModelUnavailable(f"model {record.version}: reference sample {path} does not match its checksum")
    return sample


def load_verified(record: ModelRecord) -> lgb.Booster:
    """Load the booster of ``record`` after checking its file against the registered sha256."""
    try:
        content = record.model_path.read_bytes()
    except FileNotFoundError:
        raise ModelUnavailable(f"model {record.version}: artifact {record.model_path} is missing") from None
    except OSError as exc:
        raise ModelUnavailable(f"model {record.version}: artifact {record.model_path} cannot be read: {exc}") from None
    found = hashlib.sha256(content).hexdigest()
    if found != record.model_sha256:
        raise ModelUnavailable(
            f"model {record.version}: checksum mismatch for {record.model_path}: "
            f"registry has sha256 {record.model_sha256[:16]}…, file has {found[:16]}…"
        )
    try:
        booster = lgb.Booster(model_str=content.decode())
    except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
        raise ModelUnavailable(f"model {record.version}: artifact {record.model_path} does not load: {exc}") from None
    return booster
