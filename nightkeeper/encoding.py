"""Turn typed contract columns into the numeric matrix LightGBM reads, identically at training and scoring time."""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from nightkeeper.config import Contract


class FeatureCard(BaseModel):
    """A model input as the model saw it: name, dtype and, for categories, the level order behind the codes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: str
    categories: list[str] | None = None


def feature_cards(contract: Contract) -> list[FeatureCard]:
    return [
        FeatureCard(name=name, dtype=spec.dtype, categories=spec.categories) for name, spec in contract.features.items()
    ]


def categorical_indices(features: list[FeatureCard]) -> list[int]:
    return [i for i, feature in enumerate(features) if feature.dtype == "category"]


def feature_matrix(frame: pl.DataFrame, features: list[FeatureCard]) -> np.ndarray:
    """A float64 matrix with one column per feature in card order; nulls and unknown categories become NaN."""
    return frame.select(_encode(feature) for feature in features).to_numpy().astype(np.float64, copy=False)


def _encode(feature: FeatureCard) -> pl.Expr:
    column = pl.col(feature.name)
    if feature.dtype == "category":
        levels = feature.categories or []
        return column.replace_strict(levels, list(range(len(levels))), default=None, return_dtype=pl.Float64).alias(
            feature.name
        )
    return column.cast(pl.Float64).alias(feature.name)
