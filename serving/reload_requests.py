"""Reload requests: one process reloaded on an admin's request, every other process follows.

``POST /v1/admin/reload`` reloads the process it reached and then writes a reload request
(``$RECSYS_HOME/serving/reload_request.json``, replaced atomically) naming the version it
now serves. :class:`ReloadRequests` lets every process notice a request it has not handled
yet (:class:`serving.follower.PeerFollower` acts on it through its own
:class:`~serving.state.ModelHolder`, the same atomic swap), unless it already serves that
version. Each request is acted on once; a failed reload keeps the old model, and
``--reload-interval`` polling (when on) retries on its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recsys.durable import fsync_dir
from serving.config import ServingSettings

log = logging.getLogger(__name__)

RELOAD_REQUEST = "reload_request.json"


@dataclass(frozen=True)
class ReloadRequest:
    id: str
    version: str
    source: str
    requested_at: float
    """Epoch seconds."""
    pid: int


class ReloadRequests:
    """The home's latest reload request: written by the process an admin reached, read by all.

    ``source`` names what a process serves (registry model and alias, or bundle directory):
    a request made for another source (say, a challenger server on the same home) is ignored.
    Requests older than ``since`` (this process's start) are ignored too: its first load
    already got the model they asked for.
    """

    def __init__(self, path: Path, source: str, since: float | None = None) -> None:
        self.path = Path(path)
        self.source = source
        self.since = time.time() if since is None else since
        self._signature: tuple[int, int, int] | None = None
        self._handled: str | None = None

    @classmethod
    def of(cls, settings: ServingSettings, since: float | None = None) -> ReloadRequests:
        return cls(reload_request_path(settings), source_key(settings), since)

    def publish(self, version: str) -> ReloadRequest:
        """Ask every process to serve ``version`` (written atomically and durably)."""
        request = ReloadRequest(uuid.uuid4().hex, version, self.source, time.time(), os.getpid())
        record = {"id": request.id, "version": version, "source": self.source, "pid": request.pid,
                  "requested_at": datetime.fromtimestamp(request.requested_at, UTC).isoformat()}
        _write_atomically(self.path, json.dumps(record, ensure_ascii=False).encode("utf-8"))
        self._handled = request.id  # the publisher has done what it asks
        return request

    def pending(self) -> ReloadRequest | None:
        """The latest request if this process has not handled it yet (cheap: a ``stat`` when unchanged)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if signature == self._signature:
            return None
        request = _read_request(self.path)
        if request is None:  # unreadable: wait for the next request rather than guess
            self._signature = signature
            return None
        if request.id == self._handled or request.source != self.source or request.requested_at < self.since:
            self._signature = signature
            return None
        return request

    def handled(self, request: ReloadRequest) -> None:
        """Mark ``request`` done (whatever came of it): each request is acted on once."""
        self._handled = request.id
        self._signature = None  # the file is read once more, then compared by signature again


def reload_request_path(settings: ServingSettings) -> Path:
    return settings.engine_home().serving_cache.parent / RELOAD_REQUEST


def source_key(settings: ServingSettings) -> str:
    """What a server serves, as one string: requests for another source are not ours."""
    if settings.model_dir is not None:
        return f"directory:{Path(settings.model_dir).expanduser().resolve()}"
    return f"registry:{settings.model_name}@{settings.model_alias}"


def _read_request(path: Path) -> ReloadRequest | None:
    try:
        record = json.loads(path.read_bytes())
        return ReloadRequest(str(record["id"]), str(record["version"]), str(record["source"]),
                             datetime.fromisoformat(record["requested_at"]).timestamp(), int(record["pid"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("cannot read the reload request %s; ignoring it", path)
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a sibling file, fsync it and rename it over ``path``: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        with open(scratch, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(scratch, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
    fsync_dir(path.parent)
