"""The model card: everything known about one model version, stored as JSON beside its LightGBM text model."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict

from nightkeeper.config import DecisionConfig
from nightkeeper.encoding import FeatureCard
from nightkeeper.fallback import FallbackRule
from nightkeeper.profile import ReferenceProfile


class TrainingWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: dt.datetime | None
    end: dt.datetime | None
    rows: int
    holdout_rows: int
    positive_rate: float


class ModelCard(BaseModel):
    """Lineage, contract, metrics and fitted companions (fallback, reference statistics) of one model version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    project: str
    created_at: dt.datetime
    model_sha256: str
    features: list[FeatureCard]
    params: dict[str, Any]
    num_boost_round: int
    decision: DecisionConfig
    training_window: TrainingWindow
    data_fingerprint: str
    library_versions: dict[str, str]
    holdout_metrics: dict[str, float]
    feature_importance_gain: dict[str, float]
    missing_rates: dict[str, float]
    fallback: FallbackRule
    profile: ReferenceProfile
    reference_sample_sha256: str

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]
