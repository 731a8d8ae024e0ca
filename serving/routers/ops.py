"""Operations: the served model, liveness, readiness and Prometheus metrics.

These answers are public: every message and name in them goes through
:func:`serving.redact.public_text`, so no filesystem path of the server leaves it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from recsys.model_card import facts_from_bundle, render_html, render_markdown
from serving.deps import ServedDep, ServicesDep
from serving.guard import HEALTH_PATH, READY_PATH
from serving.redact import public_text
from serving.schemas import Health, ModelInfo, Readiness

router = APIRouter(tags=["operations"])


@router.get("/v1/model", response_model=ModelInfo)
async def model_info(served: ServedDep, svc: ServicesDep) -> ModelInfo:
    """Which model answers: version, alias, training time and its key offline metrics."""
    manifest = served.manifest
    return ModelInfo(
        version=served.version, alias=served.alias, name=public_text(served.model_name) or "",
        model=manifest.get("model"), trained_at=_text(manifest.get("trained_at")),
        data_end=_text(manifest.get("data_end")), source=served.source,
        degraded=public_text(served.degraded), loaded_at=served.loaded_at.isoformat(timespec="seconds"),
        n_users=len(served.bundle.users), n_items=len(served.bundle.catalog),
        metrics=key_metrics(manifest.get("metrics")),
    )


@router.get("/v1/model/card", response_class=Response, responses={200: {
    "description": "the served version's algorithm description (算法机制说明)",
    "content": {"text/markdown": {}, "text/html": {}}}})
async def model_card(
    served: ServedDep, format: Annotated[Literal["md", "html"], Query(description="Markdown or HTML")] = "md",
) -> Response:
    """The mechanism description of the served version, for the public: purpose, data, model,
    cadence, evaluation, the rules of every list, the residents' controls and the safeguards."""
    facts = facts_from_bundle(served.bundle, served.version)
    if format == "html":
        return Response(render_html(facts), media_type="text/html; charset=utf-8")
    return Response(render_markdown(facts), media_type="text/markdown; charset=utf-8")


@router.get(HEALTH_PATH, response_model=Health)
async def healthz() -> Health:
    """The process is up (says nothing about the model)."""
    return Health(status="ok")


@router.get(READY_PATH, response_model=Readiness,
            responses={503: {"model": Readiness, "description": "no model loaded"}})
async def readyz(svc: ServicesDep) -> Any:
    """Ready when a model is loaded; ``degraded`` while serving the last-known-good copy."""
    current = svc.holder.current
    if current is None:
        body = Readiness(status="unavailable", version=None, reason=public_text(svc.holder.problem) or "starting")
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    if current.degraded:
        return Readiness(status="degraded", version=current.version, reason=public_text(current.degraded))
    return Readiness(status="ready", version=current.version, reason=None)


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(svc: ServicesDep) -> Response:
    return Response(svc.metrics.render(), media_type=svc.metrics.content_type)


def key_metrics(metrics: Any) -> dict[str, float]:
    """Numeric metrics from the manifest, one level of nesting flattened to dotted names."""
    if not isinstance(metrics, dict):
        return {}
    flat: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{name}.{k}": float(v) for k, v in value.items() if _is_number(v)})
        elif _is_number(value):
            flat[str(name)] = float(value)
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
