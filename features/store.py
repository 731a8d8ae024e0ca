"""Reading the store: the validated tables as polars LazyFrames.

Commit rule: a data file written by ingest is named after its ingest id
(``interactions/date=YYYY-MM-DD/<ingest-id>.parquet``) and counts only once a line for that
id is in ``ingest_log.jsonl``. Readers therefore never see half an ingest, whatever point a
crash interrupted it at; a file retired by a later committed run (``retires`` in its log
line: an erasure compaction rewrote it) no longer counts. Erased users
(``tombstones.jsonl``) are filtered out on read until the next ingest compacts them away.

Trust: since the log decides what counts, a log that is missing, empty or unreadable while
data files exist says nothing about them, and neither does one that lost committed lines
(data files of more than one run without a line, or of a run older than a committed one:
:func:`writer.recover <features.writer.recover>` only ever leaves the files of the one run
that crashed last). Reading such a store raises :class:`StoreDamaged` instead of answering
"0 interactions", and no writer deletes anything until ``recsys store-repair`` rebuilt the
log. A torn last line without newline is a crash mid-append, not damage. A data file that
cannot be read is named (:class:`StoreDamaged`) rather than surfacing as a polars error.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from polars.io.plugins import register_io_source

from features import poisoning, schemas
from features.validate import QUARANTINE
from recsys import appendlog
from recsys.home import EngineHome

log = logging.getLogger(__name__)

REPAIR_HINT = ("nothing was deleted; run `recsys store-verify` to see every problem and `recsys store-repair` "
               "to rebuild the ingest log from the data files")
VERIFY_HINT = "run `recsys store-verify` to check every file of the store"
RUN_ID = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}")
"""The shape of ids made by :func:`features.writer.new_ingest_id` (time-ordered as strings)."""


class StoreDamaged(ValueError):
    """The store cannot be read as it is (its log or one of its files); nothing was changed."""


@dataclass(frozen=True)
class LogRead:
    """The ingest log as found on disk, read leniently."""

    exists: bool
    entries: list[dict] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)
    """Line numbers of complete lines that are not a JSON object with an ``ingest_id``."""
    torn_tail: bool = False
    """The last line has no newline and does not parse: a crash mid-append."""


def read_log(home: EngineHome) -> LogRead:
    """Every readable line of the ingest log, and which lines are not (reads only)."""
    path = home.ingest_log
    if not path.exists():
        return LogRead(exists=False)
    read = appendlog.read_all_lines(path)
    entries, bad, torn = [], [], False
    for number, line in enumerate(read.lines, start=1):
        if not line.strip():
            continue
        entry = _log_entry(line)
        if entry is None:
            bad.append(number)
        else:
            entries.append(entry)
    if read.tail.strip():
        entry = _log_entry(read.tail)
        if entry is not None:  # whole but for its newline: the writer's next recover() finishes it
            entries.append(entry)
        else:  # the writer's next recover() cuts it
            log.debug("skipping the torn last line of %s (a crash mid-append)", path)
            torn = True
    return LogRead(exists=True, entries=entries, bad_lines=bad, torn_tail=torn)


def _log_entry(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("ingest_id"), str):
        return None
    return entry


def run_files(home: EngineHome) -> list[Path]:
    """Every interaction partition and quarantine file on disk, committed or not."""
    found: list[Path] = []
    if home.interactions.exists():
        found += sorted(home.interactions.glob("date=*/*.parquet"))
    if home.quarantine.exists():
        found += sorted(home.quarantine.glob("*.parquet"))
    return found


def table_files(home: EngineHome) -> list[Path]:
    """``items.parquet`` and ``users.parquet``, those that exist."""
    return [path for path in (home.items, home.users) if path.exists()]


def doubt(home: EngineHome, read: LogRead) -> str | None:
    """Why the log cannot be trusted to say which data files count (None when it can)."""
    if read.bad_lines:
        shown = ", ".join(map(str, read.bad_lines[:5]))
        return f"{home.ingest_log} cannot be read (line {shown} is not a log entry)"
    files = run_files(home)
    if not files and not table_files(home):
        return None
    example = (files or table_files(home))[0]
    if not read.exists or not read.entries:
        state = "missing" if not read.exists else "empty"
        return (f"{home.ingest_log} is {state} but the store holds data files "
                f"({len(files) + len(table_files(home))}, e.g. {example})")
    committed = {entry["ingest_id"] for entry in read.entries}
    orphans = sorted({path.stem for path in files} - committed)
    newest = max((i for i in committed if RUN_ID.fullmatch(i)), default=None)
    lost = len(orphans) > 1 or (
        len(orphans) == 1 and RUN_ID.fullmatch(orphans[0]) is not None and newest is not None and orphans[0] < newest)
    if lost:
        example = next(path for path in files if path.stem in orphans)
        return (f"{home.ingest_log} lacks the lines of {len(orphans)} ingest run(s) whose data files are in the "
                f"store (e.g. {example}); only the last run to crash can leave files without a line")
    return None


def ingest_log(home: EngineHome) -> list[dict]:
    """Every committed ingest, oldest first.

    Raises :class:`StoreDamaged` when the log cannot be trusted with the data files on disk
    (:func:`doubt`): a reader would otherwise show an empty store and a writer delete it.
    """
    read = read_log(home)
    problem = doubt(home, read)
    if problem is not None:
        raise StoreDamaged(f"{problem}; {REPAIR_HINT}")
    return read.entries


def committed_ingest_ids(home: EngineHome) -> set[str]:
    return {entry["ingest_id"] for entry in ingest_log(home) if "ingest_id" in entry}


def erased_users(home: EngineHome) -> set[str]:
    """Users erased on request whose rows may still sit in data files (:mod:`recsys.appendlog`'s rule)."""
    return {tombstone.user_id for tombstone in appendlog.read_tombstones(home.tombstones)[0]}


def retired_files(entries: list[dict]) -> set[str]:
    """Data files (relative to the store) that a committed run replaced (erasure compaction)."""
    return {path for entry in entries for path in entry.get("retires", [])}


def interaction_files(home: EngineHome) -> list[Path]:
    """Committed interaction partition files that no later run retired, in a stable order."""
    if not home.interactions.exists():
        return []
    entries = ingest_log(home)
    committed = {entry["ingest_id"] for entry in entries if "ingest_id" in entry}
    retired = retired_files(entries)
    files = sorted(home.interactions.glob("date=*/*.parquet"))
    return [f for f in files if f.stem in committed and f.relative_to(home.store).as_posix() not in retired]


def scan_interactions(home: EngineHome, *, lift_known_users: bool = True) -> pl.LazyFrame:
    """All committed interactions (schema :data:`features.schemas.STORED_INTERACTIONS`: the
    contract's columns plus ``source`` and ``flag``, null in files written before them).

    An ``unknown_user`` flag reads as null once the users table lists the user
    (:func:`features.poisoning.lift_known_users`); ``lift_known_users=False`` shows the flags
    as ingest wrote them.
    """
    files = interaction_files(home)
    if not files:
        return pl.DataFrame(schema=schemas.STORED_INTERACTIONS).lazy()
    frame = _without_erased(scan_files(files, schemas.STORED_INTERACTIONS), home)
    if lift_known_users and home.users.exists():
        frame = poisoning.lift_known_users(frame, scan_users(home))
    return frame


def scan_users(home: EngineHome) -> pl.LazyFrame:
    """The users table (schema :data:`features.schemas.USERS`)."""
    if not home.users.exists():
        return schemas.empty("users").lazy()
    return _without_erased(scan_files([home.users], schemas.USERS), home)


def scan_items(home: EngineHome) -> pl.LazyFrame:
    """The catalog (schema :data:`features.schemas.ITEMS`)."""
    if not home.items.exists():
        return schemas.empty("items").lazy()
    return scan_files([home.items], schemas.ITEMS)


def scan_files(files: list[Path], schema: Mapping[str, pl.DataType]) -> pl.LazyFrame:
    """A lazy scan of store Parquet files in ``schema`` that names the file it cannot read.

    The files are read by one native multi-file scan (projection, filter and row limit pushed
    down) when the frame is collected, wherever that happens (training, report, ingest). If
    it fails, each file is read on its own to find the one to blame, and :class:`StoreDamaged`
    names it instead of a polars error about "the parquet file".
    """
    paths = list(files)

    def source(with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
               _batch_size: int | None) -> Iterator[pl.DataFrame]:
        frame = scan_parquet_as(paths, schema).select([pl.col(c).cast(t) for c, t in schema.items()])
        if with_columns is not None:
            frame = frame.select(with_columns)
        if predicate is not None:
            frame = frame.filter(predicate)
        if n_rows is not None:
            frame = frame.head(n_rows)
        try:
            result = frame.collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            # columns added later may be absent from a healthy file (written before them)
            needed = [c for c in with_columns or list(schema) if c not in schemas.ADDED_LATER]
            culprit = _first_unreadable(paths, needed)
            if culprit is None:  # no single file is to blame: the original error says more
                raise
            raise StoreDamaged(f"cannot read store file {culprit[0]}: {culprit[1]}; {VERIFY_HINT}") from exc
        yield result

    return register_io_source(source, schema=dict(schema), is_pure=True, explain_name="store files")


def scan_parquet_as(paths: list[Path], schema: Mapping[str, pl.DataType],
                    include_file_paths: str | None = None) -> pl.LazyFrame:
    """A plain polars scan of store files in ``schema``: columns a file has beyond it are
    ignored, and when ``schema`` holds columns added to the store later
    (:data:`features.schemas.ADDED_LATER`), a file written before them reads them as nulls."""
    if not set(schema) & set(schemas.ADDED_LATER):
        return pl.scan_parquet(paths, hive_partitioning=False, extra_columns="ignore",
                               include_file_paths=include_file_paths)
    return pl.scan_parquet(paths, hive_partitioning=False, schema=dict(schema), missing_columns="insert",
                           extra_columns="ignore", include_file_paths=include_file_paths)


def file_problem(path: Path, columns: list[str] | None = None) -> str | None:
    """Why ``path`` cannot be read as Parquet with ``columns`` (None when it can): a full read."""
    try:
        pl.read_parquet(path, columns=columns, hive_partitioning=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def _first_unreadable(paths: list[Path], columns: list[str]) -> tuple[Path, str] | None:
    for path in paths:
        problem = file_problem(path, columns)
        if problem is not None:
            return path, problem
    return None


def _without_erased(frame: pl.LazyFrame, home: EngineHome) -> pl.LazyFrame:
    erased = erased_users(home)
    if not erased:
        return frame
    # a null user_id (an item row or a torn line in quarantine) is nobody's
    return frame.filter(~pl.col("user_id").is_in(sorted(erased)).fill_null(False))


def quarantine_files(home: EngineHome) -> list[Path]:
    """The live quarantine files: committed and not replaced by a later retry.

    A retry commits one new file holding the rows still failing and lists the files it
    replaces under ``quarantine_replaces`` in its log line, so the swap is atomic too.
    """
    if not home.quarantine.exists():
        return []
    entries = ingest_log(home)
    committed = {entry["ingest_id"] for entry in entries if "ingest_id" in entry}
    superseded = {old for entry in entries for old in entry.get("quarantine_replaces", [])}
    return [f for f in sorted(home.quarantine.glob("*.parquet")) if f.stem in committed - superseded]


def scan_quarantine(home: EngineHome) -> pl.LazyFrame:
    """Every row currently in quarantine (schema :data:`features.validate.QUARANTINE`)."""
    files = quarantine_files(home)
    if not files:
        return pl.DataFrame(schema=QUARANTINE).lazy()
    return _without_erased(scan_files(files, QUARANTINE), home)
