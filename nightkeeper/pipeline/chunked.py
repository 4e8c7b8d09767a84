"""The nightly answer steps on the stored night, in bounded chunks of rows: flat memory whatever the night's size.

Each step reads its inputs from the night's stored tables a block of rows at a time (``warehouse.row_blocks``: at
most ``config.scale.chunk_rows`` rows, by row key, the same blocks for every table of the night), computes the
block's rows with the function the whole-night step uses (``nightkeeper.pipeline.nightly``), and stores them in one
transaction for the night (``warehouse.store_chunks``), so a night is stored whole or not at all. What judges the
night as a whole is read back with SQL aggregates or streamed reads, never by loading a whole table, and is passed
to the same ``nightly.judge_*`` function, so metadata, checks and metrics are the whole-night step's. Every row-level
rule, prediction, canary route and fallback answer depends on the row alone, so the stored tables do not depend on
the chunk size.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl

from nightkeeper import batch_checks, lifecycle, registry
from nightkeeper.artifacts import ModelUnavailable, load_verified
from nightkeeper.config import ProjectConfig
from nightkeeper.contract_types import valid_schema
from nightkeeper.forest_scoring import ScoringForest
from nightkeeper.ingest import RECORD, LandedFile, RawBatch, open_raw, raw_schema, scan_landing, skipped_files
from nightkeeper.outcomes import OUTCOME_SCHEMA, AnswerSummary, Fallback, assemble_outcomes, summarise_answers
from nightkeeper.pipeline import monitoring, nightly
from nightkeeper.pipeline.step import StepResult
from nightkeeper.reasons import REASON_CODES_SCHEMA
from nightkeeper.review.queue import build_review_queue
from nightkeeper.routing import in_canary
from nightkeeper.scoring import (
    COMPILED_MIN_ROWS,
    SCORED_SCHEMA,
    compiled,
    latency_percentiles_of_counts,
    score_batch,
    unscored,
)
from nightkeeper.serving import ServingModel, serving_decision, serving_model
from nightkeeper.validation import (
    FILE_ROW,
    KEY_COLUMNS,
    QUARANTINE_SCHEMA,
    ROW_KEY,
    NightFacts,
    null_rates_of,
    validate,
)
from nightkeeper.warehouse import (
    NIGHTLY_SCHEMA,
    PARTITION_COLUMN,
    RowBlock,
    read_block,
    read_chunks,
    row_blocks,
    store_chunks,
)


def answer_stored_night(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> StepResult:
    """``outcomes`` stored from the night's stored ``raw_batch``, ``quarantine``, ``scored_batch`` and
    ``shadow_scores``, a block of rows at a time: exactly ``nightly.answer_night``'s table, metadata and check (no
    tables in the result: the partition is stored)."""
    champion = serving_model(connection, registry.CHAMPION, night).record
    fallback = Fallback(champion.card.fallback, champion.version) if champion else Fallback(None, None)
    decision = serving_decision(config, connection, night)
    raw_columns = [*KEY_COLUMNS, *(fallback.rule.segment_by if fallback.rule else [])]
    blocks = row_blocks(connection, NIGHTLY_SCHEMA, "raw_batch", night, config.scale.chunk_rows)

    def chunks() -> Iterator[dict[str, pl.DataFrame]]:
        for block in blocks:
            shadow = read_block(connection, NIGHTLY_SCHEMA, "shadow_scores", night, block)
            canary = shadow.filter(pl.col("in_canary")).drop("in_canary") if shadow.height else None
            yield {
                "outcomes": assemble_outcomes(
                    read_block(connection, NIGHTLY_SCHEMA, "raw_batch", night, block, raw_columns),
                    read_block(connection, NIGHTLY_SCHEMA, "quarantine", night, block, order=QUARANTINE_ORDER),
                    read_block(connection, NIGHTLY_SCHEMA, "scored_batch", night, block),
                    fallback,
                    decision,
                    config.fallback.answer_quarantined,
                    canary,
                )
            }

    store_chunks(connection, NIGHTLY_SCHEMA, night, {"outcomes": pl.DataFrame(schema=OUTCOME_SCHEMA)}, chunks)
    return nightly.judge_answers(config, connection, night, stored_answers(config, connection, night))


QUARANTINE_ORDER = [*ROW_KEY, "column", "rule"]
"""The order of the quarantine table's rows (``validation.validate``)."""


def stored_answers(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> AnswerSummary:
    """The summary of the night's stored ``outcomes`` (``outcomes.summarise_answers``), streamed a chunk at a time."""
    columns = ", ".join(f'"{column}"' for column in OUTCOME_SCHEMA)
    return summarise_answers(
        read_chunks(
            connection,
            f"select {columns} from {NIGHTLY_SCHEMA}.outcomes where {PARTITION_COLUMN} = $night",
            {"night": night},
            config.scale.chunk_rows,
        ),
        nightly.PREVIEW_ROWS,
    )


def score_stored_night(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> StepResult:
    """``scored_batch`` stored from the night's stored ``validated_batch``, a block of rows at a time: exactly
    ``nightly.score_night``'s table, metadata and check (the model's time budget is the whole night's)."""
    champion = serving_model(connection, registry.CHAMPION, night)
    error = _store_scores(
        config, connection, night, "scored_batch", champion, "no champion model is registered for this night", None
    )
    return nightly.judge_scoring(connection, night, stored_scores(connection, night), error)


def shadow_stored_night(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> StepResult:
    """``shadow_scores`` stored from the night's stored ``validated_batch``, a block of rows at a time, and judged
    against the stored ``scored_batch``: exactly ``nightly.shadow_night``'s table, metadata and check."""
    challenger = serving_model(connection, registry.CHALLENGER, night)
    if challenger.version is None:  # no challenger tonight: an empty partition, judged without reading the night
        store_chunks(connection, NIGHTLY_SCHEMA, night, {"shadow_scores": _empty_shadow()}, lambda: iter([]))
        return nightly.judge_shadow(config, connection, night, _empty_tally())
    percent = lifecycle.canary_percent(challenger.stage)
    _store_scores(config, connection, night, "shadow_scores", challenger, str(challenger.error), percent)
    return nightly.judge_shadow(config, connection, night, stored_shadow_tally(config, connection, night))


class _ModelFailed(Exception):
    """The model raised or overran the night's budget on a block after answering earlier ones: the night is stored
    again with every row unscored (a half-scored night would mix two regimes)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _store_scores(
    config: ProjectConfig,
    connection: duckdb.DuckDBPyConnection,
    night: dt.date,
    table: str,
    model: ServingModel,
    missing: str,
    canary_percent: int | None,
) -> str | None:
    """Store ``model``'s answer for every stored validated row of ``night`` in ``table`` (SCORED_SCHEMA, with
    ``in_canary`` at ``canary_percent`` unless None), and return why it answered none (None when it answered all):
    the model cannot be loaded (``missing`` when its registry row is unusable), or it raised or overran
    ``config.model.time_budget_seconds`` over the night, in which case every row is stored unscored."""
    booster, error = None, None
    if model.record is None:
        error = model.error or missing
    else:
        try:
            booster = load_verified(model.record)
        except ModelUnavailable as exc:
            error = str(exc)
    blocks = row_blocks(connection, NIGHTLY_SCHEMA, "raw_batch", night, config.scale.chunk_rows)
    empty = _empty_shadow() if canary_percent is not None else pl.DataFrame(schema=SCORED_SCHEMA)

    flattened: list[ScoringForest | None] = []  # the booster compiled once a night, on its first large block

    def chunks(failure: str | None) -> Iterator[dict[str, pl.DataFrame]]:
        budget = config.model.time_budget_seconds
        for block in blocks:
            rows = read_block(connection, NIGHTLY_SCHEMA, "validated_batch", night, block)
            if failure is not None or booster is None or model.record is None:  # (the last two: only with a failure)
                frame = unscored(rows, model.version, failure or "")
            else:
                if not flattened and rows.height >= COMPILED_MIN_ROWS:
                    flattened.append(compiled(booster))
                forest = flattened[0] if flattened else None
                scored = score_batch(rows, booster, model.record.card, config.model.chunk_rows, budget, forest)
                budget -= scored.seconds
                if scored.error is not None:
                    raise _ModelFailed(
                        f"model {model.record.card.version} exceeded its time budget of "
                        f"{config.model.time_budget_seconds:g} s"
                        if budget <= 0
                        else scored.error
                    )
                frame = scored.frame
            if canary_percent is not None:
                frame = frame.with_columns(in_canary(frame["entity_id"], canary_percent))
            yield {table: frame}

    try:
        store_chunks(connection, NIGHTLY_SCHEMA, night, {table: empty}, lambda: chunks(error))
    except _ModelFailed as failed:
        error = failed.error
        store_chunks(connection, NIGHTLY_SCHEMA, night, {table: empty}, lambda: chunks(error))
    return error


def _empty_shadow() -> pl.DataFrame:
    return pl.DataFrame(schema=nightly.SHADOW_SCHEMA)


def stored_scores(connection: duckdb.DuckDBPyConnection, night: dt.date) -> nightly.ScoreSummary:
    """The summary of the night's stored ``scored_batch`` (``nightly.ScoreSummary``), from SQL aggregates."""
    parameters = {"night": night}
    where = f"from {NIGHTLY_SCHEMA}.scored_batch where {PARTITION_COLUMN} = $night"
    # the latencies' counts, not a quantile over the rows: DuckDB holds every row's value for that (~30 bytes a row)
    latencies = connection.execute(f"select latency_ms, count(*) as rows {where} group by latency_ms", parameters).pl()
    decisions = connection.execute(f"select decision, count(*) {where} group by decision", parameters).fetchall()
    return nightly.ScoreSummary(
        stored_rows(connection, "scored_batch", night),
        latency_percentiles_of_counts(latencies),
        {str(decision): int(count) for decision, count in sorted(decisions, key=lambda d: str(d[0]))},
        stored_preview(connection, "scored_batch", night, list(SCORED_SCHEMA)),
    )


def stored_rows(connection: duckdb.DuckDBPyConnection, table: str, night: dt.date) -> int:
    """The number of rows of the night's stored ``table``."""
    row = connection.execute(
        f"select count(*) from {NIGHTLY_SCHEMA}.{table} where {PARTITION_COLUMN} = $night", {"night": night}
    ).fetchone()
    return int(row[0]) if row else 0


def stored_preview(
    connection: duckdb.DuckDBPyConnection,
    table: str,
    night: dt.date,
    columns: list[str],
    order: list[str] = ROW_KEY,
) -> pl.DataFrame:
    """The first ``nightly.PREVIEW_ROWS`` rows of the night's stored ``table`` by ``order`` (the row key), its
    ``columns`` only: the preview the whole-night step takes of its frame."""
    selected = ", ".join(f'"{column}"' for column in columns)
    ordered = ", ".join(f'"{column}"' for column in order)
    return connection.execute(
        f"""select {selected} from {NIGHTLY_SCHEMA}.{table} where {PARTITION_COLUMN} = $night
            order by {ordered} limit {nightly.PREVIEW_ROWS}""",
        {"night": night},
    ).pl()


def stored_shadow_tally(
    config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date
) -> nightly.ShadowTally:
    """The ``ShadowTally`` of the night's stored ``shadow_scores`` against its stored ``scored_batch``, a block of
    rows at a time, each block's tally merged into the running one (so only two are held at once)."""
    tally = _empty_tally()
    for block in row_blocks(connection, NIGHTLY_SCHEMA, "raw_batch", night, config.scale.chunk_rows):
        tally = nightly.ShadowTally.merge([tally, _block_tally(connection, night, block, nightly.JUDGED_SCORE_COLUMNS)])
    return tally


def _empty_tally() -> nightly.ShadowTally:
    return nightly.ShadowTally.of(_empty_shadow(), pl.DataFrame(schema=SCORED_SCHEMA))


def _block_tally(
    connection: duckdb.DuckDBPyConnection, night: dt.date, block: RowBlock, judged: list[str]
) -> nightly.ShadowTally:
    return nightly.ShadowTally.of(
        read_block(connection, NIGHTLY_SCHEMA, "shadow_scores", night, block, [*judged, "in_canary"]),
        read_block(connection, NIGHTLY_SCHEMA, "scored_batch", night, block, judged),
    )


def validate_stored_night(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> StepResult:
    """``validated_batch`` and ``quarantine`` stored from the night's stored ``raw_batch``, a block of rows at a
    time, each block judged with what the rules need of the whole night (``stored_night_facts``): exactly
    ``nightly.validate_night``'s tables, metadata and check."""
    facts = stored_night_facts(connection, night)
    blocks = row_blocks(connection, NIGHTLY_SCHEMA, "raw_batch", night, config.scale.chunk_rows)
    schema = valid_schema(config.contract)
    # each feature's empty values over the judged rows, added block by block (counts: the night's rates exactly)
    null_counts, judged_rows = dict.fromkeys(config.contract.features, 0), 0

    def chunks() -> Iterator[dict[str, pl.DataFrame]]:
        nonlocal null_counts, judged_rows
        null_counts, judged_rows = dict.fromkeys(config.contract.features, 0), 0  # afresh when a lake retries
        for block in blocks:
            rows = read_block(connection, NIGHTLY_SCHEMA, "raw_batch", night, block)
            result = validate(rows, config.contract, night=facts)
            null_counts = {name: count + result.null_counts[name] for name, count in null_counts.items()}
            judged_rows += result.judged_rows
            yield {"validated_batch": result.valid, "quarantine": result.quarantine}

    empty = {"validated_batch": pl.DataFrame(schema=schema), "quarantine": pl.DataFrame(schema=QUARANTINE_SCHEMA)}
    store_chunks(connection, NIGHTLY_SCHEMA, night, empty, chunks)
    return nightly.judge_validation(
        config,
        connection,
        night,
        stored_rows(connection, "raw_batch", night),
        null_rates_of(null_counts, judged_rows),
        stored_quarantine(connection, night),
        stored_rows(connection, "validated_batch", night),
        stored_preview(connection, "validated_batch", night, list(schema)),
    )


def stored_night_facts(connection: duckdb.DuckDBPyConnection, night: dt.date) -> NightFacts:
    """The ``validation.NightFacts`` of the night's stored ``raw_batch``, from SQL: the later copies of its repeated
    ids and one record of each file with rows that failed typing (small, whatever the night's size)."""
    raw = f"{NIGHTLY_SCHEMA}.raw_batch"
    rows = f"{PARTITION_COLUMN} = $night and row_number <> {FILE_ROW}"
    copies = connection.execute(
        f"""with repeated as (select entity_id from {raw} where {rows} and entity_id is not null
                              group by entity_id having count(*) > 1),
                 ranked as (select source_file, row_number, entity_id,
                                   row_number() over (partition by entity_id order by source_file, row_number) as copy
                            from {raw} semi join repeated using (entity_id) where {rows})
            select source_file, row_number, entity_id from ranked where copy > 1 order by source_file, row_number""",
        {"night": night},
    ).pl()
    records = connection.execute(
        f"""select source_file, min(row_number) as row_number, arg_min({RECORD}, row_number) as {RECORD}
            from {raw} where {rows} and {RECORD} is not null group by source_file order by source_file""",
        {"night": night},
    ).pl()
    return NightFacts(copies, records)


def stored_quarantine(connection: duckdb.DuckDBPyConnection, night: dt.date) -> nightly.QuarantineSummary:
    """The summary of the night's stored ``quarantine`` (``nightly.QuarantineSummary``), from SQL aggregates."""
    where = f"from {NIGHTLY_SCHEMA}.quarantine where {PARTITION_COLUMN} = $night"
    row = connection.execute(
        f"select count(distinct (source_file, row_number)), count(*) {where}", {"night": night}
    ).fetchone()
    by_rule = connection.execute(
        f"""select "column", rule, count(*) as rows {where} group by all
            order by rows desc, "column", rule limit {nightly.SUMMARY_ROWS}""",
        {"night": night},
    ).pl()
    rows, broken = row if row else (0, 0)
    preview = stored_preview(connection, "quarantine", night, list(QUARANTINE_SCHEMA), QUARANTINE_ORDER)
    return nightly.QuarantineSummary(
        int(rows), int(broken), by_rule.with_columns(pl.col("rows").cast(pl.UInt32)), preview
    )


def ingest_stored_night(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> StepResult:
    """``raw_batch`` stored from the night's landed files, read and typed a slice of ``config.scale.chunk_rows``
    rows at a time (``ingest.open_raw``): exactly ``nightly.ingest_night``'s table, metadata and checks. A file that
    turns out unreadable part-way through is stored as its one unreadable row (the night is stored again)."""
    found = scan_landing(config.landing_path, config.source.pattern, night)
    schema = raw_schema(config.contract)
    unreadable: dict[Path, str] = {}
    files: list[LandedFile] = []
    nested: list[str] = []
    preview = pl.DataFrame(schema=schema)

    def chunks() -> Iterator[dict[str, pl.DataFrame]]:
        nonlocal files, nested, preview
        files, nested, preview = [], [], pl.DataFrame(schema=schema)  # afresh when the night is stored again
        for path in found.files:
            opened = open_raw(
                path,
                night,
                config.contract,
                config.root,
                slice_rows=config.scale.chunk_rows,
                error=unreadable.get(path),
            )
            files.append(opened.landed)
            nested += opened.nested
            try:
                for part in opened.slices:
                    if preview.height < nightly.PREVIEW_ROWS:
                        preview = pl.concat([preview, part.head(nightly.PREVIEW_ROWS - preview.height)])
                    yield {"raw_batch": part}
            except ValueError as exc:
                raise _UnreadableFile(path, str(exc)) from exc

    while True:
        try:
            store_chunks(connection, NIGHTLY_SCHEMA, night, {"raw_batch": pl.DataFrame(schema=schema)}, chunks)
            break
        except _UnreadableFile as failed:
            unreadable[failed.path] = failed.error
    where = f"from {NIGHTLY_SCHEMA}.raw_batch where {PARTITION_COLUMN} = $night"
    repeated = connection.execute(
        f"""select entity_id {where} and entity_id in
            (select entity_id {where} and entity_id is not null group by entity_id having count(*) > 1)""",
        {"night": night},
    ).pl()
    batch = RawBatch(pl.DataFrame(schema=schema), files, skipped_files(config.landing_path, found, config.root), nested)
    result = nightly.judge_ingest(
        config,
        connection,
        night,
        batch,
        stored_rows(connection, "raw_batch", night),
        batch_checks.entity_ids_unique(repeated),
        preview.drop(RECORD),
    )
    return result


class _UnreadableFile(Exception):
    """A landed file failed part-way through reading: the night is stored again with it as one unreadable row."""

    def __init__(self, path: Path, error: str) -> None:
        super().__init__(error)
        self.path = path
        self.error = error


def review_stored_night(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> StepResult:
    """``monitoring.review_queue_night`` on the night's stored ``outcomes`` and ``quarantine``, a block of rows at a
    time: exactly its queue and metadata, holding a block and the queue's rows.

    The queue of the rows seen so far keeps its first ``review.capacity`` entities (each by its best row); a row
    left out cannot enter the night's queue later (an id's better row in a later block takes that id's own place),
    so the queue of the kept rows and the next block is the queue of every row so far."""
    versions = connection.execute(
        f"select distinct model_version from {NIGHTLY_SCHEMA}.outcomes where {PARTITION_COLUMN} = $night",
        {"night": night},
    ).fetchall()
    threshold = monitoring.answer_thresholds(config, connection, [version for (version,) in versions])
    outcomes = pl.DataFrame(schema=OUTCOME_SCHEMA)
    quarantine = pl.DataFrame(schema=QUARANTINE_SCHEMA)
    queue = build_review_queue(outcomes, quarantine, threshold, config.review)
    for block in row_blocks(connection, NIGHTLY_SCHEMA, "raw_batch", night, config.scale.chunk_rows):
        columns = list(OUTCOME_SCHEMA)
        outcomes = pl.concat([outcomes, read_block(connection, NIGHTLY_SCHEMA, "outcomes", night, block, columns)])
        quarantine = pl.concat(
            [quarantine, read_block(connection, NIGHTLY_SCHEMA, "quarantine", night, block, list(QUARANTINE_SCHEMA))]
        )
        queue = build_review_queue(outcomes, quarantine, threshold, config.review)
        queued = queue.select(ROW_KEY)
        outcomes = outcomes.join(queued, on=ROW_KEY, how="semi")
        quarantine = quarantine.join(queued, on=ROW_KEY, how="semi")
    return monitoring.store_review_queue(config, connection, night, queue)


def explain_stored_answers(config: ProjectConfig, connection: duckdb.DuckDBPyConnection, night: dt.date) -> StepResult:
    """``reason_codes`` stored from the night's stored ``outcomes`` and ``validated_batch``, a block of rows at a
    time: exactly ``nightly.explain_stored_night``'s table and metadata (no tables in the result: the partition is
    stored), holding a block's rows and its reasons whatever the night's size.

    A first pass over the night's answers (a few columns, a block at a time) counts each model version's answers
    due, so each version's model is loaded and compiled once for the night, with the engine its whole night's due
    rows take (``nightly.night_explainers``); then each block's due answers are explained and stored."""
    started = time.perf_counter()
    columns = nightly.EXPLAINED_OUTCOME_COLUMNS
    blocks = row_blocks(connection, NIGHTLY_SCHEMA, "raw_batch", night, config.scale.chunk_rows)

    def due_in(block: RowBlock) -> nightly.DueForReasons:
        return nightly.due_for_reasons(
            config, connection, read_block(connection, NIGHTLY_SCHEMA, "outcomes", night, block, columns)
        )

    records: dict[str, registry.ModelRecord] = {}
    due_rows: dict[str, int] = {}
    answers = 0
    unknown: dict[str, str] = {}
    for block in blocks:
        due = due_in(block)
        answers += due.answers
        unknown |= due.unknown
        for record, rows in due.by_version:
            records[record.version] = record
            due_rows[record.version] = due_rows.get(record.version, 0) + rows.height
    explainers, unloadable = nightly.night_explainers([(records[v], due_rows[v]) for v in sorted(records)])
    by_version: dict[str, int] = {}
    preview = pl.DataFrame(schema=REASON_CODES_SCHEMA).drop("reason_codes")

    def chunks() -> Iterator[dict[str, pl.DataFrame]]:
        nonlocal by_version, preview
        by_version, preview = {}, pl.DataFrame(schema=REASON_CODES_SCHEMA).drop("reason_codes")  # afresh on a retry
        for block in blocks:
            due = due_in(block)
            if not any(record.version in explainers for record, _ in due.by_version):
                continue
            rows = read_block(connection, NIGHTLY_SCHEMA, "validated_batch", night, block)
            frame = nightly.explain_due(config, due, rows, explainers)
            for version, count in frame.group_by("model_version").len().iter_rows():
                by_version[version] = by_version.get(version, 0) + count
            if preview.height < nightly.PREVIEW_ROWS:
                preview = pl.concat([preview, frame.drop("reason_codes").head(nightly.PREVIEW_ROWS - preview.height)])
            yield {"reason_codes": frame}

    store_chunks(connection, NIGHTLY_SCHEMA, night, {"reason_codes": pl.DataFrame(schema=REASON_CODES_SCHEMA)}, chunks)
    return nightly.judge_reasons(sum(by_version.values()), answers, by_version, unknown | unloadable, preview, started)
