"""The served model and its atomic replacement.

:class:`ModelHolder` keeps one reference, ``current``, to an immutable :class:`ServedModel`
(a fully built :class:`DeliveryEngine` plus what it is). A reload builds and warms the new
engine completely on the side and then replaces that one reference; a request reads the
reference once and keeps the engine it started with, so a swap never fails a request.
A failed load leaves ``current`` untouched.

An artifact made before training wrote per-user candidates (``candidates.npz``) is served
by full scoring at first; a background thread computes its candidates (for at most
``candidate_users`` users, the most active first) and hands them to the engine, which
takes the fast path from then on. The job stops as soon as another model replaces it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys.bundle import ModelBundle
from recsys.candidate_scoring import most_active_users, precompute_candidates
from recsys.contract import parse_timestamp
from recsys.delivery import DeliveryEngine
from recsys.query import Filters
from serving.cache import LastKnownGood
from serving.config import DEFAULT_CANDIDATE_USERS
from serving.sources import ModelSource, SourceError

log = logging.getLogger(__name__)

WARM_UP_USER = "\u0000warm-up"
"""An id no provider sends: exercises the fallback path while warming an engine."""


class LoadFailed(RuntimeError):
    """A model could not be loaded; the previous one (if any) keeps serving."""


@dataclass(frozen=True)
class ServedModel:
    engine: DeliveryEngine
    version: str
    alias: str | None
    model_name: str
    source: str
    """``registry``, ``directory`` or ``last_known_good``."""
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    degraded: str | None = None
    """Why the server runs on its last-known-good copy instead of the source (None if it does not)."""
    shadow: DeliveryEngine | None = None
    """The same model with full events still listed, for substitution to see what they displaced
    (:mod:`serving.substitutes`); None when no listed event is left out for being full."""

    @property
    def bundle(self) -> ModelBundle:
        return self.engine.bundle

    @property
    def manifest(self) -> dict[str, Any]:
        return self.engine.bundle.manifest

    def data_end(self) -> float | None:
        """The last event the model was trained on (epoch seconds); None when its manifest has none."""
        moment = parse_timestamp(self.manifest.get("data_end"), self.bundle.settings.timezone)
        return None if moment is None else moment.timestamp()

    def labels(self) -> dict[str, str]:
        """Model facts as string labels (for the Prometheus info metric)."""
        return {
            "version": self.version, "alias": self.alias or "", "name": self.model_name,
            "model": str(self.manifest.get("model", "")), "trained_at": str(self.manifest.get("trained_at", "")),
            "source": self.source,
        }


class ModelHolder:
    def __init__(self, source: ModelSource, cache: LastKnownGood, scratch: Path, *, lang: str = "zh",
                 on_change: Callable[[ServedModel], None] | None = None,
                 candidate_users: int = DEFAULT_CANDIDATE_USERS,
                 overlay: Callable[[ServedModel], ServedModel] | None = None) -> None:
        self.source = source
        self.cache = cache
        self.scratch = Path(scratch)
        self.lang = lang
        self.on_change = on_change
        self.current: ServedModel | None = None
        """What requests are served from: the loaded model with the live catalogue laid over it."""
        self.loaded: ServedModel | None = None
        """The model as loaded from its source, before the overlay."""
        self.overlay = overlay
        self._overlay_lock = threading.Lock()
        self.problem: str | None = None
        """Why nothing (or only the last-known-good copy) is served."""
        self._reload_lock = threading.Lock()
        self.candidate_users = candidate_users
        self._candidate_job: CandidateJob | None = None

    # ---- startup ---------------------------------------------------------------------
    def start(self) -> ServedModel | None:
        """Load from the source, else the last-known-good copy (degraded), else serve nothing."""
        with self._reload_lock:
            try:
                self._swap(self._load_from_source())
                return self.current
            except Exception as exc:  # any failure at all: fall back, never crash the server
                reason = _describe(exc)
                log.error("cannot load the model from the %s: %s", self.source.kind, reason)
            served = self._load_cached(reason)
            if served is not None:
                self._swap(served)
            return self.current

    def _load_cached(self, reason: str) -> ServedModel | None:
        cached = self.cache.read()
        if cached is None:
            self.problem = reason
            return None
        try:
            served = self._build(cached.bundle_dir, cached.version, cached.alias, cached.model_name,
                                 "last_known_good",
                                 degraded=f"{reason}; serving the last-known-good copy of version {cached.version}")
        except Exception as exc:
            reason = f"{reason}; the last-known-good copy failed too: {_describe(exc)}"
            log.error("%s", reason)
            self.problem = reason
            return None
        log.warning("serving the last-known-good copy of version %s (saved %s)", cached.version, cached.saved_at)
        return served

    # ---- reloads ---------------------------------------------------------------------
    def reload(self) -> ServedModel:
        """Load the source's current model and swap it in; raise :class:`LoadFailed` if it cannot."""
        with self._reload_lock:
            try:
                served = self._load_from_source()
            except Exception as exc:
                reason = _describe(exc)
                log.error("reload failed, keeping %s: %s",
                          f"version {self.current.version}" if self.current else "nothing", reason)
                raise LoadFailed(reason) from exc
            previous = self.current
            self._swap(served)
            log.info("now serving version %s (was %s)", served.version, previous.version if previous else None)
            return served

    def reload_if_changed(self) -> bool:
        """Reload when the source's version differs from the served one (or we run degraded)."""
        try:
            version = self.source.current_version()
        except SourceError as exc:
            log.warning("cannot poll the model source: %s", exc)
            return False
        current = self.current
        if current is not None and current.version == version and current.degraded is None:
            return False
        self.reload()
        return True

    # ---- building --------------------------------------------------------------------
    def _load_from_source(self) -> ServedModel:
        workdir = self.scratch / f"download-{uuid.uuid4().hex[:8]}"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            fetched = self.source.fetch(workdir)
            served = self._build(fetched.bundle_dir, fetched.version, fetched.alias, fetched.model_name,
                                 fetched.source)
            try:
                self.cache.save(fetched)
            except Exception:  # the model serves fine; only the next degraded start is affected
                log.exception("could not save the last-known-good copy of version %s", fetched.version)
            return served
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _build(self, bundle_dir: Path, version: str, alias: str | None, model_name: str, source: str,
               degraded: str | None = None) -> ServedModel:
        started = time.perf_counter()
        bundle = ModelBundle.load(bundle_dir)
        engine = DeliveryEngine(bundle, self.lang)
        warm_up(engine)
        log.info("loaded version %s (%s, %d users x %d items) in %.2fs", version, bundle.model.name,
                 len(bundle.users), len(bundle.catalog), time.perf_counter() - started)
        return ServedModel(engine, version, alias, model_name, source, degraded=degraded)

    def _swap(self, served: ServedModel) -> None:
        with self._overlay_lock:
            self.loaded = served
            current = self.current = self._overlaid(served)  # the one reference requests read: one store
        self.problem = served.degraded
        if self._candidate_job is not None:
            self._candidate_job.stop()  # its engine no longer serves
            self._candidate_job = None
        if served.engine.candidates is None and self.candidate_users > 0:
            self._candidate_job = CandidateJob(served.engine, self.candidate_users).start()
        if self.on_change is not None:
            self.on_change(current)

    def refresh_overlay(self) -> None:
        """Lay the live catalogue over the loaded model again (after it changed) and serve that."""
        with self._overlay_lock:
            if self.loaded is not None:
                self.current = self._overlaid(self.loaded)

    def _overlaid(self, served: ServedModel) -> ServedModel:
        if self.overlay is None:
            return served
        try:
            return self.overlay(served)
        except Exception:  # the trained catalogue still serves; the next change tries again
            log.exception("could not lay the live catalogue over version %s", served.version)
            return served

    def wait_for_candidates(self, timeout: float | None = None) -> bool:
        """Block until the background candidate job (if any) ends; True if none is running."""
        job = self._candidate_job
        return job is None or job.join(timeout)


class CandidateJob:
    """Computes the candidates of an engine whose artifact has none, in a daemon thread."""

    def __init__(self, engine: DeliveryEngine, max_users: int) -> None:
        self.engine = engine
        self.max_users = max_users
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="candidates", daemon=True)

    def start(self) -> CandidateJob:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        bundle = self.engine.bundle
        known = int((np.diff(bundle.weights.indptr) > 0).sum())
        users = most_active_users(bundle, self.max_users)  # the likeliest to ask; the rest keep full scoring
        if len(users) < known:
            log.warning("the artifact has no candidates: computing them for the %d most active of %d users "
                        "(retrain to have training compute them)", len(users), known)
        else:
            log.info("the artifact has no candidates: computing them for %d users in the background", len(users))
        try:
            candidates = precompute_candidates(bundle, users=users, should_stop=self._stop.is_set)
            if candidates is not None and not self._stop.is_set():
                self.engine.use_candidates(candidates)
                log.info("candidates ready: known users are served from them")
        except Exception:  # the full path keeps serving; nothing is lost but speed
            log.exception("computing candidates failed; known users keep full scoring")


def warm_up(engine: DeliveryEngine) -> None:
    """Serve one list of each kind, so caches fill before the first real request (and a model
    that loads but cannot recommend is refused before it replaces a working one)."""
    filters = Filters(at=time.time())
    engine.available(filters.at)
    with_history = np.flatnonzero(np.diff(engine.bundle.weights.indptr) > 0)
    if len(with_history):
        engine.for_user(engine.users.users.id_of(int(with_history[0])), 10, filters)
    engine.for_user(WARM_UP_USER, 10, filters)
    if len(engine.catalog):
        engine.similar(engine.catalog.items.id_of(0), 10, filters)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, SourceError | LoadFailed) else f"{type(exc).__name__}: {text}"
