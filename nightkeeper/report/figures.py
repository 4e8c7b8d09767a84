"""Charts, tables and the page style the report notebooks display: matplotlib figures on the Agg canvas (no pyplot
state), escaped HTML tables, and the one stylesheet both notebooks share."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PALETTE: tuple[str, ...] = (
    "#4C72B0",
    "#DD8452",
    "#55A868",
    "#C44E52",
    "#8172B3",
    "#937860",
    "#DA8BC3",
    "#8C8C8C",
    "#CCB974",
    "#64B5CD",
)
SEVERITY_COLOURS: dict[str, str] = {"critical": "#C44E52", "warning": "#DD8452", "info": "#4C72B0"}

# The reports' stylesheet (JupyterLab's classes, as nbconvert's lab template renders them).
STYLE = """<style>
body { background: #fff; }
main, .jp-Notebook { max-width: 1180px; margin: 0 auto !important; }
.jp-RenderedHTMLCommon h1 { font-size: 1.9em; border-bottom: 2px solid #4C72B0; padding-bottom: 6px; }
.jp-RenderedHTMLCommon h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; color: #1f2d3d; }
.jp-RenderedHTMLCommon p, .jp-RenderedHTMLCommon li { font-size: 14px; line-height: 1.5; }
.jp-RenderedHTMLCommon em { color: #555; }
.jp-RenderedHTMLCommon table.nk-table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 16px 0; }
.jp-RenderedHTMLCommon table.nk-table th { background: #f1f3f6; font-weight: 600; }
.jp-RenderedHTMLCommon table.nk-table th, .jp-RenderedHTMLCommon table.nk-table td {
  border: none; border-bottom: 1px solid #e3e3e3; padding: 3px 10px; text-align: left; max-width: 520px; }
.jp-RenderedHTMLCommon table.nk-table th.num, .jp-RenderedHTMLCommon table.nk-table td.num { text-align: right; }
.nk-badge { display: inline-block; min-width: 58px; text-align: center; border-radius: 3px; padding: 0 6px;
  margin-right: 4px; font-size: 11px; font-weight: 700; text-transform: uppercase; color: #fff; }
.nk-critical { background: #C44E52; } .nk-warning { background: #DD8452; } .nk-info { background: #4C72B0; }
ul.nk-attention { list-style: none; padding-left: 0; }
ul.nk-attention li { margin: 5px 0; font-size: 14px; }
.nk-runbook { color: #666; font-size: 12px; white-space: nowrap; }
.nk-ok { color: #2d6a2d; background: #eef7ee; border-left: 4px solid #55A868; padding: 6px 10px; }
.nk-empty { color: #8a6d3b; background: #fcf8e3; border-left: 4px solid #f0ad4e; padding: 6px 10px; }
.nk-more { color: #777; font-size: 12px; }
.jp-OutputArea-output img { max-width: 100%; }
</style>"""


def html_table(frame: pl.DataFrame, max_rows: int = 30, formats: Mapping[str, str] | None = None) -> str:
    """A plain, escaped HTML table of ``frame`` (first ``max_rows`` rows); ``formats``: column -> format spec.
    Numeric columns are right-aligned (class ``num``); missing values show as a dash."""
    formats = dict(formats or {})
    numeric = {name for name, dtype in frame.schema.items() if dtype.is_numeric()}

    def cell(tag: str, name: str, text: str) -> str:
        return (
            f"<{tag} class='num'>{html.escape(text)}</{tag}>"
            if name in numeric
            else f"<{tag}>{html.escape(text)}</{tag}>"
        )

    head = "".join(cell("th", name, str(name)) for name in frame.columns)
    body = []
    for row in frame.head(max_rows).iter_rows():
        cells = []
        for name, value in zip(frame.columns, row, strict=True):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                text = "–"
            elif name in formats:
                text = format(value, formats[name])
            elif isinstance(value, float):
                text = f"{value:,.0f}" if abs(value) >= 1000 or value.is_integer() else f"{value:.4g}"
            else:
                text = str(value)
            cells.append(cell("td", name, text))
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p class='nk-more'>… {frame.height - max_rows} more row(s)</p>" if frame.height > max_rows else ""
    return f"<table class='nk-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (no pyplot, no backend state: works under any MPLBACKEND)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def new_figure(
    width: float = 11.0, height: float = 4.0, rows: int = 1, cols: int = 1, **kwargs: Any
) -> tuple[Figure, Any]:
    """A matplotlib Figure on the Agg canvas and its axes (a single Axes, or an array for several)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, **kwargs)
    return figure, axes


# ------------------------------------------------------------------------------- display (inside a notebook kernel)


def style() -> None:
    """Display the reports' stylesheet (once, at the top of a notebook)."""
    show_html(STYLE)


def show(figure: Any) -> None:
    """Display a figure as an embedded PNG whose alt text is its axes' titles."""
    from IPython.display import display

    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    png = base64.b64encode(figure_png(figure)).decode("ascii")
    display({"image/png": png}, raw=True, metadata={"image/png": {"alt": "; ".join(titles) or "chart"}})


def show_html(markup: str) -> None:
    """Display an HTML fragment as it is."""
    from IPython.display import HTML, display

    display(HTML(markup))


def say(text: str) -> None:
    """Display markdown (HTML allowed)."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def table(frame: pl.DataFrame, max_rows: int = 30, **formats: str) -> None:
    """Display ``html_table(frame)``; keyword arguments are column -> format spec."""
    show_html(html_table(frame, max_rows=max_rows, formats=formats))


def pairs(mapping: Mapping[Any, Any], key: str = "name", value: str = "value") -> pl.DataFrame:
    """A two-column table of a mapping's items, as text."""
    return pl.DataFrame({key: [str(k) for k in mapping], value: [str(v) for v in mapping.values()]})


def alert_line(axes: Any, limit: float | None, label: str) -> None:
    """A dashed red horizontal line at an alert rule's threshold, labelled; nothing when no rule watches the metric
    (``views.rule_threshold`` gave None)."""
    if limit is not None:
        axes.axhline(limit, color=SEVERITY_COLOURS["critical"], linestyle="--", linewidth=1, label=label)
