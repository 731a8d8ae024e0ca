"""The planners' regional demand report: JSON per region and the HTML page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.responses import HTMLResponse

from serving.deps import ServicesDep
from serving.redact import public_text
from serving.reports import ReportFiles, ReportUnavailable, ReportUnreadable
from serving.schemas import RegionReport, RegionReportEntry, RegionsReport

router = APIRouter(tags=["reports"])

_MISSING = {404: {"description": "no report yet / unknown region",
                  "content": {"application/json": {"example": {"detail": "no report has been written yet"}}}}}


@router.get("/v1/reports/regions", response_model=RegionsReport, responses=_MISSING)
def regions(svc: ServicesDep) -> RegionsReport:
    """Every region with its strongest preference lifts and its supply gaps."""
    summary = _summary(svc.reports)
    entries = [
        RegionReportEntry(region_code=code, **{k: block.get(k) for k in ("name", "suppressed", "active_users")
                                               if k in block},
                          top_lifts=block.get("top_lifts") or [], gaps=block.get("gaps") or [])
        for code, block in summary["regions"].items()
    ]
    return RegionsReport(generated_at=_text(summary.get("generated_at")), window=summary.get("window"),
                         min_users=summary.get("min_users"), regions=entries)


@router.get("/v1/reports/regions/{region_code}", response_model=RegionReport, responses=_MISSING)
def region(region_code: Annotated[str, Path(max_length=64)], svc: ServicesDep) -> RegionReport:
    """One region's full block: lifts, gaps, trends and top items."""
    summary = _summary(svc.reports)
    block = summary["regions"].get(region_code)
    if not isinstance(block, dict):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"region {region_code!r} is not in the report")
    return RegionReport(**{**block, "region_code": region_code,
                           "report_generated_at": _text(summary.get("generated_at"))})


@router.get("/reports", response_class=HTMLResponse, responses=_MISSING)
def report_page(svc: ServicesDep) -> HTMLResponse:
    """The report as one self-contained HTML page."""
    try:
        return HTMLResponse(svc.reports.html())
    except ReportUnavailable as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc


def _summary(reports: ReportFiles) -> dict[str, Any]:
    try:
        return reports.summary()
    except ReportUnavailable as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except ReportUnreadable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=public_text(str(exc))) from exc


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
