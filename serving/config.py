"""Server configuration from ``RECSYS_*`` environment variables (or explicit arguments).

``recsys serve`` passes its options through the environment so that every uvicorn worker
process builds the same settings from the app factory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.home import REGISTERED_MODEL, EngineHome

DEFAULT_ALIAS = "champion"


class ServingSettings(BaseSettings):
    """Where the model comes from, who may administer the server, and how much state it keeps."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    home: Path | None = Field(None, description="engine home; default ./.recsys")
    model_dir: Path | None = Field(
        None, description="serve this bundle directory instead of the registry (development, tests)"
    )
    model_name: str = Field(REGISTERED_MODEL, description="registered model in the MLflow registry")
    model_alias: str = Field(DEFAULT_ALIAS, description="alias of the registered model to serve")
    admin_key: SecretStr | None = Field(None, description="X-API-Key of the admin routes; unset disables them")
    reload_interval: float = Field(0.0, ge=0, description="seconds between registry polls; 0 = never")
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
    candidate_users: int = Field(
        200_000, ge=0, description="for an artifact without precomputed candidates: most users (the most "
                                   "active) whose candidates the server computes in the background, ~1.5 ms of "
                                   "CPU each; the others keep full scoring. 0 = never compute",
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1, description="largest request body accepted (bytes)")

    def engine_home(self) -> EngineHome:
        return EngineHome.at(self.home)

    def admin_enabled(self) -> bool:
        return self.admin_key is not None and bool(self.admin_key.get_secret_value())
