"""Precise delivery: the business rules every recommendation list obeys.

Used by the API and by batch ``recsys recommend`` alike, so the rules hold everywhere:

- never an item the user already engaged with (any interaction in their history, live
  ones included; the repeat policy may let light engagement lapse, :mod:`recsys.repeats`),
  never a hidden item, never an item whose ``ends_at`` is before ``at``;
  events far in the future are allowed;
- with a place and radius: offline items beyond the radius are dropped, items without a
  place (digital) stay unless ``kind`` excludes them;
- a user the model cannot personalise gets segment popularity (region x age band from the
  users table), else region popularity (if a region is given), else global popularity,
  and the list says which fallback it is;
- optional MMR diversity over categories (from :data:`recsys.ranking.SPREAD_AT` up over every
  allowed category's best items, on the full path), and a short plain-language reason per item;
- never an item whose ``min_age`` is above the youngest age of the resident's band
  (:mod:`recsys.audience`, the one place of the minors rule, for every path and batch);
- the resident's own choices (:mod:`recsys.controls`): with personalisation off, the list an
  anonymous caller of no district gets (city-wide popularity and editorial picks, ``fallback``
  ``not_personalized``); removed interest tags leave the history that drives the scores and
  the list (:mod:`recsys.profile`); ``not_interested`` items never return and their nearest
  items are demoted for a while (:mod:`recsys.feedback`); ``senior_mode`` (:mod:`recsys.senior`);
- editorial slots filled from the operators' pool (:mod:`recsys.editorial`);
- exposure floors (:mod:`recsys.exposure`): with bonuses calibrated at training in the bundle,
  every path of a user's list and the batch lists rank their candidates (at least the floors'
  ``depth``) by normalised score plus the bonuses of the items' groups, as training measured.

Two paths, one result. A known user without live interactions is served from the
bundle's precomputed candidates (:mod:`recsys.candidates`) when it has them: drop the
candidates the request does not allow, diversify the first ``CANDIDATE_FACTOR x n`` that
survive, explain. That is what full scoring returns whenever that many candidates survive
(the same items, order and reasons; scores up to float noise, as :mod:`recsys.candidate_scoring`
scores users in batches), at a fraction of the cost; otherwise (live interactions,
filters that leave too few candidates, a large ``n``, no candidates) the request takes
the full path.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse as sp

from recsys import audience, editorial, exposure, feedback, repeats, senior
from recsys.ann import approximate_top_n
from recsys.bundle import ModelBundle
from recsys.candidates import NOT_ANCHORED, Candidates
from recsys.confidence import to_confidence
from recsys.models.base import PopularityScores, TrainingData
from recsys.models.popularity import PopularityModel
from recsys.profile import any_tag_mask
from recsys.query import Filters, RecommendationList, Recommended, UnknownItem, UnknownRegion, UserContext
from recsys.ranking import DEFAULT_DIVERSITY, SPREAD_AT, mmr, top_k, top_k_batch, with_category_bests
from recsys.reasons import Reasons, anchor_codes

log = logging.getLogger(__name__)

CANDIDATE_FACTOR = 5
"""MMR re-ranks this many times ``n`` top candidates."""

AVAILABILITY_BUCKET_SECONDS = 60
"""Availability masks are cached per minute: ``ends_at`` granularity needs no finer."""


class DeliveryEngine:
    """Scores, filters, diversifies and explains, over one loaded :class:`ModelBundle`."""

    def __init__(self, bundle: ModelBundle, lang: str = "zh") -> None:
        self.bundle = bundle
        self.catalog = bundle.catalog
        self.users = bundle.users
        self.model = bundle.model
        self.popularity = _popularity_of(bundle)
        self.reasons = Reasons(bundle.catalog, bundle.model, lang)
        self._availability: dict[int, np.ndarray] = {}
        self._region_pools: dict[tuple[str, str | None], sp.csr_matrix] = {}
        self._known_users = np.diff(bundle.weights.indptr) > 0
        self.candidates: Candidates | None = bundle.candidates
        """Replaced once (by the server) when the bundle came without them; read once per request."""
        self.ann = bundle.ann
        """The approximate index of a large catalog (recsys.ann): the full path scores only its candidates."""
        self.controls = bundle.settings.controls
        self.pool = np.flatnonzero(bundle.catalog.editorial)
        """The editorial pool (item indices)."""
        self.returns = bundle.returns
        """When engaged pairs may be listed again (:mod:`recsys.repeats`); None: never."""
        self._restricted: dict[str | None, np.ndarray | None] = {}
        self._facets: sp.csr_matrix | None = None
        self.floors = exposure.served_floors(bundle.settings.exposure, bundle.manifest, bundle.catalog, bundle.users)
        """The exposure floors' groups and calibrated bonuses (None: the model has none)."""

    def use_candidates(self, candidates: Candidates) -> None:
        """Serve known users from ``candidates`` from now on (computed after the engine was built)."""
        candidates.check(np.diff(self.bundle.weights.indptr), len(self.catalog))
        self.candidates = candidates  # one reference store: a request sees the old or the new value

    # ---- masks -----------------------------------------------------------------------
    def available(self, at: float) -> np.ndarray:
        """Not hidden and not ended at ``at`` (cached per minute; the catalog is immutable)."""
        bucket = int(at // AVAILABILITY_BUCKET_SECONDS)
        mask = self._availability.get(bucket)
        if mask is None:
            if len(self._availability) > 256:
                self._availability.clear()
            # judge at the bucket's end: an item ending within this minute is already gone
            # for some requests of the bucket, and must never be shown after its end
            mask = self.catalog.available_at((bucket + 1) * AVAILABILITY_BUCKET_SECONDS)
            self._availability[bucket] = mask
        return mask

    def allowed(self, filters: Filters, restricted: np.ndarray | None = None) -> np.ndarray:
        """What a list may show at the request's filters, ``restricted`` items (:meth:`audience`) left out."""
        mask = self.available(filters.at).copy()
        if restricted is not None:
            mask &= ~restricted
        if filters.kind:
            mask &= self.catalog.kind_is(filters.kind)
        if filters.category:
            mask &= self.catalog.category_is(filters.category)
        if filters.lat is not None and filters.lon is not None and filters.radius_km is not None:
            mask &= self.catalog.within_radius(filters.lat, filters.lon, filters.radius_km)
        if filters.starts_after is not None or filters.starts_before is not None:
            mask &= self.catalog.starts_within(filters.starts_after, filters.starts_before)
        if filters.free_only:
            mask &= self.catalog.is_free
        if filters.exclude:
            mask[list(filters.exclude)] = False
        return mask

    # ---- histories -------------------------------------------------------------------
    def history(self, user_id: str, context: UserContext | None = None) -> tuple[int, sp.csr_matrix]:
        """The user's row index (-1 if not in training) and weights incl. live ones (1 x items)."""
        index = self.users.users.index_of(user_id)
        row = self.bundle.weights[index] if index >= 0 else sp.csr_matrix((1, len(self.catalog)), dtype=np.float32)
        live = dict(context.live_weights) if context else {}
        if live:
            extra = sp.csr_matrix(
                (np.fromiter(live.values(), np.float32), (np.zeros(len(live), int), np.fromiter(live, int))),
                shape=row.shape,
            )
            row = (row + extra).tocsr()
        return index, row

    def confidence(self, weights: sp.csr_matrix) -> sp.csr_matrix:
        s = self.bundle.settings
        return to_confidence(weights, s.confidence, s.alpha)

    # ---- per user --------------------------------------------------------------------
    def for_user(self, user_id: str, n: int, filters: Filters, *, diversity: float = DEFAULT_DIVERSITY,
                 context: UserContext | None = None, region: str | None = None) -> RecommendationList:
        context = context or UserContext()
        controls = context.controls
        index = self.users.users.index_of(user_id)
        age_band = self.age_band_of(index, context)
        restricted = self.audience(age_band)
        dismissed = self.dismissed_of(index, context)
        if not controls.personalized:
            return self._not_personalized(n, filters, restricted, dismissed)
        candidates = self.candidates
        if candidates is not None and not context.live_weights and index >= 0 and controls.untouched \
                and not dismissed:
            fast = self._from_candidates(candidates, index, n, filters, diversity, restricted)
            if fast is not None:
                start, end = self.bundle.weights.indptr[index], self.bundle.weights.indptr[index + 1]
                history = self.bundle.weights[index]
                return self._with_editorial("users", fast, n, self._pool_allowed(
                    filters, restricted, self.bundle.weights.indices[start:end]), history)
        index, weights = self.history(user_id, context)
        allowed = self.allowed(filters, restricted)
        allowed[repeats.kept_out(weights.indices, self.returns, index, filters.at, context.live_weights.keys())] = False
        if dismissed:
            allowed &= ~self._left_out(dismissed, filters.at)
        scoring = weights
        if controls.removed_tags:  # their items leave the list and the history that drives the scores
            tagged = any_tag_mask(self.catalog, controls.removed_tags)
            allowed &= ~tagged
            scoring = _without_items(weights, tagged)
        if scoring.nnz == 0:
            return self._with_editorial("users", self._fallback_for(index, n, allowed, filters, context, region),
                                        n, allowed, None)
        live = bool(context.live_weights)
        model_row = -1 if (live or index < 0 or scoring is not weights) else index  # fold in a changed history
        aged = senior.applies(age_band, controls.senior_mode)
        if self.ann is not None and not aged:
            listed = self._approximate_for(index, model_row, scoring, n, allowed, filters, diversity)
            return self._with_editorial("users", listed, n, allowed, scoring)
        scores = self.model.score(np.array([model_row]), self.confidence(scoring))[0]
        if aged:
            scores = _unit(scores) + self._senior_bonus(index, context, filters)
        chosen = self._select(scores, n, allowed, diversity)
        if len(chosen) < n:  # a pure CF model may score few items; top up with popularity
            rest = allowed.copy()
            rest[chosen] = False
            chosen = np.concatenate([chosen, top_k(self.popularity.global_scores(), n - len(chosen), rest)])
        codes = self._stored_anchors(index, chosen, scoring) if model_row >= 0 else None
        reasons = self.reasons.personal_for(chosen, scoring.indices, scoring.data, filters, codes)
        return self._with_editorial("users", RecommendationList(self._items(chosen, scores, reasons)), n, allowed,
                                    scoring)

    # ---- the resident's rules ----------------------------------------------------------
    def age_band_of(self, index: int, context: UserContext | None) -> str | None:
        """The resident's age band: the users table's, else what the caller says."""
        if index >= 0 and self.users.age[index] >= 0:
            return self.users.ages[int(self.users.age[index])]
        return context.age_band if context else None

    def audience(self, age_band: str | None) -> np.ndarray | None:
        """Items a resident of ``age_band`` must not get (:mod:`recsys.audience`), cached per band."""
        if age_band not in self._restricted:
            self._restricted[age_band] = audience.restricted(self.catalog, age_band)
        return self._restricted[age_band]

    def dismissed_of(self, index: int, context: UserContext | None) -> dict[int, float]:
        """The resident's ``not_interested`` items (index -> latest time): the artifact's and live ones."""
        found: dict[int, float] = {}
        stored = self.bundle.dismissed
        if stored is not None and index >= 0:
            row = stored[index]
            found = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
        for item, when in (context.dismissed if context else {}).items():
            found[item] = max(found.get(item, -math.inf), when)
        return found

    def _left_out(self, dismissed: dict[int, float], at: float) -> np.ndarray:
        rules = self.controls
        return feedback.left_out(len(self.catalog), dismissed, at, days=rules.not_interested_days,
                                 similar=rules.not_interested_similar, similarity_of=self.similarity_of,
                                 available=self.available(at))

    def similarity_of(self, index: int) -> np.ndarray:
        """How alike every item is to item ``index``: the model's notion, else content."""
        similarity = self.model.item_similarity(index)
        return similarity if similarity is not None else self.reasons.content_similarity(index)

    def _senior_bonus(self, index: int, context: UserContext, filters: Filters) -> np.ndarray:
        region = context.region
        if index >= 0 and self.users.region[index] >= 0:
            region = self.users.regions[int(self.users.region[index])]
        return senior.senior_bonus(self.catalog, self.controls.senior, timezone=self.bundle.settings.timezone,
                                   lat=filters.lat, lon=filters.lon, region=region)

    def _not_personalized(self, n: int, filters: Filters, restricted: np.ndarray | None,
                          dismissed: dict[int, float]) -> RecommendationList:
        """What an anonymous caller of no district gets (the resident's own "no" and the minors
        rule still hold: they are the resident's choice and the law, not a characteristic)."""
        allowed = self.allowed(filters, restricted)
        if dismissed:
            allowed &= ~self._left_out(dismissed, filters.at)
        scores = self.popularity.global_scores()
        chosen = top_k(scores, n, allowed)
        listed = RecommendationList(self._items(chosen, scores, self.reasons.fallback(chosen, "popularity", filters)),
                                    fallback="not_personalized")
        return self._with_editorial("users", listed, n, allowed, None)

    # ---- editorial slots ---------------------------------------------------------------
    def _pool_allowed(self, filters: Filters, restricted: np.ndarray | None, seen: np.ndarray) -> np.ndarray:
        """Which items the list may show, judged at the pool's items only (others False)."""
        allowed = np.zeros(len(self.catalog), dtype=bool)
        if len(self.pool):
            allowed[self.pool] = self._allowed_among(self.pool, filters)
            if restricted is not None:
                allowed[self.pool] &= ~restricted[self.pool]
            allowed[seen] = False
        return allowed

    def _with_editorial(self, list_name: str, listed: RecommendationList, n: int, allowed: np.ndarray,
                        history: sp.csr_matrix | None) -> RecommendationList:
        """``listed`` with its editorial slots filled (:mod:`recsys.editorial`)."""
        rules = self.controls
        slots = [slot for slot in rules.editorial_slots if slot <= n] if list_name in rules.editorial_lists else []
        if not slots or not len(self.pool):
            return listed
        affinity = self._affinity(history)
        best = editorial.ranked_pool(self.pool, allowed, self.popularity.global_scores(), affinity, len(slots))
        phrase = "editorial_match" if affinity is not None else "editorial"
        picks = [Recommended(int(item), self.catalog.items.id_of(int(item)),
                             float(affinity[item]) if affinity is not None else 0.0,
                             self.reasons.phrases[phrase]) for item in best.tolist()]
        return RecommendationList(editorial.fill_slots(listed.items, picks, slots, n), fallback=listed.fallback)

    def _affinity(self, history: sp.csr_matrix | None) -> np.ndarray | None:
        """Content affinity of every item with a history (None without one)."""
        if history is None or history.nnz == 0:
            return None
        if self._facets is None:
            self._facets = self.catalog.feature_matrix()
        profile = (history @ self._facets).toarray().ravel()
        total = float(np.abs(profile).sum())
        if total == 0:
            return None
        affinity = np.zeros(len(self.catalog), dtype=np.float64)
        affinity[self.pool] = self._facets[self.pool] @ (profile / total)
        return affinity

    def _approximate_for(self, index: int, model_row: int, weights: sp.csr_matrix, n: int, allowed: np.ndarray,
                         filters: Filters, diversity: float) -> RecommendationList:
        """The full path through the approximate index: the model scores only the index's
        candidates (:func:`recsys.ann.approximate_top_n`); diversity, top-up and reasons as there."""
        needed = self._pool_size(n, diversity)
        best, values = approximate_top_n(self.model, self.ann, np.array([model_row]), self.confidence(weights),
                                         allowed, needed)
        filled = best[0] >= 0
        pool, pool_scores = best[0][filled], values[0][filled]
        picked = self._choose(pool, pool_scores, n, diversity)
        chosen, chosen_scores = pool[picked], pool_scores[picked]
        if len(chosen) < n:  # fewer scorable items than asked for: top up with popularity, as the full path
            rest = allowed.copy()
            rest[chosen] = False
            extra = top_k(self.popularity.global_scores(), n - len(chosen), rest)
            chosen = np.concatenate([chosen, extra])
            chosen_scores = np.concatenate([chosen_scores, np.full(len(extra), -np.inf, dtype=np.float32)])
        codes = self._stored_anchors(index, chosen, weights) if model_row >= 0 else None
        reasons = self.reasons.personal_for(chosen, weights.indices, weights.data, filters, codes)
        return RecommendationList(self._listed(chosen, chosen_scores, reasons))

    def _from_candidates(self, candidates: Candidates, index: int, n: int, filters: Filters,
                         diversity: float, restricted: np.ndarray | None = None) -> RecommendationList | None:
        """The list from the user's precomputed candidates, or None when they cannot decide it."""
        if candidates.slot(index) < 0 or diversity >= SPREAD_AT:  # not covered, or a spread beyond the list
            return None
        items, scores = candidates.row(index)
        keep = self._allowed_among(items, filters)
        waiting = repeats.still_out(self.returns, index, filters.at)
        if len(waiting):  # the lists leave out only what never returns (recsys.repeats)
            keep &= ~np.isin(items, waiting)
        if restricted is not None:
            keep &= ~restricted[items]
        needed = self._pool_size(n, diversity)
        survivors = int(np.count_nonzero(keep))
        # too few: the full path's top ``needed`` may hold items beyond the list, unless the
        # list holds every item there is (then only a popularity top-up, on the full path, differs)
        if survivors < needed and not (candidates.is_complete(index) and survivors >= n):
            return None
        kept = np.flatnonzero(keep)[:needed]
        pool, pool_scores = items[kept], scores[kept]
        # MMR over positions in the pool: it reads only the candidates' scores and categories
        picked = self._choose(pool, pool_scores, n, diversity)
        chosen = pool[picked]
        weights = self.bundle.weights
        start, end = weights.indptr[index], weights.indptr[index + 1]
        codes = self._anchored(candidates.anchors_of(index)[kept[picked]], chosen, weights.indices[start:end])
        reasons = self.reasons.personal_for(chosen, weights.indices[start:end], weights.data[start:end], filters,
                                            codes)
        return RecommendationList(self._listed(chosen, pool_scores[picked], reasons))

    def _anchored(self, codes: np.ndarray, chosen: np.ndarray, history_items: np.ndarray) -> np.ndarray:
        """Stored anchor ``codes`` of ``chosen``, with those the list left to the request
        (:data:`recsys.candidates.NOT_ANCHORED`) computed now."""
        missing = codes == NOT_ANCHORED
        if not missing.any():
            return codes
        codes = codes.astype(np.int32, copy=True)
        codes[missing] = anchor_codes(self.model, chosen[missing], history_items)
        return codes

    def _stored_anchors(self, index: int, chosen: np.ndarray, history: sp.csr_matrix) -> np.ndarray | None:
        """Reason anchors of ``chosen`` for the unchanged history of user ``index``: stored ones
        where the candidates hold them (so both paths explain alike), computed for the rest."""
        candidates = self.candidates
        if candidates is None or candidates.slot(index) < 0:  # nothing stored: the reasons compute them all
            return None
        items, _ = candidates.row(index)
        found = items[None, :] == chosen[:, None]
        stored = found.any(axis=1)
        codes = np.full(len(chosen), NOT_ANCHORED, dtype=np.int32)
        if stored.any():  # (an empty list has nothing stored, and no position to take an argmax over)
            codes[stored] = candidates.anchors_of(index)[found[stored].argmax(axis=1)]
        return self._anchored(codes, chosen, history.indices)

    def _allowed_among(self, items: np.ndarray, filters: Filters) -> np.ndarray:
        """``allowed(filters)`` at ``items`` only (no catalog-wide copy when nothing but time filters)."""
        if filters.narrows:
            return self.allowed(filters)[items]
        return self.available(filters.at)[items]

    def _fallback_for(self, index: int, n: int, allowed: np.ndarray, filters: Filters,
                      context: UserContext | None, region: str | None) -> RecommendationList:
        profile_region, profile_age = (context.region, context.age_band) if context else (None, None)
        if index >= 0:
            r, a = self.users.region[index], self.users.age[index]
            profile_region = self.users.regions[r] if r >= 0 else profile_region
            profile_age = self.users.ages[a] if a >= 0 else profile_age
        options = [
            ("segment_popularity", self.popularity.segment_scores(profile_region, profile_age)),
            ("region_popularity", self.popularity.region_scores(region or profile_region)),
            ("popularity", self.popularity.global_scores()),
        ]
        label, scores = next((name, s) for name, s in options if s is not None)
        declared = context.controls.declared_tags if context else {}
        if declared:  # a cold resident who picked interests: their items first, popularity within
            liked = any_tag_mask(self.catalog, declared)
            scores = _unit(scores) + self.controls.declared_boost * liked
            label = "declared_interests"
        chosen = top_k(scores, n, allowed)
        reasons = self.reasons.fallback(chosen, label, filters)
        return RecommendationList(self._items(chosen, scores, reasons), fallback=label)

    def _select(self, scores: np.ndarray, n: int, allowed: np.ndarray, diversity: float) -> np.ndarray:
        candidates = top_k(scores, self._pool_size(n, diversity), allowed)
        if diversity >= SPREAD_AT:
            candidates = with_category_bests(candidates, scores, allowed, self.catalog.category, n)
        return candidates[self._choose(candidates, scores[candidates], n, diversity)]

    def _pool_size(self, n: int, diversity: float) -> int:
        """Candidates a list chooses its ``n`` from: room for MMR, and the floors' depth, which their
        bonuses were calibrated at."""
        size = n * CANDIDATE_FACTOR if diversity > 0 else n
        return max(size, self.bundle.settings.exposure.depth) if self.floors is not None else size

    def _choose(self, pool: np.ndarray, pool_scores: np.ndarray, n: int, diversity: float) -> np.ndarray:
        """Positions in ``pool`` (best first, scores aligned) of the list: the exposure floors'
        bonuses, when the model has them, then MMR. The one ranking step of every path."""
        order = np.arange(len(pool))
        values = pool_scores
        if self.floors is not None and len(pool):
            values = exposure.reorder(pool, pool_scores, self.floors)
            order = np.argsort(-values, kind="stable")
        return mmr(order, values, self.catalog.category[pool], n, diversity)

    def floored_rows(self, rows: np.ndarray, n: int, at: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`top_n_for_rows` lists as served: with exposure floors, each user's ``depth`` best
        re-ranked by the calibrated bonuses (scores stay the model's)."""
        if self.floors is None:
            return self.top_n_for_rows(rows, n, at)
        items, values = self.top_n_for_rows(rows, max(n, self.bundle.settings.exposure.depth), at)
        adjusted = exposure.normalised(values, items) + exposure.lift(items, self.floors)
        order = np.argsort(-adjusted, axis=1, kind="stable")[:, :n]
        return np.take_along_axis(items, order, axis=1), np.take_along_axis(values, order, axis=1)

    def _items(self, chosen: np.ndarray, scores: np.ndarray, reasons: list[str]) -> list[Recommended]:
        return self._listed(chosen, scores[chosen], reasons)

    def _listed(self, chosen: np.ndarray, values: np.ndarray, reasons: list[str]) -> list[Recommended]:
        """The chosen items with their scores (``values`` aligned with ``chosen``) and reasons."""
        ids = self.catalog.items.ids_of(chosen)
        return [
            Recommended(i, item_id, value if math.isfinite(value) else 0.0, reason)
            for i, item_id, value, reason in zip(chosen.tolist(), ids, values.tolist(), reasons, strict=True)
        ]

    # ---- per region ------------------------------------------------------------------
    def for_region(self, region: str, n: int, filters: Filters, *, age_band: str | None = None,
                   diversity: float = DEFAULT_DIVERSITY) -> RecommendationList:
        """A district's pooled taste (its users' histories, each normalised) plus its popularity."""
        if region not in self.users.regions and region not in self.catalog.regions:
            raise UnknownRegion(region)
        popular = self.popularity.segment_scores(region, age_band) if age_band else None
        popular = popular if popular is not None else self.popularity.region_scores(region)
        allowed = self.allowed(filters, self.audience(age_band))
        pooled = self._region_pool(region, age_band)
        if pooled.nnz == 0 or popular is None:
            listed = self._fallback_for(-1, n, allowed, filters, UserContext(region=region, age_band=age_band), region)
            return self._with_editorial("regions", listed, n, allowed, None)
        taste = self.model.score(np.array([-1]), self.confidence(pooled))[0]
        scores = 0.5 * _unit(taste) + 0.5 * _unit(popular)
        chosen = self._select(scores, n, allowed, diversity)
        listed = RecommendationList(self._items(chosen, scores, self.reasons.regional(chosen, filters)))
        return self._with_editorial("regions", listed, n, allowed, pooled)

    def _region_pool(self, region: str, age_band: str | None) -> sp.csr_matrix:
        key = (region, age_band)
        if key not in self._region_pools:
            members = self.users.region == self.users.region_code_of(region)
            if age_band:
                members &= self.users.age == self.users.age_code_of(age_band)
            rows = self.bundle.weights[np.flatnonzero(members & self._known_users)]
            totals = np.asarray(rows.sum(axis=1)).ravel()
            scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
            # each member counts once; rescale so the pool looks like one very active user
            pooled = sp.csr_matrix((sp.diags(scale) @ rows).sum(axis=0)) * 10.0
            self._region_pools[key] = sp.csr_matrix(pooled, dtype=np.float32)
        return self._region_pools[key]

    # ---- items -----------------------------------------------------------------------
    def similar(self, item_id: str, n: int, filters: Filters) -> RecommendationList:
        index = self.catalog.items.index_of(item_id)
        if index < 0:
            raise UnknownItem(item_id)
        similarity = self.model.item_similarity(index)
        if similarity is None:
            similarity = self.reasons.content_similarity(index)
        allowed = self.allowed(filters)
        allowed[index] = False
        chosen = top_k(similarity, n, allowed & (similarity > 0))
        return RecommendationList(self._items(chosen, similarity, self.reasons.similar(chosen, index, filters)))

    # ---- batch -----------------------------------------------------------------------
    def top_n_for_rows(self, rows: np.ndarray, n: int, at: float,
                       batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Top-n item indices and scores for many training-axis users (no diversity).

        Indices are padded with -1 (scores with nan). Users without history get their
        segment popularity; every user's history is excluded, and so is every item a user's
        age band must not get (:mod:`recsys.audience`).
        """
        rows = np.asarray(rows, dtype=np.int64)
        items = np.full((len(rows), n), -1, dtype=np.int64)
        values = np.full((len(rows), n), np.nan, dtype=np.float32)
        available = self.available(at)
        for positions, restricted in self._audience_groups(rows):
            allowed = available & ~restricted if restricted is not None else available
            rank = self._approximate_rows if self.ann is not None else self._exact_rows
            items[positions], values[positions] = rank(rows[positions], n, allowed, batch_size, at)
        return items, values

    def with_editorial_rows(self, rows: np.ndarray, items: np.ndarray, values: np.ndarray,
                            at: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`top_n_for_rows` lists with their editorial slots filled as the API fills them."""
        n = items.shape[1]
        if not self.pool.size or "users" not in self.controls.editorial_lists or not self.controls.editorial_slots:
            return items, values
        items, values = items.copy(), values.copy()
        filters = Filters(at=at)
        for position, row in enumerate(np.asarray(rows).tolist()):
            history = self.bundle.weights[row]
            filled = items[position] >= 0
            listed = RecommendationList([Recommended(int(i), "", float(v), "") for i, v in
                                         zip(items[position][filled].tolist(), values[position][filled].tolist(),
                                             strict=True)])
            allowed = self._pool_allowed(filters, self.audience(self.age_band_of(row, None)), history.indices)
            placed = self._with_editorial("users", listed, n, allowed, history).items
            items[position], values[position] = -1, np.nan
            items[position, :len(placed)] = [r.item for r in placed]
            values[position, :len(placed)] = [r.score for r in placed]
        return items, values

    def _audience_groups(self, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """``rows`` split by what their age band must not get: (positions in ``rows``, mask or None)."""
        codes = self.users.age[rows] if len(rows) else np.zeros(0, dtype=np.int64)
        groups: list[tuple[np.ndarray, np.ndarray | None]] = []
        free = np.ones(len(rows), dtype=bool)
        for code, band in enumerate(self.users.ages):
            restricted = self.audience(band)
            if restricted is not None:
                members = codes == code
                free &= ~members
                if members.any():
                    groups.append((np.flatnonzero(members), restricted))
        if free.any():
            groups.append((np.flatnonzero(free), None))
        return groups

    def _kept_out_rows(self, rows: np.ndarray, weights: sp.csr_matrix, at: float) -> sp.csr_matrix:
        """What the lists of ``rows`` (histories ``weights``) leave out at ``at`` (:mod:`recsys.repeats`)."""
        return repeats.kept_out_rows(weights, self.returns[rows] if self.returns is not None else None, at)

    def _exact_rows(self, rows: np.ndarray, n: int, allowed: np.ndarray,
                    batch_size: int, at: float) -> tuple[np.ndarray, np.ndarray]:
        items = np.full((len(rows), n), -1, dtype=np.int64)
        values = np.full((len(rows), n), np.nan, dtype=np.float32)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            weights = self.bundle.weights[chunk]
            scores = self.model.score(chunk, self.confidence(weights))
            cold = np.flatnonzero(np.diff(weights.indptr) == 0)
            if len(cold):
                scores[cold] = self.popularity.score(chunk[cold], weights[cold])
            best = top_k_batch(scores, n, allowed, exclude=self._kept_out_rows(chunk, weights, at))
            filled = best >= 0
            picked = np.take_along_axis(scores, np.where(filled, best, 0), axis=1)
            items[start:start + len(chunk)] = best
            values[start:start + len(chunk)] = np.where(filled, picked, np.nan)
        return items, values

    def _approximate_rows(self, rows: np.ndarray, n: int, allowed: np.ndarray,
                          batch_size: int, at: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_exact_rows` through the approximate index (no dense users x catalog scores)."""
        items = np.full((len(rows), n), -1, dtype=np.int64)
        values = np.full((len(rows), n), np.nan, dtype=np.float32)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            weights = self.bundle.weights[chunk]
            warm = np.diff(weights.indptr) > 0
            if warm.any():
                history = weights[warm]
                best, picked = approximate_top_n(self.model, self.ann, chunk[warm], self.confidence(history),
                                                 allowed, n, exclude=self._kept_out_rows(chunk[warm], history, at))
                items[start + np.flatnonzero(warm)] = best
                values[start + np.flatnonzero(warm)] = picked
            cold = np.flatnonzero(~warm)
            if len(cold):  # no history: segment popularity, as the exact path
                scores = self.popularity.score(chunk[cold], weights[cold])
                best = top_k_batch(scores, n, allowed)
                filled = best >= 0
                picked = np.take_along_axis(scores, np.where(filled, best, 0), axis=1)
                items[start + cold] = best
                values[start + cold] = np.where(filled, picked, np.nan)
        return items, values


def _popularity_of(bundle: ModelBundle) -> PopularityScores:
    """The popularity the bundle's model holds, else one fitted from the bundle's weights."""
    own = bundle.model.popularity_part()
    if own is not None:
        return own
    data = TrainingData(bundle.weights, bundle.weights, bundle.catalog, bundle.users)
    return PopularityModel().fit(data)


def _without_items(weights: sp.csr_matrix, items: np.ndarray) -> sp.csr_matrix:
    """A 1 x items history without the entries at ``items`` (a bool mask)."""
    kept = ~items[weights.indices]
    return sp.csr_matrix((weights.data[kept], (np.zeros(int(kept.sum()), dtype=np.int64), weights.indices[kept])),
                         shape=weights.shape)


def _unit(scores: np.ndarray) -> np.ndarray:
    finite = np.where(np.isfinite(scores), scores, np.nan)
    low, high = np.nanmin(finite), np.nanmax(finite)
    if not np.isfinite(low) or high <= low:
        return np.zeros_like(scores, dtype=np.float32)
    return np.nan_to_num((finite - low) / (high - low), nan=0.0).astype(np.float32)
