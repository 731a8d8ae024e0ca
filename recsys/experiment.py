"""The A/B test between the champion and one challenger version: its durable state and who gets what.

The state is one JSON file in the engine home (``serving/experiment.json``), replaced whole
(written aside, fsynced, renamed over the old one), so a reader sees the old state or the new
one, never half. Every server process follows it (:mod:`serving.experiment`); the command
line writes it (``recsys experiment start|stop``) and so does the report job when a
guardrail trips.

Assignment: a signed-in user is in the challenger arm when the first 8 bytes of
``sha256(salt + "\\x00" + user_id)``, read as a fraction of 2**64, fall below ``share``. The
hash depends on nothing but the two strings, so every worker, every restart and the report
job agree, and a new salt per experiment reshuffles who is in which arm. Anonymous requests
(district lists, similar items) always get the champion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recsys.durable import fsync_dir

log = logging.getLogger(__name__)

Variant = Literal["champion", "challenger"]
CHAMPION: Variant = "champion"
CHALLENGER: Variant = "challenger"


class Guardrails(BaseModel):
    """Limits past which the challenger is stopped by itself (checked by ``recsys experiment report``)."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate: float = Field(0.02, ge=0, le=1, description="share of the challenger's list requests failing")
    max_empty_rate: float = Field(0.10, ge=0, le=1, description="share of the challenger's lists with no item")
    min_rural_urban_ctr_ratio: float = Field(
        0.7, ge=0, description="the challenger's rural click-through / its urban click-through, at least")
    min_lists: int = Field(200, ge=1, description="challenger lists needed before a guardrail may trip")


class ExperimentState(BaseModel):
    """One experiment, running or stopped."""

    model_config = ConfigDict(extra="forbid")

    experiment_id: str
    challenger: str
    """The challenger's registered model version (or a bundle directory's path)."""
    champion: str | None = None
    """The champion's version when the experiment started (for the record)."""
    share: float = Field(gt=0, lt=1)
    salt: str
    status: Literal["running", "stopped"] = "running"
    started_at: str
    stopped_at: str | None = None
    stop_reason: str | None = None
    guardrails: Guardrails = Field(default_factory=Guardrails)

    @property
    def running(self) -> bool:
        return self.status == "running"


def new_experiment(challenger: str, share: float, champion: str | None = None,
                   guardrails: Guardrails | None = None) -> ExperimentState:
    """A running experiment with a fresh salt."""
    token = secrets.token_hex(8)
    return ExperimentState(experiment_id=f"exp-{datetime.now(UTC):%Y%m%dT%H%M%S}-{token[:6]}",
                           challenger=challenger, champion=champion, share=share, salt=token,
                           started_at=now_iso(), guardrails=guardrails or Guardrails())


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def bucket(salt: str, user_id: str) -> float:
    """The user's place in [0, 1) for this salt."""
    digest = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(state: ExperimentState | None, user_id: str | None) -> Variant:
    """The arm of ``user_id`` (``None``: an anonymous request) under ``state``."""
    if state is None or not state.running or user_id is None:
        return CHAMPION
    return CHALLENGER if bucket(state.salt, user_id) < state.share else CHAMPION


class ExperimentFileError(ValueError):
    """The experiment file exists but is not a valid state."""


def read_state(path: Path) -> ExperimentState | None:
    """The state in ``path``; None when there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return ExperimentState.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise ExperimentFileError(f"{path} is not a valid experiment: {exc}") from exc


def write_state(path: Path, state: ExperimentState) -> None:
    """Replace ``path`` with ``state`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as fh:
            fh.write(state.model_dump_json(indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    log.info("experiment %s: %s (challenger %s, share %.2f)", state.experiment_id, state.status,
             state.challenger, state.share)


def stopped(state: ExperimentState, reason: str) -> ExperimentState:
    """``state`` stopped now for ``reason``."""
    return state.model_copy(update={"status": "stopped", "stopped_at": now_iso(), "stop_reason": reason})
