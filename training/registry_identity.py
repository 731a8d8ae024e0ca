"""The registry's identity, remembered in the engine home, so a lost registry is noticed.

MLflow's SQLite store is one file. Truncated to 0 bytes, deleted, or swapped for a fresh or
an older copy, MLflow opens it without complaint: training would register "version 1" again,
``champion`` would point nowhere or at a different model than servers, last-known-good
copies and ``champion_history`` think, and the version numbers of two different models would
collide. So the home keeps a marker (:attr:`recsys.home.EngineHome.registry_marker`): per
tracking URI, the experiment's id and creation time and the highest version registered.
:func:`check` runs before anything touches the registry (:func:`training.registry.connect`)
and refuses with :class:`RegistryReplaced` when the store is not the one recorded: the
experiment is missing or was created anew, or versions the home registered are gone.

Nothing is changed on refusal. To proceed: restore the store from a backup, or, to adopt
the registry as it now is (a deliberate new start), delete the marker; the next command
records the registry it finds.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from recsys.home import EXPERIMENT, REGISTERED_MODEL

log = logging.getLogger(__name__)


class RegistryReplaced(ValueError):
    """The registry is not the one this home recorded; nothing was changed."""


@dataclass(frozen=True)
class Identity:
    """What a registry was when the home last saw it."""

    experiment_id: str
    experiment_created: int
    """The experiment's creation time (ms since the epoch): a new store gives a new one."""
    versions: int
    """The highest version number of the registered model (0: none yet)."""


def current(client: MlflowClient) -> Identity | None:
    """The registry's identity as it is now; None when it has no experiment of the engine."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return None
    return Identity(str(experiment.experiment_id), int(experiment.creation_time or 0), highest_version(client))


def highest_version(client: MlflowClient) -> int:
    try:
        found = client.search_model_versions(f"name='{REGISTERED_MODEL}'", max_results=1,
                                             order_by=["version_number DESC"])
    except MlflowException:
        return 0
    return max((int(v.version) for v in found), default=0)


HOME_STORE = "home:mlflow.db"
"""The marker's key of the home's own SQLite store (a copied or moved home keeps its key)."""


def marker_key(uri: str, home_uri: str) -> str:
    """The marker's key for the registry at ``uri``: :data:`HOME_STORE` for the home's own
    store (``home_uri``), else the URI without credentials (the marker is a plain file)."""
    if uri == home_uri:
        return HOME_STORE
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def check(client: MlflowClient, marker: Path, key: str) -> None:
    """Raise :class:`RegistryReplaced` when the registry under ``key`` is not the one ``marker`` recorded."""
    recorded = _read(marker).get(key)
    if recorded is None:
        return
    expected = Identity(**recorded)
    found = current(client)
    problem = _difference(expected, found)
    if problem is not None:
        raise RegistryReplaced(
            f"the model registry ({key}) {problem}: its MLflow store was emptied or replaced "
            f"(a truncated, deleted or swapped mlflow.db), and training would start again at version 1. "
            f"Nothing was changed. Restore the store from a backup; or, to adopt this registry as it is "
            f"from now on, delete {marker} (the next command records the registry it finds)")


def _difference(expected: Identity, found: Identity | None) -> str | None:
    if found is None:
        return (f"has no experiment {EXPERIMENT!r}, but this home registered versions up to "
                f"{expected.versions} in it")
    if (found.experiment_id, found.experiment_created) != (expected.experiment_id, expected.experiment_created):
        return (f"holds an experiment {EXPERIMENT!r} created at {_when(found.experiment_created)}, not the one "
                f"this home used (created at {_when(expected.experiment_created)})")
    if found.versions < expected.versions:
        return (f"holds versions of {REGISTERED_MODEL!r} up to {found.versions}, but this home registered "
                f"versions up to {expected.versions}")
    return None


def remember(client: MlflowClient, marker: Path, key: str) -> None:
    """Record the registry's identity now (the highest version never goes down)."""
    found = current(client)
    if found is None:
        return
    entries = _read(marker)
    previous = entries.get(key)
    if previous is not None and previous["experiment_id"] == found.experiment_id:
        found = Identity(found.experiment_id, found.experiment_created, max(found.versions, previous["versions"]))
    if previous == asdict(found):
        return
    entries[key] = asdict(found)
    _write(marker, entries)


def _read(marker: Path) -> dict[str, dict]:
    if not marker.exists():
        return {}
    try:
        entries = json.loads(marker.read_text(encoding="utf-8"))["registries"]
        for entry in entries.values():
            Identity(**entry)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RegistryReplaced(f"{marker} cannot be read ({exc}); nothing was changed. It records which model "
                               f"registry this home uses; delete it to record the current one again") from exc
    return dict(entries)


def _write(marker: Path, entries: dict[str, dict]) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    staged = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    staged.write_text(json.dumps({"registries": entries, "updated_at": datetime.now(UTC).isoformat()}, indent=2)
                      + "\n", encoding="utf-8")
    os.replace(staged, marker)


def _when(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")
