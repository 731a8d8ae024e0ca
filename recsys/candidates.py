"""Per-user candidate lists: scored offline, only filtered online.

Scoring a user is most of what a request costs: a dense product over the whole catalog,
the content and popularity terms, a top-k over every item. For a known user whose history
has not changed since training none of it depends on the request, so it is done once per
model: every user's best ``k`` items that may ever be shown to them (not in their history,
not hidden, a finite score), in exact rank order with their scores. A request then only
drops what is unavailable at its time (ended items, its kind/category/place filters) and
diversifies what is left; availability is never baked in, because it changes by the minute.

The lists are exact, not approximate (except for a bundle with an approximate index, a
catalog too large to score in full: there they are what the index finds, as the API's full
path for that bundle finds them). Users are scored many at a time, with the same model call
the API's full path makes for one user, so a chunk of users costs one matrix product (BLAS
level 3) instead of one matrix-vector product per user, which reads the whole item factor
matrix per user and was 10x slower at 512 factors (212,238 users x 10,000 items, 512
factors, k = 200: 93 CPU-seconds for the lists with their anchors, by two processes,
against 71 for implicit's own batched ``recommend`` of the same top 200). The contract with the full path is
therefore "the same items in the same order, up to float noise": a batched product rounds
differently in the last bits from a one-row product (about 1e-7 relative), so a stored
score may differ from the full path's by that much, and two items whose scores are that
close may come in the other order. Everything else is exact: the order is
:func:`recsys.ranking.top_k`'s (score, then lower index) over the stored scores, and
whenever the first ``m`` allowed items are all among a user's candidates they are the full
path's top ``m`` (up to such near-ties); when too few survive the filters, the caller takes
the full path. The chunks are cut the same way whoever scores them (:func:`chunk_size`;
workers take whole chunks), so the lists do not depend on the number of processes, bit for
bit.

The first :data:`ANCHORED` candidates of a list also carry their reason's anchor
(:func:`recsys.reasons.anchor_codes`: which history item the reason names, if any), since
that too depends only on the history: it is the other costly part of a request (an items x
history similarity). A request reads about the first ``5 x n`` candidates that survive its
filters, so these cover most requests; the rest are :data:`NOT_ANCHORED`, and a request that
shows one computes its anchor then (a few items x history: cheap for every model). Anchoring
every candidate would cost the training job more than scoring them: 200 x history
similarities per user against one row of a matrix product. The API's full path reads the
same stored anchors for items that have them, so both paths explain alike.

Stored in the bundle as ``candidates.npz`` (``allow_pickle=False``), one row per user that
has a list: ``items`` int32 (rows, k) padded with -1, ``scores`` float32 (nan where padded),
``anchors`` int16 (int32 for histories over 32,767 items; :data:`NOT_ANCHORED` past the
first :data:`ANCHORED`), ``complete`` bool per row (the
list holds every item the user could be shown, so nothing lies beyond it) and ``slots``
int32 per user (their row, -1 without a list, which sends them to the full path; a file
without ``slots`` has one row per user). Memory is 10 bytes x k per covered user plus 4
bytes per user: 400 MB for 200,000 users at k = 200. A training job covers at most
:data:`DEFAULT_MAX_USERS` users, the most active.

A training job computes them after saving the bundle (:func:`save_with_candidates`): for a
large bundle, several processes each load the saved bundle and score a share of the chunks,
with the same calls, so the lists do not depend on how many took part.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys.confidence import to_confidence
from recsys.ranking import top_k_rows
from recsys.reasons import NO_ANCHOR, anchor_codes
from recsys.threads import single_threaded_blas

if TYPE_CHECKING:
    from recsys.bundle import ModelBundle

log = logging.getLogger(__name__)

DEFAULT_K = 200
"""Candidates kept per user: a 10-item list diversified over 5 x 10 candidates still finds
them after a large share of the catalog has ended or been filtered out."""
ANCHORED = 64
"""Candidates per list, the first ones, whose reason anchor is computed with the list: what an
unfiltered 10-item list diversified over 5 x 10 candidates reads, with room for ended items."""
NOT_ANCHORED = -3
"""Anchor code of a candidate past :data:`ANCHORED`: computed by the request that shows it
(:func:`recsys.reasons.anchor_codes`'s codes are >= -2)."""

FILE_NAME = "candidates.npz"
CHUNK_USERS = 512
"""Users per unit of work, at most: scored by one model call (progress is logged and
cancellation checked between chunks)."""
CHUNK_SCORE_BYTES = 32 << 20
"""Dense float32 scores (users x items) one chunk may hold: fewer users per chunk on a large catalog."""
PARALLEL_MIN_USERS = 20_000
"""Below this many users a training job scores them in its own process (starting workers costs
a few seconds: each imports the engine and loads the bundle)."""
MAX_WORKERS = 8
"""Processes at most: each holds its own copy of the bundle."""
PROGRESS_SECONDS = 30.0
"""How often the waiting parent logs that its workers are still scoring."""
DEFAULT_MAX_USERS = 1_000_000
"""Users given a list by a training job, the most active first: 2 GB at k = 200. Beyond it,
lists would outgrow every server's memory (tens of millions of users); the rest keep the
full path, which costs a few milliseconds more per request, not a different answer."""


class CandidatesError(ValueError):
    """Stored candidates that do not fit the bundle they come with."""


class CandidateWorkersFailed(RuntimeError):
    """A worker process of :func:`precompute_in_processes` did not finish."""


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


def precompute_candidates(bundle: ModelBundle, k: int = DEFAULT_K, *, users: Sequence[int] | np.ndarray | None = None,
                          should_stop: Callable[[], bool] | None = None,
                          chunk: int | None = None) -> Candidates | None:
    """Score every user with history (or only ``users``) and keep their best ``k`` items.

    Excludes each user's history, hidden items and items the model cannot score; never
    time. Users without history, and users left out of ``users``, get no row (their slot is
    -1, so the full path serves them). Users are scored a chunk at a time
    (``chunk`` users, default :func:`chunk_size`), each chunk by one call of the model, with
    BLAS pinned to one thread as in the server. Returns None if ``should_stop`` turns true
    before the end (checked between chunks).
    """
    rows = _rows_to_score(bundle, users)
    lists = _empty_lists(bundle, k, rows)
    started = time.perf_counter()
    chunks = split_into_chunks(rows, chunk or chunk_size(bundle))
    with single_threaded_blas():
        for number, part in enumerate(chunks):
            if should_stop is not None and should_stop():
                log.info("candidate computation stopped after %d of %d chunks", number, len(chunks))
                return None
            _store(lists, _score_rows(bundle, part, lists.k))
            if (number + 1) % 50 == 0:
                log.info("candidates: %d of %d chunks (%.0fs)", number + 1, len(chunks), time.perf_counter() - started)
    log.info("candidates for %d users (k=%d) in %.1fs", len(rows), lists.k, time.perf_counter() - started)
    return _finished(lists)


def chunk_size(bundle: ModelBundle) -> int:
    """Users scored per model call: :data:`CHUNK_USERS`, fewer when their dense scores would
    outgrow :data:`CHUNK_SCORE_BYTES`. A function of the bundle alone, so every process that
    scores a bundle cuts the same chunks (a batched product's last bits depend on the batch)."""
    return max(1, min(CHUNK_USERS, CHUNK_SCORE_BYTES // (4 * max(len(bundle.catalog), 1))))


def split_into_chunks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """``rows`` cut into consecutive chunks of ``size`` (the last may be shorter)."""
    return [rows[start:start + size] for start in range(0, len(rows), size)]


def attach_candidates(bundle: ModelBundle, k: int = DEFAULT_K) -> ModelBundle:
    """Give ``bundle`` its candidate lists (saved with it); returns the bundle."""
    bundle.candidates = precompute_candidates(bundle, k)
    return bundle


def save_with_candidates(bundle: ModelBundle, directory: Path, k: int = DEFAULT_K,
                         workers: int | None = None, max_users: int = DEFAULT_MAX_USERS) -> Path:
    """Save ``bundle`` to ``directory``, then compute its candidate lists and save them with it.

    Lists are made for at most ``max_users`` users, the most active (:func:`most_active_users`);
    the others are served by full scoring. With ``PARALLEL_MIN_USERS`` users or more and
    more than one core, ``workers`` processes (default: the cores, at most ``MAX_WORKERS``)
    each load the saved bundle and score a share of the chunks
    (:func:`precompute_in_processes`); each chunk is the same one-BLAS-thread call, so the
    lists are identical to :func:`precompute_candidates`' (asserted in the tests).
    Processes, not threads: selecting and explaining each user's list are many small numpy
    calls that hold the GIL. If a worker fails, this process scores everyone itself.
    """
    path = bundle.save(directory)
    rows = most_active_users(bundle, max_users)
    if len(rows) < int((np.diff(bundle.weights.indptr) > 0).sum()):
        log.info("candidate lists for the %d most active users; the others are scored per request", len(rows))
    workers = min(workers or os.cpu_count() or 1, MAX_WORKERS)
    bundle.candidates = None
    if workers > 1 and len(rows) >= PARALLEL_MIN_USERS:
        try:
            bundle.candidates = precompute_in_processes(bundle, path, rows, k, workers)
        except (CandidateWorkersFailed, OSError) as exc:  # e.g. a worker killed for memory: do it here instead
            log.warning("candidate worker processes failed (%s); scoring in this process", exc)
    if bundle.candidates is None:
        bundle.candidates = precompute_candidates(bundle, k, users=rows)
    if bundle.candidates is not None:  # (None only if asked to stop, which nobody does here)
        bundle.candidates.save(path / FILE_NAME)
    return path


def precompute_in_processes(bundle: ModelBundle, directory: Path, rows: np.ndarray, k: int,
                            workers: int, chunk: int | None = None) -> Candidates:
    """:func:`precompute_candidates` for ``rows`` by ``workers`` processes reading the bundle saved
    at ``directory`` (``bundle`` is that bundle, in this process).

    Each worker is a fresh interpreter running :mod:`recsys.candidate_worker` on every
    ``workers``-th chunk (of ``chunk`` users, default :func:`chunk_size`): it never imports
    the caller's ``__main__`` (as multiprocessing's spawn would, running an unguarded
    script's training again) nor inherits its threads and locks (as fork would). Raises
    :class:`CandidateWorkersFailed` when a worker fails.
    """
    lists = _empty_lists(bundle, k, rows)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recsys-candidates-") as tmp:
        jobs: list[_Worker] = []
        size = chunk or chunk_size(bundle)
        chunks = split_into_chunks(rows, size)
        try:
            for number in range(workers):
                share = np.concatenate([rows[:0], *chunks[number::workers]])
                jobs.append(_Worker.start(Path(tmp), number, directory, share, lists.k, size))
            _wait_for(jobs, started)
        finally:
            for job in jobs:
                job.stop()
        for job in jobs:
            with np.load(job.out, allow_pickle=False) as stored:
                _store(lists, _Scored(**{name: stored[name] for name in _Scored.__dataclass_fields__}))
    log.info("candidates for %d users (k=%d) in %.1fs by %d processes", len(rows), lists.k,
             time.perf_counter() - started, workers)
    return _finished(lists)


@dataclass(frozen=True)
class _Worker:
    """One ``python -m recsys.candidate_worker`` process and its files."""

    process: subprocess.Popen[bytes]
    out: Path
    errors: Path

    @classmethod
    def start(cls, tmp: Path, number: int, directory: Path, rows: np.ndarray, k: int, chunk: int) -> _Worker:
        share, out, errors = (tmp / f"{name}-{number}{ext}" for name, ext in
                              (("rows", ".npy"), ("lists", ".npz"), ("stderr", ".txt")))
        np.save(share, rows)
        command = [sys.executable, "-m", "recsys.candidate_worker", str(directory), str(share), str(k), str(out),
                   str(chunk)]
        with open(errors, "wb") as stderr:  # a file, not a pipe: a chatty worker never blocks on a full pipe
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        return cls(process, out, errors)

    def failure(self) -> str | None:
        code = self.process.poll()
        if code in (None, 0):
            return None
        tail = self.errors.read_text(encoding="utf-8", errors="replace").strip()[-2000:]
        return f"a candidate worker exited with {code}: {tail}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _wait_for(jobs: list[_Worker], started: float) -> None:
    """Wait for every worker, logging progress; raise as soon as one fails."""
    last_report = time.perf_counter()
    while True:
        codes = [job.process.poll() for job in jobs]
        problem = next((failure for job in jobs if (failure := job.failure()) is not None), None)
        if problem is not None:
            raise CandidateWorkersFailed(problem)
        if all(code is not None for code in codes):
            return
        if time.perf_counter() - last_report >= PROGRESS_SECONDS:
            log.info("candidates: %d of %d processes still scoring (%.0fs)", codes.count(None), len(jobs),
                     time.perf_counter() - started)
            last_report = time.perf_counter()
        time.sleep(0.2)


# ---- the pieces both paths share ---------------------------------------------------------
@dataclass(frozen=True)
class _Scored:
    """One chunk's lists: ``rows`` and, per row, its items, scores and anchors (padded to k)."""

    rows: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    anchors: np.ndarray
    lengths: np.ndarray


def _empty_lists(bundle: ModelBundle, k: int, rows: np.ndarray) -> Candidates:
    """Unfilled lists with one row per user in ``rows`` (in that order)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_users, n_items = bundle.weights.shape
    k = min(k, n_items) if n_items else 1
    history_lengths = np.diff(bundle.weights.indptr)
    narrow = not len(history_lengths) or history_lengths.max() <= np.iinfo(np.int16).max
    slots = np.full(n_users, -1, dtype=np.int32)
    slots[rows] = np.arange(len(rows), dtype=np.int32)
    return Candidates(np.full((len(rows), k), -1, dtype=np.int32), np.full((len(rows), k), np.nan, dtype=np.float32),
                      np.full((len(rows), k), NO_ANCHOR, dtype=np.int16 if narrow else np.int32),
                      np.zeros(len(rows), dtype=bool), slots)


def _rows_to_score(bundle: ModelBundle, users: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """The asked users (default: all) that have a history, in index order."""
    has_history = np.diff(bundle.weights.indptr) > 0
    rows = np.flatnonzero(has_history) if users is None else np.unique(np.asarray(users, dtype=np.int64))
    asked: np.ndarray = rows[has_history[rows]]
    return asked


def most_active_users(bundle: ModelBundle, max_users: int) -> np.ndarray:
    """The users with a history, or the ``max_users`` with the longest ones (the likeliest to come
    back; ties by index), in index order."""
    return most_active_rows(bundle.weights, max_users)


def most_active_rows(weights: sp.csr_matrix, max_users: int) -> np.ndarray:
    """:func:`most_active_users` of a users x items history matrix (benchmarks use it without a bundle)."""
    activity = np.diff(weights.indptr)
    users = np.flatnonzero(activity > 0)
    if len(users) > max_users:
        users = np.sort(users[np.argsort(-activity[users], kind="stable")[:max(max_users, 0)]])
    return users


def _score_rows(bundle: ModelBundle, rows: np.ndarray, k: int) -> _Scored:
    """The lists of one chunk of users: one model call for all of them, then each row's top
    ``k`` (:func:`recsys.ranking.top_k_rows`) and its reasons' anchors."""
    if bundle.ann is not None:
        return _score_rows_through_index(bundle, rows, k)
    if len(rows) == 0:  # (a worker's share can be empty)
        return _no_rows(k)
    history = bundle.weights[rows]
    scores = _writable(bundle.model.score(rows, _confidence(bundle, history)))
    scores[:, bundle.catalog.hidden] = -np.inf
    scores[np.repeat(np.arange(len(rows)), np.diff(history.indptr)), history.indices] = -np.inf
    best = top_k_rows(scores, k)
    filled = best >= 0
    values = np.where(filled, np.take_along_axis(scores, np.where(filled, best, 0), axis=1), np.nan)
    lengths = filled.sum(axis=1).astype(np.int32)
    anchors = _anchor_rows(bundle, best, lengths, history)
    return _Scored(rows, best.astype(np.int32), values.astype(np.float32), anchors, lengths)


def _anchor_rows(bundle: ModelBundle, best: np.ndarray, lengths: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
    """Each row's anchor codes: computed for its first :data:`ANCHORED` candidates,
    :data:`NOT_ANCHORED` for the rest, :data:`recsys.reasons.NO_ANCHOR` where padded."""
    anchors = np.full(best.shape, NO_ANCHOR, dtype=np.int32)
    for position, length in enumerate(lengths.tolist()):
        start, end = history.indptr[position], history.indptr[position + 1]
        anchored = min(length, ANCHORED)
        anchors[position, :anchored] = anchor_codes(bundle.model, best[position, :anchored], history.indices[start:end])
        anchors[position, anchored:length] = NOT_ANCHORED
    return anchors


def _writable(scores: np.ndarray) -> np.ndarray:
    """``scores`` as float32 that may be overwritten: as they are when the model returned a fresh
    array of its own (factor models, EASE, hybrids: no copy of chunk x catalog), else a copy (a
    view may share memory with the model's state)."""
    if scores.dtype == np.float32 and scores.base is None and scores.flags.writeable:
        return scores
    return np.array(scores, dtype=np.float32, copy=True)


def _confidence(bundle: ModelBundle, history: sp.csr_matrix) -> sp.csr_matrix:
    """The confidences the full path computes for each row alone: ``log`` and ``linear`` act
    entry by entry; ``bm25`` weighs a row against the rows it is given, so one row at a time."""
    settings = bundle.settings
    if settings.confidence != "bm25":
        return to_confidence(history, settings.confidence, settings.alpha)
    return sp.vstack([to_confidence(history[row], settings.confidence, settings.alpha)
                      for row in range(history.shape[0])], format="csr", dtype=np.float32)


def _no_rows(k: int) -> _Scored:
    return _Scored(np.empty(0, np.int64), np.empty((0, k), np.int32), np.empty((0, k), np.float32),
                   np.empty((0, k), np.int32), np.empty(0, np.int32))


def _score_rows_through_index(bundle: ModelBundle, rows: np.ndarray, k: int) -> _Scored:
    """:func:`_score_rows` for a bundle with an approximate index (a large catalog): each user's
    ``k`` best through :func:`recsys.ann.approximate_top_n`, as the API's full path finds them
    for such a bundle, at a fraction of scoring every item."""
    from recsys.ann import approximate_top_n  # faiss: only for bundles that have an index

    if len(rows) == 0:  # (a worker's share can be empty)
        return _no_rows(k)
    if bundle.ann is None:
        raise ValueError("the bundle has no approximate index")
    settings = bundle.settings
    history = bundle.weights[rows]
    best, values = approximate_top_n(bundle.model, bundle.ann, rows, to_confidence(
        history, settings.confidence, settings.alpha), ~bundle.catalog.hidden, k, exclude=history)
    filled = best >= 0
    lengths = filled.sum(axis=1).astype(np.int32)
    anchors = _anchor_rows(bundle, best, lengths, history)
    return _Scored(rows, best.astype(np.int32), np.where(filled, values, np.nan).astype(np.float32), anchors,
                   lengths)


def score_share(bundle: ModelBundle, rows: np.ndarray, k: int, chunk: int | None = None) -> dict[str, np.ndarray]:
    """A worker's share (:mod:`recsys.candidate_worker`): the lists of ``rows``, as arrays to save.

    ``rows`` are whole chunks of :func:`precompute_in_processes` put end to end, so cutting them
    by the same ``chunk`` size (default :func:`chunk_size`) again gives the very chunks (and
    bits) of a single-process run."""
    size = chunk or chunk_size(bundle)
    with single_threaded_blas():
        chunks = [_score_rows(bundle, part, k) for part in split_into_chunks(rows, size)]
    if not chunks:
        chunks = [_no_rows(k)]
    return {name: np.concatenate([getattr(chunk, name) for chunk in chunks])
            for name in _Scored.__dataclass_fields__}


def _store(lists: Candidates, scored: _Scored) -> None:
    if lists.slots is None:
        raise ValueError("lists being filled always have slots (_empty_lists)")
    slots = lists.slots[scored.rows]
    lists.items[slots] = scored.items
    lists.scores[slots] = scored.scores
    lists.anchors[slots] = scored.anchors.astype(lists.anchors.dtype)
    lists.complete[slots] = scored.lengths < lists.k


def _finished(lists: Candidates) -> Candidates:
    """The filled lists (built again: the row lengths are derived at construction)."""
    return Candidates(lists.items, lists.scores, lists.anchors, lists.complete, lists.slots)
