"""Approximate top-n by inner product for large catalogs (faiss IVF-Flat), under the business filters.

Exact scoring of one user is a dense product with every item's factors and a top-k over
the catalog: at a million items and 64 factors that is ~15 ms of one core per request and
4 GB per thousand users in a batch. Above ``AnnSettings.min_items`` items, training builds
an inverted-file index over the known items' factors and stores it with the model; serving
and batch recommend then ask it for a few times more items than they need, drop what the
request does not allow (history, hidden, ended, kind/category/place filters), and re-score
the survivors exactly with the model's own factors, so scores and order are the exact
ones; only an item the index does not find can be missing.

The index: maximum inner product turned into nearest neighbours (Bachrach et al. 2014:
each item y becomes [y, √(M² − |y|²)] with M the largest norm, a query q becomes [q, 0],
and L2 order is inner-product order), in a faiss IVF-Flat with 4·√n lists from a seeded
k-means, scanning 1/6 of them per query. Lists are scanned exactly, so a query's answer is
deterministic and its scores are exact. Why not the index's plain inner-product metric or
HNSW: ALS gives popular items much longer vectors than the rest (norms spread 100-fold),
and on such factors (12,000 items, see tests/test_ann.py) IVF with inner-product k-means
found 0.54-0.88 of the exact top 10 and HNSW (M=32, inner product) 0.65-0.68, against 1.0
for the transformed IVF. HNSW also takes minutes to build a million items and its graph
depends on the order in which threads insert them. At 1M items x 64 factors on 2 cores
(``experiments/bench_scale.py``) the index builds in ~10 s and a query takes ~1.7 ms p50
on one core against ~14.5 ms for exact scoring, with recall@10 ≈ 0.98 (0.96 at n = 50).

When the over-fetched items leave fewer than ``n`` allowed ones, the next rounds let faiss
skip the disallowed items (an ``IDSelectorBitmap`` of the request's mask) and scan more
lists, since the next allowed items lie farther from the query; after ``max_rounds`` (the
filter allows fewer than ``n`` items in the lists scanned) the request is scored exactly,
so a filter is never violated and a list is never short because of the index.

Which models get an index, and how they are searched, is what the model says of itself
(:meth:`recsys.models.base.Recommender.factor_view` and ``factor_blend``), never its class.
A model whose score blends its factors with other terms (the hybrid: its ALS part with
content and popularity) gets the same treatment through its factors: the index gives the
collaborative candidates, each other term gives its own (cheap: one sparse product, one
stored vector), and the blend is scored exactly on that union only. The union's top ``n``
is the exact top ``n`` when it beats the best score an item outside the lists could reach
(Fagin's threshold: each term's weight times that list's last value); otherwise the lists
grow, and after ``max_rounds`` the user is scored in full.

Storage: ``ann.index`` (``faiss.write_index``; no pickle) and ``ann.json`` (parameters and
the shape it was built for) inside the bundle directory.

This module is the one documented exception to "recsys imports numpy/scipy/implicit/
pydantic only": faiss is a ranking concern of the core, used by the API and batch alike.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp

from recsys.models.base import FactorBlend, Recommender
from recsys.ranking import top_k
from recsys.settings import AnnSettings

log = logging.getLogger(__name__)

INDEX_FILE = "ann.index"
PARAMS_FILE = "ann.json"
FORMAT = 1
KIND = "ivf_flat_l2_mips"
MIN_POINTS_PER_LIST = 39
"""k-means needs about this many training points per list (faiss warns below it)."""


class AnnError(ValueError):
    """A stored index that does not fit the model it comes with."""


@dataclass(eq=False)
class InnerProductIndex:
    """The known items' factors in a faiss IVF-Flat index that ranks by inner product.

    ``item_factors`` and ``known`` are the model's own (all items, not only indexed ones):
    survivors are re-scored with them, and the exact fallback scores with them.
    """

    index: Any
    """faiss.IndexIVFFlat (L2) over the known items' transformed factors, ids = item indices."""
    item_factors: np.ndarray
    known: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    """nlist, nprobe, overfetch, max_rounds, search_threads, seed, n_indexed, dim, n_items."""

    @property
    def overfetch(self) -> int:
        return int(self.params["overfetch"])

    @property
    def max_rounds(self) -> int:
        return int(self.params["max_rounds"])

    @property
    def nprobe(self) -> int:
        return int(self.params["nprobe"])

    @property
    def nlist(self) -> int:
        return int(self.params["nlist"])

    @property
    def n_indexed(self) -> int:
        return int(self.index.ntotal)

    # ---- building --------------------------------------------------------------------
    @classmethod
    def build(cls, item_factors: np.ndarray, known: np.ndarray, settings: AnnSettings | None = None
              ) -> InnerProductIndex:
        """Cluster the known items' transformed factors (seeded k-means) and add them to the lists."""
        settings = settings or AnnSettings()
        factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        known = np.asarray(known, dtype=bool)
        if factors.ndim != 2 or len(factors) != len(known):
            raise ValueError(f"item factors {factors.shape} do not match {len(known)} known-item flags")
        ids = np.flatnonzero(known).astype(np.int64)
        if len(ids) == 0:
            raise ValueError("no known items to index")
        nlist = _lists_for(len(ids), settings.nlist)
        nprobe = min(nlist, settings.nprobe or max(1, nlist // 6))
        started = time.perf_counter()
        _set_threads(settings.build_threads)
        max_norm = float(np.linalg.norm(factors[ids], axis=1).max())
        vectors = _augmented(factors[ids], max_norm)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(vectors.shape[1]), vectors.shape[1], nlist, faiss.METRIC_L2)
        index.cp.seed = settings.seed
        wanted = max(settings.train_sample, MIN_POINTS_PER_LIST * nlist)
        index.cp.max_points_per_centroid = max(256, math.ceil(wanted / nlist))  # faiss must not subsample again
        rng = np.random.default_rng(settings.seed)
        sample = np.arange(len(ids)) if len(ids) <= wanted else np.sort(rng.choice(len(ids), wanted, replace=False))
        index.train(vectors[sample])
        index.add_with_ids(vectors, ids)
        index.nprobe = nprobe
        params = {"format": FORMAT, "kind": KIND, "nlist": nlist, "nprobe": nprobe,
                  "overfetch": settings.overfetch, "max_rounds": settings.max_rounds,
                  "search_threads": settings.search_threads, "seed": settings.seed, "max_norm": max_norm,
                  "n_indexed": len(ids), "dim": int(factors.shape[1]), "n_items": len(known),
                  "build_seconds": round(time.perf_counter() - started, 3)}
        log.info("ANN index: %d items x %d factors, %d lists, %d probed, built in %.1fs",
                 len(ids), factors.shape[1], nlist, nprobe, params["build_seconds"])
        return cls(index, factors, known, params)

    # ---- searching -------------------------------------------------------------------
    def search(self, user_vectors: np.ndarray, k: int, nprobe: int | None = None,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items the index finds best per row of ``user_vectors``, scanning ``nprobe``
        lists (default: the built setting), among the ``allowed`` items only if given (a bool
        mask over the catalog): (items int64 padded with -1, their exact inner products float32
        padded with nan), in the index's order."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = np.ascontiguousarray(np.atleast_2d(user_vectors), dtype=np.float32)
        # OpenMP's thread count is a per-thread setting: set it in the calling (request) thread
        _set_threads(int(self.params.get("search_threads", 1)))
        # faiss's stub omits the keyword arguments SWIG's constructor takes
        params = faiss.SearchParametersIVF(nprobe=min(int(nprobe or self.nprobe), self.nlist))  # type: ignore[call-arg]
        if allowed is not None:
            bits = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")  # alive until the search returns
            params.sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        _, items = self.index.search(_augmented_queries(queries), min(k, self.n_indexed), params=params)
        found = items >= 0
        scores = np.einsum("qkd,qd->qk", self.item_factors[np.where(found, items, 0)], queries)
        return items, np.where(found, scores, np.nan).astype(np.float32)

    # ---- persistence -----------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / INDEX_FILE))
        (directory / PARAMS_FILE).write_text(json.dumps(self.params, indent=2), encoding="utf-8")
        return directory / INDEX_FILE

    @classmethod
    def load(cls, directory: Path, item_factors: np.ndarray, known: np.ndarray) -> InnerProductIndex:
        """The index stored in ``directory``, checked against the model's ``item_factors`` and ``known``."""
        params = json.loads((directory / PARAMS_FILE).read_text(encoding="utf-8"))
        if params.get("format") != FORMAT or params.get("kind") != KIND:
            raise AnnError(f"unsupported ANN index {params.get('kind')!r} format {params.get('format')!r}")
        index = faiss.read_index(str(directory / INDEX_FILE))
        known = np.asarray(known, dtype=bool)
        expected = (int(known.sum()), item_factors.shape[1] + 1, len(known))  # + the norm completion
        found = (int(index.ntotal), int(index.d), int(params.get("n_items", -1)))
        if found != expected:
            raise AnnError(f"ANN index holds (items, dim, catalog) {found}, the model has {expected}")
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
        return cls(index, np.ascontiguousarray(item_factors, dtype=np.float32), known, params)


def has_index(directory: Path) -> bool:
    return (directory / INDEX_FILE).is_file()


# ---- which models get one --------------------------------------------------------------
def build_for(model: Recommender, n_items: int, settings: AnnSettings) -> InnerProductIndex | None:
    """The index for ``model`` when its catalog is large enough and it has factors, else None."""
    part = model.factor_view()
    if part is None or n_items < settings.min_items or not part.known_items.any():
        return None
    return InnerProductIndex.build(part.item_factors, part.known_items, settings)


def load_for(model: Recommender, directory: Path) -> InnerProductIndex | None:
    """The index stored in ``directory`` for ``model``, or None when there is none."""
    if not has_index(directory):
        return None
    part = model.factor_view()
    if part is None:
        raise AnnError(f"{directory} holds an ANN index but model {model.name!r} has no item factors")
    return InnerProductIndex.load(directory, part.item_factors, part.known_items)


# ---- top n under filters ---------------------------------------------------------------
@dataclass(frozen=True)
class _Found:
    """Allowed items best first with exact scores, and the best exact score among every item fetched."""

    items: np.ndarray
    scores: np.ndarray
    best_any: float


def ann_top_n(index: InnerProductIndex, user_vector: np.ndarray, allowed_mask: np.ndarray, n: int,
              overfetch: int | None = None, max_rounds: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best allowed items for one user (indices int64, exact scores float32), best first.

    Fetches ``n x overfetch`` items and keeps the allowed ones; while fewer than ``n``
    survive, searches again among the allowed items only, over more lists each round; after
    ``max_rounds`` searches it scores every item exactly. ``overfetch`` and ``max_rounds``
    default to the index's settings. Ties are
    broken by the lower index, as :func:`recsys.ranking.top_k` does. Fewer than ``n`` come
    back only when fewer than ``n`` known items are allowed.
    """
    found = _allowed_top(index, np.asarray(user_vector, dtype=np.float32).ravel(), allowed_mask, n,
                         overfetch or index.overfetch, max_rounds or index.max_rounds)
    return found.items, found.scores


def _allowed_top(index: InnerProductIndex, vector: np.ndarray, allowed: np.ndarray, n: int,
                 overfetch: int, max_rounds: int) -> _Found:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    fetch = n * overfetch
    if fetch >= index.n_indexed:
        return _exact_top(index, vector, allowed, n)  # the whole index: exact is as cheap and misses nothing
    # the plain search, over-fetched: most requests end here
    fetched, exact = _first(index.search(vector, fetch))
    best_any = float(exact.max()) if len(exact) else -math.inf
    keep = allowed[fetched]
    if int(keep.sum()) >= n:
        return _Found(*_ranked(fetched[keep], exact[keep], n), best_any)
    # the filters removed too much: let the index skip disallowed items, and since the next
    # allowed items lie farther from the query, scan more lists: twice as many when some of
    # the first fetch was allowed, overfetch times as many when none was (a filter that
    # excludes the user's whole neighbourhood), and overfetch times more each further round
    probe = index.nprobe * (2 if keep.any() else overfetch)
    for _ in range(max_rounds - 1):
        probe = min(index.nlist, probe)
        fetched, exact = _first(index.search(vector, n, probe, allowed=allowed))
        if len(fetched) >= n or probe >= index.nlist:  # every list scanned: all the allowed items there are
            return _Found(*_ranked(fetched, exact, n), best_any)
        probe *= overfetch
    return _exact_top(index, vector, allowed, n)


def _first(found: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The first row of a search's (items, scores), without padding."""
    items, scores = found[0][0], found[1][0]
    valid = items >= 0
    return items[valid], scores[valid]


def _exact_top(index: InnerProductIndex, vector: np.ndarray, allowed: np.ndarray, n: int) -> _Found:
    scores = index.item_factors @ vector
    best = top_k(scores, n, allowed & index.known)
    best_any = float(scores[index.known].max()) if index.known.any() else -math.inf
    return _Found(best, scores[best].astype(np.float32), best_any)


def _ranked(items: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best by score, ties by lower index (the order of :func:`recsys.ranking.top_k`)."""
    order = np.lexsort((items, -scores.astype(np.float64)))[:n]
    return items[order].astype(np.int64), scores[order].astype(np.float32)


def ann_top_n_batch(index: InnerProductIndex, user_vectors: np.ndarray, allowed_mask: np.ndarray, n: int,
                    exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise :func:`ann_top_n` with one shared ``allowed_mask`` and per-row ``exclude``d items
    (histories): (rows, n) items padded with -1 and scores padded with nan.

    One batched search serves every row; only rows left with fewer than ``n`` survivors go
    through the per-row rounds.
    """
    vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
    rows = len(vectors)
    items = np.full((rows, n), -1, dtype=np.int64)
    values = np.full((rows, n), np.nan, dtype=np.float32)
    if rows == 0:
        return items, values
    exclude = exclude.tocsr() if exclude is not None else sp.csr_matrix((rows, len(allowed_mask)), dtype=np.float32)
    fetch = n * index.overfetch
    fetched, exact = index.search(vectors, fetch) if fetch < index.n_indexed else (None, None)
    for row in range(rows):
        seen = exclude.indices[exclude.indptr[row]:exclude.indptr[row + 1]]
        best, scores = (None, None)
        if fetched is not None and exact is not None:  # both or neither
            candidates = fetched[row]
            keep = (candidates >= 0) & allowed_mask[candidates] & ~np.isin(candidates, seen)
            if int(keep.sum()) >= n:
                best, scores = _ranked(candidates[keep], exact[row][keep], n)
        if best is None:
            allowed = allowed_mask.copy()
            allowed[seen] = False
            best, scores = ann_top_n(index, vectors[row], allowed, n)
        items[row, : len(best)] = best
        values[row, : len(best)] = scores
    return items, values


def approximate_top_n(model: Recommender, index: InnerProductIndex, users: np.ndarray, history: sp.csr_matrix,
                      allowed_mask: np.ndarray, n: int, exclude: sp.csr_matrix | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``model``'s ``n`` best allowed items per user through ``index`` (``users`` and ``history``
    as in ``model.score``; ``exclude`` per-row items to drop, e.g. histories): (rows, n) item
    indices padded with -1 and the model's scores padded with nan.

    A model whose score is its factors' inner products is searched in one batch; a model that
    blends them with other terms (:meth:`recsys.models.base.Recommender.factor_blend`) user by
    user (:func:`blend_top_n`).
    """
    users = model.check_rows(users, history)
    view = model.factor_view()
    if view is None:
        raise AnnError(f"model {model.name!r} has no item factors to search")
    # asked of the first user only to learn whether the model blends: reused for that user below
    first = model.factor_blend(users[:1], history[:1]) if len(users) else None
    if first is None:
        return ann_top_n_batch(index, view.user_vectors(users, history), allowed_mask, n, exclude)
    items = np.full((len(users), n), -1, dtype=np.int64)
    values = np.full((len(users), n), np.nan, dtype=np.float32)
    for row in range(len(users)):
        allowed = allowed_mask
        if exclude is not None:
            allowed = allowed_mask.copy()
            allowed[exclude.indices[exclude.indptr[row]:exclude.indptr[row + 1]]] = False
        best, scores = blend_top_n(model, index, users[row:row + 1], history[row], allowed, n,
                                   blend=first if row == 0 else None)
        items[row, : len(best)], values[row, : len(best)] = best, scores
    return items, values


# ---- a blended score on its candidates ---------------------------------------------------
def blend_top_n(model: Recommender, index: InnerProductIndex, users: np.ndarray, history: sp.csr_matrix,
                allowed_mask: np.ndarray, n: int, overfetch: int | None = None,
                max_rounds: int | None = None, blend: FactorBlend | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best allowed items for one user (``users`` and ``history`` as in
    ``model.score``, one row) of a model whose score blends its factors with other terms,
    with the model's exact scores, best first. ``blend`` is the user's
    :meth:`~recsys.models.base.Recommender.factor_blend` when the caller has it.

    Candidates: the index's best allowed collaborative items and each term's best allowed
    items, ``n x overfetch`` of each; the blend is scored on their union. The result is
    final when its ``n``-th score reaches the threshold no item outside the lists can pass;
    else the lists grow by ``overfetch``, and after ``max_rounds`` the user is scored in full.
    """
    users = model.check_rows(users, history)
    if len(users) != 1:
        raise ValueError(f"blend_top_n ranks one user at a time, got {len(users)}")
    overfetch, max_rounds = overfetch or index.overfetch, max_rounds or index.max_rounds
    terms = _BlendTerms.of(model, index, users, history, blend)
    k = n * overfetch
    for _ in range(max_rounds):
        found = _allowed_top(index, terms.vector, allowed_mask, k, overfetch, max_rounds)
        terms.cf_peak = _cf_peak(found.best_any, index.known)
        term_best = [top_k(scores, k, allowed_mask) for _, scores in terms.blend.terms]
        candidates = np.unique(np.concatenate([found.items, *term_best]))
        combined = terms.combined(candidates)
        items, scores = _ranked(candidates, combined, n)
        # the other terms score every item: a list shorter than k holds every allowed one
        if any(len(best) < k for best in term_best):
            return items, scores
        # a collaborative list shorter than k holds every allowed known item: outside it, cf is 0
        cf_last = found.scores[-1] if len(found.items) == k else 0.0
        outside = terms.bound(cf_last, [values[best[-1]] for (_, values), best in zip(terms.blend.terms, term_best,
                                                                                      strict=True)])
        if len(items) == n and scores[-1] >= outside:
            return items, scores
        k *= overfetch
    full = model.score(users, history)[0]
    best = top_k(full, n, allowed_mask)
    return best, full[best]


@dataclass
class _BlendTerms:
    """One user's blended terms as the model's full score computes them, the collaborative one
    only where asked (its normaliser, the best collaborative score, comes from the index)."""

    blend: FactorBlend
    index: InnerProductIndex
    vector: np.ndarray
    cf_peak: float = 0.0

    @classmethod
    def of(cls, model: Recommender, index: InnerProductIndex, users: np.ndarray, history: sp.csr_matrix,
           blend: FactorBlend | None = None) -> _BlendTerms:
        view = model.factor_view()
        blend = blend if blend is not None else model.factor_blend(users, history)
        if view is None or blend is None:
            raise AnnError(f"model {model.name!r} does not blend item factors with other terms")
        return cls(blend, index, view.user_vectors(users, history)[0])

    def cf(self, items: np.ndarray) -> np.ndarray:
        """Normalised collaborative scores of ``items`` (0 for items the model never saw)."""
        raw = np.zeros(len(items), dtype=np.float32)
        known = self.index.known[items]
        raw[known] = self.index.item_factors[items[known]] @ self.vector
        if self.cf_peak <= 0:
            return np.zeros_like(raw)
        return (raw / np.float32(self.cf_peak)).astype(np.float32)

    def combined(self, items: np.ndarray) -> np.ndarray:
        scores: np.ndarray = self.blend.factor_weight * self.cf(items)
        for weight, values in self.blend.terms:  # summed in the blend's order, as the full score sums
            scores = scores + weight * values[items]
        return scores.astype(np.float32)

    def bound(self, cf_last: float, terms_last: list[float]) -> float:
        """The best blended score an item outside every list can have (``terms_last``: each
        term's value at the end of its list)."""
        cf_outside = max(float(cf_last), 0.0) / self.cf_peak if self.cf_peak > 0 else 0.0
        bound = self.blend.factor_weight * cf_outside
        for (weight, _), last in zip(self.blend.terms, terms_last, strict=True):
            bound += weight * float(last)
        return bound


def _cf_peak(best_known: float, known: np.ndarray) -> float:
    """The row maximum a :class:`~recsys.models.base.FactorBlend` normalises by: unseen items count as 0 there."""
    return max(best_known, 0.0) if not known.all() else best_known


def _augmented(factors: np.ndarray, max_norm: float) -> np.ndarray:
    """Items as [y, √(M² − |y|²)]: every row has norm M, so |q̂ − ŷ|² = |q|² + M² − 2 q·y and
    the nearest items to the query [q, 0] are its largest inner products."""
    squared = np.einsum("ij,ij->i", factors, factors, dtype=np.float64)
    completion = np.sqrt(np.maximum(max_norm * max_norm - squared, 0.0))
    return np.ascontiguousarray(np.hstack([factors, completion[:, None]]), dtype=np.float32)


def _augmented_queries(queries: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.hstack([queries, np.zeros((len(queries), 1), np.float32)]))


def _set_threads(threads: int) -> None:
    """faiss's OpenMP threads for the calling thread; 0 = every core."""
    faiss.omp_set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))


def _lists_for(n_indexed: int, requested: int) -> int:
    """``requested`` lists, or 4·√n; never more than k-means can fit well (≥ 39 points per list)."""
    wanted = requested or int(round(4 * math.sqrt(n_indexed)))
    return max(1, min(wanted, n_indexed // MIN_POINTS_PER_LIST or 1))
