"""The monthly review's sections, one function each: what the notebook ``notebooks/monthly_review.ipynb`` shows under
each heading (charts, tables and sentences, displayed in the running kernel). The notebook holds the parameters, the
headings and one call per section; the numbers come from the snapshot (``nightkeeper.report.snapshot``) through
``views`` and ``attention``, the page parts from ``figures``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib import dates as mdates
from matplotlib.patches import Patch

from nightkeeper.frames import number
from nightkeeper.report import attention, views
from nightkeeper.report.figures import (
    PALETTE,
    SEVERITY_COLOURS,
    alert_line,
    new_figure,
    say,
    show,
    show_html,
    style,
    table,
)
from nightkeeper.report.snapshot import (
    SCORE_BINS,
    Snapshot,
    load_snapshot,
    metric_series,
    metric_wide,
    month_bounds,
)


@dataclass(frozen=True)
class Month:
    """The month under review (``YYYY-MM``, its first and last night) and the snapshot it is read from."""

    month: str
    first: dt.date
    last: dt.date
    snap: Snapshot
    snapshot_dir: Path


def open_month(month: str, snapshot_dir: Path | str) -> Month:
    """The month's snapshot, loaded from ``snapshot_dir``, with the page style applied to the kernel's display."""
    first, last = month_bounds(month)
    style()
    return Month(month, first, last, load_snapshot(snapshot_dir), Path(snapshot_dir))


def _no_data(m: Month, what: str) -> None:
    say(f"<p class='nk-empty'>No data for {m.month}: {what}.</p>")


def _at(night: dt.date, hours: float = 0.0) -> dt.datetime:
    """The night as a point on a chart's time axis, ``hours`` after its midnight."""
    return dt.datetime.combine(night, dt.time()) + dt.timedelta(hours=hours)


def _date_axis(m: Month, axes: Any) -> None:
    """A time axis spanning the month (half a day either side), labelled every few days."""
    axes.set_xlim(_at(m.first, -14), _at(m.last, 14))
    axes.xaxis.set_major_locator(mdates.DayLocator(bymonthday=[1, 5, 10, 15, 20, 25]))
    axes.xaxis.set_minor_locator(mdates.DayLocator())
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
    axes.grid(alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


def _rate_chart(
    m: Month, parts: list[tuple[str, pl.DataFrame]], empty: str, metric: str, alert: str, title: str
) -> None:
    """Stacked bars of each labelled part's share of rows per night (columns ``night``, ``rate``), with the line of
    the alert rule on ``metric``; ``empty`` is written on the chart when there is no part."""
    figure, axes = new_figure(11, 3.6)
    base: dict[dt.date, float] = {}
    for index, (label, part) in enumerate(parts):
        nights, rates = part["night"].to_list(), part["rate"].to_list()
        bottom = [base.get(night, 0.0) for night in nights]
        axes.bar([_at(n) for n in nights], rates, bottom=bottom, width=0.8, label=label, color=PALETTE[index % 10])
        for night, rate in zip(nights, rates, strict=True):
            base[night] = base.get(night, 0.0) + rate
    if not parts:
        axes.text(0.5, 0.5, empty, transform=axes.transAxes, ha="center", color="#777")
    limit = views.rule_threshold(m.snap, metric)
    alert_line(axes, limit, f"{alert} alert above {limit:.0%}" if limit is not None else "")
    axes.set_ylabel("share of rows")
    axes.set_ylim(0, max(axes.get_ylim()[1], (limit or 0) * 1.5))
    axes.set_title(title)
    axes.yaxis.set_major_formatter(lambda v, _: f"{v:.1%}")
    _date_axis(m, axes)
    if axes.get_legend_handles_labels()[0]:  # else nothing labelled to explain (no part, no alert rule on the rate)
        entries = len(parts) + 1
        legend_columns = 2 if entries > 4 else entries
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=legend_columns, fontsize=8, frameon=False)
    show(figure)


def title(m: Month) -> None:
    """The page's title: the project, the month, what the snapshot holds."""
    snap, first, last, config, has_data, month = m.snap, m.first, m.last, m.snap.config, m.snap.has_data, m.month
    project = config.get("project") or "the model"
    nights = snap.manifest.get("nights_with_data") or []
    say(f"# Monthly review — {project}, {first:%B %Y}")
    if not snap.manifest:
        say(f"<p class='nk-empty'>No snapshot found in <code>{m.snapshot_dir}</code>: no data for {month}.</p>")
    elif not has_data:
        say(
            f"<p class='nk-empty'>No data for {month}: the warehouse holds no night between {first} and {last}. "
            "Every section below is empty; registry and alert history up to the month's end are still shown.</p>"
        )
    else:
        rows = int(snap["volume"]["raw_rows"].sum())
        say(
            f"**{len(nights)}** night(s) with data, from {nights[0]} to {nights[-1]}; **{rows:,}** input rows. "
            f"Snapshot exported {snap.manifest.get('exported_at', '?')} from `{snap.manifest.get('warehouse', '?')}`."
        )
    if snap.missing_tables:
        say(
            "_Not in this warehouse yet (their sections are empty): "
            + ", ".join(f"`{t}`" for t in snap.missing_tables)
            + "._"
        )


def needs_attention(m: Month) -> None:
    """Section "What needs attention"."""
    snap = m.snap
    show_html(attention.attention_html(attention.attention_items(snap)))


def nightly_volume(m: Month) -> None:
    """Section "Nightly volume"."""
    snap = m.snap
    volume = snap["volume"]
    if volume.height == 0:
        _no_data(m, "no night was ingested")
    else:
        figure, axes = new_figure(11, 3.8)
        nights_ = [_at(n) for n in volume["night"].to_list()]
        bottom = np.zeros(volume.height)
        for column, label, colour in [
            ("model_rows", "model", PALETTE[0]),
            ("canary_rows", "canary", PALETTE[4]),
            ("fallback_rows", "fallback", PALETTE[1]),
            ("undecided_rows", "undecided (quarantine)", PALETTE[3]),
        ]:
            values = volume[column].to_numpy().astype(float)
            if column != "model_rows" and values.sum() == 0:
                continue
            axes.bar(nights_, values, bottom=bottom, width=0.8, label=label, color=colour)
            bottom += values
        axes.plot(
            nights_,
            volume["raw_rows"].to_numpy(),
            color="black",
            marker="o",
            markersize=3,
            linewidth=1,
            label="raw rows",
        )
        axes.set_ylabel("rows")
        axes.set_title("Rows per night by who answered")
        axes.yaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
        _date_axis(m, axes)
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
        show(figure)
        total = int(volume["outcome_rows"].sum())
        raw = volume["raw_rows"]
        low = volume.sort("raw_rows").row(0, named=True)
        high = volume.sort("raw_rows", descending=True).row(0, named=True)

        def share(column: str) -> float | None:
            return int(volume[column].sum()) / total if total else None

        say(
            f"**{int(raw.sum()):,}** rows over **{volume.height}** nights: "
            f"median {number(raw.median()):,.0f} per night, "
            f"lowest {low['raw_rows']:,} ({low['night']}), highest {high['raw_rows']:,} ({high['night']}). "
            f"Answered by the model {_pct(share('model_rows'))}, canary {_pct(share('canary_rows'))}, "
            f"fallback {_pct(share('fallback_rows'))}, undecided {_pct(share('undecided_rows'))}."
        )


def quarantine_and_fallback(m: Month) -> None:
    """Section "Quarantine and fallback rates by reason"."""
    snap = m.snap
    rule_rates = views.quarantine_rates_by_rule(snap)
    reasons = views.rates_by_reason(snap)
    volume = snap["volume"]
    if volume.height == 0:
        _no_data(m, "no rows, so no quarantine or fallback")
    else:
        by_rule = rule_rates.partition_by("rule", as_dict=True, maintain_order=True)
        _rate_chart(
            m,
            [(str(rule[0]), part) for rule, part in by_rule.items()],
            "no row broke a rule this month",
            "validation.quarantine_rate",
            "quarantine",
            "Quarantine: share of rows breaking each rule",
        )
        by_reason = sorted(reasons.partition_by(["kind", "reason"], as_dict=True).items())
        _rate_chart(
            m,
            [(f"{kind}: {why}", part.sort("night")) for (kind, why), part in by_reason],
            "the model answered every row",
            "outcomes.fallback_rate",
            "fallback",
            "Not answered by the model (fallback or undecided), by reason",
        )
        totals = (
            snap["outcome_reasons"]
            .with_columns(pl.col("reason").map_elements(views.short_reason, return_dtype=pl.String))
            .group_by("source", "reason")
            .agg(pl.col("rows").sum(), pl.col("night").n_unique().alias("nights"))
            .sort("rows", descending=True)
        )
        if totals.height:
            say("**Rows not answered by the model this month, by reason**")
            table(totals.rename({"source": "answered by"}), max_rows=15)


def scoring_latency(m: Month) -> None:
    """Section "Scoring latency"."""
    snap = m.snap
    latency = snap["latency"]
    if latency.height == 0:
        _no_data(m, "no row was scored by a model")
    else:
        figure, axes = new_figure(11, 3.4)
        for index, (source, part) in enumerate(sorted(latency.partition_by("source", as_dict=True).items())):
            part = part.sort("night")
            xs = [_at(n) for n in part["night"].to_list()]
            axes.plot(
                xs,
                part["p50_ms"].to_list(),
                marker="o",
                markersize=3,
                color=PALETTE[2 * index],
                label=f"{source[0]} p50",
            )
            axes.plot(
                xs,
                part["p95_ms"].to_list(),
                marker="o",
                markersize=3,
                linestyle="--",
                color=PALETTE[2 * index + 1],
                label=f"{source[0]} p95",
            )
        axes.set_ylabel("ms per row")
        axes.set_ylim(bottom=0)
        axes.set_title("Scoring latency per row")
        _date_axis(m, axes)
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
        show(figure)
        model = latency.filter(pl.col("source") == "model")
        if model.height:
            worst = model.sort("p95_ms", descending=True).row(0, named=True)
            say(
                f"Model p50 median over the month: **{number(model['p50_ms'].median()):.4f} ms**/row; worst p95 "
                f"**{worst['p95_ms']:.4f} ms** on {worst['night']}."
            )


def drift(m: Month) -> None:
    """Section "Drift"."""
    snap, first, last = m.snap, m.first, m.last
    drift = snap["drift"]
    if drift.height == 0:
        _no_data(m, "no drift was measured")
    else:
        ratio = drift.with_columns(
            (pl.col("psi") / pl.when(pl.col("threshold") > 0).then(pl.col("threshold")).otherwise(None)).alias("ratio")
        )
        features = (
            ratio.group_by("feature", maintain_order=True)
            .agg(pl.col("ratio").max().alias("worst"))["feature"]
            .to_list()
        )
        days_ = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        grid = np.full((len(features), len(days_)), np.nan)
        flagged = []
        for row in ratio.iter_rows(named=True):
            i, j = features.index(row["feature"]), (row["partition_date"] - first).days
            grid[i, j] = row["ratio"] if row["ratio"] is not None else np.nan
            if row["drifted"]:
                flagged.append((i, j))
        figure, axes = new_figure(11, 0.28 * len(features) + 1.6)
        image = axes.imshow(np.clip(grid, 0, 2), aspect="auto", cmap="YlOrRd", vmin=0, vmax=2, interpolation="nearest")
        for i, j in flagged:
            axes.text(j, i, "×", ha="center", va="center", fontsize=9, color="black", fontweight="bold")
        axes.set_yticks(range(len(features)), features, fontsize=8)
        ticks = [j for j, d in enumerate(days_) if d.day in (1, 5, 10, 15, 20, 25)]
        axes.set_xticks(ticks, [days_[j].strftime("%d %b") for j in ticks], fontsize=8)
        axes.set_title("Feature drift: PSI / fitted threshold (× = drifted; grey = not measured)")
        axes.set_facecolor("#eeeeee")
        colourbar = figure.colorbar(image, ax=axes, fraction=0.025, pad=0.01)
        colourbar.set_label("PSI / threshold (clipped at 2)", fontsize=8)
        show(figure)

        wide = metric_wide(snap, ["drift.prediction_psi", "drift.multivariate_auc", "drift.drifted_features"])
        figure, (left, right) = new_figure(11, 3.0, cols=2)
        xs = [_at(n) for n in wide["night"].to_list()]
        for axes, metric, title in [
            (left, "drift.prediction_psi", "Score distribution PSI"),
            (right, "drift.multivariate_auc", "Domain classifier AUC (population shift)"),
        ]:
            axes.plot(xs, wide[metric].to_list(), marker="o", markersize=3, color=PALETTE[0], label=metric)
            limit = views.rule_threshold(snap, metric)
            alert_line(axes, limit, f"alert threshold {limit:g}" if limit is not None else "")
            axes.set_title(title, fontsize=10)
            _date_axis(m, axes)
            axes.xaxis.set_major_locator(mdates.DayLocator(bymonthday=[1, 10, 20]))
            axes.legend(fontsize=8, frameon=False)
        show(figure)
        summary = (
            ratio.group_by("feature")
            .agg(
                pl.col("drifted").sum().alias("nights drifted"),
                pl.col("ratio").max().alias("worst PSI / threshold"),
                pl.col("partition_date").filter(pl.col("drifted")).max().alias("last drifted"),
                pl.col("missing_rate_change").abs().max().alias("max missing-rate change"),
            )
            .filter(pl.col("nights drifted") > 0)
            .sort("nights drifted", descending=True)
        )
        if summary.height:
            say("**Features that drifted this month**")
            table(summary)
        else:
            say("No feature crossed its drift threshold this month.")


def score_distribution(m: Month) -> None:
    """Section "Score distribution over time"."""
    snap, config = m.snap, m.snap.config
    quantiles = snap["score_quantiles"].filter(pl.col("source").is_in(["model", "canary"]))
    histogram = snap["score_histogram"].filter(pl.col("source").is_in(["model", "canary"]))
    if quantiles.height == 0:
        _no_data(m, "no row was scored by a model")
    else:
        per_night = (
            quantiles.filter(pl.col("source") == "model").sort("night")
            if quantiles.filter(pl.col("source") == "model").height
            else quantiles.sort("night")
        )
        figure, (left, right) = new_figure(11, 3.8, cols=2, width_ratios=[2.2, 1])
        xs = [_at(n) for n in per_night["night"].to_list()]
        left.fill_between(
            xs, per_night["q05"].to_list(), per_night["q95"].to_list(), color=PALETTE[0], alpha=0.15, label="5–95 %"
        )
        left.fill_between(
            xs, per_night["q25"].to_list(), per_night["q75"].to_list(), color=PALETTE[0], alpha=0.35, label="25–75 %"
        )
        left.plot(xs, per_night["q50"].to_list(), color=PALETTE[0], marker="o", markersize=3, label="median")
        left.plot(xs, per_night["mean"].to_list(), color=PALETTE[1], linestyle=":", label="mean")
        cut = config.get("decision_threshold")
        if cut is not None:
            left.axhline(cut, color="#C44E52", linestyle="--", linewidth=1, label=f"threshold {cut:g}")
            right.axvline(cut, color="#C44E52", linestyle="--", linewidth=1)
        left.set_ylim(0, 1)
        left.set_ylabel("score")
        left.set_title("Model scores per night")
        _date_axis(m, left)
        left.legend(fontsize=8, frameon=False, loc="upper left", ncols=3)
        model_hist = histogram.filter(pl.col("source") == "model")
        nights_scored = sorted(model_hist["night"].unique().to_list())
        width = 1 / SCORE_BINS
        for label, chosen, colour in [
            ("first 3 nights", nights_scored[:3], PALETTE[0]),
            ("last 3 nights", nights_scored[-3:], PALETTE[1]),
        ]:
            part = (
                model_hist.filter(pl.col("night").is_in(chosen)).group_by("bin").agg(pl.col("rows").sum()).sort("bin")
            )
            if part.height:
                shares = part["rows"].to_numpy() / part["rows"].sum()
                right.step((part["bin"].to_numpy() + 0.5) * width, shares, where="mid", color=colour, label=label)
        right.set_xlim(0, 1)
        right.set_xlabel("score")
        right.set_ylabel("share of rows")
        right.set_title("Score histogram")
        right.grid(alpha=0.3)
        right.legend(fontsize=8, frameon=False)
        show(figure)
        decisions = snap["decisions"].filter(pl.col("source") == "model")
        if decisions.height:
            rates = (
                decisions.group_by("decision")
                .agg(pl.col("rows").sum())
                .with_columns((pl.col("rows") / pl.col("rows").sum()).alias("share"))
            )
            say(
                "Model decisions this month: "
                + ", ".join(
                    f"{d} **{s:.1%}**" for d, s in rates.sort("decision").select("decision", "share").iter_rows()
                )
                + "."
            )


def realized_vs_estimated(m: Month) -> None:
    """Section "Realized vs estimated performance"."""
    snap, first, last, has_data = m.snap, m.first, m.last, m.snap.has_data
    realized = snap["performance_realized"].filter(pl.col("source") == "model")
    realized_auc = (
        realized.filter(pl.col("auc").is_not_null())
        .group_by("partition_date")
        .agg(
            ((pl.col("auc") * pl.col("labeled_rows")).sum() / pl.col("labeled_rows").sum()).alias("auc"),
            pl.col("labeled_rows").sum(),
        )
        .sort("partition_date")
    )
    wide = metric_wide(
        snap,
        [
            "performance.estimated_auc",
            "performance.realized_auc_window",
            "performance.calibration_error",
            "performance.estimate_trustworthy",
        ],
    )
    labels = snap["labels"]
    no_labels = labels.height == 0 and realized.filter(pl.col("labeled_rows") > 0).height == 0
    if not has_data:
        _no_data(m, "no night was scored")
    else:
        if no_labels:
            say(
                "<p class='nk-empty'>No labels yet for this month's nights: realized performance will appear here once "
                "they land. Until then the estimate (CBPE) is all there is; it assumes calibrated scores and no "
                "concept "
                "drift.</p>"
            )
        figure, (top, bottom_axes) = new_figure(11, 5.4, rows=2, sharex=True, height_ratios=[2.2, 1])
        xs = [_at(n) for n in wide["night"].to_list()]
        top.plot(
            xs,
            wide["performance.estimated_auc"].to_list(),
            linestyle="--",
            marker=".",
            color=PALETTE[0],
            label="estimated AUC (CBPE)",
        )
        if realized_auc.height:
            top.plot(
                [_at(n) for n in realized_auc["partition_date"].to_list()],
                realized_auc["auc"].to_list(),
                marker="o",
                markersize=4,
                color=PALETTE[2],
                linestyle="-",
                label="realized AUC (night)",
            )
        window = wide.drop_nulls("performance.realized_auc_window")
        if window.height:
            top.plot(
                [_at(n) for n in window["night"].to_list()],
                window["performance.realized_auc_window"].to_list(),
                color=PALETTE[3],
                linewidth=2,
                alpha=0.7,
                label="realized AUC (pooled week, as of night)",
            )
        aliases = views.alias_timeline(snap, first, last).filter(pl.col("alias") == "champion")
        versions = snap["model_versions"]
        for version in aliases["version"].unique().to_list():
            auc = versions.filter(pl.col("version") == version)["holdout_auc"]
            if auc.len() and auc[0] is not None:
                top.axhline(auc[0], color="#888", linestyle=":", linewidth=1, label=f"holdout AUC {version[:8]}")
        top.set_ylabel("ROC AUC")
        top.set_title("Realized vs estimated AUC")
        top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        answered = snap["volume"].filter(pl.col("model_rows") > 0).select("night")
        coverage = answered.join(
            realized.group_by("partition_date")
            .agg((pl.col("labeled_rows").sum() / pl.col("rows").sum()).alias("coverage"))
            .rename({"partition_date": "night"}),
            on="night",
            how="left",
        ).sort("night")
        bottom_axes.bar(
            [_at(n) for n in coverage["night"].to_list()],
            coverage["coverage"].fill_null(0).to_list(),
            width=0.8,
            color=PALETTE[2],
        )
        bottom_axes.set_ylabel("labeled share")
        bottom_axes.set_ylim(0, 1.05)
        bottom_axes.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
        bottom_axes.set_title("Label coverage of model answers", fontsize=10)
        if no_labels:
            bottom_axes.text(
                0.5,
                0.5,
                "no labels yet",
                transform=bottom_axes.transAxes,
                ha="center",
                va="center",
                color="#8a6d3b",
                fontsize=12,
            )
        _date_axis(m, top)
        _date_axis(m, bottom_axes)
        show(figure)
        facts = []
        estimated = wide["performance.estimated_auc"].drop_nulls()
        if estimated.len():
            facts.append(
                f"estimated AUC {number(estimated.min()):.3f}–{number(estimated.max()):.3f} "
                f"(median {number(estimated.median()):.3f})"
            )
        if realized_auc.height:
            facts.append(
                f"realized AUC {number(realized_auc['auc'].min()):.3f}–{number(realized_auc['auc'].max()):.3f} over "
                f"{realized_auc.height} "
                f"labeled night(s), {int(realized_auc['labeled_rows'].sum()):,} labeled rows"
            )
        trust = wide.drop_nulls("performance.estimate_trustworthy")
        if trust.height:
            latest = trust.row(-1, named=True)
            ece = latest["performance.calibration_error"]
            facts.append(
                (
                    "estimate **trustworthy**"
                    if latest["performance.estimate_trustworthy"]
                    else "estimate **NOT trustworthy**"
                )
                + (f" on {latest['night']} (calibration error {ece:.3f})" if ece is not None else "")
            )
        if facts:
            say("This month: " + "; ".join(facts) + ".")


def business_value(m: Month) -> None:
    """Section "Business value"."""
    snap, has_data = m.snap, m.snap.has_data
    realized_value = views.business_value_by_night(snap)
    estimated_value = metric_series(snap, "performance.estimated_business_value")
    if not has_data or (realized_value.height == 0 and estimated_value.height == 0):
        _no_data(m, "no business value was computed")
    else:
        if realized_value.height == 0:
            say(
                "<p class='nk-empty'>No labels yet: the realized business value is unknown; the estimate below assumes "
                "calibrated scores.</p>"
            )
        figure, axes = new_figure(11, 3.6)
        if realized_value.height:
            # scale realized value (labeled rows only) to all of the night's model answers, so both lines are comparable
            scaled = realized_value.with_columns(
                (pl.col("business_value") * pl.col("rows") / pl.col("labeled_rows")).alias("scaled")
            )
            axes.bar(
                [_at(n) for n in scaled["partition_date"].to_list()],
                scaled["scaled"].to_list(),
                width=0.8,
                color=PALETTE[2],
                alpha=0.8,
                label="realized (labeled rows, scaled to the night)",
            )
        if estimated_value.height:
            axes.plot(
                [_at(n) for n in estimated_value["night"].to_list()],
                estimated_value["value"].to_list(),
                color=PALETTE[0],
                linestyle="--",
                marker=".",
                label="estimated (all model answers)",
            )
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_ylabel("money per night")
        axes.yaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
        axes.set_title("Business value per night")
        _date_axis(m, axes)
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        show(figure)
        lines = []
        if estimated_value.height:
            lines.append(f"Estimated over the month: **{estimated_value['value'].sum():,.0f}**")
        if realized_value.height:
            per_row = number(realized_value["business_value"].sum()) / number(realized_value["labeled_rows"].sum())
            lines.append(
                f"realized on {int(realized_value['labeled_rows'].sum()):,} labeled rows: "
                f"**{realized_value['business_value'].sum():,.0f}** ({per_row:,.1f} per row)"
            )
        say("; ".join(lines) + ".")


def model_versions(m: Month) -> None:
    """Section "Model versions, promotions and rollbacks"."""
    snap, first, last = m.snap, m.first, m.last
    stretches = views.alias_timeline(snap, first, last)
    events = views.lifecycle_events(snap, first, last)
    versions = snap["model_versions"]
    if stretches.height == 0 and events.height == 0:
        _no_data(m, "no model version served and no alias changed")
    else:
        figure, axes = new_figure(11, 2.6)
        colours = {v: PALETTE[i % 10] for i, v in enumerate(dict.fromkeys(stretches["version"].to_list()))}
        lanes = {"champion": 1, "challenger": 0}
        runs: list[
            dict[str, Any]
        ] = []  # consecutive stretches of one version in one lane, drawn as one bar with a segment per stage
        for row in stretches.sort("alias", "start").iter_rows(named=True):
            last_run = runs[-1] if runs else None
            if (
                last_run
                and last_run["alias"] == row["alias"]
                and last_run["version"] == row["version"]
                and (row["start"] - last_run["parts"][-1]["end"]).days == 1
            ):
                last_run["parts"].append(row)
            else:
                runs.append({"alias": row["alias"], "version": row["version"], "parts": [row]})
        for run in runs:
            y = lanes[run["alias"]]
            for index, part in enumerate(run["parts"]):
                start, end = _at(part["start"], -12), _at(part["end"], 12)
                alpha = 0.85 if run["alias"] == "champion" else min(0.35 + 0.15 * index, 0.9)
                axes.barh(
                    y,
                    end - start,
                    left=start,
                    height=0.5,
                    color=colours[run["version"]],
                    alpha=alpha,
                    edgecolor="white",
                )
            first_day, last_day = run["parts"][0]["start"], run["parts"][-1]["end"]
            stages = [part["stage"] for part in run["parts"]]
            label = run["version"][:8] if run["alias"] == "champion" else f"{run['version'][:8]}: " + " → ".join(stages)
            if (last_day - first_day).days >= 8 and len(label) < 4 * (last_day - first_day).days:
                middle = _at(first_day, -12) + (_at(last_day, 12) - _at(first_day, -12)) / 2
                axes.text(middle, y, label, ha="center", va="center", fontsize=8, color="white", fontweight="bold")
            else:  # too short to hold its label: write it under the bar
                axes.text(_at(first_day, -12), y - 0.42, label, ha="left", va="center", fontsize=8, color="#333")
        markers = {
            "promotion": ("^", "#2ca02c"),
            "rollback": ("v", "#d62728"),
            "challenger rolled back": ("X", "#d62728"),
            "bootstrap": ("o", "#333333"),
            "champion set": ("o", "#333333"),
        }
        seen = set()
        for row in events.iter_rows(named=True):
            if row["event"] not in markers:
                continue
            marker, colour = markers[row["event"]]
            above_lane = lanes["champion" if row["alias"] == "champion" else "challenger"] + 0.38
            axes.scatter(
                [_at(row["night"])],
                [above_lane],
                marker=marker,
                color=colour,
                s=60,
                zorder=3,
                label=row["event"] if row["event"] not in seen else None,
            )
            seen.add(row["event"])
        axes.set_yticks([0, 1], ["challenger", "champion"])
        axes.set_ylim(-0.75, 1.7)
        axes.set_title("Alias log over the month")
        _date_axis(m, axes)
        if seen:
            axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        show(figure)
        if events.height:
            counts = events["event"].value_counts().sort("event")
            say("**Changes this month:** " + ", ".join(f"{e} × {n}" for e, n in counts.iter_rows()))
            table(
                events.select("night", "alias", pl.col("version").str.slice(0, 12), "stage", "event", "actor", "reason")
            )
        else:
            say(
                "No alias changed this month: "
                + ", ".join(f"{r['alias']} {r['version'][:12]}" for r in stretches.iter_rows(named=True))
                + " throughout."
            )
        candidates = snap["candidates"]
        if candidates.height:
            say("**Retraining this month** (training-data gate, behaviour tests and the never-worse gate)")
            table(candidates.select("as_of", pl.col("version").str.slice(0, 12), "trigger", "status", "reasons"))
        if versions.height:
            say("**Versions known by the month's end**")
            table(
                versions.select(
                    pl.col("version").str.slice(0, 12),
                    "holdout_auc",
                    pl.col("window_start").str.slice(0, 10).alias("training from"),
                    pl.col("window_end").str.slice(0, 10).alias("training to"),
                    "training_rows",
                ),
                holdout_auc=".3f",
                training_rows=",",
            )


def alerts_over_the_month(m: Month) -> None:
    """Section "Alerts opened and closed"."""
    snap, first, last, has_data = m.snap, m.first, m.last, m.snap.has_data
    alerts = snap["alerts"]
    active = alerts.filter(
        (pl.col("opened_night") <= last) & (pl.col("closed_night").is_null() | (pl.col("closed_night") >= first))
    )
    if active.height == 0:
        if has_data:
            say("No alert was open this month: every rule stayed within its threshold.")
        else:
            _no_data(m, "no alert was open")
    else:
        active = active.sort("opened_night", "rule")
        height = max(2.0, 0.32 * active.height + 1.2)
        figure, axes = new_figure(11, height)
        colours = SEVERITY_COLOURS
        for y, row in enumerate(active.iter_rows(named=True)):
            start = _at(max(row["opened_night"], first), -12)
            end = _at(row["closed_night"] or last, 12)
            axes.barh(
                y,
                end - start,
                left=start,
                height=0.6,
                color=colours.get(row["severity"], "#888"),
                alpha=0.9 if row["status_at_month_end"] == "open" else 0.6,
            )
            if row["status_at_month_end"] == "open":
                axes.text(end, y, " open", va="center", fontsize=8, color="#C44E52")
        axes.set_yticks(
            range(active.height),
            [f"{r} ({o:%d %b})" for r, o in active.select("rule", "opened_night").iter_rows()],
            fontsize=8,
        )
        axes.invert_yaxis()
        axes.set_title("Alerts over the month")
        present = [s for s in colours if s in set(active["severity"].to_list())]
        handles = [Patch(color=colours[s], label=s) for s in present] + [
            Patch(color="#999", alpha=0.5, label="resolved (lighter)")
        ]
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        _date_axis(m, axes)
        show(figure)
        opened = active.filter(pl.col("opened_night") >= first).height
        closed = active.filter(pl.col("closed_night").is_not_null()).height
        still = active.filter(pl.col("status_at_month_end") == "open").height
        say(f"**{opened}** alert(s) opened this month, **{closed}** closed, **{still}** still open at the month's end.")
        table(
            active.select(
                "rule",
                "severity",
                "category",
                "opened_night",
                "closed_night",
                pl.col("status_at_month_end").alias("at month end"),
                "value",
                "threshold",
                "runbook",
            )
        )


def review_queue(m: Month) -> None:
    """Section "Review queue"."""
    snap, config = m.snap, m.snap.config
    summary = views.review_summary(snap)
    if summary is None:
        say(
            "<p class='nk-empty'>No review queue in this warehouse (<code>review.queue</code> does not exist): "
            "the review step has not run yet.</p>"
        )
    elif summary["queued"] == 0:
        _no_data(m, "nothing was queued for review")
    else:
        per_night = summary["per_night"]
        figure, axes = new_figure(11, 3.2)
        xs = [_at(n) for n in per_night["partition_date"].to_list()]
        axes.bar(xs, per_night["queued"].to_list(), width=0.8, color="#cfd8e6", label="queued")
        axes.bar(xs, per_night["reviewed"].to_list(), width=0.8, color=PALETTE[0], label="reviewed")
        capacity = config.get("review_capacity")
        if capacity:
            axes.axhline(capacity, color="#888", linestyle=":", linewidth=1, label=f"capacity {capacity}")
        axes.set_ylabel("rows")
        axes.set_title("Review queue per night")
        _date_axis(m, axes)
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        show(figure)
        agreement = summary["agreement"]
        turnaround = summary["turnaround_hours_median"]
        say(
            f"Queued **{summary['queued']:,}**, reviewed **{summary['reviewed']:,}**, "
            f"pending **{summary['pending']:,}**. "
            + (
                f"Reviewers agreed with the model on **{agreement:.1%}** of {summary['agreement_rows']:,} reviewed "
                "model "
                "answers. "
                if agreement is not None
                else "No reviewed model answer to compare yet. "
            )
            + (f"Median turnaround {turnaround:.0f} h after the night." if turnaround is not None else "")
        )
        table(summary["by_reason"].rename({"why": "queued because"}))
