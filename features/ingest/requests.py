"""Residents' requests (点单) into the store: a provider file and the API's posted lines.

Part of every ingest, under the store's writer lock. Rows come from ``--requests FILE``
(CSV or Parquet, the requests table of the data contract: :data:`recsys.requests.REQUEST_COLUMNS`)
and from the complete lines of ``store/requests_incoming/*.jsonl`` not read before
(``store/requests_offsets.json``). Each row is validated by :mod:`recsys.requests`'s rules;
a valid row joins ``store/requests.parquet`` unless its id is stored already or the same user
asked for the same target within the de-duplication window; an invalid one goes to
``store/requests_rejected.parquet`` with its reason (nothing is dropped silently). Rows of
erased users never enter, and users erased since are removed from the table and their
posted lines blanked.

Crash safety: the table is replaced in one rename, then the offsets. A crash between the
two re-reads lines whose ids are already stored, which de-duplication absorbs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError

from features.ingest.erasure import blank_erased_lines
from features.ingest.line_offsets import read_offsets, replace_parquet, write_offsets
from features.ingest.summary import TableCounts
from recsys import appendlog
from recsys.contract import ContractError, parse_timestamp
from recsys.home import EngineHome
from recsys.requests import REQUEST_COLUMNS, Request, RequestIn, is_duplicate, parse_request

log = logging.getLogger(__name__)

TABLE = "requests"
REQUIRED: tuple[str, ...] = ("user_id", "region_code", "ts")
TORN = "torn_or_invalid_json_line"
FIELD_REASONS = {"region_code": "invalid_region_code", "user_id": "id_too_long", "item_id": "id_too_long",
                 "note": "note_too_long"}
"""Reason codes of a rejected row by the field it breaks (the contract's codes where one exists);
a row without any target is ``invalid_request``."""
MAX_SKEW = timedelta(days=1)
"""A request dated further ahead of this machine's clock is rejected as ``future_time``."""
SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in REQUEST_COLUMNS},
    "wanted_from": pl.Datetime("us", "UTC"), "wanted_until": pl.Datetime("us", "UTC"), "ts": pl.Datetime("us", "UTC"),
}
REJECTED_SCHEMA: dict[str, pl.DataType] = {**{c: pl.String() for c in REQUEST_COLUMNS}, "reason": pl.String()}


def offsets_path(home: EngineHome) -> Path:
    return home.store / "requests_offsets.json"


def rejected_path(home: EngineHome) -> Path:
    return home.store / "requests_rejected.parquet"


def read_request_file(path: Path) -> list[dict[str, Any]]:
    """A provider's requests file as rows of strings; :class:`ContractError` when unreadable or incomplete."""
    source = str(path)
    if not path.is_file():
        raise ContractError(source, "file not found")
    try:
        frame = pl.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pl.read_csv(
            path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeError) as exc:
        raise ContractError(source, f"not readable as CSV or Parquet: {exc}") from exc
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ContractError(source, f"missing required column {missing[0]!r}", column=missing[0])
    frame = frame.select([(pl.col(c).cast(pl.String) if c in frame.columns else pl.lit(None, pl.String)).alias(c)
                          for c in REQUEST_COLUMNS])
    return [{**row, "source": row["source"] or f"file:{path.name}"} for row in frame.to_dicts()]


def stored_requests(home: EngineHome, erased: frozenset[str] = frozenset()) -> pl.DataFrame:
    """The stored requests (schema :data:`SCHEMA`), erased users left out."""
    if not home.requests.exists():
        return pl.DataFrame(schema=SCHEMA)
    frame = pl.read_parquet(home.requests)
    return frame.filter(~pl.col("user_id").is_in(sorted(erased))) if erased else frame


def ingest_requests(home: EngineHome, file_rows: list[dict[str, Any]], erased: frozenset[str],
                    timezone: str) -> TableCounts | None:
    """Validate new rows and fold them into the stored table (the caller holds the writer lock).

    Returns the counts, or None when there was nothing to do.
    """
    offsets = read_offsets(offsets_path(home))
    line_rows, new_offsets = _new_lines(home, offsets)
    rows = [*file_rows, *line_rows]
    stored = stored_requests(home)
    gone = stored.filter(pl.col("user_id").is_in(sorted(erased))).height if erased else 0
    if not rows and not gone:
        return None
    counts = TableCounts(input_rows=len(rows))
    kept = [_request_of(r) for r in stored_requests(home, erased).to_dicts()]
    known = {r.request_id for r in kept}
    rejected: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: str(r.get("ts") or "")):
        if row.get("user_id") in erased:
            counts.erased += 1
            continue
        checked = _validate(row, timezone)
        if isinstance(checked, str):
            counts.quarantined += 1
            counts.reasons[checked] = counts.reasons.get(checked, 0) + 1
            rejected.append({**{c: _text(row.get(c)) for c in REQUEST_COLUMNS}, "reason": checked})
        elif checked.request_id in known or is_duplicate(checked, kept):
            counts.duplicates += 1
        else:
            kept.append(checked)
            known.add(checked.request_id)
            counts.accepted += 1
    _write_table(home, kept)
    if rejected:
        _append_rejected(home, rejected)
    write_offsets(offsets_path(home), new_offsets)
    if erased:
        spans = {name: (0, end) for name, end in new_offsets.items()}
        blank_erased_lines(home, spans, erased, directory=home.request_lines)
    log.info("requests: %d in, %d accepted, %d rejected, %d duplicates, %d erased (%d removed from the store)",
             counts.input_rows, counts.accepted, counts.quarantined, counts.duplicates, counts.erased, gone)
    return counts


def _validate(row: dict[str, Any], timezone: str) -> Request | str:
    """The request, or the reason code it is rejected with."""
    if row.get(TORN):
        return TORN
    ts = parse_timestamp(row.get("ts"), timezone)
    if ts is None:
        return "unparseable_time" if row.get("ts") not in (None, "") else "missing_required_field"
    if ts > datetime.now(UTC) + MAX_SKEW:
        return "future_time"
    try:
        parsed = RequestIn.model_validate({k: v for k, v in row.items() if v not in (None, "")})
        return parse_request(parsed, ts, timezone, request_id=row.get("request_id") or None,
                             source=row.get("source"))
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "missing":
            return "missing_required_field"
        return FIELD_REASONS.get(field, "invalid_request")
    except ValueError:
        return "unparseable_time"


def _request_of(row: dict[str, Any]) -> Request:
    return Request(**{c: row.get(c) for c in REQUEST_COLUMNS})


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def requests_frame(requests: list[Request]) -> pl.DataFrame:
    """Requests as a table of :data:`SCHEMA`, oldest first."""
    rows = [{c: getattr(r, c) for c in REQUEST_COLUMNS} for r in sorted(requests, key=lambda r: (r.ts, r.request_id))]
    return pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(schema=SCHEMA)


def _write_table(home: EngineHome, requests: list[Request]) -> None:
    replace_parquet(requests_frame(requests), home.requests)


def _append_rejected(home: EngineHome, rows: list[dict[str, Any]]) -> None:
    path = rejected_path(home)
    old = pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=REJECTED_SCHEMA)
    replace_parquet(pl.concat([old, pl.DataFrame(rows, schema=REJECTED_SCHEMA)]), path)


# ---- posted lines ---------------------------------------------------------------------------
def _new_lines(home: EngineHome, offsets: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows of the complete lines after each segment's offset, and the offsets after them."""
    rows: list[dict[str, Any]] = []
    reached = dict(offsets)
    segments = sorted(home.request_lines.glob("*.jsonl")) if home.request_lines.exists() else []
    for segment in segments:
        try:
            read = appendlog.read_new_lines(segment, offsets.get(segment.name, 0))
        except appendlog.Shrunk:  # cut back by hand: read it again; stored ids absorb the repeats
            read = appendlog.read_all_lines(segment)
        for line in read.lines:
            if not line.strip():
                continue
            record = appendlog.json_object(line)
            rows.append({c: _text(record.get(c)) for c in REQUEST_COLUMNS} if record is not None
                        else {TORN: True, "user_id": None})
        reached[segment.name] = read.end
    return rows, reached
