"""API keys and their scopes: which app may call which route.

The engine serves cultural-cloud *apps*, not residents: an app's backend signs its residents
in, holds an API key, and calls the engine on behalf of the signed-in resident. The engine
never trusts a bare ``user_id`` from the open internet, so every route that reads or writes
in a resident's name needs a key (header :data:`API_KEY_HEADER`) with the right
:class:`Scope`:

=======================  =========================================================
``read``                 personal lists (``GET /v1/users/{user_id}/recommendations``)
``write:interactions``   ``POST /v1/interactions``
``write:items``          catalog writes (reserved for the item feed)
``admin``                ``/v1/admin/*`` and ``DELETE /v1/users/{user_id}``
=======================  =========================================================

Keys come from three places, merged into one :class:`KeyRing`:

- ``RECSYS_API_KEYS_FILE``: a TOML file with one table per app, holding only the SHA-256 of
  its key(s) (a list while a key is being rotated) and its scopes; re-read when it changes,
  so keys are added, rotated and revoked without a restart;
- ``RECSYS_API_KEYS``: ``KEY=scope+scope,KEY2=scope`` for a quick start;
- ``RECSYS_ADMIN_KEY``: an ``admin`` key (app name ``admin``).

Only digests are kept in memory. A presented key is hashed and looked up by its digest: the
lookup's timing depends on the digest, which an attacker cannot steer towards a real key's
without a preimage, so no constant-time comparison of plain keys is needed. Keys given in
plain text must be at least :data:`MIN_KEY_LENGTH` characters long.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from starlette import status
from starlette.exceptions import HTTPException
from starlette.types import Scope as AsgiScope

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
API_KEY_HEADER_RAW = API_KEY_HEADER.lower().encode("latin-1")
"""The header's name as it appears in an ASGI scope (lower-case bytes)."""
MIN_KEY_LENGTH = 16
ADMIN_APP = "admin"
"""App name of ``RECSYS_ADMIN_KEY``."""
KEY_FIELD = "recsys.api_key"
"""ASGI scope field where :class:`serving.guard.Guard` leaves the request's :class:`ApiKey` (or None)."""
PRESENTED_FIELD = "recsys.api_key_presented"
"""ASGI scope field: whether the request carried a key at all (a wrong one included)."""
SHA256_HEX = 64


class Scope(StrEnum):
    READ = "read"
    WRITE_INTERACTIONS = "write:interactions"
    WRITE_ITEMS = "write:items"
    ADMIN = "admin"


SCOPE_NAMES = ", ".join(s.value for s in Scope)


@dataclass(frozen=True)
class ApiKey:
    """What a key is: the app holding it and what it may do (never the key itself)."""

    app: str
    scopes: frozenset[Scope]


class KeyConfigError(ValueError):
    """A key source is malformed; the message names the entry, never the key."""


def key_digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key (what the keys file holds)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_key_length(key: str, where: str) -> None:
    if len(key) < MIN_KEY_LENGTH:
        raise KeyConfigError(f"{where}: an API key must be at least {MIN_KEY_LENGTH} characters long "
                        f"(this one has {len(key)}); generate one with `recsys api-key`")


def parse_scopes(names: Iterable[Any], where: str) -> frozenset[Scope]:
    scopes = set()
    for name in names:
        try:
            scopes.add(Scope(str(name).strip()))
        except ValueError:
            raise KeyConfigError(f"{where}: unknown scope {str(name)[:40]!r} (known: {SCOPE_NAMES})") from None
    if not scopes:
        raise KeyConfigError(f"{where}: no scopes (known: {SCOPE_NAMES})")
    return frozenset(scopes)


def parse_inline_keys(text: str) -> dict[bytes, ApiKey]:
    """``KEY=scope+scope,KEY2=scope`` -> digest -> key (apps named ``inline-1``, ``inline-2``, ...)."""
    keys: dict[bytes, ApiKey] = {}
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    for number, entry in enumerate(entries, start=1):
        where = f"RECSYS_API_KEYS entry {number}"
        key, sep, scopes = entry.rpartition("=")  # a key may hold "=", a scope list never does
        if not sep or not key:
            raise KeyConfigError(f"{where}: expected KEY=scope+scope")
        check_key_length(key, where)
        digest = key_digest(key.encode("utf-8"))
        if digest in keys:
            raise KeyConfigError(f"{where}: the same key is listed twice")
        keys[digest] = ApiKey(f"inline-{number}", parse_scopes(scopes.split("+"), where))
    return keys


def parse_keys_file(path: Path) -> dict[bytes, ApiKey]:
    """The keys of a TOML keys file (see the module docstring); :class:`KeyConfigError` if malformed."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyConfigError(f"cannot read the API keys file {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KeyConfigError(f"the API keys file {path} is not valid TOML: {exc}") from exc
    keys: dict[bytes, ApiKey] = {}
    for app, table in document.items():
        for digest in _app_digests(app, table, path):
            if digest in keys:
                raise KeyConfigError(f"{path}: [{app}] repeats a key of [{keys[digest].app}]")
            keys[digest] = ApiKey(app, parse_scopes(_scope_list(app, table, path), f"{path}: [{app}]"))
    return keys


def _app_digests(app: str, table: Any, path: Path) -> list[bytes]:
    if not isinstance(table, dict):
        raise KeyConfigError(f"{path}: {app!r} must be a table ([{app}] with sha256 and scopes)")
    hashes = table.get("sha256")
    hashes = [hashes] if isinstance(hashes, str) else hashes
    if not isinstance(hashes, list) or not hashes:
        raise KeyConfigError(f"{path}: [{app}] needs sha256 = \"<hex>\" (or a list of them while rotating)")
    digests = []
    for value in hashes:
        text = str(value).strip().lower()
        if len(text) != SHA256_HEX or any(c not in "0123456789abcdef" for c in text):
            raise KeyConfigError(f"{path}: [{app}] sha256 must be {SHA256_HEX} hex digits")
        digests.append(bytes.fromhex(text))
    return digests


def _scope_list(app: str, table: dict[str, Any], path: Path) -> list[Any]:
    scopes = table.get("scopes")
    if not isinstance(scopes, list):
        raise KeyConfigError(f"{path}: [{app}] needs scopes = [...] (known: {SCOPE_NAMES})")
    return scopes


class KeyRing:
    """Every valid key, looked up by digest; the keys file is followed for changes.

    ``lookup`` runs on the event loop for every keyed request: it costs one SHA-256 and one
    dict lookup, plus a ``stat`` of the keys file at most every ``refresh_seconds``.
    """

    def __init__(self, fixed: Mapping[bytes, ApiKey], file: Path | None = None,
                 refresh_seconds: float = 1.0) -> None:
        self.fixed = dict(fixed)
        self.file = Path(file) if file is not None else None
        self.refresh_seconds = refresh_seconds
        self._from_file: dict[bytes, ApiKey] = {}
        self._keys = dict(self.fixed)
        self._signature: tuple[int, int, int] | None = None
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        if self.file is not None:
            self._from_file = parse_keys_file(self.file)  # at start-up a bad file is fatal
            self._signature = _signature(self.file)
            self._merge()

    @classmethod
    def from_settings(cls, admin_key: str | None, inline: str | None, file: Path | None) -> KeyRing:
        fixed = parse_inline_keys(inline) if inline else {}
        if admin_key:
            check_key_length(admin_key, "RECSYS_ADMIN_KEY")
            fixed[key_digest(admin_key.encode("utf-8"))] = ApiKey(ADMIN_APP, frozenset({Scope.ADMIN}))
        return cls(fixed, file)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, key: bytes) -> ApiKey | None:
        """The key's app and scopes, or None for an unknown key."""
        if self.file is not None and time.monotonic() - self._checked >= self.refresh_seconds:
            self.refresh()
        return self._keys.get(key_digest(key))

    def has_scope(self, scope: Scope) -> bool:
        """Whether any key holds ``scope`` (none with ``admin``: the admin API is disabled)."""
        return any(scope in key.scopes for key in self._keys.values())

    def refresh(self) -> bool:
        """Re-read the keys file if it changed; True if the keys changed. A file that became
        unreadable keeps the previous keys (an edit in progress must not lock every app out);
        a deleted file revokes its keys."""
        with self._lock:
            self._checked = time.monotonic()
            assert self.file is not None
            signature = _signature(self.file)
            if signature == self._signature:
                return False
            self._signature = signature
            if signature is None:
                log.warning("the API keys file %s is gone: its keys are revoked", self.file)
                self._from_file = {}
            else:
                try:
                    self._from_file = parse_keys_file(self.file)
                except KeyConfigError as exc:
                    log.error("keeping the previous API keys: %s", exc)
                    return False
                log.info("API keys file re-read: %d keys of %d apps", len(self._from_file),
                         len({key.app for key in self._from_file.values()}))
            self._merge()
            return True

    def _merge(self) -> None:
        self._keys = {**self._from_file, **self.fixed}  # one assignment: lookups see old or new


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


# --------------------------------------------------------------------------- authorization
def authorize(scope: AsgiScope, needed: Scope, ring: KeyRing) -> ApiKey:
    """The request's key if it holds ``needed``; else 401 (no or unknown key) or 403 (wrong scope).

    The key itself was resolved by :class:`serving.guard.Guard`; a request that did not pass
    through it has no key here and is refused (fail closed).
    """
    key: ApiKey | None = scope.get(KEY_FIELD)
    if needed is Scope.ADMIN and not ring.has_scope(Scope.ADMIN):
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail="the admin API is disabled (no key with the admin scope is configured)")
    if key is None:
        detail = "unknown API key" if scope.get(PRESENTED_FIELD) else f"missing {API_KEY_HEADER} header"
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "APIKey"})
    if needed not in key.scopes:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this API key lacks the {needed.value} scope")
    return key
