"""From a list's query to the engine's :class:`~recsys.query.Filters`, and the page it continues.

The checks a query model cannot make alone live here, each a 422 with a JSON message:
a ``kind`` or ``category`` the served catalogue does not hold, an ``age_band`` outside the
data contract's (the error lists the allowed values, in ``detail`` and in ``errors[].allowed``,
so an app can correct itself), a window bound that is not a time or a window that ends
before it starts, and a cursor that does not continue a list of the served model
(:mod:`serving.paging`). Ids in ``exclude`` the catalogue does not hold are ignored: an app
may show items this model version has not seen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NoReturn

from fastapi.exceptions import RequestValidationError

from recsys.contract import AGE_BANDS, parse_timestamp
from recsys.query import Filters, RecommendationList
from serving.deps import Place, moment_of
from serving.list_query import ListQuery
from serving.paging import BadCursor, Page, decode_cursor, next_cursor
from serving.state import ServedModel

log = logging.getLogger(__name__)


def list_filters(query: ListQuery, served: ServedModel, *, kind: str | None = None, category: str | None = None,
                 place: Place | None = None) -> tuple[Filters, Page]:
    """The filters of the page ``query`` asks for, and where the paged list stands."""
    catalog = served.engine.catalog
    if kind:
        check_value("kind", kind, catalog.kinds)
    if category:
        check_value("category", category, catalog.categories)
    page = page_of(query, served)
    after = _time_of("starts_after", query.starts_after, served)
    before = _time_of("starts_before", query.starts_before, served)
    if after is not None and before is not None and after > before:
        _refuse("starts_before", "the window ends before it starts (starts_before is before starts_after)")
    excluded = set(page.shown)
    if query.exclude:
        indices = catalog.items.indices(query.exclude)
        excluded.update(indices[indices >= 0].tolist())
    place = place or Place()
    filters = Filters(at=page.at, kind=kind or None, category=category or None, lat=place.lat, lon=place.lon,
                      radius_km=place.radius_km, starts_after=after, starts_before=before, free_only=query.free_only,
                      exclude=tuple(sorted(excluded)))
    return filters, page


def page_of(query: ListQuery, served: ServedModel) -> Page:
    """The page the query continues: the cursor's (its moment unless ``at`` is given), else a first page."""
    if not query.cursor:
        return Page(at=moment_of(query.at, served), shown=())
    try:
        page = decode_cursor(query.cursor, served.version, len(served.engine.catalog))
    except BadCursor as exc:
        _refuse("cursor", str(exc))
    return page if query.at is None else Page(at=moment_of(query.at, served), shown=page.shown)


def cursor_after(served: ServedModel, page: Page, result: RecommendationList, n: int) -> str | None:
    """``next_cursor`` of a list answer."""
    return next_cursor(served.version, page, [r.item for r in result.items], n)


def check_age_band(age_band: str | None) -> None:
    """An age band of the data contract, or a 422 listing them."""
    if age_band:
        check_value("age_band", age_band, AGE_BANDS)


def check_value(name: str, value: str, allowed: Sequence[str]) -> None:
    """A 422 naming the allowed values unless ``value`` is one of them."""
    if value not in allowed:
        shown = ", ".join(allowed) if allowed else "(none: the served catalogue has no values for it)"
        raise RequestValidationError([{"loc": ("query", name), "msg": f"unknown {name} {value!r}; allowed: {shown}",
                                       "type": "enum", "allowed": list(allowed)}])


def _time_of(name: str, value: str | None, served: ServedModel) -> float | None:
    if value is None:
        return None
    timezone = served.bundle.settings.timezone
    # an unencoded "+" in a query string arrives as a space, as for ``at``
    moment = parse_timestamp(value, timezone) or parse_timestamp(value.replace(" ", "+"), timezone)
    if moment is None:
        _refuse(name, f"cannot read {value!r} as an ISO-8601 time")
    return moment.timestamp()


def _refuse(name: str, message: str) -> NoReturn:
    raise RequestValidationError([{"loc": ("query", name), "msg": message, "type": "value_error"}])
