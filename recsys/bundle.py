"""The model artifact: everything a server or batch job needs, as one directory.

    manifest.json   format version, model name and params, engine settings, data window,
                    trained_at, metrics, shapes
    model/          model.npz + model.json (see recsys.models)
    catalog/        catalog.npz + catalog.json
    users/          users.npz + users.json
    weights.npz     decayed user x item weights at the end of the data (histories)
    candidates.npz  optional: each user's best items, scored offline (recsys.candidates);
                    an artifact without it is served by full scoring
    ann.index       optional: the approximate inner-product index over the model's item
    ann.json        factors, built for large catalogs (recsys.ann); without it, exact scoring
    dismissed.npz   optional: user x item, when each user last said ``not_interested`` to the
                    item (epoch seconds; recsys.feedback)
    returns.npz     optional: user x item, when each pair that may be listed again returns
                    (epoch seconds; recsys.repeats); without it nothing engaged with returns

No pickle anywhere: npz loads with ``allow_pickle=False`` and JSON. Loading validates
shapes and the format version, so a truncated or foreign artifact is refused with a
:class:`BundleError` instead of serving nonsense.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys import models
from recsys.ann import InnerProductIndex, load_for
from recsys.candidates import FILE_NAME as CANDIDATES_FILE
from recsys.candidates import Candidates
from recsys.catalog import Catalog
from recsys.models.base import Recommender, csr_arrays, csr_from
from recsys.repeats import RETURNS_FILE
from recsys.settings import EngineSettings
from recsys.users import UserTable

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DISMISSED_FILE = "dismissed.npz"
MANIFEST_FILE = "manifest.json"
"""The file that makes a directory a bundle (and the one a download is searched for)."""


class BundleError(ValueError):
    """An artifact directory that cannot be served."""


@dataclass(eq=False)
class ModelBundle:
    model: Recommender
    catalog: Catalog
    users: UserTable
    weights: sp.csr_matrix
    settings: EngineSettings
    manifest: dict[str, Any] = field(default_factory=dict)
    candidates: Candidates | None = None
    """Per-user candidate lists scored offline, if the artifact has them."""
    ann: InnerProductIndex | None = None
    """The approximate index over the model's item factors, if the catalog was large enough."""
    dismissed: sp.csr_matrix | None = None
    """Users x items: the time of each user's latest ``not_interested`` on an item (recsys.feedback)."""
    returns: sp.csr_matrix | None = None
    """Users x items: when each pair that may be listed again returns, epoch seconds (recsys.repeats)."""

    def __post_init__(self) -> None:
        expected = (len(self.users), len(self.catalog))
        if self.weights.shape != expected:
            raise BundleError(f"weights shape {self.weights.shape} does not match users x items {expected}")
        if self.dismissed is not None and self.dismissed.shape != expected:
            raise BundleError(f"dismissals shape {self.dismissed.shape} does not match users x items {expected}")
        if self.returns is not None and self.returns.shape != expected:
            raise BundleError(f"returns shape {self.returns.shape} does not match users x items {expected}")
        if self.candidates is not None:
            try:
                self.candidates.check(np.diff(self.weights.indptr), len(self.catalog))
            except ValueError as exc:
                raise BundleError(f"candidates do not fit the bundle: {exc}") from exc

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / "model")
        self.catalog.save(directory / "catalog")
        self.users.save(directory / "users")
        weights: dict[str, Any] = csr_arrays("weights", self.weights)  # (typed so numpy's stub lets ** pass)
        np.savez_compressed(directory / "weights.npz", **weights)
        if self.candidates is not None:
            self.candidates.save(directory / CANDIDATES_FILE)
        if self.ann is not None:
            self.ann.save(directory)
        if self.dismissed is not None:
            dismissed: dict[str, Any] = csr_arrays("dismissed", self.dismissed)
            np.savez_compressed(directory / DISMISSED_FILE, **dismissed)
        if self.returns is not None:
            returns: dict[str, Any] = csr_arrays("returns", self.returns)
            np.savez_compressed(directory / RETURNS_FILE, **returns)
        manifest = {
            **self.manifest,
            "format_version": FORMAT_VERSION,
            "model": self.model.name,
            "params": self.model.config.model_dump(),
            "settings": self.settings.model_dump(),
            "n_users": len(self.users),
            "n_items": len(self.catalog),
        }
        (directory / MANIFEST_FILE).write_text(
            json.dumps(manifest, ensure_ascii=False, indent=2, default=str), encoding="utf-8"
        )
        return directory

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
            if manifest.get("format_version") != FORMAT_VERSION:
                raise BundleError(f"unsupported artifact format {manifest.get('format_version')!r}")
            model = models.load(directory / "model")
            catalog = Catalog.load(directory / "catalog")
            users = UserTable.load(directory / "users")
            with np.load(directory / "weights.npz", allow_pickle=False) as stored:
                weights = csr_from("weights", {k: stored[k] for k in stored.files})
            settings = EngineSettings(**manifest.get("settings", {}))
            candidates_path = directory / CANDIDATES_FILE
            candidates = Candidates.load(candidates_path) if candidates_path.is_file() else None
            ann = load_for(model, directory)
            dismissed = _optional_csr(directory / DISMISSED_FILE, "dismissed")
            returns = _optional_csr(directory / RETURNS_FILE, "returns")
        except BundleError:
            raise
        except Exception as exc:  # any corruption: missing file, bad zip, bad JSON, wrong keys
            raise BundleError(f"cannot load model artifact at {directory}: {exc}") from exc
        if (manifest.get("n_users"), manifest.get("n_items")) != (len(users), len(catalog)):
            raise BundleError(f"artifact at {directory} is inconsistent with its manifest")
        bundle = cls(model, catalog, users, weights, settings, manifest, candidates, ann, dismissed, returns)
        bundle.smoke_test()
        return bundle

    def smoke_test(self) -> None:
        """Score one user end to end; refuse an artifact whose model cannot."""
        row = self.weights[:1] if self.weights.shape[0] else sp.csr_matrix((1, len(self.catalog)))
        scores = self.model.score(np.array([0 if self.weights.shape[0] else -1]), row)
        if scores.shape != (1, len(self.catalog)) or np.isnan(scores).any():
            raise BundleError("model produced malformed scores in the load check")


def _optional_csr(path: Path, name: str) -> sp.csr_matrix | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        return csr_from(name, {k: stored[k] for k in stored.files})


def find_bundle_dir(root: Path) -> Path:
    """The bundle directory inside ``root`` (a downloaded model's artifacts, or a bundle itself):
    the directory of the shallowest :data:`MANIFEST_FILE` under ``root``, ties broken by path.

    The one rule for every reader of a download (the registry's ``download_bundle``, a server's
    registry source). Raises :class:`BundleError` when there is none.
    """
    root = Path(root)
    if (root / MANIFEST_FILE).is_file():
        return root
    found = sorted(root.rglob(MANIFEST_FILE), key=lambda path: (len(path.parts), str(path)))
    if not found:
        raise BundleError(f"no {MANIFEST_FILE} in the model artifacts at {root}")
    return found[0].parent
