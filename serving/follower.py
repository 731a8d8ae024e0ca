"""The background work that keeps one server process in step with the others of its home.

With ``recsys serve --workers N`` (or N servers started on the same home) a request reaches
one process, yet every process must answer alike. Two things travel between them, both
through files in the home, so no process needs to know the others: posted interactions
(:mod:`serving.peers`) and reload requests (:mod:`serving.reload_requests`).
:class:`PeerFollower` follows both every ``tail_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio

from serving.metrics import Metrics
from serving.peers import PeerInteractions
from serving.reload_requests import ReloadRequests
from serving.state import LoadFailed, ModelHolder

log = logging.getLogger(__name__)


class PeerFollower:
    """The background work of one process: follow the others' posts and reload requests."""

    def __init__(self, interactions: PeerInteractions, requests: ReloadRequests, holder: ModelHolder,
                 metrics: Metrics, interval: float) -> None:
        self.interactions = interactions
        self.requests = requests
        self.holder = holder
        self.metrics = metrics
        self.interval = interval
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Catch up with the posts already on disk, then follow both files in the background."""
        try:
            await anyio.to_thread.run_sync(self.interactions.poll)
        except Exception:  # the loop tries again; a server must start regardless
            log.exception("catching up with the other servers' posted interactions failed")
        self._tasks = [asyncio.create_task(self._follow_interactions(), name="tail-interactions"),
                       asyncio.create_task(self._follow_reloads(), name="follow-reloads")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _follow_interactions(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await anyio.to_thread.run_sync(self.interactions.poll)
            except Exception:  # an unreadable directory now need not be one later
                log.exception("following the other servers' posted interactions failed")

    async def _follow_reloads(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.follow_reload_once()
            except Exception:
                log.exception("following reload requests failed")

    async def follow_reload_once(self) -> bool:
        """Act on a pending reload request, if any; True if this process reloaded."""
        request = self.requests.pending()
        if request is None:
            return False
        self.requests.handled(request)
        current = self.holder.current
        if current is not None and current.version == request.version and current.degraded is None:
            return False
        log.info("reloading on request of process %d (version %s asked)", request.pid, request.version)
        try:
            await anyio.to_thread.run_sync(self.holder.reload)
        except LoadFailed:  # logged by the holder; the old model keeps serving
            self.metrics.reloads.labels("failed").inc()
            return False
        self.metrics.reloads.labels("ok").inc()
        return True
