"""The gate every request passes before routing: load shedding, rate limits and the API key.

:class:`Guard` is a pure ASGI middleware running on the event loop (no lock, no thread hop):

1. **load shedding**: beyond ``max_in_flight`` requests in progress in this process, a new
   one gets ``503`` with ``Retry-After`` at once instead of queueing behind the others
   (the probes ``/healthz`` and ``/readyz`` are exempt, so a busy server is not taken for
   a dead one);
2. **the key**: a request carrying ``X-API-Key`` has it hashed and looked up
   (:class:`serving.auth.KeyRing`); the app and scopes are left in the ASGI scope for the
   routes to authorise (:func:`serving.auth.authorize`). Wrong keys are counted per client
   address: past ``wrong_keys_per_minute`` every keyed request from that address gets ``429``
   *before* its key is looked at, so guessing stays slow. A request with a body (only
   writes take one) and no valid key is refused (401) before a byte of the body is read;
3. **rate limits**: a request with a valid key spends a token of its app's bucket, any other
   request one of its client address's (IPv6 addresses by /64: one subscriber holds a whole
   prefix); an empty bucket is ``429`` with ``Retry-After``.

Every refusal is JSON ``{"detail": ...}`` and counted in ``recsys_refusals_total``. Client
addresses are the TCP peer's, or the ``X-Forwarded-For`` one that uvicorn accepts from the
proxies in ``FORWARDED_ALLOW_IPS`` (set it to the load balancer's address).
"""

from __future__ import annotations

import ipaddress
import logging
import math

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.auth import API_KEY_HEADER, API_KEY_HEADER_RAW, KEY_FIELD, PRESENTED_FIELD, KeyRing
from serving.metrics import Metrics
from serving.ratelimit import TokenBuckets
from serving.refusals import send_json

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
UNSHED_PATHS = frozenset({HEALTH_PATH, READY_PATH})
"""The probes: never shed, so a busy server is not taken for a dead or unready one."""
UNKNOWN_CLIENT = "unknown"
IPV6_PREFIX = 64
UNAUTHORIZED = 401
TOO_MANY = 429
UNAVAILABLE = 503


class Guard:
    """Pure ASGI middleware: shed load, resolve the API key, enforce per-key and per-address rates."""

    def __init__(self, app: ASGIApp, *, keys: KeyRing, metrics: Metrics, max_in_flight: int,
                 per_key: TokenBuckets, per_ip: TokenBuckets, wrong_keys: TokenBuckets) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.per_key = per_key
        self.per_ip = per_ip
        self.wrong_keys = wrong_keys
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight and scope["path"] not in UNSHED_PATHS:
            await self._refuse(send, UNAVAILABLE, "shed", 1.0,
                               "the server is at capacity; retry after the time in Retry-After")
            return
        if not await self._admitted(scope, send):
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _admitted(self, scope: Scope, send: Send) -> bool:
        """Resolve the key into ``scope`` and spend a token; False once a refusal was sent."""
        client = client_address(scope)
        presented = presented_key(scope)
        key = None
        if presented is not None:
            wait = self.wrong_keys.wait(client)
            if wait > 0:
                await self._refuse(send, TOO_MANY, "wrong_keys", wait,
                                   "too many wrong API keys from this address; retry later")
                return False
            key = self.keys.lookup(presented)
            if key is None:
                self.wrong_keys.take(client)
                log.warning("a wrong API key from %s", client)  # never the key
        scope[KEY_FIELD] = key
        scope[PRESENTED_FIELD] = presented is not None
        if key is None and has_body(scope):
            # Every route taking a body writes, and every write needs a key: refused before a
            # byte of the body is read or parsed (the route would say 401 too, after parsing it).
            await self._refuse(send, UNAUTHORIZED, "no_key", 0.0,
                               "unknown API key" if presented else f"missing {API_KEY_HEADER} header")
            return False
        if key is not None:
            wait, reason = self.per_key.take(key.app), "key_rate"
        else:
            wait, reason = self.per_ip.take(client), "ip_rate"
        if wait > 0:
            await self._refuse(send, TOO_MANY, reason, wait, "rate limit exceeded; retry after the time in Retry-After")
            return False
        return True

    async def _refuse(self, send: Send, status: int, reason: str, wait: float, detail: str) -> None:
        self.metrics.refusals.labels(reason).inc()
        if status == UNAUTHORIZED:
            headers = [(b"www-authenticate", b"APIKey")]
        else:
            headers = [(b"retry-after", str(retry_after(wait)).encode())]
        await send_json(send, status, {"detail": detail}, close=False, headers=headers)


def retry_after(wait: float) -> int:
    """Whole seconds for a ``Retry-After`` header (at least 1: 0 would invite an immediate retry)."""
    return max(1, math.ceil(wait))


def presented_key(scope: Scope) -> bytes | None:
    """The raw ``X-API-Key`` value (None when absent or empty)."""
    for name, value in scope.get("headers", ()):
        if name == API_KEY_HEADER_RAW:
            return value or None
    return None


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (a non-zero ``Content-Length``, or chunked)."""
    for name, value in scope.get("headers", ()):
        if (name == b"content-length" and value.strip() not in (b"", b"0")) or name == b"transfer-encoding":
            return True
    return False


def client_address(scope: Scope) -> str:
    """Who a per-address limit counts: the peer's IPv4 address or IPv6 /64 prefix."""
    client = scope.get("client")
    if not client or not client[0]:
        return UNKNOWN_CLIENT
    host = str(client[0])
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:  # a zone id or a unix socket name: count it as given
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))

