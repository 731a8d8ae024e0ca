"""Validated ingestion into the store: provider files and the API's incoming segments.

``ingest`` reads interactions/users/items (CSV or Parquet) plus every new complete line of
``store/incoming/*.jsonl``, validates them with :mod:`features.validate`, and in one
transaction (:mod:`features.writer`) appends the good interactions to the day partitions,
upserts users and items by id, and sends every other row to ``store/quarantine`` with its
reason. For every table ``input_rows == accepted + quarantined + duplicates`` where a
duplicate is a valid row already in the store or repeated earlier in the same batch.

A file that cannot be read or lacks a required column raises
:class:`recsys.contract.ContractError` before anything touches the disk. A file whose
sha256 is already in the log is skipped. ``retry_quarantine`` runs the same validation
over the quarantined rows (an interaction whose item arrived since then now passes).

Right to erasure: rows of a user listed in ``store/tombstones.jsonl`` never enter the
store (they are counted as ``erased``: ``input_rows == accepted + quarantined + duplicates
+ erased``), and every ingest compacts users erased since the last compaction away, inside
its own transaction: the day partitions and quarantine files holding their rows are
rewritten without them as files of this run and retired by its log line, ``users.parquet``
is replaced without them, and their lines in the API's incoming segments are blanked.

Segments of stopped servers that are wholly in the store are deleted after a retention
period (:mod:`features.incoming`), so the folder does not grow with every server start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from features import poisoning, schemas, store, writer
from features.incoming import DEFAULT_KEEP_DAYS, abandoned, prune_consumed
from features.lock import StoreLocked, writer_lock
from features.poisoning import PoisonSettings
from features.validate import (
    QUARANTINE,
    RAW_LINE,
    REASON,
    ROW,
    SOURCE,
    TABLE,
    TORN,
    clean_text,
    typed,
    typed_table,
    validate_interactions,
    validate_items,
    validate_users,
)
from features.writer import recover
from recsys import provenance
from recsys.contract import ALL_COLUMNS, ContractError, Reason, check_columns, latest_event_time
from recsys.home import EngineHome
from recsys.settings import EngineSettings

__all__ = [
    "IngestSummary", "StoreLocked", "TableCounts", "ingest", "read_incoming", "recover", "retry_quarantine",
    "store_info", "writer_lock",
]

log = logging.getLogger(__name__)

ORIGIN = "ingest_id"  # the run that first quarantined a row
DATE = "__date"
INCOMING = "incoming"  # table name of rows that came through the API's segments
APP = "__app"  # the app an API line names as its source (recsys.provenance.SOURCE)
_META: dict[str, pl.DataType] = {
    ORIGIN: pl.String(), TABLE: pl.String(), SOURCE: pl.String(), ROW: pl.Int64(),
    RAW_LINE: pl.String(), TORN: pl.Boolean(), APP: pl.String(),
}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
CONFLICT_EXAMPLES = 5
"""How many conflicting ids an ingest summary names (it counts them all)."""


@dataclass
class TableCounts:
    """What happened to the rows of one table in one run."""

    input_rows: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    skipped_same_file: bool = False
    erased: int = 0
    """Rows of users erased on request: dropped, never stored."""
    conflicting_ids: int = 0
    """Ids (items, users) given by several valid rows of this run with different values; the last row wins."""
    conflict_examples: list[str] = field(default_factory=list)
    """Up to :data:`CONFLICT_EXAMPLES` of those ids, smallest first."""
    flagged: dict[str, int] = field(default_factory=dict)
    """Accepted rows flagged as likely poisoning (:mod:`features.poisoning`), per reason: stored, left out."""
    flagged_by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    """The same per source (app name or ``file:<name>``), then per reason."""

    @property
    def reconciles(self) -> bool:
        return self.input_rows == self.accepted + self.quarantined + self.duplicates + self.erased

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if not self.erased:  # the usual case keeps the usual shape
            del values["erased"]
        if not self.conflicting_ids:
            del values["conflicting_ids"], values["conflict_examples"]
        if not self.flagged:
            del values["flagged"], values["flagged_by_source"]
        return {**values, "reconciles": self.reconciles}


@dataclass
class IngestSummary:
    """The outcome of one ``ingest`` or ``retry_quarantine`` run."""

    ingest_id: str
    tables: dict[str, TableCounts]
    quarantine_file: Path | None
    committed: bool = False
    removed_segments: list[str] = field(default_factory=list)
    """Fully ingested API segments of stopped servers deleted by this run (:mod:`features.incoming`)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ingest_id": self.ingest_id,
            "committed": self.committed,
            "tables": {name: counts.to_dict() for name, counts in self.tables.items()},
            "quarantine_file": str(self.quarantine_file) if self.quarantine_file else None,
            "removed_segments": list(self.removed_segments),
            "rule": "input_rows = accepted + quarantined + duplicates (+ erased)",
        }


# --------------------------------------------------------------------------- inputs


@dataclass(eq=False)  # identity: inputs are compared by object
class _Input:
    """One provider file, read as strings (``frame`` is None when skipped as already ingested)."""

    table: str
    path: Path
    sha256: str
    frame: pl.DataFrame | None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def _as_text(name: str, dtype: pl.DataType, source: str) -> pl.Expr:
    """A Parquet column as the string a CSV would carry (times keep their zone, lists join on ``|``)."""
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:  # naive: read later in the settings' zone
            return column.dt.strftime("%Y-%m-%dT%H:%M:%S%.6f")
        return column.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    if isinstance(dtype, pl.Date):
        return column.dt.strftime("%Y-%m-%d")
    if isinstance(dtype, pl.List | pl.Array):
        if isinstance(dtype, pl.Array):
            column = column.arr.to_list()
        return column.list.eval(pl.element().cast(pl.String)).list.join("|")
    if dtype.is_numeric() or isinstance(dtype, pl.String | pl.Boolean | pl.Categorical | pl.Enum | pl.Null):
        return column.cast(pl.String)
    raise ContractError(source, f"column {name!r} has unsupported type {dtype}", column=name)


def _scan(path: Path) -> tuple[pl.LazyFrame, dict[str, pl.DataType]]:
    if _is_parquet(path):
        frame = pl.scan_parquet(path)
    else:
        frame = pl.scan_csv(
            path, infer_schema=False, separator="\t" if path.suffix.lower() == ".tsv" else ",",
            with_column_names=lambda names: [n.strip() for n in names],
        )
    return frame, dict(frame.collect_schema())


def read_table_file(table: str, path: Path) -> pl.DataFrame:
    """Read one provider file as strings with the contract's columns plus its row numbers.

    Raises :class:`ContractError` naming the file (and column) when the file cannot be read
    or lacks a required column. Extra columns are ignored; missing optional ones are null.
    """
    source = str(path)
    if not path.is_file():
        raise ContractError(source, "file not found")
    try:
        frame, schema = _scan(path)
        check_columns(table, source, list(schema))
        columns = [
            (_as_text(c, schema[c], source) if c in schema else pl.lit(None, pl.String)).alias(c)
            for c in ALL_COLUMNS[table]
        ]
        text = frame.select(columns).with_row_index(ROW, offset=1).collect()
    except ContractError:
        raise
    except (pl.exceptions.PolarsError, OSError, UnicodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ContractError(source, f"not readable as CSV or Parquet: {first_line}") from exc
    return text.with_columns(pl.col(ROW).cast(pl.Int64))


def _ingested_hashes(entries: Iterable[dict]) -> set[tuple[str, str]]:
    return {(s.get("table"), s.get("sha256")) for e in entries for s in e.get("sources", [])}


def _open_inputs(home: EngineHome, files: dict[str, Path | None]) -> list[_Input]:
    """Hash and read every requested file (no lock, nothing written)."""
    known = _ingested_hashes(store.ingest_log(home))
    inputs = []
    for table, path in files.items():
        if path is None:
            continue
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise ContractError(str(path), "file not found")
        sha = _sha256(path)
        frame = None if (table, sha) in known else read_table_file(table, path)
        inputs.append(_Input(table, path, sha, frame))
    return inputs


# --------------------------------------------------------------------------- incoming segments


@dataclass
class _Incoming:
    frame: pl.DataFrame
    offsets: dict[str, dict[str, int]]


def _committed_offsets(entries: Iterable[dict]) -> dict[str, dict[str, int]]:
    """Per segment, the furthest byte (and the line number after it) a committed run consumed."""
    done: dict[str, dict[str, int]] = {}
    for entry in entries:
        for name, span in entry.get("incoming", {}).items():
            if span["end"] >= done.get(name, {"end": -1})["end"]:
                done[name] = {"end": span["end"], "next_line": span["first_line"] + span["lines"]}
    return done


def _as_field_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _parse_lines(chunk: bytes, source: str, first_line: int) -> tuple[list[dict[str, Any]], int]:
    """Rows of complete lines (the chunk ends at a newline) and the number of lines consumed."""
    rows = []
    lines = chunk.split(b"\n")[:-1]
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        row: dict[str, Any] = {SOURCE: source, ROW: number, TORN: False, RAW_LINE: None, APP: None}
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            row.update({c: _as_field_text(record.get(c)) for c in ALL_COLUMNS["interactions"]})
            row[APP] = _as_field_text(record.get(provenance.SOURCE))
        except ValueError:  # also covers UnicodeDecodeError
            row.update({TORN: True, RAW_LINE: line.decode("utf-8", errors="replace")})
        rows.append(row)
    return rows, len(lines)


def _read_incoming_raw(home: EngineHome, entries: list[dict]) -> _Incoming:
    """New complete lines of every segment, from the committed offset up to the last newline."""
    done = _committed_offsets(entries)
    rows: list[dict[str, Any]] = []
    offsets: dict[str, dict[str, int]] = {}
    segments = sorted(home.incoming.glob("*.jsonl")) if home.incoming.exists() else []
    for segment in segments:
        start = done.get(segment.name, {}).get("end", 0)
        first_line = done.get(segment.name, {}).get("next_line", 1)
        size = segment.stat().st_size
        if size < start:
            log.warning("incoming segment %s shrank below its consumed offset; skipping it", segment)
            continue
        with open(segment, "rb") as fh:
            fh.seek(start)
            chunk = fh.read(size - start)
        complete = chunk.rfind(b"\n") + 1  # an unterminated last line waits for the next run...
        lines = chunk[:complete]
        if complete < len(chunk) and abandoned(segment):
            # ...unless its writer died mid-line: then it is torn for good and read as one last line.
            log.warning("the server writing %s died mid-line; its torn last line goes to quarantine", segment)
            lines, complete = chunk + b"\n", len(chunk)
        if complete == 0:
            continue
        parsed, consumed = _parse_lines(lines, str(segment), first_line)
        rows.extend(parsed)
        offsets[segment.name] = {"start": start, "end": start + complete, "first_line": first_line,
                                 "lines": consumed}
    columns = {c: pl.String() for c in ALL_COLUMNS["interactions"]}
    schema = {**columns, SOURCE: pl.String(), ROW: pl.Int64(), TORN: pl.Boolean(), RAW_LINE: pl.String(),
              APP: pl.String()}
    frame = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
    return _Incoming(frame, offsets)


# --------------------------------------------------------------------------- erasure


@dataclass(frozen=True)
class _Erasure:
    """Users erased on request, and those erased since the last compaction."""

    users: frozenset[str]
    new: frozenset[str]
    tombstones_end: int
    """Bytes of ``tombstones.jsonl`` read (complete lines only)."""
    compacted_end: int
    """Bytes of it that committed runs have already compacted away."""

    @property
    def pending(self) -> bool:
        return self.tombstones_end != self.compacted_end


def _erasure(home: EngineHome, entries: Iterable[dict]) -> _Erasure:
    compacted = max((int(e.get("erasure", {}).get("tombstones_end", 0)) for e in entries), default=0)
    data = home.tombstones.read_bytes() if home.tombstones.exists() else b""
    end = data.rfind(b"\n") + 1  # a line still being appended counts next time
    start = compacted if compacted <= end else 0  # a file rewritten by hand is read again whole
    return _Erasure(_tombstone_ids(data[:end]), _tombstone_ids(data[start:end]), end, compacted)


def _tombstone_ids(data: bytes) -> frozenset[str]:
    ids = set()
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("user_id"), str):
            ids.add(record["user_id"].strip())
    return frozenset(ids)


def _quoted(users: Iterable[str]) -> list[str]:
    """The JSON spellings of the ids, as they appear inside a raw (torn) line."""
    return sorted({json.dumps(u, ensure_ascii=ascii_only) for u in users for ascii_only in (False, True)})


def _erased_mask(users: frozenset[str], *, raw_line: bool) -> pl.Expr:
    """Rows of ``users``: by their user_id, or by a raw line that names one of them."""
    by_id = pl.col("user_id").str.strip_chars().is_in(sorted(users)).fill_null(False)
    if not raw_line:
        return by_id
    return by_id | pl.col(RAW_LINE).str.contains_any(_quoted(users)).fill_null(False)


def _drop_erased(frame: pl.DataFrame, erasure: _Erasure, dropped: dict[str, int]) -> pl.DataFrame:
    """``frame`` without the erased users' rows; counts them per source table into ``dropped``."""
    if not erasure.users or frame.height == 0:
        return frame
    mask = frame.select(_erased_mask(erasure.users, raw_line=RAW_LINE in frame.columns)).to_series()
    for table, n in frame.filter(mask).group_by(TABLE).len().iter_rows():
        dropped[table] = dropped.get(table, 0) + n
    return frame.filter(~mask)


def _count_erased(tables: dict[str, TableCounts], dropped: dict[str, int]) -> None:
    for table, n in dropped.items():
        counts = tables.setdefault(table, TableCounts())
        counts.input_rows += n
        counts.erased += n


@dataclass
class _Compaction:
    """What one run rewrites to remove users erased since the last compaction."""

    interactions: pl.DataFrame  # the other rows of the retired partition files, plus DATE
    quarantine: pl.DataFrame  # the other rows of the replaced quarantine files
    retires: list[str] = field(default_factory=list)  # partition files, relative to the store
    quarantine_replaces: list[str] = field(default_factory=list)  # quarantine file stems
    users: pl.DataFrame | None = None  # users.parquet without them, when it holds any


def _no_compaction() -> _Compaction:
    return _Compaction(pl.DataFrame(schema={**schemas.STORED_INTERACTIONS, DATE: pl.String()}),
                       pl.DataFrame(schema=QUARANTINE))


def _compaction(home: EngineHome, erasure: _Erasure) -> _Compaction:
    """Find the files holding rows of newly erased users, and what remains of them."""
    result = _no_compaction()
    if not erasure.new:
        return result
    path = "__file"
    files = store.interaction_files(home)
    if files:
        hits = store.scan_parquet_as(files, schemas.STORED_INTERACTIONS, include_file_paths=path).filter(
            _erased_mask(erasure.new, raw_line=False)).select(pl.col(path).unique()).collect()[path].to_list()
        if hits:
            kept = store.scan_parquet_as(sorted(hits), schemas.STORED_INTERACTIONS, include_file_paths=path).filter(
                ~_erased_mask(erasure.users, raw_line=False)).collect()
            day = pl.col(path).map_elements(lambda f: Path(f).parent.name.removeprefix("date="), pl.String)
            result.interactions = kept.select([*schemas.STORED_INTERACTIONS, day.alias(DATE)])
            result.retires = sorted(Path(f).relative_to(home.store).as_posix() for f in hits)
    quarantine = store.quarantine_files(home)
    if quarantine:
        hits = pl.scan_parquet(quarantine, include_file_paths=path).filter(
            _erased_mask(erasure.new, raw_line=True)).select(pl.col(path).unique()).collect()[path].to_list()
        if hits:
            result.quarantine = pl.scan_parquet(sorted(hits)).select(list(QUARANTINE)).filter(
                ~_erased_mask(erasure.users, raw_line=True)).collect()
            result.quarantine_replaces = sorted(Path(f).stem for f in hits)
    if home.users.exists() and pl.scan_parquet(home.users).filter(
            _erased_mask(erasure.users, raw_line=False)).select(pl.len()).collect().item():
        result.users = store.scan_users(home).collect()  # the store reads them without the erased
    return result


def _blank_erased_lines(home: EngineHome, spans: dict[str, tuple[int, int]], users: frozenset[str]) -> int:
    """Overwrite the erased users' complete lines in these byte ranges of the incoming segments.

    Spaces of the same length keep every offset and line number the ingest log recorded, and a
    blank line is no row. A server appending to a segment only writes past the ranges given
    (they end at a newline the ingest has read), so the two never touch the same bytes.
    """
    blanked = 0
    for name, (start, end) in sorted(spans.items()):
        segment = home.incoming / name
        if not segment.exists() or end <= start:
            continue
        with open(segment, "r+b") as fh:
            fh.seek(start)
            chunk = fh.read(end - start)
            pieces = chunk.split(b"\n")
            if pieces[-1] and not abandoned(segment):
                pieces = pieces[:-1]  # a line still being written is not ours to touch
            offset, changed = start, False
            for line in pieces:
                if line.strip() and _line_is_erased(line, users):
                    os.pwrite(fh.fileno(), b" " * len(line), offset)
                    blanked += 1
                    changed = True
                offset += len(line) + 1
            if changed:
                os.fsync(fh.fileno())
    return blanked


def _line_is_erased(line: bytes, users: frozenset[str]) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # a torn line: erased if it names one of them
        text = line.decode("utf-8", errors="replace")
        return any(quoted in text for quoted in _quoted(users))
    user_id = record.get("user_id") if isinstance(record, dict) else None
    return isinstance(user_id, str) and user_id.strip() in users


def _segment_spans(home: EngineHome, entries: list[dict], incoming: _Incoming | None,
                   erasure: _Erasure) -> dict[str, tuple[int, int]]:
    """Byte ranges of the segments to clean: what this run read, and, when users were newly
    erased, everything ingested so far."""
    spans = {name: (span["start"], span["end"]) for name, span in (incoming.offsets if incoming else {}).items()}
    if erasure.new:
        for name, done in _committed_offsets(entries).items():
            spans[name] = (0, max(done["end"], spans.get(name, (0, 0))[1]))
        spans = {name: (0, end) for name, (_, end) in spans.items()}
    return spans


# --------------------------------------------------------------------------- validation job

STATUS = "__status"
_INDEX = "__index"


def _raw(frame: pl.DataFrame | None, contract: str, **meta: Any) -> pl.DataFrame:
    """Meta columns (``meta`` fills the absent ones) and every column of ``contract`` as strings."""
    columns = ALL_COLUMNS[contract]
    schema = {**_META, **{c: pl.String() for c in columns}}
    if frame is None or frame.height == 0:
        return pl.DataFrame(schema=schema)
    defaults = {TORN: False, **meta}
    return frame.select([
        (pl.col(name) if name in frame.columns else pl.lit(defaults.get(name))).cast(dtype).alias(name)
        for name, dtype in schema.items()
    ])


@dataclass
class _Batch:
    """The raw rows of one run per stored table (interactions include the API's lines)."""

    items: pl.DataFrame
    users: pl.DataFrame
    interactions: pl.DataFrame


@dataclass
class _Outcome:
    """What one run would change, computed before anything is written."""

    counts: dict[str, TableCounts]
    interactions: pl.DataFrame  # accepted rows in the stored schema plus the partition date
    quarantine: pl.DataFrame
    items: pl.DataFrame | None  # the whole new table, or None when unchanged
    users: pl.DataFrame | None


def _evaluate(home: EngineHome, batch: _Batch, settings: EngineSettings,
              poison: PoisonSettings | None = None) -> _Outcome:
    """Validate and de-duplicate a batch against the current store, flag likely poisoning among
    the accepted interactions (:mod:`features.poisoning`); count every row's fate."""
    tz = settings.timezone
    items = validate_items(batch.items.lazy(), tz)
    users = validate_users(batch.users.lazy(), tz)
    # The catalog an interaction must match: the store's items plus this batch's valid ones.
    new_items = items.filter(pl.col(REASON).is_null()).select(pl.col(typed("item_id")).alias("item_id"))
    catalog = pl.concat([store.scan_items(home).select("item_id"), new_items])
    latest = latest_event_time(settings.max_future_skew_days)  # this machine's clock, read once per run
    interactions = validate_interactions(batch.interactions.lazy(), catalog, tz, latest=latest,
                                         rating_scale=(settings.rating_min, settings.rating_max)).with_columns(
        pl.col(typed("ts")).dt.convert_time_zone(tz).dt.strftime("%Y-%m-%d").alias(DATE)
    )
    current_items, current_users = store.scan_items(home), store.scan_users(home)
    items_df, users_df, interactions_df, current_items_df, current_users_df = pl.collect_all(
        [items, users, interactions, current_items, current_users]
    )
    interactions_df = _interaction_status(home, interactions_df)
    conflicts = {"items": _conflicts(items_df, "items", "item_id"), "users": _conflicts(users_df, "users", "user_id")}
    items_df, items_table = _upsert(items_df, current_items_df, "items", "item_id")
    users_df, users_table = _upsert(users_df, current_users_df, "users", "user_id")
    checked = (items_df, users_df, interactions_df)
    accepted = interactions_df.filter(pl.col(STATUS) == "accepted")
    users_after = users_table if users_table is not None else current_users_df if home.users.exists() else None
    stored = _with_provenance(home, accepted, users_after, poison)
    counts = _count(checked)
    _count_flagged(counts, accepted[TABLE], stored)
    for table, (n, examples) in conflicts.items():
        if n:
            counts[table].conflicting_ids, counts[table].conflict_examples = n, examples
            log.info("%d %s ids were given different values in one run (last row wins), e.g. %s",
                     n, table, ", ".join(examples))
    return _Outcome(
        counts=counts,
        interactions=stored.with_columns(accepted[DATE]),
        quarantine=pl.concat([_quarantine_rows(df) for df in checked]),
        items=items_table,
        users=users_table,
    )


def _with_provenance(home: EngineHome, accepted: pl.DataFrame, users: pl.DataFrame | None,
                     poison: PoisonSettings | None) -> pl.DataFrame:
    """The accepted interactions as stored: typed contract columns, their source and their flag."""
    rows = typed_table(accepted.lazy(), "interactions").collect().with_columns(_source_of(accepted))
    history = store.scan_interactions(home, lift_known_users=False)
    return rows.with_columns(poisoning.flag_rows(rows, history, users, poison))


def _source_of(accepted: pl.DataFrame) -> pl.Series:
    """Who sent each row: the app an API line names, else ``file:<name>`` of its file."""
    files = {path: provenance.file_source(path) for path in accepted[SOURCE].drop_nulls().unique().to_list()}
    by_app = pl.coalesce(clean_text(APP), pl.lit(provenance.UNKNOWN_API_SOURCE))
    by_file = pl.col(SOURCE).replace_strict(files, default=None, return_dtype=pl.String)
    return accepted.select(
        pl.when(pl.col(TABLE) == INCOMING).then(by_app).otherwise(by_file).alias(provenance.SOURCE)
    ).to_series()


def _count_flagged(counts: dict[str, TableCounts], tables: pl.Series, stored: pl.DataFrame) -> None:
    """Add the flagged rows per source table, reason and source to ``counts``."""
    flagged = stored.select(provenance.SOURCE, provenance.FLAG).with_columns(tables.alias(TABLE)).filter(
        pl.col(provenance.FLAG).is_not_null())
    for table, source, flag, n in flagged.group_by(TABLE, provenance.SOURCE, provenance.FLAG).len().sort(
            TABLE, provenance.SOURCE, provenance.FLAG, nulls_last=True).iter_rows():
        entry = counts.setdefault(table, TableCounts())
        entry.flagged[flag] = entry.flagged.get(flag, 0) + n
        by_source = entry.flagged_by_source.setdefault(source or provenance.UNKNOWN_API_SOURCE, {})
        by_source[flag] = by_source.get(flag, 0) + n


def _status(duplicate: pl.Expr) -> pl.Expr:
    return (
        pl.when(pl.col(REASON).is_not_null()).then(pl.lit("quarantined"))
        .when(duplicate).then(pl.lit("duplicates"))
        .otherwise(pl.lit("accepted"))
        .alias(STATUS)
    )


def _interaction_status(home: EngineHome, checked: pl.DataFrame) -> pl.DataFrame:
    """Mark valid interactions seen earlier in the batch or already stored as duplicates."""
    key = [typed(c) for c in schemas.INTERACTIONS]
    checked = checked.with_row_index(_INDEX)
    valid = checked.filter(pl.col(REASON).is_null())
    repeated = valid.filter(~pl.struct(key).is_first_distinct())[_INDEX]
    candidates = valid.filter(~pl.col(_INDEX).is_in(repeated.implode()))
    dates = set(candidates[DATE].unique().to_list())
    files = [f for f in store.interaction_files(home) if f.parent.name.removeprefix("date=") in dates]
    stored_ids = pl.Series(_INDEX, [], dtype=pl.UInt32)
    if files and candidates.height:
        stored = store.scan_files(files, schemas.INTERACTIONS).select(  # names a file it cannot read
            [pl.col(c).cast(t).alias(typed(c)) for c, t in schemas.INTERACTIONS.items()]
        ).unique()
        stored_ids = candidates.lazy().join(stored, on=key, how="semi", nulls_equal=True).select(
            _INDEX).collect()[_INDEX]
    duplicate = pl.col(_INDEX).is_in(pl.concat([repeated, stored_ids]).implode())
    return checked.with_columns(_status(duplicate)).drop(_INDEX)


def _upsert(checked: pl.DataFrame, current: pl.DataFrame, table: str, key: str
            ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Status of each users/items row and the table after the upsert (None if unchanged).

    A valid row is a duplicate when it equals the state of its id just before it: the
    previous valid row with that id in the batch, or else the stored row. The last valid
    row of each id wins, so the result matches applying the rows in order.
    """
    stored_schema = schemas.SCHEMAS[table]
    record = pl.struct([pl.col(typed(c)).cast(t) for c, t in stored_schema.items()])
    previous_stored = current.select(
        pl.col(key).alias(typed(key)),
        pl.struct([pl.col(c).cast(t).alias(typed(c)) for c, t in stored_schema.items()]).alias("__stored"),
    )
    checked = checked.with_row_index(_INDEX)
    valid = checked.filter(pl.col(REASON).is_null()).join(
        previous_stored, on=typed(key), how="left", maintain_order="left"
    ).with_columns(record.alias("__record"))
    previous = (
        pl.when(pl.col(typed(key)).is_first_distinct()).then(pl.col("__stored"))
        .otherwise(pl.col("__record").shift(1).over(typed(key)))
    )
    repeated = valid.filter(pl.col("__record").eq_missing(previous))[_INDEX]
    checked = checked.with_columns(_status(pl.col(_INDEX).is_in(repeated.implode()))).drop(_INDEX)
    if checked.filter(pl.col(STATUS) == "accepted").height == 0:
        return checked, None
    latest = typed_table(valid.lazy(), table).unique(subset=key, keep="last", maintain_order=True).collect()
    kept = current.filter(~pl.col(key).is_in(latest[key].implode()))
    return checked, pl.concat([kept, latest]).sort(key)


def _conflicts(validated: pl.DataFrame, table: str, key: str) -> tuple[int, list[str]]:
    """Ids with valid rows of different values in this batch: how many, and the first few.

    Last-wins still decides (:func:`_upsert`); this only makes the disagreement visible, since
    two providers describing one event differently is worth a look.
    """
    record = pl.struct([pl.col(typed(c)).cast(t) for c, t in schemas.SCHEMAS[table].items()])
    ids = (
        validated.filter(pl.col(REASON).is_null())
        .group_by(typed(key)).agg(record.n_unique().alias("__versions"))
        .filter(pl.col("__versions") > 1)[typed(key)].sort()
    )
    return ids.len(), ids.head(CONFLICT_EXAMPLES).to_list()


def _count(checked: Iterable[pl.DataFrame]) -> dict[str, TableCounts]:
    """Per source table: rows by status, and quarantined rows by reason."""
    counts: dict[str, TableCounts] = {}
    for frame in checked:
        for table, status, n in frame.group_by(TABLE, STATUS, maintain_order=True).len().iter_rows():
            entry = counts.setdefault(table, TableCounts())
            entry.input_rows += n
            setattr(entry, status, getattr(entry, status) + n)
        reasons = frame.filter(pl.col(STATUS) == "quarantined").group_by(TABLE, REASON).len()
        for table, reason, n in reasons.sort("len", REASON, descending=[True, False]).iter_rows():
            counts[table].reasons[reason] = n
    return counts


def _quarantine_rows(checked: pl.DataFrame) -> pl.DataFrame:
    bad = checked.filter(pl.col(STATUS) == "quarantined")
    return bad.select([
        (pl.col(c) if c in bad.columns else pl.lit(None)).cast(t).alias(c) for c, t in QUARANTINE.items()
    ])


# --------------------------------------------------------------------------- writing


def _write(home: EngineHome, ingest_id: str, outcome: _Outcome, entry: dict,
           compaction: _Compaction | None = None) -> Path | None:
    """Write the outcome (and what a compaction keeps) as one transaction; returns the quarantine file."""
    compaction = compaction or _no_compaction()
    tx = writer.Transaction(home, ingest_id)
    partitions: list[str] = []
    quarantine_file = None
    quarantine = pl.concat([outcome.quarantine, compaction.quarantine])
    users = outcome.users if outcome.users is not None else compaction.users
    try:
        ordered = pl.concat([outcome.interactions, compaction.interactions]).sort(DATE, "ts", "user_id", "item_id")
        for (date,), part in ordered.partition_by(DATE, as_dict=True, maintain_order=True).items():
            relative = f"interactions/date={date}/{ingest_id}.parquet"
            tx.write(part.drop(DATE), relative)
            partitions.append(relative)
        if quarantine.height:
            quarantine_file = tx.write(quarantine, f"quarantine/{ingest_id}.parquet")
        for frame, target in ((outcome.items, home.items), (users, home.users)):
            if frame is not None:
                tx.stage(frame, target)
    except Exception:
        tx.abort()
        raise
    replaced = [name for name, frame in (("items", outcome.items), ("users", users)) if frame is not None]
    entry["files"] = {
        "interactions": partitions,
        "quarantine": f"quarantine/{ingest_id}.parquet" if quarantine_file else None,
        "replaced": replaced,
    }
    if compaction.retires:
        entry["retires"] = compaction.retires
    if compaction.quarantine_replaces:
        entry["quarantine_replaces"] = [*entry.get("quarantine_replaces", []), *compaction.quarantine_replaces]
    tx.commit(entry)
    return quarantine_file


def _entry(kind: str, counts: dict[str, TableCounts], **extra: Any) -> dict:
    return {
        "kind": kind,
        "time": datetime.now(UTC).isoformat(),
        "tables": {name: c.to_dict() for name, c in counts.items()},
        **extra,
    }


# --------------------------------------------------------------------------- public jobs


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
) -> IngestSummary:
    """Validate provider files and the API's new lines and append them to the store.

    Afterwards, segments of stopped servers that are fully in the store and were last
    written more than ``keep_incoming_days`` ago are deleted (:mod:`features.incoming`).
    Raises :class:`ContractError` (nothing written) for an unreadable file or a missing
    required column, and :class:`StoreLocked` when another writer holds the store longer
    than ``wait_seconds``.
    """
    settings = settings or EngineSettings()
    inputs = _open_inputs(home, {"interactions": interactions, "users": users, "items": items})
    with writer_lock(home, wait_seconds=wait_seconds, command="recsys ingest"):
        recover(home)
        entries = store.ingest_log(home)
        known = _ingested_hashes(entries)
        fresh = [i for i in inputs if i.frame is not None and (i.table, i.sha256) not in known]
        incoming = _read_incoming_raw(home, entries) if include_incoming else None
        erasure = _erasure(home, entries)
        ingest_id = writer.new_ingest_id()
        tables = {i.table: TableCounts(skipped_same_file=i not in fresh) for i in inputs}
        summary = IngestSummary(ingest_id, tables, None)
        for skipped in (i for i in inputs if i not in fresh):
            log.info("%s already ingested (sha256 %s); skipping it", skipped.path, skipped.sha256[:12])
        has_lines = bool(incoming and incoming.offsets)
        if not fresh and not has_lines and not erasure.pending:
            summary.removed_segments = _prune_incoming(home, entries, keep_incoming_days)
            return summary
        frames = {i.table: _raw(i.frame, i.table, ingest_id=ingest_id, table=i.table, source=str(i.path))
                  for i in fresh}
        file_interactions = frames.get("interactions", _raw(None, "interactions"))
        api_lines = _raw(incoming.frame if incoming else None, "interactions", ingest_id=ingest_id, table=INCOMING)
        dropped: dict[str, int] = {}
        batch = _Batch(
            items=frames.get("items", _raw(None, "items")),
            users=_drop_erased(frames.get("users", _raw(None, "users")), erasure, dropped),
            interactions=_drop_erased(pl.concat([file_interactions, api_lines]), erasure, dropped),
        )
        outcome = _evaluate(home, batch, settings, poison)
        summary.tables.update(outcome.counts)
        _count_erased(summary.tables, dropped)
        if has_lines:
            summary.tables.setdefault(INCOMING, TableCounts())
        compaction = _compaction(home, erasure)
        entry = _entry(
            "ingest" if fresh or has_lines else "erasure", summary.tables,
            sources=[{"table": i.table, "path": str(i.path), "sha256": i.sha256} for i in fresh],
            incoming=incoming.offsets if incoming else {},
        )
        if erasure.users:
            # Before the commit: blanking an erased user's line is right whatever this run becomes.
            blanked = _blank_erased_lines(home, _segment_spans(home, entries, incoming, erasure), erasure.users)
            if erasure.pending:
                entry["erasure"] = {"tombstones_end": erasure.tombstones_end, "erased_users": len(erasure.new),
                                    "retired_files": len(compaction.retires) + len(compaction.quarantine_replaces),
                                    "blanked_lines": blanked}
        summary.quarantine_file = _write(home, ingest_id, outcome, entry, compaction)
        summary.committed = True
        summary.removed_segments = _prune_incoming(home, store.ingest_log(home), keep_incoming_days)
    _log_summary(summary)
    return summary


def _prune_incoming(home: EngineHome, entries: list[dict], keep_days: float) -> list[str]:
    committed = {name: done["end"] for name, done in _committed_offsets(entries).items()}
    return prune_consumed(home.incoming, committed, keep_days)


def retry_quarantine(home: EngineHome, settings: EngineSettings | None = None, *,
                     wait_seconds: float = 0, poison: PoisonSettings | None = None) -> IngestSummary:
    """Validate every quarantined row again; rows that pass now join the store.

    The rows still failing are committed as one new quarantine file that replaces the old
    ones in the same log line, so counts always reconcile: per table, ``input_rows`` (rows
    that were in quarantine) = accepted + quarantined (still) + duplicates.
    """
    settings = settings or EngineSettings()
    with writer_lock(home, wait_seconds=wait_seconds, command="recsys ingest --retry-quarantine"):
        recover(home)
        files = store.quarantine_files(home)
        rows = store.scan_quarantine(home).collect()
        ingest_id = writer.new_ingest_id()
        summary = IngestSummary(ingest_id, {}, None)
        if rows.height == 0:
            return summary
        dropped: dict[str, int] = {}
        kept = _drop_erased(rows, _erasure(home, store.ingest_log(home)), dropped)
        table = pl.col(TABLE)
        interactions = kept.filter(table.is_in(["interactions", INCOMING])).with_columns(
            (pl.col(REASON) == Reason.TORN_LINE.value).alias(TORN)
        )
        batch = _Batch(
            items=_raw(kept.filter(table == "items"), "items"),
            users=_raw(kept.filter(table == "users"), "users"),
            interactions=_raw(interactions, "interactions"),
        )
        outcome = _evaluate(home, batch, settings, poison)
        summary.tables = outcome.counts
        _count_erased(summary.tables, dropped)
        unchanged = outcome.quarantine.height == rows.height and (
            sorted(outcome.quarantine[REASON].to_list()) == sorted(rows[REASON].to_list())
        )
        if unchanged:  # nothing left quarantine: keep the files as they are
            return summary
        entry = _entry("retry", summary.tables, quarantine_replaces=[f.stem for f in files])
        summary.quarantine_file = _write(home, ingest_id, outcome, entry)
        summary.committed = True
    _log_summary(summary)
    return summary


def _log_summary(summary: IngestSummary) -> None:
    for name, c in summary.tables.items():
        log.info("%s %s: %d in = %d accepted + %d quarantined + %d duplicates", summary.ingest_id, name,
                 c.input_rows, c.accepted, c.quarantined, c.duplicates)


def read_incoming(home: EngineHome, settings: EngineSettings | None = None
                  ) -> tuple[pl.DataFrame, dict[str, int]]:
    """Interactions the API has appended since the last ingest, validated but not stored.

    Returns the valid, new rows (schema :data:`features.schemas.INTERACTIONS`) and, per
    segment file name, the byte offset they were read up to. Rows that would go to
    quarantine, rows already stored and rows of erased users are left out. Takes no lock and writes nothing.
    """
    settings = settings or EngineSettings()
    entries = store.ingest_log(home)
    incoming = _read_incoming_raw(home, entries)
    if not incoming.offsets:
        return schemas.empty("interactions"), {}
    lines = _raw(incoming.frame, "interactions", table=INCOMING, ingest_id="")
    batch = _Batch(_raw(None, "items"), _raw(None, "users"), _drop_erased(lines, _erasure(home, entries), {}))
    outcome = _evaluate(home, batch, settings)
    rows = outcome.interactions.select(list(schemas.INTERACTIONS))
    return rows, {name: span["end"] for name, span in incoming.offsets.items()}


def store_info(home: EngineHome) -> dict:
    """Counts, date range and quarantine breakdown of a store (reads only; never creates it)."""
    interactions = store.scan_interactions(home)
    jobs = [
        interactions.select(pl.len().alias("n"), pl.col("ts").min().alias("first"),
                            pl.col("ts").max().alias("last")),
        interactions.group_by("action").len().sort("action"),
        store.scan_users(home).select(pl.len().alias("n")),
        store.scan_items(home).group_by("kind").len().sort("kind", nulls_last=True),
        store.scan_quarantine(home).group_by(REASON).len().sort(REASON),
    ]
    totals, actions, users, kinds, quarantine = pl.collect_all(jobs)
    flags = _flag_info(home)
    entries = store.ingest_log(home)
    pending = _pending_incoming_bytes(home, entries)
    first, last = totals["first"][0], totals["last"][0]
    return {
        "home": str(home.root),
        "interactions": int(totals["n"][0]),
        "users": int(users["n"][0]),
        "items": int(kinds["len"].sum()),
        "date_range": {"first": first.isoformat() if first else None,
                       "last": last.isoformat() if last else None},
        "interactions_by_action": dict(actions.iter_rows()),
        "items_by_kind": {("unknown" if k is None else str(k)): n for k, n in kinds.iter_rows()},
        "quarantine": {"rows": int(quarantine["len"].sum()), "by_reason": dict(quarantine.iter_rows())},
        **flags,
        "ingests": sum(1 for e in entries if e.get("kind", "ingest") == "ingest"),
        "quarantine_retries": sum(1 for e in entries if e.get("kind") == "retry"),
        "last_ingest": entries[-1].get("time") if entries else None,
        "incoming_pending_bytes": pending,
    }


def _flag_info(home: EngineHome) -> dict[str, dict[str, Any]]:
    """``flagged`` (as ingest flagged them, per reason and per source) and ``left_out`` (what
    training and the report leave out now: an ``unknown_user`` flag lifts once the users table
    lists the user), each with its row count."""
    raw = store.scan_interactions(home, lift_known_users=False).filter(pl.col(provenance.FLAG).is_not_null())
    by_reason, by_source, now = pl.collect_all([
        poisoning.left_out(raw),
        raw.group_by(provenance.SOURCE, provenance.FLAG).len().sort(provenance.SOURCE, provenance.FLAG),
        poisoning.left_out(store.scan_interactions(home)),
    ])
    sources: dict[str, dict[str, int]] = {}
    for source, flag, n in by_source.iter_rows():
        sources.setdefault(source or provenance.UNKNOWN_API_SOURCE, {})[flag] = n
    return {
        "flagged": {"rows": int(by_reason["rows"].sum()), "by_reason": dict(by_reason.iter_rows()),
                    "by_source": sources},
        "left_out": {"rows": int(now["rows"].sum()), "by_reason": dict(now.iter_rows())},
    }


def _pending_incoming_bytes(home: EngineHome, entries: list[dict]) -> int:
    if not home.incoming.exists():
        return 0
    done = _committed_offsets(entries)
    return sum(max(seg.stat().st_size - done.get(seg.name, {}).get("end", 0), 0)
               for seg in home.incoming.glob("*.jsonl"))
