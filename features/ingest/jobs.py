"""The ingest jobs: ``ingest``, ``retry_quarantine`` and ``read_incoming``.

Each job gathers raw rows (provider files, the API's lines, quarantined rows), drops those
of erased users, works out what they would change (:mod:`features.ingest.evaluate`) and,
for the two writers, commits it under the store's writer lock as one transaction
(:mod:`features.ingest.commit`) after settling whatever a crashed writer left
(:func:`features.writer.recover`). ``read_incoming`` takes no lock and writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from features import health, schemas, store, writer
from features.incoming import DEFAULT_KEEP_DAYS
from features.ingest.api_lines import ApiLines, prune_segments, read_api_lines
from features.ingest.columns import INCOMING, raw
from features.ingest.commit import commit
from features.ingest.erasure import (
    Compaction,
    Erasure,
    blank_erased_controls,
    blank_erased_lines,
    drop_erased,
    find_compaction,
    read_erasure,
    segment_spans,
)
from features.ingest.evaluate import Batch, Outcome, evaluate
from features.ingest.exposures import ingest_exposures
from features.ingest.files import ProviderFile, ingested_hashes, open_files
from features.ingest.item_lines import LOG_KEY as ITEM_LINES
from features.ingest.item_lines import ItemLines, item_rows, read_item_lines
from features.ingest.requests import TABLE as REQUESTS
from features.ingest.requests import ingest_requests, read_request_file
from features.ingest.summary import IngestSummary, TableCounts, add_erased, log_entry, log_summary
from features.lock import writer_lock
from features.poisoning import PoisonSettings
from features.validate import REASON, TABLE, TORN
from recsys.contract import Reason
from recsys.home import EngineHome
from recsys.settings import EngineSettings

log = logging.getLogger(__name__)


def ingest(
    home: EngineHome,
    *,
    interactions: Path | None = None,
    users: Path | None = None,
    items: Path | None = None,
    settings: EngineSettings | None = None,
    include_incoming: bool = True,
    wait_seconds: float = 0,
    keep_incoming_days: float = DEFAULT_KEEP_DAYS,
    poison: PoisonSettings | None = None,
    requests: Path | None = None,
) -> IngestSummary:
    """Validate provider files and the API's new lines and append them to the store.

    Residents' requests (``requests``: a file of the requests table, and the requests posted
    to the API) are folded into the store's requests table under the same lock
    (:mod:`features.ingest.requests`).

    Afterwards, segments of stopped servers that are fully in the store and were last
    written more than ``keep_incoming_days`` ago are deleted (:mod:`features.incoming`).
    Raises :class:`ContractError` (nothing written) for an unreadable file or a missing
    required column, and :class:`StoreLocked` when another writer holds the store longer
    than ``wait_seconds``.
    """
    settings = settings or EngineSettings()
    files = open_files(home, {"interactions": interactions, "users": users, "items": items})
    request_rows = read_request_file(Path(requests).expanduser().resolve()) if requests is not None else []
    with writer_lock(home, wait_seconds=wait_seconds, command="recsys ingest"):
        writer.recover(home)
        work = _find_work(home, files, include_incoming)
        summary = IngestSummary(work.ingest_id, {f.table: TableCounts(skipped_same_file=f not in work.fresh)
                                                 for f in files}, None)
        request_counts = ingest_requests(home, request_rows, work.erasure.users, settings.timezone)
        if request_counts is not None:
            summary.tables[REQUESTS] = request_counts
        ingest_exposures(home, work.erasure.users)  # served lists: store/exposures/date=*/
        if work.is_empty:
            summary.removed_segments = prune_segments(home, work.entries, keep_incoming_days)
            return summary
        outcome = _evaluate_work(home, work, summary, settings, poison)
        compaction = find_compaction(home, work.erasure)
        entry = _ingest_entry(home, work, summary, compaction)
        summary.quarantine_file = commit(home, work.ingest_id, outcome, entry, compaction)
        summary.committed = True
        summary.removed_segments = prune_segments(home, store.ingest_log(home), keep_incoming_days)
    log_summary(summary)
    health.check_safely(home, engine=settings)  # warns when the newest week differs (a feed that stopped)
    return summary


@dataclass
class _Work:
    """What one ingest run has to do, read under the lock before anything is written."""

    ingest_id: str
    entries: list[dict]
    fresh: list[ProviderFile]
    """The requested files no committed run has ingested."""
    lines: ApiLines | None
    erasure: Erasure
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows of erased users left out, per source table."""
    items: ItemLines | None = None
    """The API's catalogue writes (:mod:`features.ingest.item_lines`)."""

    @property
    def has_lines(self) -> bool:
        return bool(self.lines and self.lines.offsets) or bool(self.items and self.items.offsets)

    @property
    def is_empty(self) -> bool:
        return not self.fresh and not self.has_lines and not self.erasure.pending


def _find_work(home: EngineHome, files: list[ProviderFile], include_incoming: bool) -> _Work:
    """New files, new API lines and new erasures, as the committed log stands now."""
    entries = store.ingest_log(home)
    known = ingested_hashes(entries)
    fresh = [f for f in files if f.frame is not None and (f.table, f.sha256) not in known]
    for skipped in (f for f in files if f not in fresh):
        log.info("%s already ingested (sha256 %s); skipping it", skipped.path, skipped.sha256[:12])
    lines = read_api_lines(home, entries) if include_incoming else None
    items = read_item_lines(home, entries) if include_incoming else None
    return _Work(writer.new_ingest_id(), entries, fresh, lines, read_erasure(home, entries), items=items)


def _evaluate_work(home: EngineHome, work: _Work, summary: IngestSummary, settings: EngineSettings,
                   poison: PoisonSettings | None) -> Outcome:
    """Validate the run's rows (erased users' left out) and count every row's fate into ``summary``."""
    frames = {f.table: raw(f.frame, f.table, ingest_id=work.ingest_id, table=f.table, source=str(f.path))
              for f in work.fresh}
    file_interactions = frames.get("interactions", raw(None, "interactions"))
    api_lines = raw(work.lines.frame if work.lines else None, "interactions", ingest_id=work.ingest_id,
                    table=INCOMING)
    items = frames.get("items", raw(None, "items"))
    if work.items and work.items.lines:  # after the files: the API's writes are the latest word
        written = item_rows(work.items, items, store.scan_items(home).collect())
        items = pl.concat([items, raw(written, "items", ingest_id=work.ingest_id)])
    batch = Batch(
        items=items,
        users=drop_erased(frames.get("users", raw(None, "users")), work.erasure, work.dropped),
        interactions=drop_erased(pl.concat([file_interactions, api_lines]), work.erasure, work.dropped),
    )
    outcome = evaluate(home, batch, settings, poison)
    summary.tables.update(outcome.counts)
    add_erased(summary.tables, work.dropped)
    if work.has_lines:
        summary.tables.setdefault(INCOMING, TableCounts())
    return outcome


def _ingest_entry(home: EngineHome, work: _Work, summary: IngestSummary, compaction: Compaction) -> dict:
    """The run's log line; blanks the erased users' API lines on the way (see below)."""
    entry = log_entry(
        "ingest" if work.fresh or work.has_lines else "erasure", summary.tables,
        sources=[{"table": f.table, "path": str(f.path), "sha256": f.sha256} for f in work.fresh],
        incoming=work.lines.offsets if work.lines else {},
    )
    if work.items and work.items.offsets:
        entry[ITEM_LINES] = work.items.offsets
    erasure = work.erasure
    if erasure.users:
        # Before the commit: blanking an erased user's line is right whatever this run becomes.
        spans = segment_spans(home, work.entries, work.lines, erasure)
        blanked = blank_erased_lines(home, spans, erasure.users) + blank_erased_controls(home, erasure.users)
        if erasure.pending:
            entry["erasure"] = {"tombstones_end": erasure.tombstones_end, "erased_users": len(erasure.new),
                                "retired_files": len(compaction.retires) + len(compaction.quarantine_replaces),
                                "blanked_lines": blanked}
    return entry


def retry_quarantine(home: EngineHome, settings: EngineSettings | None = None, *,
                     wait_seconds: float = 0, poison: PoisonSettings | None = None) -> IngestSummary:
    """Validate every quarantined row again; rows that pass now join the store.

    The rows still failing are committed as one new quarantine file that replaces the old
    ones in the same log line, so counts always reconcile: per table, ``input_rows`` (rows
    that were in quarantine) = accepted + quarantined (still) + duplicates.
    """
    settings = settings or EngineSettings()
    with writer_lock(home, wait_seconds=wait_seconds, command="recsys ingest --retry-quarantine"):
        writer.recover(home)
        files = store.quarantine_files(home)
        rows = store.scan_quarantine(home).collect()
        ingest_id = writer.new_ingest_id()
        summary = IngestSummary(ingest_id, {}, None)
        if rows.height == 0:
            return summary
        dropped: dict[str, int] = {}
        kept = drop_erased(rows, read_erasure(home, store.ingest_log(home)), dropped)
        table = pl.col(TABLE)
        interactions = kept.filter(table.is_in(["interactions", INCOMING])).with_columns(
            (pl.col(REASON) == Reason.TORN_LINE.value).alias(TORN)
        )
        batch = Batch(
            items=raw(kept.filter(table == "items"), "items"),
            users=raw(kept.filter(table == "users"), "users"),
            interactions=raw(interactions, "interactions"),
        )
        outcome = evaluate(home, batch, settings, poison)
        summary.tables = outcome.counts
        add_erased(summary.tables, dropped)
        unchanged = outcome.quarantine.height == rows.height and (
            sorted(outcome.quarantine[REASON].to_list()) == sorted(rows[REASON].to_list())
        )
        if unchanged:  # nothing left quarantine: keep the files as they are
            return summary
        entry = log_entry("retry", summary.tables, quarantine_replaces=[f.stem for f in files])
        summary.quarantine_file = commit(home, ingest_id, outcome, entry)
        summary.committed = True
    log_summary(summary)
    return summary


def read_incoming(home: EngineHome, settings: EngineSettings | None = None
                  ) -> tuple[pl.DataFrame, dict[str, int]]:
    """Interactions the API has appended since the last ingest, validated but not stored.

    Returns the valid, new rows (schema :data:`features.schemas.INTERACTIONS`) and, per
    segment file name, the byte offset they were read up to. Rows that would go to
    quarantine, rows already stored and rows of erased users are left out. Takes no lock and writes nothing.
    """
    settings = settings or EngineSettings()
    entries = store.ingest_log(home)
    incoming = read_api_lines(home, entries)
    if not incoming.offsets:
        return schemas.empty("interactions"), {}
    lines = raw(incoming.frame, "interactions", table=INCOMING, ingest_id="")
    batch = Batch(raw(None, "items"), raw(None, "users"), drop_erased(lines, read_erasure(home, entries), {}))
    outcome = evaluate(home, batch, settings)
    rows = outcome.interactions.select(list(schemas.INTERACTIONS))
    return rows, {name: span["end"] for name, span in incoming.offsets.items()}
