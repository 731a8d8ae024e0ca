"""Answered requests in a resident's list: an item that answers their 点单 goes to the top.

When the served catalogue holds an item answering one of the resident's requests
(:func:`recsys.requests.status_of`: in or near their district, the target they asked for),
that item is put first in their personal list with the reason "你点单的…已上线", unless the
request's filters exclude it, it is not available at the request's moment, or the resident
already engaged with it (the lists' rules hold for answers too). The rest of the list moves
down and keeps its length.
"""

from __future__ import annotations

from dataclasses import replace

from recsys.delivery import DeliveryEngine
from recsys.query import Filters, RecommendationList, Recommended
from recsys.requests import answered_reason
from serving.request_book import RequestBook

MAX_LIFTED = 2
"""At most this many answers go first: the list stays a recommendation list."""


def lift_answers(result: RecommendationList, user_id: str, book: RequestBook, engine: DeliveryEngine,
                 filters: Filters, n: int, lang: str = "zh") -> RecommendationList:
    """``result`` with the items answering the user's requests first (see the module docstring)."""
    requests = book.of_user(user_id)
    if not requests:
        return result
    catalog = engine.catalog
    allowed = engine.allowed(filters) if filters.narrows else engine.available(filters.at)
    engaged = _engaged(engine, user_id)
    lifted: list[Recommended] = []
    for request in reversed(requests):  # the newest request first
        answer = book.answer(request, catalog)
        item = answer.item
        if answer.status != "matched" or item is None or not allowed[item] or item in engaged:
            continue
        if any(r.item == item for r in lifted):
            continue
        top = result.items[0].score if result.items else 1.0
        lifted.append(Recommended(item, catalog.items.id_of(item), float(top),
                                  answered_reason(request, catalog, item, lang)))
        if len(lifted) == MAX_LIFTED:
            break
    if not lifted:
        return result
    rest = [r for r in result.items if r.item not in {x.item for x in lifted}]
    return replace(result, items=(lifted + rest)[:n])


def _engaged(engine: DeliveryEngine, user_id: str) -> set[int]:
    row = engine.bundle.users.users.index_of(user_id)
    if row < 0:
        return set()
    weights = engine.bundle.weights
    return set(weights.indices[weights.indptr[row]:weights.indptr[row + 1]].tolist())
