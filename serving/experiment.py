"""Every server process follows the A/B test file and serves the challenger's bundle beside the champion's.

The state lives in ``<home>/serving/experiment.json`` (:mod:`recsys.experiment`, replaced
whole). A request for a user's list calls :meth:`ExperimentFollower.serving`, which looks at
the file's identity (inode, mtime, size) at most every ``check_interval`` seconds (default
0.2) and re-reads it only when it changed: a stat per interval is all a steady state costs,
and a stopped experiment reaches every worker within that interval of its next request.

A running experiment's challenger is loaded in a background thread (registry version, or a
bundle directory), warmed, with the live catalogue laid over it; until it is ready, and
whenever the file is missing, unreadable or stopped, every user gets the champion. A stopped
experiment drops the challenger, so its memory is freed. Users are assigned by
:func:`recsys.experiment.assign`; anonymous lists never reach this module.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from recsys.bundle import ModelBundle
from recsys.delivery import DeliveryEngine
from recsys.experiment import CHAMPION, ExperimentFileError, ExperimentState, Variant, assign, read_state
from serving.sources import RegistrySource
from serving.state import ServedModel, warm_up

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.2
"""Seconds between two looks at the experiment file (at most; only when requests come)."""


class PinnedRegistryVersion(RegistrySource):
    """One registered version, whatever the aliases say."""

    def __init__(self, tracking_uri: str, model_name: str, version: str) -> None:
        super().__init__(tracking_uri, model_name, alias="challenger")
        self.version = version

    def current_version(self) -> str:
        return self.version


class ExperimentFollower:
    """The experiment state of one process and the challenger it serves."""

    def __init__(self, path: Path, load: Callable[[str], ServedModel], *,
                 check_interval: float = CHECK_INTERVAL) -> None:
        self.path = Path(path)
        self.load = load
        self.check_interval = check_interval
        self.state: ExperimentState | None = None
        self.challenger: ServedModel | None = None
        self._key: tuple[int, int, int] | None = None
        self._checked = -1e9
        self._lock = threading.Lock()
        self._loading: str | None = None

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the file if its identity changed (looking at most every ``check_interval``)."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval:
            return
        self._checked = now
        try:
            stat = os.stat(self.path)
            key: tuple[int, int, int] | None = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            key = None
        if key == self._key:
            return
        self._key = key
        try:
            state = read_state(self.path)
        except (OSError, ExperimentFileError) as exc:  # nobody is assigned on a state we cannot read
            log.error("experiment file unreadable, serving everyone the champion: %s", exc)
            state = None
        self._follow(state)

    def _follow(self, state: ExperimentState | None) -> None:
        self.state = state
        if state is None or not state.running:
            if self.challenger is not None:
                log.info("experiment stopped: challenger %s unloaded", self.challenger.version)
            self.challenger = None
            return
        loaded = self.challenger
        if loaded is not None and loaded.version == state.challenger:
            return
        self.challenger = None
        with self._lock:
            if self._loading == state.challenger:
                return
            self._loading = state.challenger
        threading.Thread(target=self._load, args=(state.challenger,), name="challenger", daemon=True).start()

    def _load(self, version: str) -> None:
        try:
            served = self.load(version)
        except Exception:  # the champion keeps serving everyone; a new state file tries again
            log.exception("cannot load challenger %s; everyone gets the champion", version)
            return
        finally:
            with self._lock:
                self._loading = None
        state = self.state
        if state is not None and state.running and state.challenger == version:
            self.challenger = served
            log.info("challenger %s loaded for experiment %s (share %.2f)", version, state.experiment_id, state.share)

    def variant_of(self, user_id: str | None) -> Variant:
        """The arm serving ``user_id`` now (the champion until the challenger is loaded)."""
        self.refresh()
        if self.challenger is None:
            return CHAMPION
        return assign(self.state, user_id)

    def serving(self, user_id: str | None, champion: ServedModel) -> tuple[ServedModel, Variant]:
        """The model and variant for ``user_id``'s list."""
        self.refresh()
        challenger, state = self.challenger, self.state
        if challenger is None or assign(state, user_id) == CHAMPION:
            return champion, CHAMPION
        return challenger, "challenger"


def challenger_loader(tracking_uri: str, model_name: str, scratch: Path, lang: str,
                      overlay: Callable[[ServedModel], ServedModel] | None) -> Callable[[str], ServedModel]:
    """Load a challenger: an existing bundle directory's path, else a registered version number."""
    def load(version: str) -> ServedModel:
        directory = Path(version)
        if directory.is_dir():
            return _build(directory, version, str(directory), "directory", lang, overlay)
        workdir = scratch / f"challenger-{uuid.uuid4().hex[:8]}"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            fetched = PinnedRegistryVersion(tracking_uri, model_name, version).fetch(workdir)
            return _build(fetched.bundle_dir, version, model_name, "registry", lang, overlay)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    return load


def _build(bundle_dir: Path, version: str, model_name: str, source: str, lang: str,
           overlay: Callable[[ServedModel], ServedModel] | None) -> ServedModel:
    engine = DeliveryEngine(ModelBundle.load(bundle_dir), lang)
    warm_up(engine)
    served = ServedModel(engine, version, "challenger", model_name, source)
    return overlay(served) if overlay is not None else served
