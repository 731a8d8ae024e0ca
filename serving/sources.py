"""Where a server gets its model: the MLflow registry alias, or a plain bundle directory.

A source answers two questions: which version is current (cheap, asked by the poller) and
"put that version's bundle directory here" (a download, or nothing for a local directory).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from recsys.bundle import MANIFEST_FILE, BundleError, find_bundle_dir

log = logging.getLogger(__name__)

_MLFLOW_LOCK = threading.Lock()


class SourceError(RuntimeError):
    """The source cannot say which model is current or cannot deliver it."""


@dataclass(frozen=True)
class Fetched:
    """A bundle directory on local disk and what it is."""

    bundle_dir: Path
    version: str
    alias: str | None
    model_name: str
    source: str
    """``registry`` or ``directory``."""
    owned: bool
    """Whether the directory is a private download the caller may move or delete."""


class ModelSource(Protocol):
    kind: str

    def current_version(self) -> str:
        """The version that :meth:`fetch` would deliver now."""
        ...

    def fetch(self, workdir: Path) -> Fetched:
        """Make the current version's bundle available on disk (``workdir`` is an empty scratch dir)."""
        ...


class DirectorySource:
    """A bundle directory on disk; its version is the manifest's ``version`` or a content hash."""

    kind = "directory"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def current_version(self) -> str:
        try:
            text = (self.directory / MANIFEST_FILE).read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {self.directory / MANIFEST_FILE}: {exc}") from exc
        return directory_version(text)

    def fetch(self, workdir: Path) -> Fetched:
        version = self.current_version()
        return Fetched(self.directory, version, None, str(self.directory), self.kind, owned=False)


def directory_version(manifest_bytes: bytes) -> str:
    """``local-<hash>`` of a manifest, so a rewritten directory counts as a new version."""
    return "local-" + hashlib.sha256(manifest_bytes).hexdigest()[:12]


class RegistrySource:
    """A registered model's alias in an MLflow registry (``models:/<name>@<alias>``)."""

    kind = "registry"

    def __init__(self, tracking_uri: str, model_name: str, alias: str) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.alias = alias
        _quiet_mlflow()

    def _client(self):  # noqa: ANN202 - MlflowClient is imported lazily (slow import)
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def current_version(self) -> str:
        broken = unusable_sqlite_store(self.tracking_uri)
        if broken is not None:
            raise SourceError(f"no {self.model_name}@{self.alias}: the registry store {broken}")
        try:
            return str(self._client().get_model_version_by_alias(self.model_name, self.alias).version)
        except Exception as exc:  # unreachable store, unknown model or alias: all mean "no champion"
            raise SourceError(f"no {self.model_name}@{self.alias} in the registry at "
                              f"{_redacted(self.tracking_uri)}: {_first_line(exc)}") from exc

    def fetch(self, workdir: Path) -> Fetched:
        import mlflow

        # Resolve the alias once and download that exact version, so a concurrent alias move
        # cannot pair one version's number with another's files.
        version = self.current_version()
        uri = f"models:/{self.model_name}/{version}"
        try:
            # ``models:/`` URIs resolve through the process-wide registry URI; the server has one
            # registry, and the lock keeps two sources in one process (tests) from crossing.
            with _MLFLOW_LOCK:
                mlflow.set_registry_uri(self.tracking_uri)
                local = mlflow.artifacts.download_artifacts(uri, dst_path=str(workdir), tracking_uri=self.tracking_uri)
        except Exception as exc:
            raise SourceError(f"cannot download {uri}: {_first_line(exc)}") from exc
        try:
            bundle_dir = find_bundle_dir(Path(local))
        except BundleError as exc:
            raise SourceError(str(exc)) from exc
        return Fetched(bundle_dir, version, self.alias, self.model_name, self.kind, owned=True)


SQLITE_HEADER = b"SQLite format 3\x00"


def unusable_sqlite_store(uri: str) -> str | None:
    """Why a ``sqlite:///`` tracking store cannot be opened, or None (also for other stores).

    Checked before MLflow sees the URI: MLflow retries an unopenable SQLite file (a directory
    in its place, say) with exponential backoff for minutes, and a server must instead start
    at once on its last-known-good copy. A missing file is fine: MLflow creates an empty store.
    """
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not path.exists():
        return None
    if not path.is_file():
        return f"{path} is not a file"
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    if header and header != SQLITE_HEADER:
        return f"{path} is not an SQLite database"
    return None


def _quiet_mlflow() -> None:
    """No telemetry, no progress bars, and give up quickly on an unreachable tracking server."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _redacted(uri: str) -> str:
    """A URI without credentials (``https://user:pass@host`` -> ``https://***@host``)."""
    scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri
