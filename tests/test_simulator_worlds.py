"""Scenario worlds: deterministic non-credit datasets, each exercising one way self-healing can fail, written as a
labeled history, nightly batch files and late label files with a project config that lists their columns."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from nightkeeper.cli import app
from nightkeeper.config import load_config, parse_config
from nightkeeper.examples.worlds import (
    WORLDS,
    World,
    base_rate_drift_world,
    duplicate_codes_world,
    seasonal_shares_world,
    small_nights_world,
    support_tickets_world,
    vanishing_category_world,
    weak_model_world,
    write_world,
)
from nightkeeper.ingest import landed_files, read_raw_batch
from nightkeeper.labels import label_files
from nightkeeper.validation import validate

START = date(2026, 1, 1)
LIGHTGBM_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "verbose": -1,
    "num_threads": 1,
    "seed": 7,
}


def small(name: str, **overrides: object) -> World:
    """A world of ``name`` with few nights and rows: enough to test its layout and contract, fast."""
    params: dict[str, object] = {"nights": 6, "rows_per_night": 300, "history_nights": 3, "seed": 3}
    if name == "vanishing-category":
        params["vanish_at"] = 2
    params.update(overrides)
    return WORLDS[name](**params)


def nights_frame(world: World, nights: list[date]) -> pl.DataFrame:
    return pl.concat([world.labeled_night(night) for night in nights])


def matrix(world: World, frame: pl.DataFrame) -> pl.DataFrame:
    """The features as LightGBM takes them: categories as fixed-level enums, everything else as floats."""
    return frame.select(
        pl.col(name).cast(pl.String).cast(pl.Enum(spec["categories"])).to_physical().cast(pl.Float64)
        if spec["dtype"] == "category"
        else pl.col(name).cast(pl.Float64)
        for name, spec in world.features.items()
    )


def fitted_auc(world: World, train: pl.DataFrame, test: pl.DataFrame, rounds: int = 100) -> float:
    categorical = [i for i, spec in enumerate(world.features.values()) if spec["dtype"] == "category"]
    data = lgb.Dataset(matrix(world, train).to_numpy(), train[world.target].to_numpy(), categorical_feature=categorical)
    model = lgb.train(LIGHTGBM_PARAMS, data, rounds)
    return float(roc_auc_score(test[world.target].to_numpy(), model.predict(matrix(world, test).to_numpy())))


def share(frame: pl.DataFrame, column: str, level: str) -> float:
    return float((frame[column].cast(pl.String) == level).mean())


# ------------------------------------------------------------------------------------------- every world alike


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_same_seed_gives_identical_nights_and_history(name: str) -> None:
    first, second = small(name), small(name)
    assert_frame_equal(first.history(), second.history())
    assert_frame_equal(first.labeled_night(first.calendar.start), second.labeled_night(second.calendar.start))


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_different_seed_gives_a_different_night(name: str) -> None:
    assert not small(name, seed=3).labeled_night(START).equals(small(name, seed=4).labeled_night(START))


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_a_night_does_not_depend_on_how_many_nights_the_world_has(name: str) -> None:
    night = START + timedelta(days=4)
    assert_frame_equal(small(name, nights=5).labeled_night(night), small(name, nights=40).labeled_night(night))


def test_worlds_name_their_own_columns_and_ids() -> None:
    worlds = [small(name) for name in sorted(WORLDS)]
    assert len({world.entity_id for world in worlds}) == len(worlds)
    assert len({world.tag_prefix for world in worlds}) == len(worlds)
    assert all("application_id" not in world.features and world.entity_id != "application_id" for world in worlds)


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_config_lists_the_columns_and_loads_with_parse_config(name: str, tmp_path: Path) -> None:
    world = small(name)
    config = parse_config(world.config(), root=tmp_path)
    assert config.contract.entity_id == world.entity_id
    assert config.contract.event_time == world.event_time
    assert config.contract.target == world.target
    assert config.contract.feature_names == list(world.features)
    assert config.landing_path == (tmp_path / "batches").resolve()
    assert config.labels_path == (tmp_path / "labels").resolve()


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_written_batches_pass_validation_under_the_written_config(name: str, tmp_path: Path) -> None:
    files = write_world(small(name), tmp_path, label_delay=2)
    config = load_config(files.config)
    for night in files.nights:
        paths = landed_files(config.landing_path, config.source.pattern, night)
        raw = read_raw_batch(paths, night, config.contract)
        result = validate(raw.frame, config.contract)
        assert result.quarantine.is_empty(), result.quarantine.head(5)
        assert result.valid.height == raw.frame.height > 0


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_history_is_labeled_and_valid_under_the_config(name: str, tmp_path: Path) -> None:
    world = small(name)
    history = world.history()
    config = parse_config(world.config(), root=tmp_path)
    assert history.columns == [world.entity_id, world.event_time, *world.features, world.target]
    assert history[world.target].dtype == pl.Int8 and set(history[world.target].unique()) <= {0, 1}
    assert history[world.entity_id].is_unique().all()
    for name_, spec in config.contract.features.items():
        column = history[name_]
        if spec.required:
            assert column.null_count() == 0, name_
        if spec.dtype == "category":
            assert set(column.drop_nulls().cast(pl.String)) <= set(spec.categories or []), name_
        if spec.dtype in ("int", "float"):
            assert spec.min is None or column.min() >= spec.min, name_  # type: ignore[operator]
            assert spec.max is None or column.max() <= spec.max, name_  # type: ignore[operator]


def test_history_covers_the_nights_before_start_and_batches_follow() -> None:
    world = small("duplicate-codes", history_nights=3, nights=4)
    assert world.history_dates() == [date(2025, 12, 29), date(2025, 12, 30), date(2025, 12, 31)]
    assert world.batch_nights() == [START + timedelta(days=i) for i in range(4)]
    assert sorted(world.history()[world.event_time].dt.date().unique()) == world.history_dates()


def test_weekly_cadence_draws_a_batch_every_seven_days_keyed_by_the_day_its_week_starts(tmp_path: Path) -> None:
    world = small("seasonal-shares", cadence="weekly", nights=3)
    assert world.batch_nights() == [START, START + timedelta(days=7), START + timedelta(days=14)]
    days = world.labeled_night(START + timedelta(days=7))[world.event_time].dt.date()
    assert days.min() >= START + timedelta(days=7) and days.max() <= START + timedelta(days=13)
    assert days.n_unique() == 7
    assert parse_config(world.config(), root=tmp_path).schedule.cadence == "weekly"


# ----------------------------------------------------------------------------------------------- the layout


def test_write_world_lays_out_config_history_batches_and_late_labels(tmp_path: Path) -> None:
    world = small("vanishing-category", nights=3)
    files = write_world(world, tmp_path, label_delay=5)
    assert files.config == tmp_path / "nightkeeper.yaml" and files.history == tmp_path / "history.parquet"
    assert_frame_equal(pl.read_parquet(files.history), world.history())
    for night in files.nights:
        labeled = world.labeled_night(night)
        batch = pl.read_parquet(tmp_path / "batches" / night.isoformat() / "batch.parquet")
        assert_frame_equal(batch, labeled.drop(world.target))
        arrived = pl.read_parquet(tmp_path / "labels" / (night + timedelta(days=5)).isoformat() / "labels.parquet")
        assert_frame_equal(arrived, labeled.select(world.entity_id, world.target))
    assert sorted(p.name for p in files.labels.iterdir()) == ["2026-01-06", "2026-01-07", "2026-01-08"]


def test_labels_are_visible_to_the_label_reader_only_from_their_arrival_night(tmp_path: Path) -> None:
    files = write_world(small("weak-model", nights=3), tmp_path, label_delay=2)
    assert label_files(files.labels, up_to=START + timedelta(days=1)) == []
    arrived = label_files(files.labels, up_to=START + timedelta(days=2))
    assert arrived == [files.labels / "2026-01-03" / "labels.parquet"]


def test_weekly_labels_land_label_delay_batch_nights_later(tmp_path: Path) -> None:
    files = write_world(small("weak-model", cadence="weekly", nights=2), tmp_path, label_delay=3)
    assert sorted(p.name for p in files.labels.iterdir()) == ["2026-01-22", "2026-01-29"]


def test_csv_format_writes_csv_files_and_the_config_reads_them(tmp_path: Path) -> None:
    world = small("support-tickets", nights=2)
    files = write_world(world, tmp_path, label_delay=1, file_format="csv")
    config = load_config(files.config)
    assert files.history.suffix == ".csv" and config.source.pattern == "{date}/*.csv"
    night = files.nights[0]
    paths = landed_files(config.landing_path, config.source.pattern, night)
    assert paths == [tmp_path / "batches" / night.isoformat() / "batch.csv"]
    result = validate(read_raw_batch(paths, night, config.contract).frame, config.contract)
    assert result.quarantine.is_empty() and result.valid.height == world.calendar.rows_per_night
    assert pl.read_csv(files.history).height == world.history().height


def test_rewriting_a_world_is_idempotent(tmp_path: Path) -> None:
    world = small("small-nights", nights=2)
    write_world(world, tmp_path)
    first = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    write_world(world, tmp_path)
    assert first == {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert len(first) == 1 + 1 + 2 + 2  # config, history, two batches, two label files


def test_write_world_rejects_a_negative_label_delay(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label_delay"):
        write_world(small("weak-model"), tmp_path, label_delay=-1)


# ------------------------------------------------------------------------------------------- base-rate drift


@pytest.fixture(scope="module")
def drift_world() -> World:
    return base_rate_drift_world(nights=365, rows_per_night=2000, seed=1)


def test_base_rate_drifts_from_0_30_to_0_02_over_the_year(drift_world: World) -> None:
    nights = drift_world.batch_nights()
    first_week = nights_frame(drift_world, nights[:7])[drift_world.target].mean()
    last_week = nights_frame(drift_world, nights[-7:])[drift_world.target].mean()
    history = drift_world.history()[drift_world.target].mean()
    assert abs(history - 0.30) < 0.015 and abs(first_week - 0.30) < 0.02  # type: ignore[operator]
    assert abs(last_week - 0.02) < 0.008  # type: ignore[operator]


def test_inputs_shift_with_the_base_rate(drift_world: World) -> None:
    nights = drift_world.batch_nights()
    early, late = nights_frame(drift_world, nights[:7]), nights_frame(drift_world, nights[-7:])
    assert late["tenure_months"].median() < 0.7 * early["tenure_months"].median()  # type: ignore[operator]
    assert share(late, "plan", "pro") > share(early, "plan", "pro") + 0.1
    assert late["autopay"].mean() > early["autopay"].mean() + 0.2  # type: ignore[operator]


def test_a_model_retrained_on_recent_labels_beats_the_first_champion_late_in_the_year(drift_world: World) -> None:
    nights = drift_world.batch_nights()
    late = nights_frame(drift_world, nights[300:310])
    recent = nights_frame(drift_world, nights[240:300])
    first_champion = fitted_auc(drift_world, drift_world.history(), late)
    retrained = fitted_auc(drift_world, recent, late)
    assert retrained > first_champion + 0.04


# ------------------------------------------------------------------------------------------- duplicate codes


def test_low_cardinality_codes_repeat_a_feature_vector_in_about_6_percent_of_rows() -> None:
    world = duplicate_codes_world(nights=10, rows_per_night=2000, seed=2)
    shares = [
        1 - night.select(list(world.features)).n_unique() / night.height
        for night in (world.labeled_night(d) for d in world.batch_nights())
    ]
    assert 0.05 <= float(np.mean(shares)) <= 0.07
    assert min(shares) > 0.035


def test_low_cardinality_features_are_integer_codes_and_one_bool() -> None:
    world = duplicate_codes_world(nights=1, rows_per_night=500)
    night = world.labeled_night(START)
    dtypes = {name: night[name].dtype for name in world.features}
    assert dtypes.pop("has_vehicle") == pl.Boolean
    assert set(dtypes.values()) == {pl.Int64}
    assert any(spec["dtype"] == "category" for spec in world.features.values())
    assert all(night[name].n_unique() <= 9 for name in dtypes)


def test_low_cardinality_world_is_stable_over_the_year() -> None:
    world = duplicate_codes_world(nights=365, rows_per_night=2000, seed=2)
    nights = world.batch_nights()
    early, late = nights_frame(world, nights[:5]), nights_frame(world, nights[-5:])
    assert abs(early[world.target].mean() - late[world.target].mean()) < 0.02  # type: ignore[operator]
    for name in world.features:
        early_mean, late_mean = early[name].cast(pl.Float64).mean(), late[name].cast(pl.Float64).mean()
        assert abs(early_mean - late_mean) < 0.05, name  # type: ignore[operator]


# ---------------------------------------------------------------------------------------- vanishing category


def test_vanished_level_has_no_rows_from_its_night_and_another_absorbs_its_share() -> None:
    world = vanishing_category_world(nights=20, vanish_at=10, seed=5)
    nights = world.batch_nights()
    facts = world.facts
    assert facts["vanishes_on"] == nights[10]
    before, after = nights_frame(world, nights[:10]), nights_frame(world, nights[10:])
    assert 0.06 < share(before, "payment_method", "cash_on_delivery") < 0.08
    assert share(after, "payment_method", "cash_on_delivery") == 0.0
    assert world.labeled_night(nights[9])["payment_method"].to_list().count("cash_on_delivery") > 0
    assert 0.14 < share(before, "payment_method", "invoice") < 0.16
    assert 0.21 < share(after, "payment_method", "invoice") < 0.23
    assert abs(share(before, "payment_method", "card") - share(after, "payment_method", "card")) < 0.02


def test_vanishing_rejects_a_night_outside_the_run() -> None:
    with pytest.raises(ValueError, match="vanish_at"):
        vanishing_category_world(nights=30, vanish_at=30)


def test_weekly_vanishing_is_dated_by_its_batch_night() -> None:
    world = vanishing_category_world(nights=10, vanish_at=4, cadence="weekly")
    assert world.facts["vanishes_on"] == world.batch_nights()[4] == START + timedelta(days=28)


# ------------------------------------------------------------------------------------------ seasonal shares


def test_channel_shares_follow_the_week() -> None:
    world = seasonal_shares_world(nights=28, seed=6)
    frames = {night: world.labeled_night(night) for night in world.batch_nights()}
    weekend = pl.concat([f for night, f in frames.items() if night.weekday() >= 5])
    weekday = pl.concat([f for night, f in frames.items() if night.weekday() < 5])
    assert 0.32 < share(weekend, "channel", "social") < 0.38
    assert 0.13 < share(weekday, "channel", "social") < 0.17


def test_promo_shares_follow_the_month() -> None:
    world = seasonal_shares_world(nights=62, seed=6)
    frames = {night: world.labeled_night(night) for night in world.batch_nights()}
    payday = pl.concat([f for night, f in frames.items() if night.day >= 25 or night.day <= 3])
    other = pl.concat([f for night, f in frames.items() if 3 < night.day < 25])
    assert 0.27 < share(payday, "promo", "payday") < 0.33
    assert 0.03 < share(other, "promo", "payday") < 0.07


def test_seasonal_shares_do_not_change_how_well_a_model_ranks() -> None:
    world = seasonal_shares_world(nights=120, rows_per_night=1000, seed=6, history_nights=56)
    nights = world.batch_nights()
    first_month = fitted_auc(world, world.history(), nights_frame(world, nights[:28]))
    fourth_month = fitted_auc(world, world.history(), nights_frame(world, nights[84:112]))
    assert abs(first_month - fourth_month) < 0.02


# ----------------------------------------------------------------------------------------------- weak model


def test_a_model_fitted_on_the_weak_world_s_history_reaches_an_auc_of_about_0_56() -> None:
    world = weak_model_world(nights=10, rows_per_night=2000, seed=0)
    auc = fitted_auc(world, world.history(), nights_frame(world, world.batch_nights()), rounds=200)
    assert abs(auc - world.facts["oracle_auc"]) <= 0.03


# --------------------------------------------------------------------------------------------- small nights


def test_small_nights_hold_about_150_rows() -> None:
    world = small_nights_world(nights=60, seed=8)
    rows = [world.labeled_night(night).height for night in world.batch_nights()]
    assert 140 <= np.mean(rows) <= 160
    assert min(rows) >= 110 and max(rows) <= 190
    assert len(set(rows)) > 10  # volume varies naturally from night to night


# ------------------------------------------------------------------------------------ bring-your-own-data docs


def test_docs_dataset_has_an_int_coded_category_a_bool_natural_nulls_an_id_and_an_event_time(tmp_path: Path) -> None:
    world = support_tickets_world()
    config = parse_config(world.config(), root=tmp_path)
    night = world.labeled_night(START)
    features = config.contract.features
    assert features["priority"].dtype == "category" and night["priority"].dtype == pl.Int64
    assert features["is_enterprise"].dtype == "bool" and night["is_enterprise"].dtype == pl.Boolean
    assert not features["first_response_minutes"].required and night["first_response_minutes"].null_count() > 0
    assert night[config.contract.event_time].dtype == pl.Datetime("us")
    assert night[config.contract.entity_id].is_unique().all()
    assert world.calendar.nights >= 60


def test_docs_dataset_nulls_are_natural_more_frequent_for_low_priority_tickets() -> None:
    night = support_tickets_world(rows_per_night=5000).labeled_night(START)
    null_rate = night.group_by("priority").agg(pl.col("first_response_minutes").is_null().mean()).sort("priority")
    assert null_rate["first_response_minutes"].to_list() == sorted(null_rate["first_response_minutes"].to_list())


def test_docs_dataset_launch_grows_the_integrations_share() -> None:
    world = support_tickets_world(nights=90, seed=9)
    nights = world.batch_nights()
    before, after = nights_frame(world, nights[:25]), nights_frame(world, nights[65:])
    assert share(after, "product_area", "integrations") > 1.6 * share(before, "product_area", "integrations")


# ------------------------------------------------------------------------------------------------------ the CLI


def test_world_command_writes_a_world_the_written_config_describes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "world",
            "support-tickets",
            "--out",
            str(tmp_path),
            "--nights",
            "3",
            "--rows",
            "200",
            "--label-delay",
            "1",
            "--format",
            "csv",
        ],
    )
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "nightkeeper.yaml")
    assert config.contract.entity_id == "ticket_id"
    assert sorted(p.name for p in (tmp_path / "batches").iterdir()) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert (tmp_path / "history.csv").is_file()
    assert_frame_equal(
        pl.read_csv(tmp_path / "labels" / "2026-01-02" / "labels.csv"),
        support_tickets_world(nights=3, rows_per_night=200).labeled_night(START).select("ticket_id", "escalated"),
        check_dtypes=False,
    )


def test_world_command_refuses_an_unknown_world(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["world", "credit", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown world 'credit'" in result.output
