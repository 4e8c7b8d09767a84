"""Training and the model lifecycle: the model card, content-addressed artifacts that load only when their checksum
matches, the registry of versions and the append-only alias log, all on real LightGBM models and DuckDB files."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest

from nightkeeper import registry, warehouse
from nightkeeper.artifacts import ModelUnavailable, load_verified, save_artifact
from nightkeeper.card import ModelCard
from nightkeeper.config import ProjectConfig
from nightkeeper.encoding import feature_cards, feature_matrix
from nightkeeper.examples.simulator import simulate_history, simulate_night
from nightkeeper.models import bootstrap_champion, publish
from nightkeeper.training import TrainedModel, data_fingerprint, train_model, training_frame, training_params

HISTORY_END = date(2024, 4, 30)
JAN_1, JAN_10, JAN_20 = date(2026, 1, 1), date(2026, 1, 10), date(2026, 1, 20)


@pytest.fixture(scope="module")
def other_trained(core_config: ProjectConfig) -> TrainedModel:
    """A second model, trained on different data (another seed)."""
    return train_model(simulate_history(HISTORY_END, days=20, rows_per_day=500, seed=8), core_config)


@pytest.fixture(scope="module")
def tonight(core_config: ProjectConfig) -> np.ndarray:
    applications = simulate_night(date(2024, 5, 1), 500, 7).applications
    return feature_matrix(applications, feature_cards(core_config.contract))


@pytest.fixture
def connection(tmp_path: Path) -> Any:
    with warehouse.connect(tmp_path / "warehouse.duckdb") as opened:
        yield opened


def registered(connection: duckdb.DuckDBPyConnection, trained: TrainedModel, models: Path) -> registry.ModelRecord:
    return registry.register(connection, trained.card, save_artifact(trained, models))


def with_target(history: pl.DataFrame, index: int, value: object) -> pl.DataFrame:
    at_row = pl.int_range(pl.len()) == index
    return history.with_columns(
        pl.when(at_row).then(pl.lit(value)).otherwise(pl.col("defaulted").cast(pl.Float64)).alias("defaulted")
    )


# ----------------------------------------------------------------------------------------------------- the card


def test_card_version_is_the_model_sha256_prefix(core_trained: TrainedModel) -> None:
    card = core_trained.card
    assert card.model_sha256 == hashlib.sha256(core_trained.model_text.encode()).hexdigest()
    assert card.version == card.model_sha256[:12]
    assert core_trained.booster.model_to_string() == core_trained.model_text


def test_card_describes_project_features_and_settings(core_trained: TrainedModel, core_config: ProjectConfig) -> None:
    card = core_trained.card
    assert card.project == "credit-default"
    assert card.feature_names == core_config.contract.feature_names
    assert [f.categories for f in card.features if f.name == "channel"] == [["branch", "web", "mobile", "broker"]]
    assert card.num_boost_round == 20
    assert card.params == training_params(core_config)
    assert card.params["monotone_constraints"][core_config.contract.feature_names.index("income")] == -1
    assert card.decision == core_config.model.decision
    assert set(card.feature_importance_gain) == set(core_config.contract.feature_names)
    assert card.feature_importance_gain["credit_score"] > 0
    assert {"python", "lightgbm", "polars", "numpy"} <= set(card.library_versions)


def test_training_window_holds_out_the_latest_rows(core_trained: TrainedModel, core_history: pl.DataFrame) -> None:
    window = core_trained.card.training_window
    assert window.rows + window.holdout_rows == core_history.height
    assert window.rows == int(core_history.height * 0.8)
    assert window.start == core_history["applied_at"].min()
    assert window.end == core_history["applied_at"].max()
    assert window.positive_rate == pytest.approx(core_history["defaulted"].mean())


def test_holdout_metrics_are_in_range(core_trained: TrainedModel) -> None:
    metrics = core_trained.card.holdout_metrics
    assert 0.7 < metrics["auc"] <= 1.0  # the simulator's default risk is learnable
    assert 0 < metrics["log_loss"] < 0.69  # better than a coin
    assert 0 <= metrics["brier"] <= 0.25
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1
    assert 0 < metrics["positive_rate"] < 1
    assert metrics["rows"] == core_trained.card.training_window.holdout_rows


def test_missing_rates_are_each_features_empty_share(core_trained: TrainedModel, core_history: pl.DataFrame) -> None:
    rates = core_trained.card.missing_rates
    assert rates["dependents"] == pytest.approx(core_history["dependents"].null_count() / core_history.height)
    assert 0.01 < rates["dependents"] < 0.05
    assert all(rate == 0.0 for name, rate in rates.items() if name != "dependents")


def test_card_carries_the_fallback_fitted_on_the_training_rows(
    core_trained: TrainedModel, core_history: pl.DataFrame, core_config: ProjectConfig
) -> None:
    fallback = core_trained.card.fallback
    train_rows = core_history.sort("applied_at", "application_id").head(core_trained.card.training_window.rows)
    assert fallback.segment_by == core_config.fallback.segment_by
    assert fallback.global_rate == pytest.approx(train_rows["defaulted"].mean())
    assert len(fallback.rates) > 1


def test_fingerprint_is_stable_for_the_same_data_in_any_order(
    core_trained: TrainedModel, core_history: pl.DataFrame, core_config: ProjectConfig
) -> None:
    columns = ["application_id", "defaulted", *core_config.contract.feature_names]
    shuffled = core_history.sample(fraction=1.0, shuffle=True, seed=3)
    assert data_fingerprint(shuffled, columns) == data_fingerprint(core_history, columns)
    assert train_model(shuffled, core_config).card.data_fingerprint == core_trained.card.data_fingerprint


def test_fingerprint_differs_for_different_data(core_trained: TrainedModel, other_trained: TrainedModel) -> None:
    assert other_trained.card.data_fingerprint != core_trained.card.data_fingerprint
    assert other_trained.card.version != core_trained.card.version


def test_fingerprint_changes_when_one_label_changes(core_history: pl.DataFrame, core_config: ProjectConfig) -> None:
    columns = ["application_id", "defaulted", *core_config.contract.feature_names]
    flipped = core_history.with_columns(
        pl.when(pl.int_range(pl.len()) == 17)
        .then(1 - pl.col("defaulted"))
        .otherwise(pl.col("defaulted"))
        .alias("defaulted")
    )
    assert data_fingerprint(flipped, columns) != data_fingerprint(core_history, columns)


# ------------------------------------------------------------------------------------------------ bad training data


@pytest.mark.parametrize("bad", [2, -1])
def test_training_rejects_a_target_other_than_0_and_1_naming_the_column(
    core_history: pl.DataFrame, core_config: ProjectConfig, bad: int
) -> None:
    with pytest.raises(ValueError, match=r"target column 'defaulted' holds .*expected only 0 and 1"):
        train_model(with_target(core_history, 5, bad), core_config)


def test_training_rejects_a_fractional_target(core_history: pl.DataFrame, core_config: ProjectConfig) -> None:
    with pytest.raises(ValueError, match="defaulted"):
        training_frame(with_target(core_history, 5, 0.5), core_config)


def test_training_rejects_a_text_target_with_a_value_error(
    core_history: pl.DataFrame, core_config: ProjectConfig
) -> None:
    text_target = core_history.with_columns(pl.col("defaulted").cast(pl.String).replace({"1": "yes", "0": "no"}))
    with pytest.raises(ValueError, match="defaulted"):
        training_frame(text_target, core_config)


def test_training_rejects_data_without_a_contract_column(
    core_history: pl.DataFrame, core_config: ProjectConfig
) -> None:
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['credit_score'\]"):
        train_model(core_history.drop("credit_score"), core_config)


def test_training_needs_at_least_100_labeled_rows(core_history: pl.DataFrame, core_config: ProjectConfig) -> None:
    with pytest.raises(ValueError, match="at least 100 labeled rows, got 99"):
        train_model(core_history.head(99), core_config)


def test_unlabeled_rows_are_left_out_of_training(core_history: pl.DataFrame, core_config: ProjectConfig) -> None:
    partly = core_history.with_columns(
        pl.when(pl.int_range(pl.len()) < 1_000).then(None).otherwise(pl.col("defaulted")).alias("defaulted")
    )
    card = train_model(partly, core_config).card
    assert card.training_window.rows + card.training_window.holdout_rows == core_history.height - 1_000


# ------------------------------------------------------------------------------------------------------ artifacts


def test_save_register_load_round_trip_predicts_identically(
    tmp_path: Path, connection: Any, core_trained: TrainedModel, tonight: np.ndarray
) -> None:
    record = registered(connection, core_trained, tmp_path / "models")
    assert record.version == core_trained.card.version
    assert record.model_path == tmp_path / "models" / core_trained.card.version / "model.txt"
    assert record.card == core_trained.card
    booster = load_verified(record)
    assert np.array_equal(booster.predict(tonight), core_trained.booster.predict(tonight))


def test_saved_card_json_is_the_card(tmp_path: Path, core_trained: TrainedModel) -> None:
    model_path = save_artifact(core_trained, tmp_path)
    card = ModelCard.model_validate_json((model_path.parent / "card.json").read_text())
    assert card == core_trained.card
    assert hashlib.sha256(model_path.read_bytes()).hexdigest() == core_trained.card.model_sha256


def test_missing_artifact_is_unavailable(tmp_path: Path, connection: Any, core_trained: TrainedModel) -> None:
    record = registered(connection, core_trained, tmp_path / "models")
    record.model_path.unlink()
    with pytest.raises(ModelUnavailable, match="is missing") as caught:
        load_verified(record)
    assert core_trained.card.version in str(caught.value)


def test_tampered_artifact_fails_its_checksum(tmp_path: Path, connection: Any, core_trained: TrainedModel) -> None:
    record = registered(connection, core_trained, tmp_path / "models")
    content = bytearray(record.model_path.read_bytes())
    middle = len(content) // 2
    content[middle] = ord("7") if content[middle] != ord("7") else ord("8")
    record.model_path.write_bytes(bytes(content))
    with pytest.raises(ModelUnavailable, match="checksum mismatch") as caught:
        load_verified(record)
    assert str(record.model_path) in str(caught.value)


@pytest.mark.parametrize("garbage", [b"this is not a lightgbm model\n", b"\xff\xfe\x00 binary junk"])
def test_corrupt_artifact_with_a_matching_checksum_does_not_load(
    tmp_path: Path, connection: Any, core_trained: TrainedModel, garbage: bytes
) -> None:
    path = tmp_path / "garbage" / "model.txt"
    path.parent.mkdir()
    path.write_bytes(garbage)
    sha = hashlib.sha256(garbage).hexdigest()
    card = core_trained.card.model_copy(update={"model_sha256": sha, "version": sha[:12]})
    record = registry.register(connection, card, path)
    with pytest.raises(ModelUnavailable, match="does not load"):
        load_verified(record)


# ------------------------------------------------------------------------------------------------------- registry


def test_registering_twice_is_idempotent(tmp_path: Path, connection: Any, core_trained: TrainedModel) -> None:
    first = registered(connection, core_trained, tmp_path / "models")
    second = registered(connection, core_trained, tmp_path / "models")
    assert first == second
    assert connection.execute("select count(*) from registry.model_versions").fetchone() == (1,)


def test_unknown_version_raises_key_error(connection: Any) -> None:
    with pytest.raises(KeyError, match="'000000000000' is not registered"):
        registry.get_version(connection, "000000000000")


def test_alias_cannot_point_at_an_unregistered_version(connection: Any) -> None:
    with pytest.raises(KeyError, match="not registered"):
        registry.set_alias(connection, registry.CHAMPION, "000000000000", JAN_1, "test", "typo")


def test_alias_is_none_before_its_first_row(tmp_path: Path, connection: Any, core_trained: TrainedModel) -> None:
    record = registered(connection, core_trained, tmp_path / "models")
    assert registry.alias_version(connection, registry.CHAMPION, JAN_10) is None
    registry.set_alias(connection, registry.CHAMPION, record.version, JAN_10, "test", "first champion")
    assert registry.alias_version(connection, registry.CHAMPION, date(2026, 1, 9)) is None
    assert registry.alias_record(connection, registry.CHAMPION, date(2026, 1, 9)) is None
    assert registry.alias_version(connection, registry.CHAMPION, JAN_10) == record.version


def test_alias_on_a_night_is_the_version_effective_then(
    tmp_path: Path, connection: Any, core_trained: TrainedModel, other_trained: TrainedModel
) -> None:
    old = registered(connection, core_trained, tmp_path / "models")
    new = registered(connection, other_trained, tmp_path / "models")
    registry.set_alias(connection, registry.CHAMPION, old.version, JAN_1, "test", "bootstrap")
    registry.set_alias(connection, registry.CHAMPION, new.version, JAN_20, "test", "promotion")
    assert registry.alias_version(connection, registry.CHAMPION, JAN_1) == old.version
    assert registry.alias_version(connection, registry.CHAMPION, date(2026, 1, 19)) == old.version
    assert registry.alias_version(connection, registry.CHAMPION, JAN_20) == new.version
    assert registry.alias_version(connection, registry.CHAMPION, date(2026, 3, 1)) == new.version


def test_later_alias_row_for_the_same_night_wins(
    tmp_path: Path, connection: Any, core_trained: TrainedModel, other_trained: TrainedModel
) -> None:
    old = registered(connection, core_trained, tmp_path / "models")
    new = registered(connection, other_trained, tmp_path / "models")
    registry.set_alias(connection, registry.CHAMPION, old.version, JAN_1, "test", "bootstrap")
    registry.set_alias(connection, registry.CHAMPION, new.version, JAN_10, "test", "promotion")
    registry.set_alias(connection, registry.CHAMPION, old.version, JAN_10, "oncall", "rollback")
    assert registry.alias_version(connection, registry.CHAMPION, JAN_10) == old.version
    assert registry.alias_version(connection, registry.CHAMPION, JAN_20) == old.version
    assert connection.execute("select count(*) from registry.model_aliases").fetchone() == (3,)


def test_alias_can_be_cleared(tmp_path: Path, connection: Any, core_trained: TrainedModel) -> None:
    record = registered(connection, core_trained, tmp_path / "models")
    registry.set_alias(connection, registry.CHAMPION, record.version, JAN_1, "test", "bootstrap")
    registry.set_alias(connection, registry.CHAMPION, None, JAN_10, "oncall", "model retired")
    assert registry.alias_version(connection, registry.CHAMPION, JAN_1) == record.version
    assert registry.alias_version(connection, registry.CHAMPION, JAN_10) is None


def test_aliases_are_independent(
    tmp_path: Path, connection: Any, core_trained: TrainedModel, other_trained: TrainedModel
) -> None:
    champion = registered(connection, core_trained, tmp_path / "models")
    challenger = registered(connection, other_trained, tmp_path / "models")
    registry.set_alias(connection, registry.CHAMPION, champion.version, JAN_1, "test", "bootstrap")
    registry.set_alias(connection, "challenger", challenger.version, JAN_10, "test", "shadow")
    assert registry.alias_version(connection, registry.CHAMPION, JAN_20) == champion.version
    assert registry.alias_version(connection, "challenger", JAN_20) == challenger.version
    assert registry.alias_version(connection, "challenger", JAN_1) is None


def test_bootstrap_champion_publishes_a_model_that_serves_from_its_night(
    tmp_path: Path, core_make_config: Any, core_history: pl.DataFrame, tonight: np.ndarray
) -> None:
    config = core_make_config(tmp_path)
    record = bootstrap_champion(config, core_history, JAN_10)
    assert record.model_path.is_relative_to(tmp_path / "data" / "models")
    with warehouse.connect(config.warehouse_path) as reopened:  # a new connection to the same DuckDB file
        champion = registry.alias_record(reopened, registry.CHAMPION, JAN_20)
        assert registry.alias_record(reopened, registry.CHAMPION, JAN_1) is None
    assert champion == record
    booster = load_verified(champion)
    assert np.array_equal(booster.predict(tonight), train_model(core_history, config).booster.predict(tonight))


def test_publishing_the_same_model_twice_keeps_one_version(
    tmp_path: Path, core_make_config: Any, core_trained: TrainedModel
) -> None:
    config = core_make_config(tmp_path)
    first, second = publish(core_trained, config), publish(core_trained, config)
    assert first == second
    with warehouse.connect(config.warehouse_path) as opened:
        assert opened.execute("select count(*) from registry.model_versions").fetchone() == (1,)


def test_a_copied_project_serves_its_own_model_not_the_originals(
    tmp_path: Path, core_make_config: Any, core_history: pl.DataFrame, tonight: np.ndarray
) -> None:
    import shutil

    original = core_make_config(tmp_path / "original")
    record = bootstrap_champion(original, core_history, JAN_10)
    expected = load_verified(record).predict(tonight)
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    shutil.rmtree(original.models_path)  # the original folder's model is gone: the copy must not need it

    copy = core_make_config(tmp_path / "copy")
    with warehouse.connect(copy.warehouse_path) as opened:
        champion = registry.alias_record(opened, registry.CHAMPION, JAN_20)
        stored = opened.execute("select model_path from registry.model_versions").fetchone()[0]
    assert champion is not None and champion.model_path == copy.models_path / record.version / "model.txt"
    assert not Path(stored).is_absolute()
    assert np.array_equal(load_verified(champion).predict(tonight), expected)


def test_a_registry_row_with_an_absolute_path_still_loads(
    tmp_path: Path, connection: Any, core_trained: TrainedModel
) -> None:
    model_path = save_artifact(core_trained, tmp_path / "elsewhere" / "models")
    card = core_trained.card
    connection.execute(  # a row as written before paths were stored relative
        "insert into registry.model_versions values (?, ?, ?, now(), ?, ?, ?)",
        [card.version, card.project, card.created_at, str(model_path), card.model_sha256, card.model_dump_json()],
    )
    record = registry.get_version(connection, card.version)
    assert record.model_path == model_path
    load_verified(record)
