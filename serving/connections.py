"""Connection limits and read timeouts for uvicorn (``recsys serve`` uses this protocol).

uvicorn bounds how long an idle keep-alive connection stays open, but not how long a client
may take to send a request: a client sending one header byte a second (slowloris) keeps a
connection, and a file descriptor, for ever. uvicorn's ``limit_concurrency`` answers 503 to
*requests* past a count and leaves the connections open. Neither is configurable further,
so :class:`GuardedHttpToolsProtocol` extends uvicorn's httptools protocol:

- **header timeout**: from the moment a connection starts waiting for a request (on
  connect, and after each answer) it has ``header_timeout`` seconds to deliver the headers;
- **body timeout**: from the headers on, ``body_timeout`` seconds to deliver the body
  (then ``408`` if no answer has started, and the connection closes);
- **connection cap**: at most ``max_connections`` connections per process, and never more
  than the file-descriptor limit allows (:data:`RESERVED_FDS` are kept for files). A new
  connection beyond the cap closes the one that has waited longest for its request, so a
  flood of slow connections cannot lock real clients out; only when every connection is
  busy with a request is the newcomer closed instead.

Limits come from :class:`serving.config.ServingSettings` (the environment), read once per
process. :func:`raise_fd_limit` lifts the soft file-descriptor limit to the hard one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.config import ServingSettings

log = logging.getLogger(__name__)

PROTOCOL = "serving.connections:GuardedHttpToolsProtocol"
"""The ``--http`` class for uvicorn (an import string, so ``--workers`` processes import it too)."""
RESERVED_FDS = 128
"""File descriptors left for the model, segments, logs and the registry."""
LOG_EVERY = 10.0
"""Seconds between two warnings about closed connections (a flood must not flood the log)."""
_TIMEOUT_BODY = json.dumps({"detail": "the request was not received in time"}).encode()
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                     b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\nconnection: close\r\n\r\n"
                     + _TIMEOUT_BODY)


@dataclass
class ConnectionLimits:
    """The limits of this process and the connections waiting for a request, oldest first."""

    max_connections: int
    header_timeout: float
    body_timeout: float
    waiting: OrderedDict[GuardedHttpToolsProtocol, None] = field(default_factory=OrderedDict)
    closed: dict[str, int] = field(default_factory=dict)
    """Connections closed since the last warning, by reason."""
    _warned: float = 0.0

    def note(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._warned >= LOG_EVERY:
            log.warning("closed connections: %s (limit %d connections, %.0fs for headers, %.0fs for a body)",
                        ", ".join(f"{count} {why}" for why, count in sorted(self.closed.items())),
                        self.max_connections, self.header_timeout, self.body_timeout)
            self.closed.clear()
            self._warned = now


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit() -> int:
    """Lift the soft file-descriptor limit to the hard one (where allowed); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the file-descriptor limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard


def effective_cap(configured: int, fds: int) -> int:
    """The connection cap: the configured one, below the descriptors left after the reserve."""
    return max(1, min(configured, fds - RESERVED_FDS))


def uvicorn_options(settings: ServingSettings) -> dict[str, Any]:
    """uvicorn's options for these settings (besides host, port, workers and log level)."""
    return {"http": PROTOCOL, "timeout_keep_alive": settings.keep_alive_timeout, "access_log": settings.access_log}


@lru_cache(maxsize=1)
def process_limits() -> ConnectionLimits:
    settings = ServingSettings()
    cap = effective_cap(settings.max_connections, fd_limit())
    if cap < settings.max_connections:
        log.warning("at most %d connections (file-descriptor limit %d), not %d", cap, fd_limit(),
                    settings.max_connections)
    return ConnectionLimits(cap, settings.header_timeout, settings.body_timeout)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap and header/body read timeouts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = process_limits()
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self._make_room():
            self.limits.note("refused (every connection busy)")
            transport.abort()
            return
        self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.waiting.pop(self, None)
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.limits.body_timeout, self._body_too_slow)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.limits.waiting.pop(self, None)
        self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        busy = self.pipeline or (self.cycle is not None and not self.cycle.response_complete)
        if not self.transport.is_closing() and not busy:
            self._await_request()

    # ---- the limits ----------------------------------------------------------------------
    def _make_room(self) -> bool:
        """Below the cap, or made so by closing the connection waiting longest for a request."""
        if len(self.connections) <= self.limits.max_connections:
            return True
        for victim in self.limits.waiting:
            if victim is not self:
                self.limits.waiting.pop(victim)
                victim._disarm()
                victim.transport.abort()  # abort: its descriptor is free now, not after a flush
                self.limits.note("closed to make room")
                return True
        return False

    def _await_request(self) -> None:
        self.limits.waiting.pop(self, None)
        self.limits.waiting[self] = None  # the newest waiter goes last
        self._arm(self.limits.header_timeout, self._headers_too_slow)

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _headers_too_slow(self) -> None:
        self.deadline = None
        self.limits.waiting.pop(self, None)
        if not self.transport.is_closing():
            self.limits.note("header timeout")
            self.transport.close()

    def _body_too_slow(self) -> None:
        self.deadline = None
        self.limits.waiting.pop(self, None)
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the app's own answer, if it comes, is dropped
            cycle.message_event.set()
            self.transport.write(_TIMEOUT_RESPONSE)
        self.limits.note("body timeout")
        self.transport.close()
