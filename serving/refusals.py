"""Answering a request from pure ASGI middleware, before any route: a JSON ``{"detail": ...}``.

The routes' errors are JSON (FastAPI's handlers in :mod:`serving.app`); a refusal made
before routing (load shedding, rate limits, a body too large) must look the same to a client.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Send


async def send_json(send: Send, status: int, body: dict[str, Any], *, close: bool = True,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer with a JSON body from ASGI middleware (``close``: tell the client the connection ends)."""
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            *(headers or [])]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload})
