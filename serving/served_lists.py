"""What every list handler does once its list is made: name it, put it on record, count it per variant.

A list answer carries ``recommendation_id`` (opaque, unique) and ``variant`` (``champion``, or
``challenger`` for a user an A/B test assigns to it: :mod:`serving.experiment`). The exposure
record (:mod:`serving.exposures`) is written before the handler answers; a list that cannot be
recorded is a 503, as a posted interaction that cannot be stored is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException, status
from pydantic import BaseModel

from recsys.contract import InteractionIn
from recsys.query import RecommendationList
from serving.deps import Services
from serving.exposures import ListName, exposure_record, new_recommendation_id
from serving.paging import Page

log = logging.getLogger(__name__)

CHAMPION = "champion"
"""The variant of every list no experiment assigns elsewhere."""


def _record_of(svc: Services, endpoint: str, version: str, variant: str, result: RecommendationList,
               page: Page, query: BaseModel, **target: str | None) -> tuple[ListName, dict[str, Any]]:
    name = ListName(new_recommendation_id(), variant)
    items = result.items
    item_ids = [r.item_id for r in items]
    filters = query.model_dump(exclude_defaults=True, exclude={"cursor"})
    record = exposure_record(recommendation_id=name.recommendation_id, endpoint=endpoint, model_version=version,
                             variant=variant, item_ids=item_ids, first_position=len(page.shown) + 1,
                             filters=filters, fallback=result.fallback, **target)
    svc.metrics.variants.listed(endpoint, variant, result.fallback, len(items))
    return name, record


async def record_list(svc: Services, endpoint: str, version: str, variant: str, result: RecommendationList,
                      page: Page, query: BaseModel, **target: str | None) -> ListName:
    """Name the list and write its exposure record (synced by the log's flusher soon after)."""
    name, record = _record_of(svc, endpoint, version, variant, result, page, query, **target)
    try:
        await svc.exposures.record(record)
    except OSError as exc:
        raise _unrecorded() from exc
    return name


def record_list_blocking(svc: Services, endpoint: str, version: str, variant: str, result: RecommendationList,
                         page: Page, query: BaseModel, **target: str | None) -> ListName:
    """:func:`record_list` for a handler running in the thread pool."""
    name, record = _record_of(svc, endpoint, version, variant, result, page, query, **target)
    try:
        svc.exposures.record_blocking(record)
    except (OSError, TimeoutError) as exc:
        raise _unrecorded() from exc
    return name


def _unrecorded() -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="could not record the list; retry later")


def count_linked_feedback(svc: Services, rows: Sequence[InteractionIn]) -> None:
    """Count accepted interactions that name a served list, per variant of their user (Prometheus)."""
    linked = [row for row in rows if row.recommendation_id is not None]
    by_variant: dict[str, list[str]] = {}
    for row in linked:
        by_variant.setdefault(variant_of(svc, row.user_id), []).append(row.action)
    for variant, actions in by_variant.items():
        svc.metrics.variants.feedback(variant, actions)


def variant_of(svc: Services, user_id: str | None) -> str:
    """The variant serving ``user_id`` now (the champion while no A/B test runs)."""
    return svc.experiment.variant_of(user_id)
