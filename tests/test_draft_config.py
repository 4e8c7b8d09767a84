"""`nightkeeper init` drafts a config from a sample of someone else's data that check-config accepts unchanged."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from nightkeeper.cli import app
from nightkeeper.config import load_config, parse_config
from nightkeeper.draft import DraftError, SampleShape, derive_sizes, draft_config_text, write_draft
from nightkeeper.examples.worlds import support_tickets_world, write_world
from nightkeeper.ingest import read_raw_batch
from nightkeeper.testing.synthetic import synthesize
from nightkeeper.validation import validate

REPO = Path(__file__).resolve().parents[1]
NIGHTS = 10
ROWS_PER_NIGHT = 400

# A dataset that is not credit: other names, an integer-coded category, a boolean, a column with natural nulls.
SAMPLE_CONTRACT = {
    "entity_id": "visit_ref",
    "event_time": "visited_at",
    "target": "churned",
    "features": {
        "plan_tier": {"dtype": "category", "categories": [1, 2, 3, 4]},
        "is_member": {"dtype": "bool"},
        "monthly_spend": {"dtype": "float", "min": 0, "max": 900, "required": False},
        "support_calls": {"dtype": "int", "min": 0, "max": 60},
        "device": {"dtype": "category", "categories": ["ios", "android", "web"]},
    },
}


def _sample(nights: int = NIGHTS) -> pl.DataFrame:
    contract = parse_config({"name": "sample", "contract": SAMPLE_CONTRACT}, root=REPO).contract
    frames = [
        synthesize(
            contract, ROWS_PER_NIGHT, seed=i, id_prefix=f"N{i}-", event_date=dt.date(2025, 3, 1) + dt.timedelta(days=i)
        )
        for i in range(nights)
    ]
    return pl.concat(frames).with_columns(pl.col("plan_tier").cast(pl.Int64))  # codes as integers, as files carry them


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "visits.parquet"
    _sample().write_parquet(path)
    return path


def _draft(tmp_path: Path, sample: pl.DataFrame, **roles) -> dict:
    roles = {"target": "churned", "entity_id": "visit_ref", "event_time": "visited_at", **roles}
    text = draft_config_text(sample, name="visits", **roles)
    (tmp_path / "nightkeeper.yaml").write_text(text)
    load_config(tmp_path / "nightkeeper.yaml")  # check-config's validation
    return yaml.safe_load(text)


def test_init_writes_a_config_next_to_the_sample_that_check_config_accepts_unchanged(sample_file):
    init = CliRunner().invoke(
        app,
        ["init", "--sample", str(sample_file), "--target", "churned", "--id", "visit_ref", "--time", "visited_at"],
        terminal_width=200,
    )
    assert init.exit_code == 0, init.output
    written = sample_file.parent / "nightkeeper.yaml"

    check = CliRunner().invoke(app, ["check-config", "--config", str(written)], terminal_width=200)

    assert check.exit_code == 0, check.output
    assert "ok" in check.output


def test_the_draft_spells_out_every_section(tmp_path):
    _draft(tmp_path, _sample())

    assert load_config(tmp_path / "nightkeeper.yaml").defaults_applied == []


def test_integer_codes_with_few_levels_are_offered_as_a_category_written_unquoted(tmp_path):
    draft = _draft(tmp_path, _sample())

    assert draft["contract"]["features"]["plan_tier"]["dtype"] == "category"
    assert draft["contract"]["features"]["plan_tier"]["categories"] == [1, 2, 3, 4]
    assert "plan_tier: {dtype: category, categories: [1, 2, 3, 4]}" in (tmp_path / "nightkeeper.yaml").read_text()


def test_a_small_count_with_a_thinning_tail_is_an_int_with_a_range_not_a_category(tmp_path):
    sample = _sample()
    counts = pl.Series("attachments", [0] * 2400 + [1] * 1000 + [2] * 400 + [3] * 150 + [4] * 40 + [5] * 10)
    draft = _draft(tmp_path, sample.with_columns(counts))

    assert draft["contract"]["features"]["attachments"] == {"dtype": "int", "min": 0, "max": 10}


def test_dtypes_are_inferred_and_the_roles_are_not_features(tmp_path):
    features = _draft(tmp_path, _sample())["contract"]["features"]

    assert {name: spec["dtype"] for name, spec in features.items()} == {
        "plan_tier": "category",
        "is_member": "bool",
        "monthly_spend": "float",
        "support_calls": "int",
        "device": "category",
    }


def test_required_only_where_the_sample_has_no_nulls(tmp_path):
    features = _draft(tmp_path, _sample())["contract"]["features"]

    assert features["monthly_spend"]["required"] is False
    assert all("required" not in spec for name, spec in features.items() if name != "monthly_spend")


def test_drafted_ranges_do_not_quarantine_the_samples_own_rows_and_say_why(tmp_path):
    sample = _sample()
    _draft(tmp_path, sample)
    config = load_config(tmp_path / "nightkeeper.yaml")
    night = sample.filter(pl.col("visited_at").dt.date() == dt.date(2025, 3, 1))
    night.drop("churned").write_parquet(tmp_path / "visits.parquet")
    raw = read_raw_batch([tmp_path / "visits.parquet"], dt.date(2025, 3, 1), config.contract).frame

    result = validate(raw, config.contract)

    assert result.quarantined_rows == 0, result.quarantine.head()
    assert "not quarantined" in (tmp_path / "nightkeeper.yaml").read_text()


def test_decision_labels_and_business_values_are_commented_placeholders(tmp_path):
    draft = _draft(tmp_path, _sample())
    text = (tmp_path / "nightkeeper.yaml").read_text()

    assert draft["model"]["decision"]["at_or_above_threshold"] == "positive"
    assert set(draft["monitoring"]["performance"]["business_value"].values()) == {0}
    assert text.count("placeholder") >= 4


def test_size_settings_follow_the_rows_per_night():
    small = derive_sizes(SampleShape(rows_per_night=150, nights=30, volume_cv=0.1, last_night=None))
    large = derive_sizes(SampleShape(rows_per_night=20_000, nights=30, volume_cv=0.1, last_night=None))

    assert small.training_window_days > large.training_window_days
    assert small.holdout_days > large.holdout_days
    assert small.min_labeled_rows < large.min_labeled_rows
    assert small.review_capacity < large.review_capacity
    assert small.data_gate_min_rows <= 150 * small.training_window_days
    assert small.canary_percents == [50, 100] and large.canary_percents == [1, 5, 20, 50, 100]


def test_rows_per_night_come_from_the_time_column(tmp_path):
    draft = _draft(tmp_path, _sample())

    assert draft["review"]["capacity"] == round(0.04 * ROWS_PER_NIGHT)
    assert draft["monitoring"]["performance"]["min_labeled_rows"] == ROWS_PER_NIGHT // 4


def test_without_a_time_column_the_sample_is_one_night_and_the_draft_says_so(tmp_path):
    sample = _sample()
    draft = _draft(tmp_path, sample.drop("visited_at"), event_time=None)

    assert draft["review"]["capacity"] == min(500, round(0.04 * sample.height))
    assert "taken as ONE night" in (tmp_path / "nightkeeper.yaml").read_text()


def test_a_target_that_is_not_binary_is_refused_naming_the_column(tmp_path):
    sample = _sample().with_columns(pl.col("support_calls").alias("churned"))

    with pytest.raises(DraftError, match="--target column 'churned': expected labels 0 and 1"):
        draft_config_text(sample, target="churned", entity_id="visit_ref", event_time="visited_at", name="visits")


def test_the_draft_alerts_with_the_shipped_rules_on_nightkeepers_own_metrics(tmp_path):
    shipped = yaml.safe_load((REPO / "nightkeeper.yaml").read_text())["monitoring"]["alerts"]["rules"]

    draft = _draft(tmp_path, _sample())

    assert draft["monitoring"]["alerts"]["rules"] == [
        r for r in shipped if not r["metric"].startswith("drift.feature.")
    ]


def test_a_draft_from_the_history_quarantines_no_row_of_later_nights(tmp_path):
    files = write_world(support_tickets_world(nights=30, rows_per_night=400), tmp_path / "tickets")
    config = load_config(
        write_draft(files.history, "escalated", "ticket_id", "created_at", out=tmp_path / "draft.yaml")
    )

    quarantined = 0
    for night in files.nights:
        raw = read_raw_batch(
            sorted((files.batches / night.isoformat()).glob("*.parquet")), night, config.contract
        ).frame
        quarantined += validate(raw, config.contract).quarantined_rows

    assert quarantined == 0
