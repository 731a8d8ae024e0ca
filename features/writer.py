"""Crash-safe writes to the store: one :class:`Transaction` per writer run, and :func:`recover`.

The commit point of a run is its line in ``ingest_log.jsonl`` (written in one ``write``
then flushed and fsync'd). A run goes through these steps, in this order:

1. ``written``: interaction partitions and the quarantine file are written under their
   final names, ``<ingest-id>.parquet``, and fsync'd. Readers ignore them (no log line yet).
2. ``staged``: the new ``items.parquet`` / ``users.parquet`` are written beside the old
   ones as ``items.parquet.<id>.staged`` and fsync'd.
3. ``backed_up``: the current files get a hard link ``items.parquet.<id>.prev`` (or, if
   there was none, an empty marker ``items.parquet.<id>.absent``), so the old state can be
   put back.
4. ``replaced``: ``os.replace`` moves the staged files over the live ones.
5. ``committed``: the log line is appended. From here on the run counts.
6. ``finished``: the backups, any quarantine files the run supersedes and any data files
   it retires (``entry["retires"]``: partitions an erasure compaction rewrote) are deleted.
   Readers stop counting superseded and retired files at step 5, so the swap is atomic.

Any exception before step 5 completes rolls back in-process (restore the backups,
truncate a half-written log line, delete the new files), so the store reads exactly as
before. A hard crash is settled by :func:`recover`, which every writer runs under the lock
before it starts: a run without a log line is rolled back the same way, a committed run is
rolled forward (its backups, superseded and retired files are deleted). It deletes nothing
when the log cannot be trusted (missing, empty, unreadable, or short of committed lines:
:func:`features.store.doubt`); the writer stops with :class:`features.store.StoreDamaged`
naming ``recsys store-repair`` instead. Until that next writer
runs, a process killed between steps 4 and 5 leaves the new catalog/users visible next to
the old interactions; every other crash point already reads as before or as after.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from features import store
from recsys import appendlog
from recsys.durable import fsync_dir, fsync_file
from recsys.home import EngineHome

log = logging.getLogger(__name__)

STAGED, BACKUP, ABSENT = "staged", "prev", "absent"
_REPLACEABLE = ("items.parquet", "users.parquet")


def crash_point(step: str) -> None:
    """Mark a step of the commit sequence (fault-injection tests replace this to crash there)."""
    log.debug("commit step %s", step)


def new_ingest_id() -> str:
    """A unique, time-ordered id without dots (file stems must equal it)."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}"



def make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; returns the directories it created, outermost first.

    The caller fsyncs the parents of the created directories (once each) before relying on them.
    """
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
    return list(reversed(missing))


def write_parquet_durably(frame: pl.DataFrame, path: Path) -> list[Path]:
    """Write a parquet file and fsync it; returns the directories created for it.

    The file's directory entry is durable only once the caller fsyncs its directory.
    """
    created = make_dirs(path.parent)
    frame.write_parquet(path)
    fsync_file(path)
    return created


def append_log_line(home: EngineHome, entry: dict) -> None:
    """Append one JSON line to the ingest log in a single write, then fsync it (the commit point)."""
    appendlog.append_line(home.ingest_log, (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode("utf-8"))


def _side_file(target: Path, ingest_id: str, kind: str) -> Path:
    return target.with_name(f"{target.name}.{ingest_id}.{kind}")


class Transaction:
    """The files one writer run adds to the store, committed by one log line."""

    def __init__(self, home: EngineHome, ingest_id: str) -> None:
        self.home = home
        self.ingest_id = ingest_id
        self._created: list[Path] = []
        self._new_dirs: list[Path] = []
        self._staged: dict[Path, Path] = {}

    def write(self, frame: pl.DataFrame, relative: str) -> Path:
        """Write a data file named after the run (invisible until commit); returns its path."""
        path = self.home.store / relative
        if path.stem != self.ingest_id:
            raise ValueError(f"data file {relative} must be named after ingest {self.ingest_id}")
        self._created.append(path)
        self._new_dirs += write_parquet_durably(frame, path)
        return path

    def stage(self, frame: pl.DataFrame, target: Path) -> None:
        """Prepare the replacement of ``items.parquet`` or ``users.parquet``."""
        if target.name not in _REPLACEABLE or target.parent != self.home.store:
            raise ValueError(f"{target} is not a replaceable store table")
        staged = _side_file(target, self.ingest_id, STAGED)
        self._staged[target] = staged
        self._new_dirs += write_parquet_durably(frame, staged)

    def commit(self, entry: dict) -> None:
        """Make the run visible: replace the staged tables, then append the log line.

        ``entry["quarantine_replaces"]`` lists quarantine files this run supersedes.
        """
        entry = {**entry, "ingest_id": self.ingest_id}
        log_size = self.home.ingest_log.stat().st_size if self.home.ingest_log.exists() else 0
        try:
            # Each new file's entry, and each new directory's entry in its parent.
            for directory in {p.parent for p in [*self._created, *self._new_dirs]}:
                fsync_dir(directory)
            crash_point("written")
            self._back_up()
            crash_point("backed_up")
            for target, staged in self._staged.items():
                os.replace(staged, target)
                crash_point(f"replaced:{target.name}")
            fsync_dir(self.home.store)
            crash_point("replaced")
            append_log_line(self.home, entry)
        except Exception:
            self._roll_back(log_size)
            raise
        crash_point("committed")
        try:
            _finish(self.home, self.ingest_id, entry.get("quarantine_replaces", []), entry.get("retires", []))
        except OSError:  # committed already; the next writer's recover() tidies up
            log.exception("ingest %s committed but its backups were not removed", self.ingest_id)
        crash_point("finished")

    def abort(self) -> None:
        """Forget a run that will not be committed: delete everything it wrote."""
        self._roll_back(None)

    def _back_up(self) -> None:
        for target in self._staged:
            if target.exists():
                os.link(target, _side_file(target, self.ingest_id, BACKUP))
            else:
                _side_file(target, self.ingest_id, ABSENT).touch()
        if self._staged:
            fsync_dir(self.home.store)

    def _roll_back(self, log_size: int | None) -> None:
        try:
            log_file = self.home.ingest_log
            if log_size is not None and log_file.exists() and log_file.stat().st_size != log_size:
                _truncate(log_file, log_size)
            for target in self._staged:
                _restore(target, self.ingest_id)
            for path in self._created:
                path.unlink(missing_ok=True)
            if self.home.store.exists():
                fsync_dir(self.home.store)
        except OSError:
            log.exception("rolling back ingest %s failed; recover() will finish it", self.ingest_id)


def _truncate(path: Path, size: int) -> None:
    with open(path, "rb+") as fh:
        fh.truncate(size)
        os.fsync(fh.fileno())


def _restore(target: Path, ingest_id: str) -> None:
    """Put back the table a run was replacing, and delete its side files."""
    backup = _side_file(target, ingest_id, BACKUP)
    absent = _side_file(target, ingest_id, ABSENT)
    if backup.exists():
        os.replace(backup, target)
        backup.unlink(missing_ok=True)  # rename onto a hard link of itself leaves the source
    elif absent.exists():
        target.unlink(missing_ok=True)
    absent.unlink(missing_ok=True)
    _side_file(target, ingest_id, STAGED).unlink(missing_ok=True)


def _finish(home: EngineHome, ingest_id: str, supersedes: Iterable[str], retires: Iterable[str] = ()) -> None:
    """Post-commit tidy-up: drop the backups, the quarantine files the run replaced and the
    data files it retired."""
    for name in _REPLACEABLE:
        target = home.store / name
        for kind in (BACKUP, ABSENT, STAGED):
            _side_file(target, ingest_id, kind).unlink(missing_ok=True)
    for old in supersedes:
        (home.quarantine / f"{old}.parquet").unlink(missing_ok=True)
    delete_retired(home, retires)
    fsync_dir(home.store)


def delete_retired(home: EngineHome, retires: Iterable[str]) -> int:
    """Delete retired data files (paths relative to the store) and the partitions they empty."""
    removed = 0
    touched: set[Path] = set()
    for relative in retires:
        path = home.store / relative
        if path.parent.resolve().is_relative_to(home.interactions.resolve()) and path.exists():
            path.unlink()
            removed += 1
            touched.add(path.parent)
    for directory in touched:
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
    for directory in {d.parent for d in touched} | touched:
        if directory.exists():
            fsync_dir(directory)
    return removed


def _repair_log_tail(home: EngineHome) -> None:
    """A crash mid-append leaves a line without newline: keep it if complete, else cut it."""
    read = appendlog.read_all_lines(home.ingest_log)
    if not read.tail:
        return
    try:
        complete = isinstance(json.loads(read.tail), dict)
    except ValueError:
        complete = False
    if complete:  # readers already count it: finish the line
        appendlog.append_line(home.ingest_log, b"\n")
    else:
        log.warning("dropping a torn ingest log line (%d bytes)", len(read.tail))
        _truncate(home.ingest_log, read.end)


def recover(home: EngineHome) -> None:
    """Settle whatever a crashed writer left: roll committed runs forward, the rest back.

    Call it under the writer lock, before writing. Safe to run any number of times. Files
    are deleted only when a readable log proves them uncommitted: a log that is missing,
    empty, unreadable or short of committed lines raises :class:`features.store.StoreDamaged`
    before anything is touched (``recsys store-repair`` rebuilds it).
    """
    if not home.store.exists():
        return
    entries = store.ingest_log(home)  # the trust check comes first: on doubt, change nothing
    _repair_log_tail(home)
    committed = {e["ingest_id"] for e in entries if "ingest_id" in e}
    superseded = {old for e in entries for old in e.get("quarantine_replaces", [])}
    _settle_tables(home, committed)
    removed = delete_retired(home, store.retired_files(entries))
    removed += _remove_uncommitted(home.interactions, "date=*/*.parquet", committed, set())
    removed += _remove_uncommitted(home.quarantine, "*.parquet", committed, superseded)
    if removed:
        log.info("recover: removed %d uncommitted or superseded data files", removed)


def _settle_tables(home: EngineHome, committed: set[str]) -> None:
    touched = False
    for path in sorted(home.store.iterdir()):
        parsed = _parse_side_file(path.name)
        if parsed is None:
            continue
        target_name, ingest_id, _kind = parsed
        target = home.store / target_name
        if ingest_id in committed:
            path.unlink(missing_ok=True)
        else:
            log.warning("recover: rolling back uncommitted ingest %s (%s)", ingest_id, target_name)
            _restore(target, ingest_id)
        touched = True
    if touched:
        fsync_dir(home.store)


def _parse_side_file(name: str) -> tuple[str, str, str] | None:
    for target in _REPLACEABLE:
        prefix = target + "."
        if name.startswith(prefix):
            ingest_id, _, kind = name[len(prefix):].rpartition(".")
            if ingest_id and kind in (STAGED, BACKUP, ABSENT):
                return target, ingest_id, kind
    return None


def _remove_uncommitted(root: Path, pattern: str, committed: set[str], superseded: set[str]) -> int:
    if not root.exists():
        return 0
    removed = 0
    for path in root.glob(pattern):
        if path.stem not in committed or path.stem in superseded:
            path.unlink(missing_ok=True)
            removed += 1
    for directory in {p.parent for p in root.glob(pattern)} | set(root.glob("date=*")):
        if directory.is_dir() and directory != root and not any(directory.iterdir()):
            directory.rmdir()
    if removed:
        fsync_dir(root)
    return removed
