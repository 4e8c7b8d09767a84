"""Batch-level rules: whole-night checks whose failure is an alert, not a quarantined row.

Each returns a CheckOutcome (plain data) that the Dagster layer reports as an asset check result.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from nightkeeper.config import Contract
from nightkeeper.ingest import LandedFile

Severity = Literal["ERROR", "WARN"]

_COMPATIBLE: dict[str, tuple[str, ...]] = {
    "float": ("Float", "Int", "UInt", "Decimal"),
    "int": ("Int", "UInt"),
    "bool": ("Boolean",),
    "category": ("String", "Categorical", "Enum", "Int", "UInt"),  # integer codes are a common encoding of levels
}


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    severity: Severity = "ERROR"
    metadata: dict[str, Any] = field(default_factory=dict)  # plain Python values, as in StepResult.metadata


def schema_matches_contract(files: list[LandedFile], contract: Contract, night: str) -> CheckOutcome:
    """Every landed file has the contract's columns with compatible types and nothing else.

    A missing required column, a retyped column or an unreadable file fails with ERROR; a missing optional or an
    extra column with WARN.
    CSV files carry no types, so only their column names are checked.
    """
    if all(landed.rows == 0 and landed.error is None for landed in files):
        # an empty night (nothing landed, or only readable empty files) has nothing to answer: one warning, not a
        # schema break; an unreadable file is a problem below
        found = "no input file landed" if not files else f"{len(files)} file(s) landed, all empty"
        return CheckOutcome(
            False, f"empty night {night}: {found}; nothing to answer", "WARN", {"files": len(files), "problems": 0}
        )
    known = {
        contract.entity_id,
        contract.target,
        *contract.features,
        *([contract.event_time] if contract.event_time else []),
    }
    errors: list[str] = []
    warnings: list[str] = []
    for landed in files:
        name = landed.path.rsplit("/", 1)[-1]
        if landed.error is not None:
            errors.append(f"{name}: unreadable ({landed.error}); its content is quarantined")
            continue
        if contract.entity_id not in landed.columns:
            errors.append(f"{name}: id column {contract.entity_id!r} is missing")
        for feature, spec in contract.features.items():
            landed_type = landed.columns.get(feature)
            if landed_type is None:
                (errors if spec.required else warnings).append(
                    f"{name}: {'required' if spec.required else 'optional'} column {feature!r} is missing"
                )
            elif not landed.path.lower().endswith(".csv") and not landed_type.startswith(_COMPATIBLE[spec.dtype]):
                errors.append(f"{name}: column {feature!r} arrived as {landed_type}; the contract expects {spec.dtype}")
        extra = sorted(set(landed.columns) - known)
        if extra:
            warnings.append(f"{name}: unexpected column(s) {extra}")
    problems = errors + warnings
    description = "; ".join(problems) if problems else f"{len(files)} file(s) match the contract"
    return CheckOutcome(not problems, description, "ERROR" if errors else "WARN", {"problems": len(problems)})


def volume_within_history(rows: int, history: list[int], tolerance: float, min_history: int) -> CheckOutcome:
    """Tonight's row count is within ``tolerance`` (relative) of the median of recent nights. An empty night passes:
    ``schema_matches_contract`` already warns about it once."""
    if rows == 0:
        return CheckOutcome(
            True,
            "empty night: no rows (schema_matches_contract warns about it)",
            metadata={"rows": 0, "history_nights": len(history)},
        )
    if len(history) < min_history:
        return CheckOutcome(
            True,
            f"{rows} rows; only {len(history)} earlier night(s), need {min_history} to judge volume",
            metadata={"rows": rows, "history_nights": len(history)},
        )
    median = statistics.median(history)
    deviation = abs(rows - median) / median if median else (0.0 if rows == 0 else float("inf"))
    passed = deviation <= tolerance
    return CheckOutcome(
        passed,
        f"{rows} rows vs median {median:g} of the last {len(history)} nights: deviation {deviation:.0%} "
        f"({'within' if passed else 'beyond'} the {tolerance:.0%} tolerance)",
        "ERROR",
        {"rows": rows, "median_rows": float(median), "deviation": deviation, "history_nights": len(history)},
    )


def entity_ids_unique(raw: pl.DataFrame) -> CheckOutcome:
    """No entity id appears twice in the night (later copies are quarantined row by row)."""
    counts = raw.filter(pl.col("entity_id").is_not_null()).group_by("entity_id").len().filter(pl.col("len") > 1)
    extra_rows = int((counts["len"] - 1).sum()) if counts.height else 0
    examples = counts.sort(["len", "entity_id"], descending=[True, False]).head(5)["entity_id"].to_list()
    return CheckOutcome(
        counts.height == 0,
        f"{counts.height} id(s) repeated ({extra_rows} extra rows), e.g. {examples}"
        if counts.height
        else "all ids unique",
        "ERROR",
        {"duplicated_ids": counts.height, "extra_rows": extra_rows},
    )


def null_rates_stable(tonight: dict[str, float], reference: dict[str, float], max_rise: float) -> CheckOutcome:
    """No feature's share of empty values rose by more than ``max_rise`` over the reference (the champion's training
    data)."""
    spikes = {
        name: (rate, reference.get(name, 0.0))
        for name, rate in tonight.items()
        if rate - reference.get(name, 0.0) > max_rise
    }
    description = (
        "; ".join(f"{name}: {rate:.1%} empty vs {ref:.1%} in reference" for name, (rate, ref) in spikes.items())
        if spikes
        else f"no feature's empty share rose by more than {max_rise:.0%}"
    )
    return CheckOutcome(not spikes, description, "WARN", {"spiking_features": len(spikes)})


def model_answered(error: str | None, version: str | None) -> CheckOutcome:
    """The champion scored every validated row (else the fallback answered them and this says why)."""
    if error is None:
        return CheckOutcome(
            True, f"champion {version} scored every validated row", metadata={"model_version": version or ""}
        )
    return CheckOutcome(False, f"fallback answered for the model: {error}", "ERROR", {"model_version": version or ""})


def fallback_rate_within_limit(counts: dict[str, int], max_rate: float) -> CheckOutcome:
    """The share of rows not answered by the model stays under ``max_rate``."""
    total = sum(counts.values())
    not_model = total - counts.get("model", 0) - counts.get("canary", 0)
    rate = not_model / total if total else 0.0
    return CheckOutcome(
        rate <= max_rate,
        f"{not_model} of {total} rows ({rate:.1%}) answered by fallback or left undecided; limit {max_rate:.0%}",
        "WARN",
        {"not_model_rate": rate},
    )


def rows_conserved(nights: list[tuple[object, int, int, int]]) -> CheckOutcome:
    """Per stored night ``(night, raw rows, outcome rows, distinct outcome rows)``: all three counts are equal."""
    broken = [
        (night, rows_in, rows_out, distinct)
        for night, rows_in, rows_out, distinct in nights
        if not rows_in == rows_out == distinct
    ]
    description = (
        "; ".join(
            f"{night}: {rows_in} raw rows, {rows_out} outcomes ({distinct} distinct)"
            for night, rows_in, rows_out, distinct in broken[:10]
        )
        if broken
        else f"{len(nights)} night(s): every raw row has exactly one outcome"
    )
    return CheckOutcome(not broken, description, "ERROR", {"nights": len(nights), "broken_nights": len(broken)})
