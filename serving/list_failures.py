"""Count the list requests a server fails, per experiment variant, where the guardrail can read them.

:class:`ListFailures` is a pure ASGI middleware next to the router: when a request matched
the user, region or similar-item list route and its answer is a 5xx (or the handler raised,
which the app turns into a 500 further out), it counts the failure against the variant the
request is served under (:meth:`serving.experiment.ExperimentFollower.variant_of` for a
user's list; district and similar-item lists always get the champion):

* in the per-variant Prometheus counters (``recsys_variant_errors``: :mod:`serving.variant_metrics`);
* in this process's durable file under ``<home>/serving/list_failures/``
  (:class:`ListFailureLog`, lines of :mod:`recsys.list_failures`), which ``recsys experiment
  report`` reads, so the error-rate guardrail trips with no operator passing a number in.

Refusals made before routing (load shedding, a wrong key, rate limits) are no variant's
failure and are not counted. Writing a line is off the event loop; a line that cannot be
written is logged and the answer goes out unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.experiment import CHAMPION
from recsys.list_failures import failure_record
from serving.segments import SegmentWriter

log = logging.getLogger(__name__)

LIST_ROUTES = {
    "/v1/users/{user_id:id}/recommendations": "users",
    "/v1/regions/{region_code}/recommendations": "regions",
    "/v1/items/{item_id:id}/similar": "similar",
}
"""Route path -> endpoint name (as in the exposure records) of the lists whose failures count."""


class ListFailureLog:
    """This process's durable file of failed list requests."""

    def __init__(self, directory: Path) -> None:
        self.writer = SegmentWriter(directory)

    def record(self, variant: str, endpoint: str, status: int) -> None:
        try:
            self.writer.append([failure_record(variant, endpoint, status)])
        except OSError:  # the Prometheus counter still has it; the answer is not held up
            log.exception("could not record a failed %s list of variant %s", endpoint, variant)

    def close(self) -> None:
        self.writer.close()


class ListFailures:
    """Pure ASGI middleware counting failed list requests per variant."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            await self._count(scope, 500)
            raise
        if status and status[0] >= 500:
            await self._count(scope, status[0])

    async def _count(self, scope: Scope, status: int) -> None:
        route = scope.get("route")
        endpoint = LIST_ROUTES.get(getattr(route, "path", ""))
        if endpoint is None:
            return
        services = scope["app"].state.services
        user_id = scope.get("path_params", {}).get("user_id") if endpoint == "users" else None
        try:
            variant = services.experiment.variant_of(user_id) if user_id is not None else CHAMPION
        except Exception:  # the follower itself failing must not hide the failure being counted
            log.exception("cannot tell the variant of a failed list; counted for the champion")
            variant = CHAMPION
        services.metrics.variants.failed(variant)
        await anyio.to_thread.run_sync(services.list_failures.record, variant, endpoint, status)
