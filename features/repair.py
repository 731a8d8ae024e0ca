"""Checking and repairing the store's commit record: ``recsys store-verify`` and ``store-repair``.

The ingest log decides which data files count (:mod:`features.store`). :func:`verify_store`
reads every partition and quarantine file and the items/users tables, checks that the log
parses, that every data file is committed by a log line and that every file a live log line
names is there, and names each file that is corrupt, orphaned or missing.

:func:`repair_store` rebuilds the log from the data files. A data file is named after the
run that wrote it (``<ingest-id>.parquet``), so every run with files but no line gets a
``repair`` line committing its files; readable lines of the old log are kept as they are
(with them the offsets of the API segments and the hashes of ingested files); unreadable
ones are dropped from the log after the whole old log is copied to
``ingest_log.jsonl.damaged-<time>`` (kept, never deleted). No data file is deleted or rewritten, so no row is
lost. One exception keeps rows from counting twice: an uncommitted file all of whose rows
are already in committed files (the leftover of a crashed erasure compaction or quarantine
retry) is committed as retired (superseded, for quarantine), and the next writer removes it.
Running it again changes nothing. A file that cannot be read stops the repair before
anything changes: it has to be restored, or moved out of the store, first.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from features import schemas, store, writer
from features.lock import writer_lock
from features.validate import QUARANTINE
from recsys.durable import fsync_dir, fsync_file
from recsys.home import EngineHome

log = logging.getLogger(__name__)

REPAIR_KIND = "repair"
"""``kind`` of the log lines :func:`repair_store` writes."""
_PARTITION_DATE = "__date"


def _relative(home: EngineHome, path: Path) -> str:
    return path.relative_to(home.store).as_posix()


def _schema_of(home: EngineHome, path: Path) -> dict[str, pl.DataType]:
    if path == home.items:
        return schemas.ITEMS
    if path == home.users:
        return schemas.USERS
    if path.parent == home.quarantine:
        return QUARANTINE
    return schemas.INTERACTIONS


def file_problem(home: EngineHome, path: Path) -> tuple[str | None, int]:
    """Why a store file cannot be used (None when it can), and its row count: a full read."""
    try:
        frame = pl.read_parquet(path, hive_partitioning=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        text = str(exc).strip()
        return (text.splitlines()[0] if text else type(exc).__name__), 0
    missing = [column for column in _schema_of(home, path) if column not in frame.columns]
    if missing:
        return f"lacks the column {missing[0]!r}", frame.height
    return None, frame.height


# --------------------------------------------------------------------------- verify


def verify_store(home: EngineHome) -> dict[str, Any]:
    """Check the log and read every data file; reads only. ``healthy`` is False on any problem."""
    read = store.read_log(home)
    run_files, tables = store.run_files(home), store.table_files(home)
    committed = {entry["ingest_id"] for entry in read.entries}
    retired = store.retired_files(read.entries)
    superseded = {old for entry in read.entries for old in entry.get("quarantine_replaces", [])}
    corrupt: list[dict[str, str]] = []
    rows = {"interactions": 0, "quarantine": 0, "items": 0, "users": 0}
    for path in [*run_files, *tables]:
        problem, height = file_problem(home, path)
        if problem is not None:
            corrupt.append({"path": str(path), "problem": problem})
        elif _is_live(home, path, committed, retired, superseded):
            rows[_table_of(home, path)] += height
    orphans = [str(path) for path in run_files if path.stem not in committed]
    missing = _missing_files(home, read.entries, retired, superseded)
    problems = _problems(home, read, corrupt, orphans, missing)
    return {
        "home": str(home.root),
        "healthy": not problems,
        "problems": problems,
        "log": {"path": str(home.ingest_log), "exists": read.exists, "entries": len(read.entries),
                "bad_lines": read.bad_lines, "torn_tail": read.torn_tail},
        "files": {"interactions": sum(p.parent != home.quarantine for p in run_files),
                  "quarantine": sum(p.parent == home.quarantine for p in run_files), "tables": len(tables)},
        "rows": rows,
        "corrupt": corrupt,
        "orphans": orphans,
        "missing": missing,
    }


def _table_of(home: EngineHome, path: Path) -> str:
    if path == home.items:
        return "items"
    if path == home.users:
        return "users"
    return "quarantine" if path.parent == home.quarantine else "interactions"


def _is_live(home: EngineHome, path: Path, committed: set[str], retired: set[str], superseded: set[str]) -> bool:
    """Whether readers count the file (tables always; run files when committed and not replaced)."""
    if path in (home.items, home.users):
        return True
    if path.parent == home.quarantine:
        return path.stem in committed and path.stem not in superseded
    return path.stem in committed and _relative(home, path) not in retired


def _missing_files(home: EngineHome, entries: list[dict], retired: set[str], superseded: set[str]) -> list[str]:
    """Files a committed line names that should still be there and are not."""
    missing = []
    for entry in entries:
        files = entry.get("files") or {}
        for relative in files.get("interactions", []):
            if relative not in retired and not (home.store / relative).exists():
                missing.append(str(home.store / relative))
        quarantine = files.get("quarantine")
        if quarantine and Path(quarantine).stem not in superseded and not (home.store / quarantine).exists():
            missing.append(str(home.store / quarantine))
    return missing


def _problems(home: EngineHome, read: store.LogRead, corrupt: list[dict[str, str]], orphans: list[str],
              missing: list[str]) -> list[str]:
    """One human line per problem, most fundamental first."""
    problems = []
    doubt = store.doubt(home, read)
    if doubt is not None:
        problems.append(f"{doubt}: run `recsys store-repair`")
    problems += [f"corrupt file {c['path']}: {c['problem']}" for c in corrupt]
    if orphans and doubt is None:  # the one crashed run recover() would remove, or lines the log lost
        problems += [f"file {path} is not committed by any line of {home.ingest_log} (a crashed run: the next "
                     "ingest removes it; or a lost log line: `recsys store-repair` commits it)" for path in orphans]
    problems += [f"file {path} is committed by the log but missing" for path in missing]
    return problems


# --------------------------------------------------------------------------- repair


def repair_store(home: EngineHome, *, wait_seconds: float = 0) -> dict[str, Any]:
    """Rebuild the ingest log from the data files (see the module docstring); idempotent.

    Raises :class:`features.store.StoreDamaged` (nothing changed) when a data file cannot be
    read, and :class:`features.lock.StoreLocked` when another writer holds the store.
    """
    summary: dict[str, Any] = {"home": str(home.root), "changed": False, "committed_runs": [],
                               "rows": {"interactions": 0, "quarantine": 0}, "redundant_files": [],
                               "dropped_log_lines": [], "backup": None}
    if not home.store.exists():
        return summary
    with writer_lock(home, wait_seconds=wait_seconds, command="recsys store-repair"):
        read = store.read_log(home)
        _refuse_unreadable(home)
        additions = _repair_lines(home, read, summary)
        if not additions and not read.bad_lines and not read.torn_tail:
            return summary
        if read.bad_lines or read.torn_tail:
            summary["backup"] = str(_rewrite_log(home, read, additions))
            summary["dropped_log_lines"] = read.bad_lines
        else:
            for entry in additions:
                writer.append_log_line(home, entry)
        summary["changed"] = True
    log.info("store-repair: committed %d run(s), dropped %d unreadable log line(s)",
             len(summary["committed_runs"]), len(summary["dropped_log_lines"]))
    return summary


def _refuse_unreadable(home: EngineHome) -> None:
    for path in [*store.run_files(home), *store.table_files(home)]:
        problem, _ = file_problem(home, path)
        if problem is not None:
            raise store.StoreDamaged(
                f"cannot repair the store: {path} cannot be read ({problem}); restore it from a backup or move "
                "it out of the store, then run `recsys store-repair` again (nothing was changed)")


def _repair_lines(home: EngineHome, read: store.LogRead, summary: dict[str, Any]) -> list[dict]:
    """The lines committing every run that has files but no line (in id order)."""
    committed = {entry["ingest_id"] for entry in read.entries}
    retired = store.retired_files(read.entries)
    superseded = {old for entry in read.entries for old in entry.get("quarantine_replaces", [])}
    runs: dict[str, list[Path]] = {}
    for path in store.run_files(home):
        if path.stem not in committed:
            runs.setdefault(path.stem, []).append(path)
    live = [p for p in store.run_files(home) if _is_live(home, p, committed, retired, superseded)]
    additions = []
    for ingest_id in sorted(runs):
        entry = _repair_entry(home, ingest_id, runs[ingest_id], live, summary)
        live += [p for p in runs[ingest_id] if p not in entry["__redundant"]]
        del entry["__redundant"]
        additions.append(entry)
    if not read.entries and not additions and store.table_files(home):
        # Only items/users: one line so the log says the tables are committed state.
        additions.append({"kind": REPAIR_KIND, "time": _now(), "ingest_id": writer.new_ingest_id(),
                          "files": {"interactions": [], "quarantine": None, "replaced": []}, "repaired_rows": {}})
    return additions


def _repair_entry(home: EngineHome, ingest_id: str, files: list[Path], live: list[Path],
                  summary: dict[str, Any]) -> dict[str, Any]:
    partitions = sorted(p for p in files if p.parent != home.quarantine)
    quarantine = next((p for p in files if p.parent == home.quarantine), None)
    redundant = [p for p in files if _already_stored(home, p, live)]
    rows = {"interactions": sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in partitions),
            "quarantine": pl.scan_parquet(quarantine).select(pl.len()).collect().item() if quarantine else 0}
    entry: dict[str, Any] = {
        "kind": REPAIR_KIND, "time": _now(), "ingest_id": ingest_id,
        "files": {"interactions": [_relative(home, p) for p in partitions],
                  "quarantine": _relative(home, quarantine) if quarantine else None, "replaced": []},
        "repaired_rows": rows, "__redundant": redundant,
    }
    retires = [_relative(home, p) for p in redundant if p.parent != home.quarantine]
    if retires:
        entry["retires"] = retires
    if quarantine in redundant:
        entry["quarantine_replaces"] = [ingest_id]
    summary["committed_runs"].append(ingest_id)
    summary["redundant_files"] += [str(p) for p in redundant]
    for table in rows:
        summary["rows"][table] += rows[table]
    return entry


def _already_stored(home: EngineHome, path: Path, live: list[Path]) -> bool:
    """Every row of ``path`` is already in a live file of its kind (same day for partitions).

    Ingest never stores a row twice, so such a file can only be what a crashed compaction or
    retry rewrote from committed files; committing it would count its rows twice.
    """
    if path.parent == home.quarantine:
        peers = [p for p in live if p.parent == home.quarantine]
    else:
        peers = [p for p in live if p.parent == path.parent]
    if not peers:
        return False
    frame = pl.read_parquet(path, hive_partitioning=False)
    if frame.height == 0:
        return False
    columns = list(_schema_of(home, path))
    known = pl.concat([pl.read_parquet(p, columns=columns, hive_partitioning=False) for p in peers])
    rest = frame.select(columns).join(known.unique(), on=columns, how="anti", nulls_equal=True)
    return rest.height == 0


def _rewrite_log(home: EngineHome, read: store.LogRead, additions: list[dict]) -> Path:
    """Copy the old log aside, then replace it by its readable lines plus ``additions`` (atomically)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = home.ingest_log.with_name(f"{home.ingest_log.name}.damaged-{stamp}")
    shutil.copy2(home.ingest_log, backup)
    fsync_file(backup)
    lines = [json.dumps(entry, ensure_ascii=False, default=str) for entry in [*read.entries, *additions]]
    staged = home.ingest_log.with_name(f"{home.ingest_log.name}.repair-{stamp}")
    staged.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    fsync_file(staged)
    os.replace(staged, home.ingest_log)
    fsync_dir(home.store)
    log.warning("store-repair: the old log is kept as %s", backup)
    return backup


def _now() -> str:
    return datetime.now(UTC).isoformat()
