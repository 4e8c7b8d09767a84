"""The nightly metrics table and the alert engine: open once when sustained, no repeats, resolve, idempotent re-runs.

Real DuckDB warehouse files in tmp_path; nights are driven through ``record_metrics`` and ``run_alerts`` the way the
nightly job does.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pytest

from nightkeeper.alerts import apply_transitions, evaluate_rules, open_alerts, run_alerts, transitions
from nightkeeper.config import AlertRule
from nightkeeper.metrics_store import metric_history, metrics_on, record_metrics
from nightkeeper.warehouse import connect

START = dt.date(2026, 2, 1)

DRIFT_SHARE = AlertRule(
    name="drift_share",
    metric="drift.drifted_share",
    comparison=">",
    threshold=0.2,
    sustained_nights=2,
    severity="warning",
    category="drift",
    runbook="drift-share",
)
AUC_DROP = AlertRule(
    name="estimated_auc_drop",
    metric="performance.estimated_auc",
    comparison="<",
    threshold=0.7,
    sustained_nights=1,
    severity="critical",
    category="performance",
    runbook="performance-drop",
)
QUARANTINE = AlertRule(
    name="quarantine_rate",
    metric="validation.quarantine_rate",
    comparison=">=",
    threshold=0.05,
    sustained_nights=3,
    severity="warning",
    category="data_quality",
    runbook="quarantine",
)


def night(offset: int) -> dt.date:
    return START + dt.timedelta(days=offset)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(tmp_path / "warehouse.duckdb") as connection:
        yield connection


def run_night(
    conn: duckdb.DuckDBPyConnection, offset: int, metrics: dict[str, float | None], rules: list[AlertRule]
) -> list[dict]:
    record_metrics(conn, night(offset), metrics, "v1")
    return run_alerts(conn, rules, night(offset))


def table_counts(conn: duckdb.DuckDBPyConnection) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        conn.execute(f"select count(*) from monitoring.{table}").fetchone()[0]
        for table in ("alerts", "alert_events", "alert_outbox")
    )


# ------------------------------------------------------------------------------------------------- metrics store


def test_recording_a_night_again_replaces_its_values_without_duplicates(conn: duckdb.DuckDBPyConnection) -> None:
    record_metrics(conn, night(0), {"validation.quarantine_rate": 0.01, "outcomes.fallback_rate": 0.02}, "v1")
    record_metrics(conn, night(0), {"validation.quarantine_rate": 0.03}, "v2")
    record_metrics(conn, night(0), {"validation.quarantine_rate": 0.03}, "v2")

    history = metric_history(conn, ["validation.quarantine_rate", "outcomes.fallback_rate"], night(0), nights=1)
    assert history.select("metric", "value", "model_version").sort("metric").to_dicts() == [
        {"metric": "outcomes.fallback_rate", "value": 0.02, "model_version": "v1"},
        {"metric": "validation.quarantine_rate", "value": 0.03, "model_version": "v2"},
    ]


def test_metric_history_returns_only_the_window_and_names_asked_for(conn: duckdb.DuckDBPyConnection) -> None:
    for offset in range(5):
        record_metrics(conn, night(offset), {"drift.drifted_share": offset / 10, "outcomes.fallback_rate": 0.0}, "v1")

    history = metric_history(conn, ["drift.drifted_share"], up_to=night(3), nights=2)
    assert history["night"].to_list() == [night(2), night(3)]
    assert history["value"].to_list() == [0.2, 0.3]


def test_a_missing_value_is_stored_as_null_and_left_out_of_the_night_context(conn: duckdb.DuckDBPyConnection) -> None:
    record_metrics(
        conn,
        night(0),
        {"performance.realized_auc": None, "drift.drifted_share": float("nan"), "drift.multivariate_auc": 0.6},
        None,
    )

    history = metric_history(conn, ["performance.realized_auc", "drift.drifted_share"], night(0), nights=1)
    assert history["value"].null_count() == 2
    assert metrics_on(conn, night(0)) == {"drift.multivariate_auc": 0.6}


def test_an_infinite_value_is_refused_naming_the_metric(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="outcomes.fallback_rate"):
        record_metrics(conn, night(0), {"drift.drifted_share": 0.1, "outcomes.fallback_rate": float("inf")}, "v1")
    assert metrics_on(conn, night(0)) == {}


# --------------------------------------------------------------------------------------------------- evaluation


def test_rule_state_reports_value_and_the_nights_of_the_streak() -> None:
    history = pl.DataFrame(
        {
            "night": [night(0), night(1), night(2)],
            "metric": ["drift.drifted_share"] * 3,
            "value": [0.1, 0.3, 0.31],
        }
    )
    [state] = evaluate_rules([DRIFT_SHARE], history, night(2))
    assert (state.value, state.held, state.sustained) == (0.31, True, True)
    assert state.nights == (night(1), night(2))
    assert state.values == (0.3, 0.31)


def test_a_missing_night_breaks_the_streak() -> None:
    history = pl.DataFrame(
        {
            "night": [night(0), night(1), night(3)],
            "metric": ["validation.quarantine_rate"] * 3,
            "value": [0.09, 0.09, 0.09],
        }
    )
    [state] = evaluate_rules([QUARANTINE], history, night(3))
    assert state.held is True
    assert state.nights == (night(3),)
    assert not state.sustained


# ---------------------------------------------------------------------------------------------------- lifecycle


def test_steady_nights_under_threshold_raise_nothing(conn: duckdb.DuckDBPyConnection) -> None:
    rules = [DRIFT_SHARE, AUC_DROP, QUARANTINE]
    steady = {"drift.drifted_share": 0.05, "performance.estimated_auc": 0.82, "validation.quarantine_rate": 0.01}
    written = [run_night(conn, offset, steady, rules) for offset in range(14)]

    assert written == [[]] * 14
    assert table_counts(conn) == (0, 0, 0)


def test_rule_sustained_for_three_nights_opens_only_on_the_third_consecutive_night(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    bad = {"validation.quarantine_rate": 0.09}
    assert run_night(conn, 0, bad, [QUARANTINE]) == []
    assert run_night(conn, 1, bad, [QUARANTINE]) == []
    [opened] = run_night(conn, 2, bad, [QUARANTINE])

    assert opened["event"] == "opened"
    assert opened["nights"] == [night(0).isoformat(), night(1).isoformat(), night(2).isoformat()]
    assert open_alerts(conn)["alert_id"].to_list() == [f"quarantine_rate@{night(2).isoformat()}"]


def test_open_alert_does_not_repeat_while_the_condition_holds(conn: duckdb.DuckDBPyConnection) -> None:
    written = [run_night(conn, offset, {"performance.estimated_auc": 0.6}, [AUC_DROP]) for offset in range(6)]

    assert [len(events) for events in written] == [1, 0, 0, 0, 0, 0]
    assert table_counts(conn) == (1, 1, 1)


def test_missing_value_tonight_keeps_an_open_alert_open(conn: duckdb.DuckDBPyConnection) -> None:
    run_night(conn, 0, {"performance.estimated_auc": 0.6}, [AUC_DROP])
    assert run_night(conn, 1, {"performance.estimated_auc": None}, [AUC_DROP]) == []
    assert open_alerts(conn).height == 1


def test_alert_resolves_when_the_condition_clears_and_can_reopen_later(conn: duckdb.DuckDBPyConnection) -> None:
    run_night(conn, 0, {"performance.estimated_auc": 0.6}, [AUC_DROP])
    run_night(conn, 1, {"performance.estimated_auc": 0.65}, [AUC_DROP])
    [resolved] = run_night(conn, 2, {"performance.estimated_auc": 0.8}, [AUC_DROP])
    assert run_night(conn, 3, {"performance.estimated_auc": 0.81}, [AUC_DROP]) == []
    [reopened] = run_night(conn, 4, {"performance.estimated_auc": 0.55}, [AUC_DROP])

    assert (resolved["event"], resolved["alert_id"], resolved["closed_night"]) == (
        "resolved",
        f"estimated_auc_drop@{night(0).isoformat()}",
        night(2).isoformat(),
    )
    assert (reopened["event"], reopened["alert_id"]) == ("opened", f"estimated_auc_drop@{night(4).isoformat()}")
    rows = conn.execute("select alert_id, status, closed_night from monitoring.alerts order by opened_night").fetchall()
    assert rows == [
        (f"estimated_auc_drop@{night(0).isoformat()}", "resolved", night(2)),
        (f"estimated_auc_drop@{night(4).isoformat()}", "open", None),
    ]
    events = conn.execute("select event from monitoring.alert_events order by night").fetchall()
    assert events == [("opened",), ("resolved",), ("opened",)]


def test_reevaluating_the_same_night_adds_nothing(conn: duckdb.DuckDBPyConnection) -> None:
    run_night(conn, 0, {"performance.estimated_auc": 0.6}, [AUC_DROP])
    assert run_night(conn, 0, {"performance.estimated_auc": 0.6}, [AUC_DROP]) == []
    assert table_counts(conn) == (1, 1, 1)

    run_night(conn, 1, {"performance.estimated_auc": 0.9}, [AUC_DROP])
    assert run_night(conn, 1, {"performance.estimated_auc": 0.9}, [AUC_DROP]) == []
    assert table_counts(conn) == (1, 2, 2)


def test_applying_the_same_transitions_twice_writes_them_once(conn: duckdb.DuckDBPyConnection) -> None:
    record_metrics(conn, night(0), {"performance.estimated_auc": 0.6}, "v1")
    history = metric_history(conn, [AUC_DROP.metric], night(0), nights=1)
    found = transitions(evaluate_rules([AUC_DROP], history, night(0)), open_alerts(conn), night(0))

    assert len(apply_transitions(conn, found)) == 1
    assert apply_transitions(conn, found) == []
    assert table_counts(conn) == (1, 1, 1)


def test_rerunning_an_earlier_night_inside_an_alert_does_not_open_another(conn: duckdb.DuckDBPyConnection) -> None:
    for offset, value in enumerate([0.6, 0.6, 0.6, 0.9]):
        run_night(conn, offset, {"performance.estimated_auc": value}, [AUC_DROP])
    before = table_counts(conn)

    assert run_alerts(conn, [AUC_DROP], night(1)) == []
    assert run_alerts(conn, [AUC_DROP], night(2)) == []
    assert table_counts(conn) == before


# ----------------------------------------------------------------------------------------- performance first, messages


def test_performance_alert_is_listed_before_drift_and_carries_drift_as_probable_cause(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    rules = [DRIFT_SHARE, AUC_DROP]
    run_night(
        conn, 0, {"drift.drifted_share": 0.25, "drift.multivariate_auc": 0.58, "performance.estimated_auc": 0.8}, rules
    )
    written = run_night(
        conn, 1, {"drift.drifted_share": 0.31, "drift.multivariate_auc": 0.74, "performance.estimated_auc": 0.64}, rules
    )

    assert [(e["event"], e["category"]) for e in written] == [("opened", "performance"), ("opened", "drift")]
    performance = written[0]
    assert performance["probable_causes"] == [
        {"rule": "drift_share", "metric": "drift.drifted_share", "value": 0.31, "comparison": ">", "threshold": 0.2}
    ]
    assert performance["drift_metrics"] == {"drift.drifted_share": 0.31, "drift.multivariate_auc": 0.74}
    assert "probable cause: drift.drifted_share = 0.31 > 0.2" in performance["message"]
    outbox = conn.execute("select event_id from monitoring.alert_outbox order by seq").fetchall()
    assert outbox == [
        (f"estimated_auc_drop@{night(1).isoformat()}:opened",),
        (f"drift_share@{night(1).isoformat()}:opened",),
    ]


def test_opening_message_names_severity_value_threshold_nights_and_runbook(conn: duckdb.DuckDBPyConnection) -> None:
    run_night(conn, 2, {"drift.drifted_share": 0.27}, [DRIFT_SHARE])
    [opened] = run_night(conn, 3, {"drift.drifted_share": 0.31}, [DRIFT_SHARE])

    assert opened["message"] == (
        "[warning] drift.drifted_share = 0.31 > 0.2 for 2 nights (2026-02-03..2026-02-04); runbook: "
        "docs/runbook.md#drift-share"
    )
    stored = conn.execute("select message, runbook, payload from monitoring.alerts").fetchone()
    assert stored[0] == opened["message"]
    assert stored[1] == "docs/runbook.md#drift-share"
    assert json.loads(stored[2])["alert_id"] == "drift_share@2026-02-04"


def test_drift_while_a_data_quality_rule_holds_is_attributed_to_it_instead_of_paging(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    schema = QUARANTINE.model_copy(update={"name": "schema_break", "sustained_nights": 1})
    drift_now = DRIFT_SHARE.model_copy(update={"sustained_nights": 1})
    rules = [drift_now, schema]

    events = run_night(conn, 0, {"drift.drifted_share": 0.5, "validation.quarantine_rate": 0.2}, rules)

    assert [event["rule"] for event in events] == ["schema_break"]
    assert [cause["rule"] for cause in events[0]["drift_attributed_to_this"]] == ["drift_share"]
    later = run_night(conn, 1, {"drift.drifted_share": 0.5, "validation.quarantine_rate": 0.0}, rules)
    assert {(event["rule"], event["event"]) for event in later} == {
        ("drift_share", "opened"),
        ("schema_break", "resolved"),
    }
