"""``GET /v1/online/metrics``: the online metrics per model version x variant (x segment x day).

Served from the latest ``recsys online-report`` (:mod:`serving.online_metrics`); an
operator's read, so it needs the ``admin`` scope (the cells name districts and the A/B
test's variants).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from recsys import attribution
from serving.deps import AdminDep, ServicesDep
from serving.online_metrics import OnlineReportFile, OnlineReportMissing

router = APIRouter(tags=["online"])

SEGMENT_TYPES = ("all", *attribution.SEGMENT_TYPES)

_FILES: dict[str, OnlineReportFile] = {}
"""One reader per home, so its parsed summary is cached across requests."""


def _file(directory: Any) -> OnlineReportFile:
    key = str(directory)
    if key not in _FILES:
        _FILES[key] = OnlineReportFile(directory)
    return _FILES[key]


@router.get("/v1/online/metrics", responses={404: {"description": "no online report yet"}})
def online_metrics(svc: ServicesDep, _: AdminDep,
                   segment_type: Annotated[str, Query(description=f"one of {', '.join(SEGMENT_TYPES)}",
                                                      pattern=f"^({'|'.join(SEGMENT_TYPES)})$")] = "all",
                   model_version: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    """Totals per model version x variant over the report's window, and its cells of one segment type per day."""
    if segment_type not in SEGMENT_TYPES:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=f"segment_type must be one of {', '.join(SEGMENT_TYPES)}")
    try:
        summary = _file(svc.settings.engine_home().online_report).summary()
    except OnlineReportMissing as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc

    def wanted(row: Any) -> bool:
        return isinstance(row, dict) and (model_version is None or str(row.get("model_version")) == model_version)

    return {
        "generated_at": summary.get("generated_at"), "days": summary.get("days"),
        "window_start": summary.get("window_start"), "window_end": summary.get("window_end"),
        "totals": [r for r in summary.get("totals", []) if wanted(r)],
        "cells": [r for r in summary.get("cells", []) if wanted(r) and r.get("segment_type") == segment_type],
    }
