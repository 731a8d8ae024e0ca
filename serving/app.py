"""The app factory: ``uvicorn serving.app:create_app --factory``.

Startup (the lifespan) loads the champion, or the last-known-good copy when the registry
is unavailable, or nothing: the server starts in every case, ``/healthz`` answers, and
``/readyz`` says whether and how a model is served. Every error response is JSON
``{"detail": ...}``; bad input is a 4xx, never a 500.

The middleware stack and its order are :mod:`serving.middleware`'s; routes then check the
key's scope (:class:`~serving.deps.RequireScope`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.routing import BaseRoute, Route
from threadpoolctl import threadpool_limits

from recsys.contract import parse_timestamp
from recsys.home import EngineHome
from serving.auth import KeyRing
from serving.cache import LastKnownGood
from serving.config import ServingSettings
from serving.deps import Services
from serving.docs import install_docs
from serving.experiment import ExperimentFollower, challenger_loader
from serving.exposures import ExposureLog
from serving.follower import PeerFollower
from serving.list_failures import ListFailureLog
from serving.live import LiveInteractions
from serving.live_items import LiveItems
from serving.metrics import Metrics
from serving.middleware import install as install_middleware
from serving.openapi import document_errors
from serving.peers import PeerInteractions
from serving.quota import DailyQuota
from serving.ratelimit import TokenBuckets
from serving.redact import install_access_log_redaction
from serving.reload_requests import ReloadRequests
from serving.reports import ReportFiles
from serving.routers import admin, controls, interactions, items, online, ops, recommendations, reports, requests
from serving.segment_tail import SegmentTail
from serving.segments import SegmentWriter
from serving.sources import DirectorySource, ModelSource, RegistrySource
from serving.state import ModelHolder, ServedModel
from serving.user_controls import follow_erasures_and_controls

log = logging.getLogger(__name__)

# controls before admin: ``DELETE /v1/users/{user_id:id}`` would match ``.../profile/tags/{tag}`` too
ROUTERS = (recommendations, interactions, items, ops, controls, admin, reports, requests, online)

DESCRIPTION = """\
Recommendations for a public cultural-resource platform (文化云): personal lists, district
lists and similar items, all obeying the delivery rules (nothing seen, hidden or ended;
distance and kind filters; named fallbacks for users the model cannot personalise).
Interactions posted here count in the user's next request and in the next training run.
"""


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """Build the API (the model is loaded at startup, not here)."""
    settings = settings or ServingSettings()
    services = build_services(settings)
    app = FastAPI(
        title="Cultural recommendation API", version="1", description=DESCRIPTION,
        lifespan=_lifespan, docs_url=None, redoc_url=None,  # served offline by serving.docs
    )
    app.state.services = services
    install_middleware(app, erased=services.erased, max_body_bytes=settings.max_body_bytes,
                       routes=lambda: every_route(app), guard=guard_options(services), metrics=services.metrics,
                       cors_origins=settings.allowed_origins())
    install_docs(app)
    install_access_log_redaction()
    _add_error_handlers(app)
    for module in ROUTERS:
        app.include_router(module.router)
    document_errors(app, lambda: every_route(app))
    return app


def every_route(app: FastAPI) -> list[BaseRoute]:
    """The app's own routes (docs, schema) and every router's, each with its full path.

    Read from the routers themselves: FastAPI versions differ in whether ``app.routes`` lists
    an included router's routes or one entry for the whole router. A route listed twice
    (older versions) is harmless to both readers.
    """
    own = [route for route in app.router.routes if isinstance(route, Route)]
    return [*own, *(route for module in ROUTERS for route in module.router.routes)]


def build_services(settings: ServingSettings) -> Services:
    home = settings.engine_home()
    metrics = Metrics()
    live = LiveInteractions(settings.live_max_users, settings.live_max_items_per_user)
    items = LiveItems(home, lang=settings.lang, hide_full=settings.full_events == "hide")
    holder = ModelHolder(
        model_source(settings, home), LastKnownGood(home.serving_cache), home.serving_cache.parent / "downloads",
        lang=settings.lang, on_change=lambda served: _model_changed(metrics, live, served),
        candidate_users=settings.candidate_users, overlay=items.overlay,
    )
    erased, user_controls = follow_erasures_and_controls(home.tombstones, home.controls, live, metrics)
    return Services(
        settings=settings,
        holder=holder,
        live=live,
        segments=SegmentWriter(home.incoming),
        reports=ReportFiles(home.reports / "latest"),
        metrics=metrics,
        erased=erased,
        keys=KeyRing.from_settings(_secret(settings.admin_key), _secret(settings.api_keys), settings.api_keys_file),
        quota=DailyQuota(home.serving_cache.parent / "quota", settings.daily_rows_per_key),
        controls=user_controls,
        exposures=ExposureLog(home.exposure_lines, enabled=settings.exposure_log),
        items=items,
        experiment=_experiment(settings, home, holder),
        list_failures=ListFailureLog(home.list_failures),
    )


def _experiment(settings: ServingSettings, home: EngineHome, holder: ModelHolder) -> ExperimentFollower:
    """The A/B test follower, looking at the file once now so a running challenger starts loading."""
    load = challenger_loader(home.tracking_uri(), settings.model_name, holder.scratch, settings.lang, holder.overlay)
    follower = ExperimentFollower(home.experiment, load)
    follower.refresh(force=True)
    return follower


def guard_options(services: Services) -> dict[str, Any]:
    """The :class:`Guard`'s arguments from the settings (rates of 0 switch a limit off)."""
    settings = services.settings
    per_minute = settings.wrong_keys_per_minute
    return {
        "keys": services.keys, "metrics": services.metrics, "max_in_flight": settings.max_in_flight,
        "per_key": TokenBuckets(settings.rate_per_key, settings.burst_per_key),
        "per_ip": TokenBuckets(settings.rate_per_ip, settings.burst_per_ip),
        "wrong_keys": TokenBuckets(per_minute / 60, per_minute),
    }


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def model_source(settings: ServingSettings, home: EngineHome) -> ModelSource:
    if settings.model_dir is not None:
        return DirectorySource(settings.model_dir)
    return RegistrySource(home.tracking_uri(), settings.model_name, settings.model_alias)


def _model_changed(metrics: Metrics, live: LiveInteractions, served: ServedModel) -> None:
    trained = parse_timestamp(served.manifest.get("trained_at"))
    metrics.served(served.version, served.labels(), served.degraded is not None,
                   trained_at=trained.timestamp() if trained else None, data_end=served.data_end(),
                   live_items=lambda: float(served.engine.available(time.time()).sum()))
    data_end = served.data_end()
    if data_end is not None:  # what the new model was trained on must not count twice
        dropped = live.expire_trained(data_end)
        if dropped:
            log.info("version %s holds %d live (user, item) interactions already; dropped them",
                     served.version, dropped)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    blas = threadpool_limits(limits=services.settings.blas_threads, user_api="blas")
    peers = peer_follower(services)  # before the first load: reload requests from now on are news
    await anyio.to_thread.run_sync(services.holder.start)
    if peers is not None:
        await peers.start()  # caught up with the other servers' recent posts before the first request
    await services.items.start(services.holder, services.settings.tail_interval)
    interval = services.settings.reload_interval
    poller = asyncio.create_task(_poll(services, interval)) if interval > 0 else None
    try:
        yield
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if peers is not None:
            await peers.stop()
        await services.items.stop()
        services.segments.close()
        services.exposures.close()
        services.list_failures.close()
        blas.restore_original_limits()


def peer_follower(services: Services) -> PeerFollower | None:
    """What keeps this process in step with the other servers of the home (None if switched off)."""
    settings = services.settings
    if settings.tail_interval <= 0:
        return None
    tail = SegmentTail(services.segments.directory, services.segments.path)
    interactions = PeerInteractions(tail, services.live, services.erased, lambda: services.holder.current)
    return PeerFollower(interactions, ReloadRequests.of(settings), services.holder, services.metrics,
                        settings.tail_interval)


async def _poll(services: Services, interval: float) -> None:
    """Follow the registry: reload whenever the alias points at another version."""
    while True:
        await asyncio.sleep(interval)
        try:
            before = services.holder.current
            if await anyio.to_thread.run_sync(services.holder.reload_if_changed):
                services.metrics.reloads.labels("ok").inc()
                now = services.holder.current
                log.info("the model source moved: swapped in version %s (was %s)",
                         now.version if now else None, before.version if before else None)
        except Exception:  # a failed reload keeps the old model; try again next time
            services.metrics.reloads.labels("failed").inc()
            log.exception("scheduled reload failed")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # ``allowed``: the values an enum-like parameter takes (serving.list_filters.check_value)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", ""),
                   **({"allowed": e["allowed"]} if "allowed" in e else {})} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": detail or "invalid request", "errors": jsonable_encoder(errors)},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)
