"""Admin: swap in the registry's current champion, and erase a user on request.

Every route here needs an API key with the ``admin`` scope (``RECSYS_ADMIN_KEY``, or one from
the keys file or ``RECSYS_API_KEYS``, see :mod:`serving.auth`); while no key holds that scope
the routes answer 404 (disabled, never open).

With several workers a request reaches one of them. A reload reaches the others through
the home's reload request (:mod:`serving.reload_requests`): each worker notices it within
``RECSYS_TAIL_INTERVAL`` seconds and reloads itself. ``recsys serve --reload-interval``
makes every worker follow the registry on its own as well, and every worker follows the
tombstones file on its own within a second.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.deps import AdminDep, ServicesDep
from serving.redact import public_text
from serving.reload_requests import ReloadRequests
from serving.routers.recommendations import Id  # also registers the ``id`` path convertor
from serving.schemas import ReloadResult
from serving.state import LoadFailed

log = logging.getLogger(__name__)

router = APIRouter(tags=["admin"])

_FAILED = {"content": {"application/json": {"example": {
    "detail": "reload failed: ...", "serving_version": "7"}}}}


class ErasureResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"user_id": "u000042", "erased_at": "2026-11-20T03:00:00.000+00:00", "status": "erased"},
    ]})
    user_id: str
    erased_at: str = Field(description="when the erasure was recorded (ISO-8601 UTC)")
    status: Literal["erased", "already_erased"]


@router.post("/v1/admin/reload", response_model=ReloadResult,
             responses={409: {**_FAILED, "description": "the new model failed to load; the old one keeps serving"},
                        503: {**_FAILED, "description": "the new model failed to load and nothing is serving"}})
def reload_model(_: AdminDep, svc: ServicesDep) -> Any:
    """Load the current champion and swap it in atomically (in-flight requests finish on the old one).

    Every other server process of the home follows within a second or so.
    """
    previous = svc.holder.current
    try:
        served = svc.holder.reload()
    except LoadFailed as exc:
        svc.metrics.reloads.labels("failed").inc()
        current = svc.holder.current
        code = status.HTTP_409_CONFLICT if current is not None else status.HTTP_503_SERVICE_UNAVAILABLE
        return JSONResponse({"detail": f"reload failed: {public_text(str(exc))}",
                             "serving_version": current.version if current else None}, status_code=code)
    svc.metrics.reloads.labels("ok").inc()
    try:  # tell the other processes of the home; this one already serves the new model
        ReloadRequests.of(svc.settings).publish(served.version)
    except OSError:
        log.exception("could not write the reload request: the other server processes keep their model")
    return ReloadResult(status="reloaded", version=served.version,
                        previous_version=previous.version if previous else None)


@router.delete("/v1/users/{user_id:id}", response_model=ErasureResult,
               responses={503: {"description": "the erasure could not be recorded; retry"}})
def erase_user(_: AdminDep, user_id: Id, svc: ServicesDep) -> ErasureResult:
    """Erase a user (right to erasure): recorded durably before this answer.

    From now on the user is served as unknown and their posted interactions are refused;
    the next ``recsys ingest`` removes their rows from every store file, and the next
    training run forgets them.
    """
    try:
        erased_at, new = svc.erased.erase(user_id)
    except OSError as exc:
        log.exception("could not record an erasure")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="could not record the erasure; nothing changed, retry later") from exc
    svc.live.forget(user_id)  # also when already erased: another worker may have kept some
    log.info("recorded a user erasure (%s)", "new" if new else "repeated")  # never the id itself
    return ErasureResult(user_id=user_id, erased_at=erased_at, status="erased" if new else "already_erased")
