"""What sharding costs the monitoring: a night's drift and performance from N shards' merged summaries against the
whole night's, on the same rows, with the check that both give the same figures.

    .venv/bin/python benchmarks/sharded_summaries.py                    # 1M rows, 4 shards, 3 repeats
    .venv/bin/python benchmarks/sharded_summaries.py --rows 100000 --shards 8 --repeats 5

Set-up (not timed): a champion trained on 10 simulated nights x 2,000 rows (20 trees), one simulated night of
``--rows`` rows typed as the contract says and scored by it, cut into ``--shards`` shards
(``sharding.split_by_shard``).
Timed, median [min-max] over ``--repeats``:

* ``whole``: ``measure_drift`` on the night (summary + statistics, domain classifier included), and
  ``realized_performance`` + ``estimated_performance`` on its answers and labels.
* ``shards``: every shard's ``summarise_drift`` / ``realized_counts`` / ``estimated_counts`` one after the other (the
  per-shard work, which a sharded night runs in parallel), then the merges and the statistics from the merged
  summaries (the per-night work). The largest shard's summary time is what a parallel night waits for.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import time
from pathlib import Path

import polars as pl
import yaml

from nightkeeper.config import BusinessValue, parse_config
from nightkeeper.drift import drift_of_summary, measure_drift
from nightkeeper.encoding import feature_matrix
from nightkeeper.examples.simulator import ENTITY_ID, TARGET, simulate_history, simulate_night
from nightkeeper.performance import (
    estimated_counts,
    estimated_from_counts,
    estimated_performance,
    merge_counts,
    realized_counts,
    realized_from_counts,
    realized_performance,
    scored_with_labels,
)
from nightkeeper.sharding import split_by_shard
from nightkeeper.summaries import merge_drift_summaries, summarise_drift
from nightkeeper.training import train_model, training_frame

NIGHT = dt.date(2026, 5, 1)
CONFIG = Path(__file__).resolve().parents[1] / "nightkeeper.yaml"


def shown(seconds: list[float]) -> str:
    return f"{statistics.median(seconds):7.2f} s [{min(seconds):.2f}-{max(seconds):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    raw = yaml.safe_load(CONFIG.read_text())
    raw["model"]["num_boost_round"] = 20
    config = parse_config(raw, root=CONFIG.parent)
    model = train_model(simulate_history(NIGHT - dt.timedelta(days=1), days=10, rows_per_day=2_000, seed=1), config)
    card, decision, value = model.card, config.model.decision, BusinessValue(false_positive=-1.0, true_negative=1.0)
    data = simulate_night(NIGHT, args.rows, 2)
    labeled = data.applications.join(data.labels, on=ENTITY_ID)
    rows = training_frame(labeled, config).rename({ENTITY_ID: "entity_id"})
    rows = rows.with_columns(pl.Series("score", model.booster.predict(feature_matrix(rows, card.features))))
    answers = rows.select(
        pl.lit(NIGHT).alias("partition_date"),
        pl.lit("night.parquet").alias("source_file"),
        pl.int_range(1, pl.len() + 1).alias("row_number"),
        "entity_id",
        pl.lit("model").alias("source"),
        "score",
        pl.lit(card.version).alias("model_version"),
    )
    labels = rows.select("entity_id", pl.lit(NIGHT).alias("partition_date"), pl.col(TARGET).alias("label"))
    parts = list(zip(split_by_shard(rows, args.shards), split_by_shard(answers, args.shards), strict=True))
    parts_labels = split_by_shard(labels, args.shards)
    sizes = [p[0].height for p in parts]
    print(f"{args.rows:,} rows, {args.shards} shards of {min(sizes):,}-{max(sizes):,} rows")

    whole, shard_work, largest, night_work = [], [], [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        drift = measure_drift(card.profile, rows, rows["score"].to_numpy(), card.features, model.reference_sample)
        realized = realized_performance(answers, labels, decision, value, 100)
        estimated = estimated_performance(answers, decision, value)
        whole.append(time.perf_counter() - started)

        per_shard, summaries = [], []
        for (shard_rows, shard_answers), shard_labels in zip(parts, parts_labels, strict=True):
            started = time.perf_counter()
            summaries.append(
                (
                    summarise_drift(shard_rows, shard_rows["score"].to_numpy(), card.features, 10_000),
                    realized_counts(scored_with_labels(shard_answers, shard_labels)),
                    estimated_counts(shard_answers),
                )
            )
            per_shard.append(time.perf_counter() - started)
        shard_work.append(sum(per_shard))
        largest.append(max(per_shard))
        started = time.perf_counter()
        merged = merge_drift_summaries([drift_summary for drift_summary, _, _ in summaries])
        sharded_drift = drift_of_summary(card.profile, merged, card.features, model.reference_sample)
        realized_merged = merge_counts([counts for _, counts, _ in summaries])
        sharded_realized = realized_from_counts(realized_merged, decision, value, 100)
        sharded_estimated = estimated_from_counts(merge_counts([counts for _, _, counts in summaries]), decision, value)
        night_work.append(time.perf_counter() - started)

    left, right = sharded_drift.metrics(), drift.metrics()
    worst = max(0.0 if math.isnan(v) and math.isnan(left[k]) else abs(left[k] - v) for k, v in right.items())
    tables = ((sharded_realized, realized), (sharded_estimated, estimated))
    worst_performance = max(
        abs(a - b)
        for sharded, one in tables
        for column in one.columns
        if one[column].dtype == pl.Float64
        for a, b in zip(sharded[column].fill_null(0).to_list(), one[column].fill_null(0).to_list(), strict=True)
    )
    print(f"whole night (drift + realized + estimated):  {shown(whole)}")
    print(f"shards, summaries one after another:         {shown(shard_work)}   (largest shard {shown(largest)})")
    print(f"night, merges + statistics from the merged:  {shown(night_work)}")
    print(f"largest |sharded - whole|: drift metrics {worst:.1e}, performance {worst_performance:.1e}")


if __name__ == "__main__":
    main()
