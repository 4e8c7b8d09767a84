"""How fast the simulators generate data: one credit night of 1M rows, and a year of a scenario world's nights.

    .venv/bin/python benchmarks/simulator_speed.py              # a 1M-row night, a 365 x 2,000-row year, 3 repeats
    .venv/bin/python benchmarks/simulator_speed.py --rows 200000 --nights 90 --repeats 5

These were timed tests (1M rows under 10 s, a year under 15 s); a wall-clock limit measured the machine's load
more than the code on a shared box, so they are figures now. Printed per measurement: median wall seconds [min–max],
median process CPU seconds (all threads; on a shared machine wall time also measures the other processes) and rows/s
at the median wall time. Budgets they had as tests: a 1M-row night in under 10 s, a year of 2,000-row nights in
under 15 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nightkeeper.examples.simulator import simulate_night  # noqa: E402
from nightkeeper.examples.worlds import base_rate_drift_world  # noqa: E402

NIGHT = dt.date(2024, 5, 1)
SEED = 42


def timed(make: Callable[[], int], repeats: int) -> tuple[list[float], list[float], int]:
    """Wall and CPU seconds of each call of ``make`` and the rows the last call generated."""
    walls, cpus, rows = [], [], 0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        rows = make()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus, rows


def one_night(rows: int) -> int:
    return simulate_night(NIGHT, rows, SEED).applications.height


def one_year(nights: int, rows_per_night: int) -> int:
    world = base_rate_drift_world(nights=nights, rows_per_night=rows_per_night)
    return sum(world.labeled_night(night).height for night in world.batch_nights())


def report(name: str, walls: list[float], cpus: list[float], rows: int, budget: float | None) -> None:
    wall = statistics.median(walls)
    verdict = "" if budget is None else f"  (budget {budget:g} s: {'met' if wall <= budget else 'NOT met'})"
    print(
        f"{name:<34} {wall:7.2f} s [{min(walls):.2f}–{max(walls):.2f}]  cpu {statistics.median(cpus):7.2f} s  "
        f"{rows / wall:>12,.0f} rows/s  ({rows:,} rows){verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the single night")
    parser.add_argument("--nights", type=int, default=365, help="nights of the base-rate-drift world")
    parser.add_argument("--rows-per-night", type=int, default=2000, help="rows a night of the world")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with open("/proc/loadavg") as loadavg:
        print(f"load average before: {loadavg.read().split()[:3]}")
    night_budget = 10.0 if args.rows == 1_000_000 else None
    year_budget = 15.0 if (args.nights, args.rows_per_night) == (365, 2000) else None
    report(f"simulate_night({args.rows:,})", *timed(lambda: one_night(args.rows), args.repeats), night_budget)
    report(
        f"world: {args.nights} x {args.rows_per_night:,} rows",
        *timed(lambda: one_year(args.nights, args.rows_per_night), args.repeats),
        year_budget,
    )


if __name__ == "__main__":
    main()
