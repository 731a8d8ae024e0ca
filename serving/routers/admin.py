"""Admin: swap in the registry's current champion without a restart.

With several workers the request reaches one of them; ``recsys serve --reload-interval``
makes every worker follow the registry on its own.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from serving.deps import AdminDep, ServicesDep
from serving.schemas import ReloadResult
from serving.state import LoadFailed

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_FAILED = {"content": {"application/json": {"example": {
    "detail": "reload failed: ...", "serving_version": "7"}}}}


@router.post("/reload", response_model=ReloadResult,
             responses={401: {"description": "missing key"}, 403: {"description": "wrong key"},
                        404: {"description": "admin API disabled"},
                        409: {**_FAILED, "description": "the new model failed to load; the old one keeps serving"},
                        503: {**_FAILED, "description": "the new model failed to load and nothing is serving"}})
def reload_model(_: AdminDep, svc: ServicesDep) -> Any:
    """Load the current champion and swap it in atomically (in-flight requests finish on the old one)."""
    previous = svc.holder.current
    try:
        served = svc.holder.reload()
    except LoadFailed as exc:
        svc.metrics.reloads.labels("failed").inc()
        current = svc.holder.current
        code = status.HTTP_409_CONFLICT if current is not None else status.HTTP_503_SERVICE_UNAVAILABLE
        return JSONResponse({"detail": f"reload failed: {exc}",
                             "serving_version": current.version if current else None}, status_code=code)
    svc.metrics.reloads.labels("ok").inc()
    return ReloadResult(status="reloaded", version=served.version,
                        previous_version=previous.version if previous else None)
