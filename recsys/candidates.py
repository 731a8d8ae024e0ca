"""Per-user candidate lists: each user's best items, scored offline and only filtered online.

Scoring a user is most of what a request costs: a dense product over the whole catalog,
the content and popularity terms, a top-k over every item. For a known user whose history
has not changed since training none of it depends on the request, so it is done once per
model (:mod:`recsys.candidate_scoring`): every user's best ``k`` items that may ever be
shown to them (not in their history, not hidden, a finite score), in exact rank order with
their scores. A request then only drops what is unavailable at its time (ended items, its
kind/category/place filters) and diversifies what is left; availability is never baked in,
because it changes by the minute.

This module is the lists' data type alone: their arrays, the checks that refuse lists made
for other data, and the file format. It knows nothing of bundles or models, so the bundle
can hold and load lists without depending on how they are scored.

Each candidate also carries its reason's anchor (:func:`recsys.reasons.anchor_codes`: which
history item the reason names, if any), computed with the list for the first candidates and
:data:`NOT_ANCHORED` for the rest, which a request that shows one computes then.

Stored in the bundle as ``candidates.npz`` (``allow_pickle=False``), one row per user that
has a list: ``items`` int32 (rows, k) padded with -1, ``scores`` float32 (nan where padded),
``anchors`` int16 (int32 for histories over 32,767 items; :data:`NOT_ANCHORED` past the
anchored prefix), ``complete`` bool per row (the list holds every item the user could be
shown, so nothing lies beyond it) and ``slots`` int32 per user (their row, -1 without a list,
which sends them to the full path; a file without ``slots`` has one row per user). Memory is
10 bytes x k per covered user plus 4 bytes per user: 400 MB for 200,000 users at k = 200.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FILE_NAME = "candidates.npz"
NOT_ANCHORED = -3
"""Anchor code of a candidate past the anchored prefix: computed by the request that shows it
(:func:`recsys.reasons.anchor_codes`'s codes are >= -2)."""
DEFAULT_MAX_USERS = 1_000_000
"""Users given a list by a training job, the most active first: 2 GB at k = 200. Beyond it,
lists would outgrow every server's memory (tens of millions of users); the rest keep the
full path, which costs a few milliseconds more per request, not a different answer."""


class CandidatesError(ValueError):
    """Stored candidates that do not fit the bundle they come with."""


@dataclass(frozen=True, eq=False)
class Candidates:
    """The best items, in rank order, of the users that have a list (see the module docstring).

    The arrays hold one row per covered user; ``slots`` maps a user's index to their row.
    """

    items: np.ndarray
    """int32 (rows, k), -1 after the row's last candidate."""
    scores: np.ndarray
    """float32 (rows, k), the model's score of each candidate (nan where padded)."""
    anchors: np.ndarray
    """int16/int32 (rows, k), each candidate's :func:`recsys.reasons.anchor_codes` code."""
    complete: np.ndarray
    """bool (rows,): the row holds every item its user may ever be shown."""
    slots: np.ndarray | None = None
    """int32 (n_users,): each user's row, -1 for a user without a list; None: row u is user u."""
    lengths: np.ndarray = field(init=False, repr=False)
    """int32 (rows,): each row's number of candidates (derived)."""

    def __post_init__(self) -> None:
        if self.items.ndim != 2 or not self.items.shape == self.scores.shape == self.anchors.shape:
            raise CandidatesError(f"candidate items {self.items.shape}, scores {self.scores.shape} and anchors "
                                  f"{self.anchors.shape} differ")
        if self.complete.shape != (self.items.shape[0],):
            raise CandidatesError(f"{self.complete.shape} completeness flags for {self.items.shape[0]} rows")
        if self.slots is not None:
            owned = self.slots[self.slots >= 0]
            if (self.slots.ndim != 1 or self.slots.min(initial=0) < -1 or len(owned) != self.n_rows
                    or not np.array_equal(np.sort(owned), np.arange(self.n_rows))):
                raise CandidatesError("candidate slots must give each row to exactly one user")
        # a row's valid prefix length, so a request slices instead of scanning for -1
        object.__setattr__(self, "lengths", np.count_nonzero(self.items >= 0, axis=1).astype(np.int32))

    @property
    def n_users(self) -> int:
        return self.n_rows if self.slots is None else len(self.slots)

    @property
    def n_rows(self) -> int:
        return int(self.items.shape[0])

    @property
    def k(self) -> int:
        return int(self.items.shape[1])

    def slot(self, user: int) -> int:
        """The user's row, or -1 when they have no list."""
        return user if self.slots is None else int(self.slots[user])

    def row(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """One user's candidates and their scores, best first (views, no padding; empty without a list)."""
        slot = self.slot(user)
        length = self.lengths[slot] if slot >= 0 else 0
        return self.items[slot, :length], self.scores[slot, :length]

    def anchors_of(self, user: int) -> np.ndarray:
        """The anchor codes of :meth:`row`'s candidates."""
        slot = self.slot(user)
        return self.anchors[slot, : self.lengths[slot] if slot >= 0 else 0]

    def is_complete(self, user: int) -> bool:
        """Whether the user's list holds every item they may ever be shown."""
        slot = self.slot(user)
        return slot >= 0 and bool(self.complete[slot])

    def check(self, history_lengths: np.ndarray, n_items: int) -> None:
        """Refuse candidates made for other data (a stale or foreign file): ``history_lengths``
        holds each user's number of history items, ``n_items`` the catalog size."""
        if self.n_users != len(history_lengths):
            raise CandidatesError(f"candidates for {self.n_users} users, the bundle has {len(history_lengths)}")
        if self.items.size and (self.items.max() >= n_items or self.items.min() < -1):
            raise CandidatesError(f"candidate item indices outside 0..{n_items - 1}")
        padded = np.arange(self.k)[None, :] >= self.lengths[:, None]
        if not np.array_equal(self.items < 0, padded):
            raise CandidatesError("candidate rows must hold their items first and -1 padding after")
        row_history = np.asarray(history_lengths)[self.row_users()]
        if self.anchors.size and (self.anchors.min() < NOT_ANCHORED
                                  or (self.anchors >= row_history[:, None]).any()):
            raise CandidatesError("candidate anchors must be positions in their user's history")

    def row_users(self) -> np.ndarray:
        """The user of each row."""
        if self.slots is None:
            return np.arange(self.n_rows)
        users = np.empty(self.n_rows, dtype=np.int64)
        covered = np.flatnonzero(self.slots >= 0)
        users[self.slots[covered]] = covered
        return users

    # ---- persistence -----------------------------------------------------------------
    def save(self, path: Path) -> Path:
        arrays: dict[str, Any] = {"items": self.items, "scores": self.scores, "anchors": self.anchors,
                                  "complete": self.complete}  # Any: numpy's stub reads **values as allow_pickle
        if self.slots is not None:
            arrays["slots"] = self.slots
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> Candidates:
        with np.load(path, allow_pickle=False) as stored:
            anchors = stored["anchors"]
            if anchors.dtype not in (np.int16, np.int32):
                raise CandidatesError(f"candidate anchors stored as {anchors.dtype}")
            slots = stored["slots"].astype(np.int32, copy=False) if "slots" in stored.files else None
            return cls(stored["items"].astype(np.int32, copy=False),
                       stored["scores"].astype(np.float32, copy=False), anchors,
                       stored["complete"].astype(bool, copy=False), slots)
