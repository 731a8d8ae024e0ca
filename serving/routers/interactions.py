"""Posted interactions: validated one by one, made durable, then applied to live state.

Posting needs a key with the ``write:interactions`` scope; every posted element counts
against the app's daily quota (:mod:`serving.quota`), checked before anything is read into
live state.

A bad element never fails its batch: it is listed in ``rejected`` with its index and a
reason code from :class:`recsys.contract.Reason` (or :data:`USER_ERASED` for a user erased
on request). Accepted rows are fsynced to this
process's incoming segment before the answer, then folded into the user's next request. Each
``not_interested`` rows are
kept apart in live state (:meth:`serving.live.LiveInteractions.record`), and an engagement with
an item carrying a tag the resident removed brings the tag back (:mod:`serving.user_controls`). Each
line names the posting app (the key's app) as its ``source``, which ingest's poisoning
defences judge rows by (:mod:`recsys.provenance`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, status
from pydantic import ValidationError

from recsys.contract import EXPOSURE_ACTIONS, InteractionIn, Reason, latest_event_time, rating_in_scale
from recsys.provenance import SOURCE
from serving.auth import ApiKey
from serving.deps import InteractionsWriterDep, ServedDep, Services, ServicesDep
from serving.guard import retry_after
from serving.quota import QuotaExceeded
from serving.schemas import InteractionsAccepted, Rejection
from serving.served_lists import count_linked_feedback
from serving.user_controls import restore_engaged_tags

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["interactions"])

USER_ERASED = "user_erased"
"""Rejection reason of an interaction by a user erased on request (not a data-contract reason:
the row itself is valid, and it is refused rather than quarantined so that nothing of it is kept)."""

_EXAMPLE = [
    {"user_id": "u000042", "item_id": "op000123", "action": "reserve", "ts": "2026-11-20T19:30:00+08:00"},
    {"user_id": "u000042", "item_id": "dg000007", "action": "rate", "ts": 1795000000, "value": 5},
]
_BODY_DOC = {"requestBody": {"content": {"application/json": {
    "schema": {"type": "array", "items": InteractionIn.model_json_schema()}, "example": _EXAMPLE,
}}}}


@router.post("/interactions", status_code=status.HTTP_202_ACCEPTED, response_model=InteractionsAccepted,
             openapi_extra=_BODY_DOC)
def post_interactions(key: InteractionsWriterDep, batch: Annotated[list[Any], Body()], served: ServedDep,
                      svc: ServicesDep) -> InteractionsAccepted:
    """Accept a list of interactions; each element is validated on its own."""
    if len(batch) > svc.settings.max_batch:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            detail=f"at most {svc.settings.max_batch} interactions per request, got {len(batch)}")
    reserve_quota(svc, key, len(batch))
    settings = served.bundle.settings
    latest = latest_event_time(settings.max_future_skew_days)  # this machine's clock, once per batch
    accepted: list[InteractionIn] = []
    records: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    for index, element in enumerate(batch):
        checked = check_interaction(index, element, settings.timezone, latest,
                                    (settings.rating_min, settings.rating_max))
        if isinstance(checked, Rejection):
            rejected.append(checked)
        elif checked[0].user_id in svc.erased:
            rejected.append(Rejection(index=index, reason=USER_ERASED,
                                      detail="this user was erased on request; their interactions are not kept"))
        else:
            accepted.append(checked[0])
            records.append({**checked[1], SOURCE: key.app})  # who sent it: ingest judges rows by source
    if records:
        try:
            svc.segments.append(records)
        except OSError as exc:  # nothing was acknowledged: the client may retry the whole batch
            log.exception("could not persist %d interactions", len(records))
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                detail="could not store the interactions; retry later") from exc
    signals = [row for row in accepted if row.action not in EXPOSURE_ACTIONS]  # an impression is no engagement
    for row in signals:
        svc.live.record(row.user_id, row.item_id, row.action, settings.weight_of(row.action, row.value),
                        row.timestamp(settings.timezone).timestamp())
    count_linked_feedback(svc, accepted)
    try:  # an engagement with an item of a removed tag brings the tag back
        restored = restore_engaged_tags(svc.controls, served.engine.catalog, signals)
        svc.metrics.control_changes.labels("engaged_tag").inc(len(restored))
    except OSError:  # the interactions are stored; the tag comes back with the next such engagement
        log.exception("could not record a restored interest tag")
    # an item not (yet) in the catalogue: kept, and counted once it arrives (recsys ingest
    # quarantines the row only if the item never came)
    pending = sum(1 for row in accepted if row.item_id not in served.engine.catalog.items)
    svc.metrics.interactions.labels("accepted").inc(len(accepted))
    svc.metrics.interactions.labels("rejected").inc(len(rejected))
    svc.metrics.interactions_posted(row.action for row in accepted)
    return InteractionsAccepted(accepted=len(accepted), rejected=rejected, pending=pending)


def reserve_quota(svc: Services, key: ApiKey, rows: int) -> None:
    """Count the batch against the app's daily quota: 429 past it, 503 if it cannot be counted."""
    try:
        svc.quota.reserve(key.app, rows)
    except QuotaExceeded as exc:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(retry_after(exc.retry_after))},
            detail=f"daily quota of {svc.settings.daily_rows_per_key} interactions per app reached "
                   f"({exc.remaining} left today, this request has {rows})",
        ) from exc
    except OSError as exc:  # the ledger lives in the home, like the segments: nothing was accepted
        log.exception("could not count posted rows against the quota")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="could not store the interactions; retry later") from exc


def check_interaction(index: int, element: Any, timezone: str,
                      latest: datetime | None = None, rating_scale: tuple[float, float] | None = None,
                      ) -> Rejection | tuple[InteractionIn, dict[str, Any]]:
    """The validated row and its segment record, or why it is rejected.

    An event time after ``latest`` (:func:`recsys.contract.latest_event_time`) is rejected as
    :attr:`Reason.FUTURE_TIME`, and a ``rate`` value outside ``rating_scale`` (the settings'
    ``rating_min``, ``rating_max``) as :attr:`Reason.RATING_OUT_OF_RANGE`, as ingest
    quarantines them; ``None`` disables either check.
    """
    if not isinstance(element, dict):
        return Rejection(index=index, reason=Reason.MISSING_FIELD, detail="an interaction must be a JSON object")
    try:
        row = InteractionIn.model_validate(element)
    except ValidationError as exc:
        reason, detail = _reason_of(exc)
        return Rejection(index=index, reason=reason, detail=detail)
    try:
        moment = row.timestamp(timezone)
    except ValueError as exc:
        return Rejection(index=index, reason=Reason.BAD_TIME, detail=str(exc))
    if latest is not None and moment > latest:
        return Rejection(index=index, reason=Reason.FUTURE_TIME,
                         detail=f"time {row.ts!r} ({moment.isoformat()}) is after "
                                f"{latest.isoformat(timespec='seconds')}, this server's clock plus the allowed skew")
    if rating_scale is not None and row.action == "rate" and not rating_in_scale(row.value, *rating_scale):
        return Rejection(index=index, reason=Reason.RATING_OUT_OF_RANGE,
                         detail=f"rating {row.value} is outside the scale {rating_scale[0]:g}..{rating_scale[1]:g}")
    record = {"user_id": row.user_id, "item_id": row.item_id, "action": row.action,
              "ts": moment.isoformat(), "value": row.value}
    if row.recommendation_id is not None:  # the served list it came from (recsys.attribution)
        record.update(recommendation_id=row.recommendation_id, position=row.position)
    return row, record


def _reason_of(exc: ValidationError) -> tuple[Reason, str]:
    """The first problem of an element as a contract reason code and a message."""
    error = exc.errors(include_url=False, include_input=False)[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    detail = f"{field}: {error['msg']}" if field else error["msg"]
    if error["type"] == "missing":
        return Reason.MISSING_FIELD, detail
    if field in ("user_id", "item_id"):
        return (Reason.ID_TOO_LONG if error["type"] == "string_too_long" else Reason.MISSING_FIELD), detail
    return {"action": Reason.UNKNOWN_ACTION, "ts": Reason.BAD_TIME}.get(field, Reason.BAD_VALUE), detail
