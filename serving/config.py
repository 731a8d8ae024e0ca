"""Server configuration from ``RECSYS_*`` environment variables (or explicit arguments).

``recsys serve`` passes its options through the environment so that every uvicorn worker
process builds the same settings from the app factory. Every setting is defined here once:
its environment variable is ``RECSYS_`` + the field name in capitals (:func:`env_name`), and
the CLI's option help is the field's description.

Keys (see :mod:`serving.auth`) are checked when the settings are built, so a server with a
malformed or too short key refuses to start with a message naming the problem.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.home import CHAMPION, REGISTERED_MODEL, EngineHome
from serving.auth import MIN_KEY_LENGTH, check_key_length, parse_inline_keys

ENV_PREFIX = "RECSYS_"
DEFAULT_RELOAD_INTERVAL = 60.0
"""A server follows the registry by default: a promoted champion is served within a minute."""
DEFAULT_CANDIDATE_USERS = 200_000
"""Most users whose candidates a server computes itself (1-1.5 ms of CPU each, at 20,000 items).
Fewer than a training job's :data:`recsys.candidates.DEFAULT_MAX_USERS`: a server does this work
on its own CPU while it serves."""


_ORIGIN = re.compile(r"https?://[^\s/?#,]+")
"""A web origin as a browser sends it: scheme, host and optional port, nothing after."""


def split_origins(value: str) -> list[str]:
    """The origins of a comma-separated list (blanks dropped, a trailing slash forgiven)."""
    return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]


def env_name(field: str) -> str:
    """The environment variable of a :class:`ServingSettings` field (``rate_per_key`` -> ``RECSYS_RATE_PER_KEY``)."""
    return ENV_PREFIX + field.upper()


def describe(field: str) -> str:
    """A field's description (the CLI's option help)."""
    return ServingSettings.model_fields[field].description or ""


class ServingSettings(BaseSettings):
    """Where the model comes from, who may administer the server, and how much state it keeps."""

    # hide_input_in_errors: a refused key must not be echoed in the start-up error
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True)

    home: Path | None = Field(None, description="engine home; default ./.recsys")
    model_dir: Path | None = Field(
        None, description="serve this bundle directory instead of the registry (development, tests)"
    )
    model_name: str = Field(REGISTERED_MODEL, description="registered model in the MLflow registry")
    model_alias: str = Field(CHAMPION, description="alias of the registered model to serve")
    admin_key: SecretStr | None = Field(
        None, description=f"an API key with the admin scope (app name 'admin'), at least {MIN_KEY_LENGTH} characters"
    )
    api_keys: SecretStr | None = Field(
        None, description="inline API keys for a quick start: KEY=scope+scope,KEY2=scope (scopes: read, "
                          "write:interactions, write:items, admin)",
    )
    api_keys_file: Path | None = Field(
        None, description="TOML file of hashed API keys, one table per app (sha256 = hex, scopes = [...]); "
                          "re-read when it changes",
    )
    open_personal_reads: bool = Field(
        False, description="serve personal lists without a key (only behind a trusted internal network)",
    )
    rate_per_key: float = Field(
        200.0, ge=0, description="requests per second per app key and server process (0 = no limit)",
    )
    burst_per_key: int = Field(400, ge=1, description="requests an app key may send at once above its rate")
    rate_per_ip: float = Field(
        20.0, ge=0, description="requests per second per client address without a valid key, per server process "
                                "(0 = no limit)",
    )
    burst_per_ip: int = Field(40, ge=1, description="requests a client address may send at once above its rate")
    wrong_keys_per_minute: int = Field(
        10, ge=1, description="wrong API keys a client address may send per minute before every keyed request "
                              "from it is refused (429)",
    )
    daily_rows_per_key: int = Field(
        1_000_000, ge=0, description="interactions an app may post per UTC day, counted across the processes of "
                                     "the home (0 = no limit)",
    )
    max_in_flight: int = Field(
        256, ge=1, description="requests in progress per server process beyond which new ones get 503 "
                               "(load shedding; /healthz is exempt)",
    )
    max_connections: int = Field(
        10_000, ge=1, description="open connections per server process (capped below the file-descriptor limit); "
                                  "beyond it the connection waiting longest for its request is closed",
    )
    header_timeout: float = Field(
        10.0, gt=0, description="seconds a connection may take to send a request's headers",
    )
    body_timeout: float = Field(30.0, gt=0, description="seconds a request may take to send its body")
    keep_alive_timeout: int = Field(5, ge=1, description="seconds an idle keep-alive connection stays open")
    access_log: bool = Field(
        False, description="uvicorn access log (user ids and query strings are redacted from it)",
    )
    reload_interval: float = Field(
        DEFAULT_RELOAD_INTERVAL, ge=0, description="seconds between polls of the model source; a new champion "
                                                   "(or bundle) is loaded and swapped in. 0 = never",
    )
    tail_interval: float = Field(
        0.5, ge=0, description="seconds between looks at what the other server processes of the home were "
                               "posted and asked to reload (their segments and the reload request); 0 = never",
    )
    live_max_users: int = Field(100_000, ge=1, description="users whose live interactions are kept (LRU)")
    live_max_items_per_user: int = Field(500, ge=1, description="live items kept per user (most recent)")
    lang: Literal["zh", "en"] = "zh"
    blas_threads: int = Field(
        1, ge=1, description="BLAS threads per process: one request's scoring is one small matrix product, "
                             "and a multi-threaded BLAS makes that an order of magnitude slower",
    )
    max_batch: int = Field(10_000, ge=1, description="most interactions accepted in one POST")
    max_item_batch: int = Field(1_000, ge=1, description="most items accepted in one POST /v1/items/batch")
    full_events: Literal["hide", "flag"] = Field(
        "hide", description="an event whose reservations reached its capacity: 'hide' leaves it out of every "
                            "list (its series' alternative takes its place), 'flag' lists it with full: true",
    )
    candidate_users: int = Field(
        DEFAULT_CANDIDATE_USERS, ge=0,
        description="for an artifact without precomputed candidates: most users (the most active) whose "
                    "candidates the server computes in the background, ~1.5 ms of CPU each; the others keep "
                    "full scoring. 0 = never compute",
    )
    exposure_log: bool = Field(
        True, description="record every served list (an exposure line written before the answer, "
                          "fsynced within 0.2 s) in store/exposures_incoming/ for online metrics and A/B tests",
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1, description="largest request body accepted (bytes)")
    cors_origins: str = Field(
        "", description="web origins allowed to call the API from a browser (CORS), comma-separated, e.g. "
                        "https://app.example.org,https://admin.example.org; * = any; empty = none",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins_readable(cls, value: str) -> str:
        for origin in split_origins(value):
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not a web origin (scheme://host[:port], no path)")
        return value

    def allowed_origins(self) -> list[str]:
        """The CORS allow-list (empty: no cross-origin browser calls)."""
        return split_origins(self.cors_origins)

    @field_validator("admin_key")
    @classmethod
    def _admin_key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            check_key_length(value.get_secret_value(), "RECSYS_ADMIN_KEY")
        return value

    @field_validator("api_keys")
    @classmethod
    def _inline_keys_readable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_inline_keys(value.get_secret_value())  # raises ValueError naming the bad entry (never the key)
        return value

    def engine_home(self) -> EngineHome:
        return EngineHome.at(self.home)
