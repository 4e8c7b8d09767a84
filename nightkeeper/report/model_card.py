"""The model card report's sections, one function each: what ``notebooks/model_card.ipynb`` shows under each heading.
The notebook holds the parameters, the headings and one call per section.

What describes the model comes from its typed card (``nightkeeper.card.ModelCard``: the ``card.json`` beside the
model, else the registry row in the snapshot) and only from it; what happened to the model in production (realized
metrics, labeled scores, gate verdicts, aliases) comes from the snapshot.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from pydantic import ValidationError
from sklearn.metrics import roc_curve

from nightkeeper import performance
from nightkeeper.card import ModelCard
from nightkeeper.frames import number
from nightkeeper.report import views
from nightkeeper.report.figures import PALETTE, new_figure, pairs, say, show, style, table
from nightkeeper.report.snapshot import Snapshot, load_snapshot

CARD_FILE = "card.json"
MIN_CALIBRATION_ROWS = 50
"""Labeled production answers below which calibration and ROC are not drawn (a decile of 5 rows is noise)."""


@dataclass(frozen=True)
class CardPage:
    """One version's card (None when neither its folder nor the snapshot's registry holds a readable one), where it
    was looked for, and the snapshot of its production record."""

    version: str
    card: ModelCard | None
    card_note: str
    folder: Path
    snap: Snapshot


def open_card(version: str, snapshot_dir: Path | str, model_dir: Path | str) -> CardPage:
    """The card of ``version``: ``model_dir/card.json`` if present, else the ``card_json`` of its registry row in the
    snapshot; the page style applied to the kernel's display."""
    style()
    snap = load_snapshot(snapshot_dir)
    folder = Path(model_dir)
    path = folder / CARD_FILE
    registered = snap["model_versions"].filter(pl.col("version") == version)
    text, source = None, f"neither {path} nor the snapshot's registry holds it"
    if path.exists():
        text, source = path.read_text(), str(path)
    elif registered.height and "card_json" in registered.columns and registered["card_json"][0]:
        text, source = str(registered["card_json"][0]), "the snapshot's registry"
    if text is None:
        return CardPage(version, None, source, folder, snap)
    try:
        return CardPage(version, ModelCard.model_validate_json(text), source, folder, snap)
    except ValidationError as exc:
        return CardPage(version, None, f"the card in {source} is not a valid model card ({exc})", folder, snap)


def title(page: CardPage) -> None:
    """The page's title, or why there is no card."""
    say(f"# Model card — {page.version}")
    if page.card is None:
        say(f"<p class='nk-empty'>No card for {html.escape(page.version)}: {html.escape(page.card_note)}.</p>")


def summary(page: CardPage) -> None:
    """Section "Summary"."""
    card = page.card
    if card is None:
        return
    registered = page.snap["model_versions"].filter(pl.col("version") == page.version)
    decision, window = card.decision, card.training_window
    rows = {
        "version": page.version,
        "project": card.project,
        "created": f"{card.created_at:%Y-%m-%d %H:%M:%S}",
        "status": views.alias_status(page.snap, page.version),
        "registered": str(registered["registered_at"][0])[:19]
        if registered.height
        else "not registered in this snapshot",
        "decision": f"score ≥ {decision.threshold} → {decision.at_or_above_threshold}, "
        f"below → {decision.below_threshold}",
        "features": len(card.features),
        "trained on": f"{window.rows:,} rows, holdout {window.holdout_rows:,} rows",
    }
    table(pairs(rows, "field", "value"))


def metrics(page: CardPage) -> None:
    """Section "Metrics"."""
    if page.card is not None:
        holdout = page.card.holdout_metrics
        table(pl.DataFrame({"holdout metric": list(holdout), "value": list(holdout.values())}))
    realized = page.snap["performance_realized"].filter(pl.col("model_version") == page.version)
    labeled = realized.filter(pl.col("auc").is_not_null())
    if not labeled.height:
        say("_No labeled production answers of this version in the snapshot yet._")
        return
    say(
        f"**In production:** {labeled.height} labeled scoring night(s), {int(labeled['labeled_rows'].sum()):,} labeled "
        f"rows; realized AUC {number(labeled['auc'].min()):.3f}–{number(labeled['auc'].max()):.3f} (median "
        f"{number(labeled['auc'].median()):.3f})."
    )
    table(
        labeled.select(
            "partition_date", "source", "rows", "labeled_rows", "auc", "precision", "recall", "brier", "business_value"
        ).sort("partition_date", descending=True),
        max_rows=14,
        auc=".3f",
        precision=".3f",
        recall=".3f",
        brier=".4f",
        business_value=",.0f",
    )


def lineage(page: CardPage) -> None:
    """Section "Lineage"."""
    card = page.card
    if card is None:
        return
    window = card.training_window
    rows = {
        "training window": f"{window.start} → {window.end}",
        "training rows": f"{window.rows:,}",
        "holdout rows": f"{window.holdout_rows:,}",
        "positive rate": f"{window.positive_rate:.3%}",
        "data fingerprint (sha256)": card.data_fingerprint,
        "model sha256": card.model_sha256,
        "reference sample sha256": card.reference_sample_sha256,
        "boosting rounds": card.num_boost_round,
        "artifact folder": str(page.folder),
    }
    table(pairs(rows, "field", "value"))
    say("**Library versions**")
    table(pairs(card.library_versions, "library", "version"))
    say("**LightGBM parameters**")
    table(pairs(card.params, "parameter", "value"))


def feature_importance(page: CardPage) -> None:
    """Section "Feature importance"."""
    gain = page.card.feature_importance_gain if page.card is not None else {}
    total = sum(gain.values())
    if total <= 0:
        say("_The card records no feature importance._")
        return
    ranked = sorted(gain.items(), key=lambda item: item[1])
    figure, axes = new_figure(10, 0.3 * len(ranked) + 1.2)
    axes.barh([name for name, _ in ranked], [value / total for _, value in ranked], color=PALETTE[0])
    axes.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    axes.set_xlabel("share of total gain")
    axes.set_title("Feature importance (gain)")
    axes.grid(axis="x", alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    show(figure)
    missing = page.card.missing_rates if page.card is not None else {}
    if any(missing.values()):
        rates = ", ".join(f"{name} {rate:.1%}" for name, rate in missing.items() if rate)
        say(f"Features with missing values at training: {rates}.")


def calibration_and_roc(page: CardPage) -> None:
    """Section "Calibration and ROC"."""
    scored = page.snap["labeled_scores"]
    if "labeled_scores" not in page.snap.sections:
        say(
            "_This snapshot carries no labeled scores (export it with `export_model_snapshot` to see calibration and "
            "ROC)._"
        )
        return
    if scored.height < MIN_CALIBRATION_ROWS or scored["label"].n_unique() < 2:
        say(
            "_Not enough labeled production answers of this version for calibration and ROC yet "
            f"({scored.height} rows)._"
        )
        return
    scores = scored["score"].to_numpy()
    labels = scored["label"].to_numpy().astype(int)
    calibration = performance.calibration_check(scores, labels)
    auc = performance.auc(labels, scores)
    figure, (left, right) = new_figure(11, 4.4, cols=2)
    left.plot([0, 1], [0, 1], color="#888", linestyle=":", label="perfectly calibrated")
    left.plot(
        calibration.bins["mean_score"],
        calibration.bins["positive_rate"],
        marker="o",
        color=PALETTE[0],
        label="this model (score deciles)",
    )
    left.set_xlabel("mean score")
    left.set_ylabel("observed positive rate")
    left.set_xlim(0, 1)
    left.set_ylim(0, 1)
    left.set_title("Calibration")
    left.grid(alpha=0.3)
    left.legend(fontsize=8, frameon=False)
    fpr, tpr, _ = roc_curve(labels, scores)
    right.plot(fpr, tpr, color=PALETTE[2], label=f"AUC {auc:.3f}")
    right.plot([0, 1], [0, 1], color="#888", linestyle=":")
    holdout = page.card.holdout_metrics.get("auc") if page.card is not None else None
    right.set_title("ROC" + (f" (holdout AUC {holdout:.3f})" if holdout else ""))
    right.set_xlabel("false positive rate")
    right.set_ylabel("true positive rate")
    right.grid(alpha=0.3)
    right.legend(fontsize=8, frameon=False, loc="lower right")
    show(figure)
    say(
        f"{scored.height:,} labeled answers from {scored['partition_date'].n_unique()} night(s): AUC **{auc:.3f}**, "
        f"expected calibration error **{calibration.ece:.3f}**, positive rate {labels.mean():.2%}."
    )


def gate_results(page: CardPage) -> None:
    """Section "Gate results"."""
    records = page.snap["candidates"].filter(pl.col("version") == page.version)
    if not records.height:
        say(
            "_No retrain record for this version: a bootstrapped champion is not gated; a retrained candidate's gate "
            "verdicts are recorded with it._"
        )
        return
    for row in records.iter_rows(named=True):
        status = row["status"] or "?"
        badge = {"approved": "nk-info", "trained": "nk-info"}.get(status, "nk-critical")
        reasons = [part.strip() for part in (row["reasons"] or "").split(";") if part.strip()]
        items = "".join(f"<li>{html.escape(reason)}</li>" for reason in reasons)
        say(
            f"<p><strong>Retrain as of {row['as_of']}</strong> (trigger: {html.escape(row['trigger'] or '?')}) "
            f"<span class='nk-badge {badge}'>{html.escape(status)}</span></p>" + (f"<ul>{items}</ul>" if items else "")
        )


def alias_history(page: CardPage) -> None:
    """Section "Alias history"."""
    history = page.snap["model_aliases"].filter(pl.col("version") == page.version).sort("seq")
    if history.height:
        table(history.select("effective_from", "alias", "stage", "actor", "reason"))
    else:
        say("_This version never held an alias in this snapshot._")
