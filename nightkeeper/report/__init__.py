"""Reports for the humans who own the model: the monthly review and the model card, as self-contained HTML.

Two steps, so the warehouse is held for seconds only (DuckDB lets one process open the file at a time):

1. ``snapshot.export_month_snapshot`` opens the warehouse once, reads what the month's review needs — mostly
   aggregated per night in DuckDB, so the snapshot stays small at any volume — closes it, and writes one Parquet file
   per section into ``<out_dir>/snapshot/`` plus ``manifest.json`` (``export_model_snapshot`` does the same for one
   model version).
2. ``execution.run_monthly_review`` / ``run_model_card`` execute the papermill notebook on that snapshot (never on the
   warehouse) and convert the executed notebook to one HTML file without code cells, images embedded.

One module per job: ``snapshot`` (export and read back), ``attention`` ("what needs attention": the month's alerts
from ``monitoring.alerts`` and facts the alert rules do not cover), ``views`` (the tables the notebooks draw, derived
from a snapshot), ``figures`` (charts, tables and the page style the notebooks display), ``monthly_review`` and
``model_card`` (each report's sections, one function per heading), ``execution`` (papermill and nbconvert). The
notebooks hold only their parameters, headings and one call per section, so the logic is typed, linted and testable
without a kernel. No Dagster imports: the monthly
asset is a thin call into these functions.
"""
