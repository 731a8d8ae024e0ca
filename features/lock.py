"""The single-writer lock of a store: ``fcntl.flock`` on ``store/.writer.lock``.

Ingest and quarantine retry hold it for their whole run so two writers never interleave;
readers never take it (the commit rule in :mod:`features.store` keeps them consistent).
The holder writes its pid and command into the lock file so a refused writer can say who
is in the way. The kernel drops a flock when its holder dies, so a crash never leaves the
store locked. :func:`file_lock` is the same lock on any file (the training lock uses it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from recsys.home import EngineHome

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.05


class StoreLocked(ValueError):
    """Another writer holds the store; the message names its pid and command."""


@contextmanager
def writer_lock(home: EngineHome, *, wait_seconds: float = 0, command: str = "") -> Iterator[None]:
    """Hold the store's writer lock, waiting up to ``wait_seconds`` for it.

    Raises :class:`StoreLocked` when the lock is still taken after the wait. Not re-entrant:
    a second acquisition from the same process is refused like any other writer.
    """
    home.store.mkdir(parents=True, exist_ok=True)
    with file_lock(home.lock, wait_seconds=wait_seconds, command=command, what="store",
                   error=StoreLocked):
        yield


@contextmanager
def file_lock(path: Path, *, wait_seconds: float = 0, command: str = "", what: str = "lock",
              error: type[ValueError] = StoreLocked) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing), waiting up to ``wait_seconds``.

    Raises ``error`` naming the holder when it is still taken after the wait.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, wait_seconds, what, error)
        _record_holder(fd, command)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, wait_seconds: float, what: str, error: type[ValueError]) -> None:
    deadline = time.monotonic() + max(wait_seconds, 0.0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise error(_locked_message(path, what)) from None
            time.sleep(min(_POLL_SECONDS, remaining))


def _record_holder(fd: int, command: str) -> None:
    holder = {"pid": os.getpid(), "command": command, "since": datetime.now(UTC).isoformat()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder, ensure_ascii=False).encode(), 0)


def lock_holder(home: EngineHome) -> dict | None:
    """What the current holder of the store lock wrote into it, if anything (a hint, not a guarantee)."""
    return _holder(home.lock)


def _holder(path: Path) -> dict | None:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _locked_message(path: Path, what: str) -> str:
    holder = _holder(path)
    if not holder:
        return f"{what} is locked by another process ({path})"
    command = holder.get("command") or "unknown command"
    return f"{what} is locked by pid {holder.get('pid', '?')} ({command}) since {holder.get('since', '?')}"
