"""This process's live catalogue: the items written through the API, and events that filled up.

Every catalogue write a server accepts is appended to its own segment in
``store/incoming/items/`` (the crash-safe :class:`serving.segments.SegmentWriter`, fsynced
before the answer) and applied here at once; every process follows the other servers' item
segments (:class:`serving.segment_tail.SegmentTail`) every ``tail_interval`` seconds, so a
write shows in every worker within about a second. The next ``recsys ingest`` folds the
lines into ``items.parquet``.

:meth:`LiveItems.overlay` is what the :class:`serving.state.ModelHolder` serves: the loaded
model with the changes laid over its catalogue (:mod:`recsys.live_catalog`; new items scored
by their facets) and full events marked, and left out when ``full_events`` is ``hide``
(:mod:`recsys.capacity`, counted by :mod:`serving.reservations`). It is built again whenever
the changes or the set of full events change, and after every model load.

A process that starts replays the item lines written after the served model's ``data_end``,
the rule :mod:`serving.peers` applies to interactions: what was written before is in the
store the model was trained on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Iterable
from dataclasses import replace

import anyio
import numpy as np

from recsys.appendlog import json_object
from recsys.bundle import ModelBundle
from recsys.capacity import full_items, with_capacity
from recsys.catalog import Catalog
from recsys.delivery import DeliveryEngine
from recsys.home import EngineHome
from recsys.live_catalog import (
    CatalogChanges,
    ItemChange,
    change_of,
    change_record,
    overlaid_bundle,
    overlaid_catalog,
    resolved_rows,
)
from serving.peers import data_end_of
from serving.reservations import Reservations
from serving.segment_tail import SegmentTail
from serving.segments import SegmentWriter
from serving.state import ModelHolder, ServedModel

log = logging.getLogger(__name__)


class LiveItems:
    """The catalogue changes and reservations this process knows, and the model they make."""

    def __init__(self, home: EngineHome, *, lang: str = "zh", hide_full: bool = True) -> None:
        self.writer = SegmentWriter(home.item_lines)
        self.tail = SegmentTail(home.item_lines, self.writer.path)
        self.reservations = Reservations(home)
        self.lang = lang
        self.hide_full = hide_full
        self.changes = CatalogChanges()
        self.caught_up = False
        self._lock = threading.Lock()
        self._store_read_for: str | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- writes -----------------------------------------------------------------------------
    def write(self, changes: Iterable[ItemChange], app: str | None) -> None:
        """Make ``changes`` durable (raises OSError: nothing was applied), then apply them here."""
        changes = list(changes)
        self.writer.append(change_record(change, app) for change in changes)
        self.apply(changes)

    def apply(self, changes: Iterable[ItemChange]) -> None:
        with self._lock:
            for change in changes:
                self.changes.apply(change)

    # ---- the served model -------------------------------------------------------------------
    def overlay(self, served: ServedModel) -> ServedModel:
        """``served`` (as loaded) with the live catalogue and the full events laid over it."""
        if self._store_read_for != served.version:  # a new model follows a new ingest: count its store again
            self.reservations.refresh_store()
            self._store_read_for = served.version
        loaded = served.engine
        bundle = loaded.bundle
        with self._lock:
            rows = resolved_rows(self.changes, bundle.catalog, bundle.settings.timezone)
        catalog = overlaid_catalog(bundle.catalog, rows) if rows else bundle.catalog
        full = full_items(catalog, self.reservations.counts())
        if not rows and not full.any():
            return served
        engine = self._engine(bundle, with_capacity(catalog, full, hide=self.hide_full), loaded)
        shadow = None
        if self.hide_full and full.any():
            shadow = self._engine(bundle, with_capacity(catalog, full, hide=False), loaded)
        return replace(served, engine=engine, shadow=shadow)

    def _engine(self, bundle: ModelBundle, catalog: Catalog, loaded: DeliveryEngine) -> DeliveryEngine:
        engine = DeliveryEngine(overlaid_bundle(bundle, catalog), self.lang)
        if len(catalog) == len(bundle.catalog):  # same item axis: the loaded engine's candidates still hold
            engine.candidates = loaded.candidates
        return engine

    # ---- following the other servers -------------------------------------------------------------
    def poll(self, holder: ModelHolder) -> bool:
        """Apply the other servers' new item lines and the reservations posted since the last look;
        lay the catalogue over the model again if that changed what is served (blocking IO)."""
        loaded = holder.loaded
        if loaded is None:  # the lines wait on disk until a model is served
            return False
        after = -math.inf if self.caught_up else data_end_of(loaded)
        found: list[ItemChange] = []

        def handle(line: bytes) -> None:
            change = change_of(json_object(line))
            if change is not None and change.written_at > after:
                found.append(change)

        self.tail.read(handle, unchanged_since=after)
        if not self.caught_up:
            self.caught_up = True
            log.info("caught up with the other servers' catalogue writes: %d replayed", len(found))
        self.apply(found)
        reserved = self.reservations.follow(unchanged_since=after)
        if found or (reserved and self._fullness_changed(holder)):
            holder.refresh_overlay()
            return True
        return False

    def _fullness_changed(self, holder: ModelHolder) -> bool:
        current = holder.current
        if current is None:
            return False
        catalog = current.engine.catalog
        return bool(np.any(full_items(catalog, self.reservations.counts()) != catalog.full))

    async def start(self, holder: ModelHolder, interval: float) -> None:
        """Catch up with the writes on disk, then follow them every ``interval`` seconds."""
        try:
            await anyio.to_thread.run_sync(self.poll, holder)
        except Exception:  # the loop tries again; a server must start regardless
            log.exception("catching up with the other servers' catalogue writes failed")
        if interval > 0:
            self._task = asyncio.create_task(self._follow(holder, interval), name="follow-items")

    async def _follow(self, holder: ModelHolder, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await anyio.to_thread.run_sync(self.poll, holder)
            except Exception:  # an unreadable directory now need not be one later
                log.exception("following the catalogue writes failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.writer.close()
