"""The MLflow side: tracking store, model registry, aliases and the champion history.

Default store: ``sqlite:///$RECSYS_HOME/mlflow.db`` with artifacts under the home, so the
engine runs offline with no server; ``MLFLOW_TRACKING_URI`` points it elsewhere. Every
trained model is registered as a version of ``cultural-recsys`` with alias ``candidate``;
``champion`` is what the API serves. The registered model's tag ``champion_history`` keeps
the previous champions so ``recsys rollback`` can step back (one step, or ``--to`` an older
one), and ``champion_log`` records every move of ``champion`` (which version, from which,
when, by which command) for ``recsys models --history``.

Guards at the edges: :func:`connect` refuses a registry that is not the one the home
recorded (:mod:`training.registry_identity`: an emptied or swapped ``mlflow.db``); a
version is loaded and checked like a server would before ``recsys promote`` or ``recsys
rollback`` moves ``champion`` to it (:func:`check_version`); and a training starts by closing
the runs a killed training left ``RUNNING`` (:func:`begin_training`,
:mod:`training.abandoned_runs`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from recsys.bundle import BundleError, ModelBundle, find_bundle_dir
from recsys.home import CHAMPION, EXPERIMENT, REGISTERED_MODEL, EngineHome
from training import abandoned_runs, registry_identity

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
HISTORY_TAG = "champion_history"
LOG_TAG = "champion_log"
LOG_MAX_CHARS = 5000
"""The champion log is trimmed (oldest first) to this size: the smallest tag value limit of the
stores MLflow supports, so the log fits wherever the registry lives."""
DATA_END_TAG = "data_end"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


_MARKERS: dict[str, tuple[Path, str]] = {}
"""Per tracking URI connected to in this process: the home's registry marker and its key there."""


def connect(home: EngineHome) -> MlflowClient:
    """Point MLflow at the home's store (creating the experiment once) and return a client.

    Raises :class:`~training.registry_identity.RegistryReplaced` (nothing changed) when the
    store is not the registry this home recorded.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    home.root.mkdir(parents=True, exist_ok=True)
    uri = home.tracking_uri()
    with _uri_env_kept():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    client = MlflowClient()
    key = registry_identity.marker_key(uri, f"sqlite:///{home.mlflow_db}")
    registry_identity.check(client, home.registry_marker, key)  # before anything is created
    if client.get_experiment_by_name(EXPERIMENT) is None:
        location = home.mlflow_artifacts.as_uri() if uri.startswith("sqlite:") else None
        client.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    registry_identity.remember(client, home.registry_marker, key)
    _MARKERS[uri] = (home.registry_marker, key)
    return client


def begin_training(home: EngineHome) -> MlflowClient:
    """What a training does first: check the registry (:func:`connect`) and close as FAILED the
    runs a killed training left RUNNING (:func:`training.abandoned_runs.fail_abandoned`)."""
    client = connect(home)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        abandoned_runs.fail_abandoned(client, experiment.experiment_id)
    return client


def run_tags() -> dict[str, str]:
    """Tags of every run the engine starts: which process runs it (:func:`training.abandoned_runs.owner_tags`)."""
    return abandoned_runs.owner_tags()


@contextmanager
def _uri_env_kept() -> Iterator[None]:
    """Undo MLflow exporting ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` on ``set_*_uri``.

    ``EngineHome.tracking_uri`` reads that variable as the user's override; left set, every
    later home in the same process would resolve to the first home's store.
    """
    saved = {name: os.environ.get(name) for name in _URI_VARIABLES}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class VersionInfo:
    version: str
    aliases: list[str]
    run_id: str | None
    tags: dict[str, str]
    created: int

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "aliases": self.aliases, "run_id": self.run_id,
                "tags": self.tags, "created": self.created}


def log_bundle(bundle_dir: Path) -> str:
    """Log the bundle as a pyfunc model in the active run; returns the model URI."""
    import pandas as pd
    from mlflow.models import infer_signature

    # user ids in, ranked lists out (see training/pyfunc_model.py)
    signature = infer_signature(
        pd.DataFrame({"user_id": ["u1"]}),
        pd.DataFrame({"user_id": ["u1"], "rank": [1], "item_id": ["i1"], "score": [0.5]}),
    )
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_CODE),
        artifacts={"bundle": str(bundle_dir)},
        signature=signature,
        pip_requirements=["cultural-recsys"],
    )
    return info.model_uri


def register(client: MlflowClient, model_uri: str, tags: dict[str, str]) -> str:
    """Register a new version with the candidate alias; returns the version number."""
    version = mlflow.register_model(model_uri, REGISTERED_MODEL, tags=tags)
    client.set_registered_model_alias(REGISTERED_MODEL, CANDIDATE, version.version)
    marker = _MARKERS.get(mlflow.get_tracking_uri())
    if marker is not None:  # the home now knows this version exists
        registry_identity.remember(client, *marker)
    return str(version.version)


def champion(client: MlflowClient) -> VersionInfo | None:
    return _alias(client, CHAMPION)


def _alias(client: MlflowClient, alias: str) -> VersionInfo | None:
    try:
        mv = client.get_model_version_by_alias(REGISTERED_MODEL, alias)
    except MlflowException:
        return None
    return _info(mv)


def _info(mv) -> VersionInfo:
    return VersionInfo(str(mv.version), list(mv.aliases or []), mv.run_id, dict(mv.tags or {}),
                       int(mv.creation_timestamp or 0))


def versions(client: MlflowClient) -> list[VersionInfo]:
    try:
        found = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
        # search results carry no aliases; the registered model holds the alias -> version map
        alias_map = client.get_registered_model(REGISTERED_MODEL).aliases or {}
    except MlflowException:
        return []
    infos = sorted((_info(mv) for mv in found), key=lambda v: int(v.version))
    for info in infos:
        named = {alias for alias, version in alias_map.items() if str(version) == info.version}
        info.aliases = sorted(set(info.aliases) | named)
    return infos


def promote(client: MlflowClient, version: str, *, by: str = "promote") -> str | None:
    """Move ``champion`` to ``version``; remember the previous champion. Returns it.

    ``by`` names what moved it (``train``, ``promote``) in the champion log."""
    try:
        client.get_model_version(REGISTERED_MODEL, version)
    except MlflowException as exc:
        raise ValueError(f"no version {version} of {REGISTERED_MODEL}") from exc
    previous = champion(client)
    if previous is not None and previous.version == version:
        return previous.version
    history = _history(client)
    if previous is not None:
        history.append(previous.version)
    client.set_registered_model_tag(REGISTERED_MODEL, HISTORY_TAG, json.dumps(history[-50:]))
    _move_champion(client, version, previous.version if previous else None, by)
    return previous.version if previous else None


def rollback(client: MlflowClient, check: bool = False, to: str | None = None) -> tuple[str, str]:
    """Move ``champion`` back to the previous champion, or to ``to`` (one of the previous
    champions still on record); returns (from, to). With ``check``, that version is loaded
    first (:func:`check_version`) and nothing moves if it is broken."""
    current = champion(client)
    history = _history(client)
    if current is None or not history:
        raise ValueError("nothing to roll back to: no previous champion recorded")
    target = history[-1] if to is None else str(to)
    if target not in history:
        raise ValueError(f"version {target} is not a previous champion on record (those are: "
                         f"{', '.join(reversed(history))}); `recsys promote --version {target}` makes any "
                         "version champion")
    if check:
        check_version(client, target)
    del history[len(history) - 1 - history[::-1].index(target):]  # its last turn and everything after it
    client.set_registered_model_tag(REGISTERED_MODEL, HISTORY_TAG, json.dumps(history))
    _move_champion(client, target, current.version, "rollback")
    return current.version, target


def _move_champion(client: MlflowClient, version: str, previous: str | None, by: str) -> None:
    log_entries = champion_log(client)
    log_entries.append({"version": version, "previous": previous, "by": by,
                        "at": datetime.now(UTC).isoformat(timespec="seconds")})
    while len(json.dumps(log_entries)) > LOG_MAX_CHARS and len(log_entries) > 1:
        log_entries.pop(0)
    client.set_registered_model_tag(REGISTERED_MODEL, LOG_TAG, json.dumps(log_entries))
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, version)
    log.info("champion is now version %s (was %s; by %s)", version, previous, by)


def champion_log(client: MlflowClient) -> list[dict[str, Any]]:
    """Every recorded move of ``champion``, oldest first: version, previous, by, at."""
    value = _model_tags(client).get(LOG_TAG)
    if not value:
        return []
    try:
        entries = json.loads(value)
    except ValueError:
        log.warning("the registry's %s tag is not JSON; starting a new log", LOG_TAG)
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def _history(client: MlflowClient) -> list[str]:
    return [str(v) for v in json.loads(_model_tags(client).get(HISTORY_TAG, "[]"))]


def _model_tags(client: MlflowClient) -> dict[str, str]:
    try:
        return dict(client.get_registered_model(REGISTERED_MODEL).tags or {})
    except MlflowException:
        return {}


def data_end_of(client: MlflowClient, version: VersionInfo) -> datetime | None:
    """The newest event ``version`` was trained on: its ``data_end`` tag, else its run's parameter
    (versions registered before the tag existed); None when neither is readable."""
    value = version.tags.get(DATA_END_TAG)
    if not value and version.run_id:
        try:
            value = client.get_run(version.run_id).data.params.get(DATA_END_TAG)
        except MlflowException:
            value = None
    try:
        moment = datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


class VersionUnusable(ValueError):
    """A registered version whose artifacts are missing or cannot be loaded."""


def check_version(client: MlflowClient, version: str) -> None:
    """Download ``version``'s bundle and load it as a server would (shapes, format, a scoring
    smoke test); :class:`VersionUnusable` naming what is wrong, else nothing. Downloads into
    a temporary directory that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="recsys-check-") as tmp:
        try:
            directory = download_bundle(client, version, Path(tmp))
        except (VersionUnusable, MlflowException, OSError) as exc:
            raise VersionUnusable(f"version {version}: its artifacts are missing or cannot be downloaded "
                                  f"({_first_line(exc)}); champion was not moved") from exc
        try:
            ModelBundle.load(directory)
        except ValueError as exc:  # BundleError and the contract's own ValueErrors
            raise VersionUnusable(f"version {version} is broken: {_first_line(exc)}; champion was not moved") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def download_bundle(client: MlflowClient, version: str, destination: Path | None = None) -> Path:
    """Download a version's artifacts and return the bundle directory inside them."""
    try:
        client.get_model_version(REGISTERED_MODEL, version)
    except MlflowException as exc:
        raise ValueError(f"no version {version} of {REGISTERED_MODEL}") from exc
    target = destination or Path(tempfile.mkdtemp(prefix="recsys-bundle-"))
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{REGISTERED_MODEL}/{version}", dst_path=str(target)))
    try:
        return find_bundle_dir(local)  # the rule the server uses too
    except BundleError as exc:
        raise VersionUnusable(f"version {version} has no model bundle in its artifacts") from exc
