"""The OpenAPI schema tells the truth about the errors and the keys.

:func:`document_errors` patches FastAPI's generated schema: the app answers ``422`` with
``{"detail": "<message>", "errors": [...]}`` (not FastAPI's default list), ``400``/``413``
where a body is accepted, ``429`` everywhere (rate limits, with ``Retry-After``), ``503``
everywhere but the probes (load shedding, no model loaded yet, or the store cannot be
written), and, on every route that needs an API key, the key (security scheme ``ApiKey``),
its scope (``x-required-scope``), ``401`` and ``403`` (and ``404`` while the admin API is
disabled).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from serving.auth import API_KEY_HEADER, Scope
from serving.config import ServingSettings
from serving.deps import RequireScope
from serving.guard import UNSHED_PATHS

ERROR_SCHEMA = "ErrorBody"

_ERROR_BODY = {
    "title": ERROR_SCHEMA,
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "what is wrong, in one sentence"},
        "errors": {
            "type": "array",
            "description": "validation errors: where (loc), what (msg) and its kind (type)",
            "items": {"type": "object", "properties": {
                "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                "msg": {"type": "string"},
                "type": {"type": "string"},
                "allowed": {"type": "array", "items": {"type": "string"},
                            "description": "the values the parameter takes (an unknown kind, category or age band)"},
            }},
        },
    },
}
_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
SECURITY_SCHEME = "ApiKey"
_KEY_SCHEME = {
    "type": "apiKey", "in": "header", "name": API_KEY_HEADER,
    "description": "the calling app's key; each route names the scope it needs in x-required-scope "
                   "(read, write:interactions, write:items, admin)",
}


def document_errors(app: FastAPI, routes: Callable[[], Sequence[BaseRoute]]) -> None:
    """Wrap ``app.openapi`` so the schema documents the error bodies the app really sends,
    and the API key (and scope) each route needs."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI caches it (and rebuilds it when routes change)
        # idempotent, so patching the cached copy again is harmless
        _patch(schema, scoped_operations(routes(), app.state.services.settings))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def scoped_operations(routes: Sequence[BaseRoute], settings: ServingSettings) -> dict[tuple[str, str], Scope]:
    """(path, method) -> the scope its :class:`~serving.deps.RequireScope` dependency demands
    (routes whose key requirement the settings open are left out)."""
    scoped: dict[tuple[str, str], Scope] = {}
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        for dependency in route.dependant.dependencies:
            check = dependency.call
            if isinstance(check, RequireScope) and not check.is_open(settings):
                scoped.update({(route.path_format, method.lower()): check.scope for method in route.methods})
    return scoped


def _patch(schema: dict[str, Any], scoped: dict[tuple[str, str], Scope]) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})[ERROR_SCHEMA] = _ERROR_BODY
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = _KEY_SCHEME
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    _use_error_body(response)
            if "422" in responses:
                responses["422"]["description"] = "invalid input"
            if "requestBody" in operation:
                responses.setdefault("400", _error_response("the body is not readable (e.g. nested too deep)"))
                responses.setdefault("413", _error_response("request body over the size limit"))
            responses.setdefault("429", _retry_response(
                "too many requests: over the rate of this key or address, too many wrong keys from this "
                "address, or (posting) over the app's daily quota"))
            if path not in UNSHED_PATHS:
                responses.setdefault("503", _retry_response(
                    "temporarily unavailable: at capacity, no model loaded yet, or the store cannot be written"))
            if (path, method) in scoped:
                _document_key(operation, scoped[(path, method)])


def _document_key(operation: dict[str, Any], scope: Scope) -> None:
    operation["security"] = [{SECURITY_SCHEME: []}]
    operation["x-required-scope"] = scope.value
    responses = operation["responses"]
    responses.setdefault("401", _error_response(f"no {API_KEY_HEADER} header, or an unknown key"))
    responses.setdefault("403", _error_response(f"the key lacks the {scope.value} scope"))
    if scope is Scope.ADMIN:
        responses.setdefault("404", _error_response("the admin API is disabled (no key has the admin scope)"))


def _use_error_body(response: dict[str, Any]) -> None:
    """Point an error response at :data:`ERROR_SCHEMA` unless it already names its own model."""
    content = response.setdefault("content", {}).setdefault("application/json", {})
    current = content.get("schema")
    if current is None or current.get("$ref", "").endswith("/HTTPValidationError"):
        content["schema"] = _REF


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _REF}}}


def _retry_response(description: str) -> dict[str, Any]:
    return {**_error_response(description), "headers": {"Retry-After": {
        "description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}}}}
