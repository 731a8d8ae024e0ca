"""Scoring the candidate lists (:mod:`recsys.candidates`) of a bundle's users.

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
a process scoring a share takes whole chunks, :func:`score_share`), so the lists do not
depend on the number of processes, bit for bit.

The first :data:`ANCHORED` candidates of a list also carry their reason's anchor
(:func:`recsys.reasons.anchor_codes`: which history item the reason names, if any), since
that too depends only on the history: it is the other costly part of a request (an items x
history similarity). A request reads about the first ``5 x n`` candidates that survive its
filters, so these cover most requests; the rest are
:data:`recsys.candidates.NOT_ANCHORED`, and a request that shows one computes its anchor
then (a few items x history: cheap for every model). Anchoring every candidate would cost
the training job more than scoring them: 200 x history similarities per user against one
row of a matrix product. The API's full path reads the same stored anchors for items that
have them, so both paths explain alike.

A training job scores its bundle's lists in several processes
(:mod:`training.candidate_lists`); a server scores an artifact that came without them in a
background thread (:func:`precompute_candidates` with ``should_stop``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.bundle import ModelBundle
from recsys.candidates import NOT_ANCHORED, Candidates
from recsys.confidence import to_confidence
from recsys.ranking import top_k_rows
from recsys.reasons import NO_ANCHOR, anchor_codes
from recsys.repeats import NEVER, kept_out_rows
from recsys.threads import single_threaded_blas

log = logging.getLogger(__name__)

DEFAULT_K = 200
"""Candidates kept per user: a 10-item list diversified over 5 x 10 candidates still finds
them after a large share of the catalog has ended or been filtered out."""
ANCHORED = 64
"""Candidates per list, the first ones, whose reason anchor is computed with the list: what an
unfiltered 10-item list diversified over 5 x 10 candidates reads, with room for ended items."""
CHUNK_USERS = 512
"""Users per unit of work, at most: scored by one model call (progress is logged and
cancellation checked between chunks)."""
CHUNK_SCORE_BYTES = 32 << 20
"""Dense float32 scores (users x items) one chunk may hold: fewer users per chunk on a large catalog."""


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
    lists = empty_lists(bundle, k, rows)
    started = time.perf_counter()
    chunks = split_into_chunks(rows, chunk or chunk_size(bundle))
    with single_threaded_blas():
        for number, part in enumerate(chunks):
            if should_stop is not None and should_stop():
                log.info("candidate computation stopped after %d of %d chunks", number, len(chunks))
                return None
            add_scored(lists, _score_rows(bundle, part, lists.k))
            if (number + 1) % 50 == 0:
                log.info("candidates: %d of %d chunks (%.0fs)", number + 1, len(chunks), time.perf_counter() - started)
    log.info("candidates for %d users (k=%d) in %.1fs", len(rows), lists.k, time.perf_counter() - started)
    return finished_lists(lists)


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


# ---- the pieces every way of scoring shares ----------------------------------------------
@dataclass(frozen=True)
class Scored:
    """One chunk's lists: ``rows`` and, per row, its items, scores and anchors (padded to k)."""

    rows: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    anchors: np.ndarray
    lengths: np.ndarray


def empty_lists(bundle: ModelBundle, k: int, rows: np.ndarray) -> Candidates:
    """Unfilled lists with one row per user in ``rows`` (in that order), to fill with
    :func:`add_scored` and finish with :func:`finished_lists`."""
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


def _score_rows(bundle: ModelBundle, rows: np.ndarray, k: int) -> Scored:
    """The lists of one chunk of users: one model call for all of them, then each row's top
    ``k`` (:func:`recsys.ranking.top_k_rows`) and its reasons' anchors."""
    if bundle.ann is not None:
        return _score_rows_through_index(bundle, rows, k)
    if len(rows) == 0:  # (a worker's share can be empty)
        return _no_rows(k)
    history = bundle.weights[rows]
    scores = _writable(bundle.model.score(rows, _confidence(bundle, history)))
    scores[:, bundle.catalog.hidden] = -np.inf
    never = _never_shown(bundle, rows, history)
    scores[np.repeat(np.arange(len(rows)), np.diff(never.indptr)), never.indices] = -np.inf
    best = top_k_rows(scores, k)
    filled = best >= 0
    values = np.where(filled, np.take_along_axis(scores, np.where(filled, best, 0), axis=1), np.nan)
    lengths = filled.sum(axis=1).astype(np.int32)
    anchors = _anchor_rows(bundle, best, lengths, history)
    return Scored(rows, best.astype(np.int32), values.astype(np.float32), anchors, lengths)


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


def _never_shown(bundle: ModelBundle, rows: np.ndarray, history: sp.csr_matrix) -> sp.csr_matrix:
    """The pairs of ``rows`` (histories ``history``) no list ever shows: all of the history but
    what may return (:mod:`recsys.repeats`), which a request drops until its time comes."""
    return kept_out_rows(history, bundle.returns[rows] if bundle.returns is not None else None, NEVER)


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


def _no_rows(k: int) -> Scored:
    return Scored(np.empty(0, np.int64), np.empty((0, k), np.int32), np.empty((0, k), np.float32),
                   np.empty((0, k), np.int32), np.empty(0, np.int32))


def _score_rows_through_index(bundle: ModelBundle, rows: np.ndarray, k: int) -> Scored:
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
        history, settings.confidence, settings.alpha), ~bundle.catalog.hidden, k,
        exclude=_never_shown(bundle, rows, history))
    filled = best >= 0
    lengths = filled.sum(axis=1).astype(np.int32)
    anchors = _anchor_rows(bundle, best, lengths, history)
    return Scored(rows, best.astype(np.int32), np.where(filled, values, np.nan).astype(np.float32), anchors,
                  lengths)


def score_share(bundle: ModelBundle, rows: np.ndarray, k: int, chunk: int | None = None) -> dict[str, np.ndarray]:
    """One process's share of a bundle's lists: the lists of ``rows``, as arrays to save.

    ``rows`` are whole chunks of the users a job scores, put end to end, so cutting them
    by the same ``chunk`` size (default :func:`chunk_size`) again gives the very chunks (and
    bits) of a single-process run."""
    size = chunk or chunk_size(bundle)
    with single_threaded_blas():
        chunks = [_score_rows(bundle, part, k) for part in split_into_chunks(rows, size)]
    if not chunks:
        chunks = [_no_rows(k)]
    return {name: np.concatenate([getattr(chunk, name) for chunk in chunks])
            for name in Scored.__dataclass_fields__}


def add_scored(lists: Candidates, scored: Scored) -> None:
    """Write one chunk's lists into their users' rows of ``lists`` (from :func:`empty_lists`)."""
    if lists.slots is None:
        raise ValueError("lists being filled always have slots (empty_lists)")
    slots = lists.slots[scored.rows]
    lists.items[slots] = scored.items
    lists.scores[slots] = scored.scores
    lists.anchors[slots] = scored.anchors.astype(lists.anchors.dtype)
    lists.complete[slots] = scored.lengths < lists.k


def finished_lists(lists: Candidates) -> Candidates:
    """The filled lists (built again: the row lengths are derived at construction)."""
    return Candidates(lists.items, lists.scores, lists.anchors, lists.complete, lists.slots)
