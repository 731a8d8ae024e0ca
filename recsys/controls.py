"""The residents' own controls over their lists, as one durable log every process reads.

A resident may switch personalisation off (``personalized``), choose ``senior_mode``, remove
an interest tag the engine derived for them, or declare one (:mod:`recsys.profile`). Each
choice is one JSON line appended (and fsynced, :mod:`recsys.appendlog`) to the engine home's
``store/user_controls.jsonl`` before the API answers:

    {"user_id": "u1", "at": "2026-11-20T03:00:00.000+00:00", "op": "settings", "personalized": false}
    {"user_id": "u1", "at": "...", "op": "remove_tag", "tag": "category:戏曲"}
    {"user_id": "u1", "at": "...", "op": "declare_tag", "tag": "kind:book"}
    {"user_id": "u1", "at": "...", "op": "engaged_tag", "tag": "category:戏曲"}

``engaged_tag`` is written when the resident engages again with an item carrying a removed
tag: the tag comes back. Every server process, and batch recommend, replays the file in
order into :class:`UserControls` per user, so they all see the same choices; a server
follows what other processes append with one ``stat`` per request (:class:`ControlsLog`).
Lines of users erased on request are skipped by every reader and blanked by the next ingest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.appendlog import Shrunk, append_json_line, json_object, read_new_lines
from recsys.contract import parse_timestamp

log = logging.getLogger(__name__)

SETTINGS = "settings"
REMOVE_TAG = "remove_tag"
DECLARE_TAG = "declare_tag"
ENGAGED_TAG = "engaged_tag"
OPS = (SETTINGS, REMOVE_TAG, DECLARE_TAG, ENGAGED_TAG)
SETTING_NAMES = ("personalized", "senior_mode")


@dataclass(frozen=True)
class UserControls:
    """One resident's choices; the default is an untouched resident."""

    personalized: bool = True
    senior_mode: bool = False
    removed_tags: Mapping[str, float] = field(default_factory=dict)
    """Tag key -> when it was removed (epoch seconds)."""
    declared_tags: Mapping[str, float] = field(default_factory=dict)
    """Tag key -> when the resident declared it."""

    @property
    def untouched(self) -> bool:
        """Nothing changes this resident's lists (the fast path may serve them)."""
        return self.personalized and not self.senior_mode and not self.removed_tags and not self.declared_tags

    def settings(self) -> dict[str, bool]:
        return {"personalized": self.personalized, "senior_mode": self.senior_mode}


DEFAULT = UserControls()


def apply(state: UserControls, record: Mapping[str, Any]) -> UserControls:
    """``state`` after one log record (a record it cannot read changes nothing)."""
    op, moment = record.get("op"), _epoch(record.get("at"))
    if op == SETTINGS:
        values = {name: record[name] for name in SETTING_NAMES if isinstance(record.get(name), bool)}
        return replace(state, **values)
    tag = record.get("tag")
    if not isinstance(tag, str) or not tag:
        return state
    removed, declared = dict(state.removed_tags), dict(state.declared_tags)
    if op == REMOVE_TAG:
        removed[tag] = moment
        declared.pop(tag, None)
    elif op == DECLARE_TAG:
        declared[tag] = moment
        removed.pop(tag, None)
    elif op == ENGAGED_TAG:
        removed.pop(tag, None)
    else:
        return state
    return replace(state, removed_tags=removed, declared_tags=declared)


def record(user_id: str, op: str, **values: Any) -> dict[str, Any]:
    """A log record of ``op`` by ``user_id``, stamped now."""
    if op not in OPS:
        raise ValueError(f"unknown control {op!r}")
    return {"user_id": user_id, "at": datetime.now(UTC).isoformat(timespec="milliseconds"), "op": op, **values}


def _epoch(value: object) -> float:
    moment = parse_timestamp(value) if isinstance(value, str) else None
    return moment.timestamp() if moment is not None else 0.0


class ControlsLog:
    """Every resident's controls, replayed from ``user_controls.jsonl`` and kept up to date.

    ``is_erased`` names users erased on request: their lines are skipped (and :meth:`forget`
    drops what was read before the erasure). Thread-safe; :meth:`of` costs one ``stat`` when
    nothing was appended.
    """

    def __init__(self, path: Path, *, is_erased: Callable[[str], bool] | None = None) -> None:
        self.path = Path(path)
        self.is_erased = is_erased or (lambda _user: False)
        self._states: dict[str, UserControls] = {}
        self._offset = 0
        # re-entrant: ``is_erased`` may announce an erasure, whose handler calls :meth:`forget`
        self._lock = threading.RLock()

    def of(self, user_id: str) -> UserControls:
        """The user's controls, after reading whatever any process appended since the last look."""
        self.refresh()
        return self._states.get(user_id, DEFAULT)

    def users(self) -> Mapping[str, UserControls]:
        """Every user with a recorded choice (a snapshot)."""
        self.refresh()
        with self._lock:
            return dict(self._states)

    def refresh(self) -> None:
        with self._lock:
            self._read_locked()

    def append(self, entry: Mapping[str, Any]) -> UserControls:
        """Record ``entry`` durably (see :func:`record`); returns the user's controls after it."""
        user_id = str(entry["user_id"])
        with self._lock:
            self._read_locked()
            append_json_line(self.path, entry)
            self._read_locked()  # our own line, and anything appended before it, in file order
            return self._states.get(user_id, DEFAULT)

    def forget(self, user_id: str) -> None:
        """Drop a user erased on request (their lines are skipped from now on)."""
        with self._lock:
            self._states.pop(user_id, None)

    def counts(self) -> dict[str, int]:
        """Residents per active choice (for ``/metrics``)."""
        states = list(self.users().values())
        return {
            "not_personalized": sum(not s.personalized for s in states),
            "senior_mode": sum(s.senior_mode for s in states),
            "removed_tags": sum(bool(s.removed_tags) for s in states),
            "declared_tags": sum(bool(s.declared_tags) for s in states),
        }

    def _read_locked(self) -> None:
        try:
            lines = read_new_lines(self.path, self._offset)
        except FileNotFoundError:
            return
        except Shrunk:  # rewritten by hand: read it again whole
            log.warning("%s is shorter than already read: reading it again", self.path.name)
            self._states.clear()
            lines = read_new_lines(self.path, 0)
        self._replay(lines.lines)
        self._offset = lines.end

    def _replay(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            if not line.strip():  # blanked by the erasure compaction
                continue
            entry = json_object(line)
            user_id = entry.get("user_id") if entry is not None else None
            if entry is None or not isinstance(user_id, str) or not user_id.strip():
                log.warning("skipping a line of %s that names no user", self.path.name)
                continue
            user_id = user_id.strip()
            if self.is_erased(user_id):
                continue
            self._states[user_id] = apply(self._states.get(user_id, DEFAULT), entry)


def read_controls(path: Path, erased: Iterable[str] = ()) -> dict[str, UserControls]:
    """Every user's controls in the log at ``path`` (batch jobs), users in ``erased`` left out."""
    gone = frozenset(erased)
    return dict(ControlsLog(path, is_erased=gone.__contains__).users())
