"""Residents' requests (点单): post one, see a resident's, count a district's.

* ``POST /v1/requests`` (scope ``write:interactions``: a request is something a resident does
  in the app, like a booking) validates one request (:class:`recsys.requests.RequestIn`),
  refuses an erased user, and answers ``201`` with the new request once it is fsynced to this
  process's segment, or ``200`` with the earlier one when the user asked for the same target
  within the de-duplication window. The posting app is the request's ``source``. Every post
  passes the server's rate limits like any keyed request.
* ``GET /v1/users/{user_id}/requests`` (scope ``read``, personal) lists the resident's
  requests with their status against the served catalogue (``open``, ``matched``, ``closed``).
* ``GET /v1/regions/{region_code}/requests`` (public) counts a district's requesters per
  target; a target asked for by fewer than :data:`MIN_USERS` distinct residents shows no
  count (``suppressed``), as in the planners' report.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Request, Response, status
from pydantic import BaseModel, Field, ValidationError

from recsys.catalog import Catalog
from recsys.requests import Request as ResidentRequest
from recsys.requests import RequestIn, parse_request
from serving.deps import InteractionsWriterDep, PersonalReaderDep, ServedDep, ServicesDep
from serving.erasure import ERASED_DETAIL, ERASED_RESPONSE
from serving.request_book import RequestBook, book_of, new_request_id
from serving.routers.recommendations import Id

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["requests"])

MIN_USERS = int(os.environ.get("RECSYS_REQUESTS_MIN_USERS", "10"))
"""Fewest distinct requesters behind a published count (the report's ``--min-users`` default)."""

Region = Annotated[str, Path(min_length=1, max_length=64)]


class RequestOut(BaseModel):
    request_id: str
    user_id: str
    region_code: str
    category: str | None
    kind: str | None
    item_id: str | None
    note: str | None
    wanted_from: str | None
    wanted_until: str | None
    requested_at: str
    status: Literal["open", "matched", "closed"]
    matched_item_id: str | None = None
    matched_at: str | None = None


class UserRequests(BaseModel):
    user_id: str
    requests: list[RequestOut]


class TargetCount(BaseModel):
    category: str | None
    kind: str | None
    item_id: str | None
    requesters: int | None = Field(description="distinct residents asking; null when fewer than min_users")
    matched: int | None = Field(description="of them, requests already matched; null when fewer than min_users")
    suppressed: bool


class RegionRequests(BaseModel):
    region_code: str
    min_users: int
    targets: list[TargetCount]


_EXAMPLE = {"user_id": "u000042", "region_code": "110116", "category": "戏曲", "kind": "opera",
            "note": "想在镇文化站看京剧", "wanted_until": "2026-12-31"}


@router.post("/requests", response_model=RequestOut, status_code=status.HTTP_201_CREATED,
             responses={200: {"description": "the same request was made within the window: the earlier one"},
                        **ERASED_RESPONSE},
             openapi_extra={"requestBody": {"content": {"application/json": {
                 "schema": RequestIn.model_json_schema(), "example": _EXAMPLE}}}})
def post_request(key: InteractionsWriterDep, body: Annotated[Any, Body()], request: Request, response: Response,
                 served: ServedDep, svc: ServicesDep) -> RequestOut:
    """Record a resident's request (点单) durably; duplicates within the window return the earlier one."""
    if not isinstance(body, dict):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="a request must be a JSON object")
    try:
        row = RequestIn.model_validate(body)
        made = parse_request(row, datetime.now(UTC), served.bundle.settings.timezone, new_request_id(), key.app)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")  # pydantic's wrapper of a rule's own message
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=f"{where}: {message}" if where else message) from exc
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    if made.user_id in svc.erased:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=ERASED_DETAIL)
    book = book_of(request)
    try:
        kept, new = book.add(made)
    except OSError as exc:  # nothing was acknowledged: the client may retry
        log.exception("could not persist a request")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="could not store the request; retry later") \
            from exc
    if not new:
        response.status_code = status.HTTP_200_OK
    return _out(kept, book, served.engine.catalog)


@router.get("/users/{user_id:id}/requests", response_model=UserRequests)
def user_requests(user_id: Id, _: PersonalReaderDep, request: Request, served: ServedDep,
                  svc: ServicesDep) -> UserRequests:
    """A resident's requests and where each stands against the served catalogue."""
    if user_id in svc.erased:
        return UserRequests(user_id=user_id, requests=[])
    book = book_of(request)
    catalog = served.engine.catalog
    return UserRequests(user_id=user_id, requests=[_out(r, book, catalog) for r in book.of_user(user_id)])


@router.get("/regions/{region_code}/requests", response_model=RegionRequests)
def region_requests(region_code: Region, request: Request, served: ServedDep, svc: ServicesDep) -> RegionRequests:
    """A district's requests per target: distinct requesters and how many are matched (k-anonymous)."""
    book = book_of(request)
    catalog = served.engine.catalog
    targets: dict[tuple[str | None, str | None, str | None], dict[str, set[str]]] = {}
    for made in book.of_region(region_code):
        if made.user_id in svc.erased:
            continue
        cell = targets.setdefault((made.category, made.kind, made.item_id), {"all": set(), "matched": set()})
        cell["all"].add(made.user_id)
        if book.answer(made, catalog).status == "matched":
            cell["matched"].add(made.user_id)
    counts = [_count(target, cell) for target, cell in targets.items()]
    # Biggest first; hidden targets after, in a fixed order that says nothing about their size.
    counts.sort(key=lambda c: (c.suppressed, -(c.requesters or 0), c.category or "", c.kind or "", c.item_id or ""))
    return RegionRequests(region_code=region_code, min_users=MIN_USERS, targets=counts)


def _count(target: tuple[str | None, str | None, str | None], cell: dict[str, set[str]]) -> TargetCount:
    shown = len(cell["all"]) >= MIN_USERS
    matched = len(cell["matched"])
    return TargetCount(category=target[0], kind=target[1], item_id=target[2],
                       requesters=len(cell["all"]) if shown else None,
                       matched=matched if shown and (matched == 0 or matched >= MIN_USERS) else None,
                       suppressed=not shown)


def _out(made: ResidentRequest, book: RequestBook, catalog: Catalog) -> RequestOut:
    answer = book.answer(made, catalog)
    return RequestOut(
        request_id=made.request_id, user_id=made.user_id, region_code=made.region_code, category=made.category,
        kind=made.kind, item_id=made.item_id, note=made.note, wanted_from=_iso(made.wanted_from),
        wanted_until=_iso(made.wanted_until), requested_at=made.ts.isoformat(), status=answer.status,
        matched_item_id=catalog.items.id_of(answer.item) if answer.item is not None else None,
        matched_at=_iso(answer.matched_at),
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
