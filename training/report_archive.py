"""Where a report run lands in the engine home: its ISO week's folder, and ``latest`` at the newest week.

``reports/<year>-W<week>/`` holds each week's report (a run in a week already archived
replaces it); ``reports/latest`` points at the newest week: a relative symlink, swapped in
with one rename, or where the file system refuses symlinks, a copy swapped in the same way.
So ``reports/latest/report.html`` always opens the newest report, as it did before archives.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from features.report_history import archived_weeks

log = logging.getLogger(__name__)

LATEST = "latest"


def point_latest(reports: Path) -> Path | None:
    """Make ``reports/latest`` show the newest archived week; returns that week's folder (None: no archive)."""
    weeks = archived_weeks(reports)
    if not weeks:
        return None
    newest = weeks[-1]
    link = reports / LATEST
    try:
        _swap_symlink(link, newest.name)
    except OSError as exc:  # e.g. a file system or platform without symlinks: a copy serves as well
        log.info("reports/latest as a copy of %s (no symlink: %s)", newest.name, exc)
        _swap_copy(link, newest)
    return newest


def _swap_symlink(link: Path, target: str) -> None:
    fresh = link.parent / f".{LATEST}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(target, fresh, target_is_directory=True)
    try:
        if link.is_dir() and not link.is_symlink():  # a copy (or a report from before archives) moves aside
            retire(link)
        os.replace(fresh, link)
    except OSError:
        fresh.unlink(missing_ok=True)
        raise


def _swap_copy(link: Path, newest: Path) -> None:
    staging = link.parent / f".{LATEST}.copy-{uuid.uuid4().hex[:8]}"
    shutil.copytree(newest, staging)
    if link.exists() or link.is_symlink():
        retire(link)
    staging.rename(link)


def retire(path: Path) -> None:
    """Move ``path`` (a folder or a symlink) aside and delete it: a reader never sees half of it."""
    discard(set_aside(path))


def set_aside(path: Path) -> Path:
    """``path`` renamed to a hidden sibling (one rename), to be :func:`discard`-ed."""
    retired = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    path.rename(retired)
    return retired


def discard(retired: Path) -> None:
    """Delete a set-aside folder, or only the link when it is a symlink."""
    if retired.is_symlink():
        retired.unlink()
    else:
        shutil.rmtree(retired, ignore_errors=True)
