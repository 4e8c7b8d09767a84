"""Train a LightGBM binary classifier on labeled contract rows and describe it in a model card."""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import polars as pl
from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score, roc_auc_score

from nightkeeper.card import ModelCard, TrainingWindow
from nightkeeper.config import BusinessValue, ProjectConfig
from nightkeeper.contract_types import polars_dtype
from nightkeeper.encoding import categorical_indices, feature_cards, feature_matrix
from nightkeeper.fallback import fit_fallback
from nightkeeper.frames import number
from nightkeeper.performance import estimate_performance
from nightkeeper.profile import fit_domain_auc, fit_profile, reference_sample


@dataclass(frozen=True)
class TrainedModel:
    """A trained booster with its card and the reference rows kept for drift's multivariate check.

    ``card.version`` is derived from the model text, so equal models share it.
    """

    booster: lgb.Booster
    model_text: str
    card: ModelCard
    reference_sample: pl.DataFrame


def training_frame(frame: pl.DataFrame, config: ProjectConfig) -> pl.DataFrame:
    """Cast labeled rows to the contract's types; raises ValueError naming a missing column or a bad target value."""
    contract = config.contract
    needed = [contract.entity_id, contract.target, *contract.features]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"training data lacks column(s) {missing}; it has {frame.columns}")
    values = frame[contract.target].drop_nulls()
    as_numbers = values.cast(pl.Float64, strict=False)
    if as_numbers.null_count() or not set(as_numbers.unique().to_list()) <= {0.0, 1.0}:
        found = sorted(map(str, values.unique().head(10).to_list()))
        raise ValueError(f"target column {contract.target!r} holds {found}; expected only 0 and 1")
    casts = {name: polars_dtype(spec) for name, spec in contract.features.items()}
    typed = frame.filter(pl.col(contract.target).is_not_null()).with_columns(
        pl.col(name).cast(dtype) for name, dtype in casts.items()
    )
    return typed.with_columns(pl.col(contract.target).cast(pl.Int8))


def train_model(frame: pl.DataFrame, config: ProjectConfig) -> TrainedModel:
    """Train on all but the most recent ``holdout_fraction`` of rows and evaluate on that holdout.

    Rows are ordered by the contract's event time when it has one, so the holdout is the latest period.
    """
    contract, model_config = config.contract, config.model
    data = training_frame(frame, config)
    if contract.event_time and contract.event_time in data.columns:
        data = data.sort(contract.event_time, contract.entity_id)
    if data.height < 100:
        raise ValueError(f"training needs at least 100 labeled rows, got {data.height}")
    cut = int(data.height * (1 - model_config.holdout_fraction))
    train, holdout = data[:cut], data[cut:]
    if train[contract.target].n_unique() < 2 or holdout[contract.target].n_unique() < 2:
        raise ValueError("both training and holdout rows must contain positive and negative labels")

    features = feature_cards(contract)
    names = [feature.name for feature in features]
    dataset = lgb.Dataset(
        feature_matrix(train, features),
        label=train[contract.target].to_numpy(),
        feature_name=names,
        categorical_feature=categorical_indices(features),
        free_raw_data=True,
    )
    booster = lgb.train(training_params(config), dataset, num_boost_round=model_config.num_boost_round)
    model_text = booster.model_to_string()
    scores = np.asarray(booster.predict(feature_matrix(holdout, features)))
    labels = holdout[contract.target].to_numpy()

    model_sha = hashlib.sha256(model_text.encode()).hexdigest()
    drift = config.monitoring.drift
    # the reference's real nights teach the drift thresholds its ordinary night-to-night variation (weekends, pay days)
    nights = (
        data[contract.event_time].cast(pl.Date).to_numpy()
        if contract.event_time and contract.event_time in data.columns and data[contract.event_time].dtype.is_temporal()
        else None
    )
    profile = fit_profile(
        data,
        features,
        np.asarray(booster.predict(feature_matrix(data, features))),
        model_config.decision.threshold,
        drift,
        nights=nights,
    )
    # how distinct the reference's own real nights are: the population-shift limit starts there
    profile = profile.model_copy(
        update={"domain_auc": fit_domain_auc(data, features, nights, drift.domain_classifier_rows)}
    )
    sample = reference_sample(data, features, drift.domain_classifier_rows, seed=0)
    times = data[contract.event_time] if contract.event_time and contract.event_time in data.columns else None
    card = ModelCard(
        version=model_sha[:12],
        project=config.name,
        created_at=dt.datetime.now(dt.UTC),
        model_sha256=model_sha,
        features=features,
        params=training_params(config),
        num_boost_round=model_config.num_boost_round,
        decision=model_config.decision,
        training_window=TrainingWindow(
            start=times.min() if times is not None else None,
            end=times.max() if times is not None else None,
            rows=train.height,
            holdout_rows=holdout.height,
            positive_rate=number(data[contract.target].mean()),
        ),
        data_fingerprint=data_fingerprint(data, [contract.entity_id, contract.target, *names]),
        library_versions=library_versions(),
        holdout_metrics={
            **binary_metrics(labels, scores, model_config.decision.threshold),
            # what CBPE would estimate on the holdout: tonight's estimate is compared with this, not with the AUC
            "estimated_auc": float(
                estimate_performance(scores, model_config.decision.threshold, BusinessValue())["auc"] or 0.0
            ),
        },
        feature_importance_gain=dict(zip(names, map(float, booster.feature_importance("gain")), strict=True)),
        missing_rates={name: float(data[name].null_count() / data.height) for name in names},
        fallback=fit_fallback(train, contract.target, config.fallback.segment_by, config.fallback.min_segment_rows),
        profile=profile,
        reference_sample_sha256=frame_sha256(sample),
    )
    return TrainedModel(booster=booster, model_text=model_text, card=card, reference_sample=sample)


def training_params(config: ProjectConfig) -> dict:
    """LightGBM parameters: the configured ones, plus monotone constraints from the behaviour directions if enforced."""
    params = dict(config.model.params)
    behaviour = config.lifecycle.behaviour
    if behaviour.enforce_directions and behaviour.directions:
        sign = {"increasing": 1, "decreasing": -1}
        params["monotone_constraints"] = [
            sign.get(behaviour.directions.get(name, ""), 0) for name in config.contract.features
        ]
    return params


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC, log loss, Brier, precision and recall at ``threshold``, and the positive rate, of scored labeled rows."""
    predicted = scores >= threshold
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "log_loss": float(log_loss(labels, scores, labels=[0, 1])),
        "brier": float(brier_score_loss(labels, scores)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "positive_rate": float(labels.mean()),
        "rows": float(len(labels)),
    }


def data_fingerprint(frame: pl.DataFrame, columns: list[str]) -> str:
    """sha256 of the exact training rows (the given columns, sorted, as CSV): equal data, equal fingerprint."""
    canonical = frame.select(columns).sort(columns, nulls_last=True).write_csv()
    return hashlib.sha256(canonical.encode()).hexdigest()


def frame_sha256(frame: pl.DataFrame) -> str:
    """sha256 of a frame's CSV text: how a stored reference sample is checked before use."""
    return hashlib.sha256(frame.write_csv().encode()).hexdigest()


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "lightgbm": lgb.__version__,
        "polars": pl.__version__,
        "numpy": np.__version__,
    }
