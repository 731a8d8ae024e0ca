"""What leaves the server: answers without filesystem paths, access logs without residents.

:func:`public_text` strips the leading directories from any absolute path in a message (a
load failure says ``…/bundle/manifest.json``, not where the engine home lives); the full message stays
in the server's own log. :class:`AccessLogRedaction` rewrites uvicorn's access-log lines:
the user id of ``/v1/users/{user_id}/...`` becomes ``{user_id}`` and the query string (which
may hold a resident's position) is dropped.
"""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
USERS_PREFIX = "/v1/users/"
USER_PLACEHOLDER = "{user_id}"
USER_SUFFIXES = ("/recommendations",)
HIDDEN_DIRS = "…"
KEPT_COMPONENTS = 2
"""Components of a path kept in an answer (``…/bundle/manifest.json``): enough to say which
file, never where the installation lives."""

_PATH = re.compile(
    r"""(?:(?:file|sqlite):/{2,}|(?<![\w/:.~%-]))"""  # a file or sqlite URI, or a "/" that starts a path
    r"""(/[^\s'"`<>|]+|[A-Za-z]:\\[^\s'"`<>|]+)"""  # POSIX or Windows absolute path
)
_TRAILING = ".,;:)]}"


def public_text(text: str | None) -> str | None:
    """``text`` with every absolute path reduced to its last components (``…/dir/name``)."""
    if not text:
        return text
    return _PATH.sub(_last_component, text)


def _last_component(match: re.Match[str]) -> str:
    path = match.group(1)
    tail = ""
    while path and path[-1] in _TRAILING:  # sentence punctuation after the path stays
        tail = path[-1] + tail
        path = path[:-1]
    parts = [part for part in re.split(r"[\\/]", path) if part][-KEPT_COMPONENTS:]
    return f"{HIDDEN_DIRS}/{'/'.join(parts)}{tail}" if parts else f"{HIDDEN_DIRS}{tail}"


def redact_path(path: str) -> str:
    """An access-log path without the query string and without a user id."""
    path = path.split("?", 1)[0]
    if not path.startswith(USERS_PREFIX):
        return path
    for suffix in USER_SUFFIXES:
        if path.endswith(suffix):
            return USERS_PREFIX + USER_PLACEHOLDER + suffix
    return USERS_PREFIX + USER_PLACEHOLDER


class AccessLogRedaction(logging.Filter):
    """Rewrites uvicorn's access records (``client - "METHOD path HTTP/x" status``) in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            client, method, path, version, status = args
            record.args = (client, method, redact_path(path), version, status)
        return True


def install_access_log_redaction() -> None:
    """Add the filter to uvicorn's access logger once per process (every app factory call)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, AccessLogRedaction) for f in logger.filters):
        logger.addFilter(AccessLogRedaction())
