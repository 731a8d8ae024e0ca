"""The last-known-good copy of the served bundle, for starting when the registry is away.

Layout inside ``home.serving_cache`` (``<home>/serving/last_known_good``)::

    last_known_good -> lkg-<version>-<token>/     a symlink, swapped with one rename
        bundle/                                   the bundle directory as loaded
        version.json                              version, alias, model name, source, saved_at

Writers prepare a fresh sibling directory, then atomically repoint the symlink, so a reader
(or a crash) sees the old copy or the new one, never a mixture. Several workers may save
the same version at once; every step tolerates that.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recsys.durable import fsync_dir
from serving.sources import Fetched

log = logging.getLogger(__name__)

VERSION_FILE = "version.json"
KEEP = 2
"""Copies kept on disk (the current one and its predecessor, which a reader may still be opening)."""


@dataclass(frozen=True)
class CachedModel:
    bundle_dir: Path
    version: str
    alias: str | None
    model_name: str
    saved_at: str


class LastKnownGood:
    def __init__(self, link: Path) -> None:
        self.link = Path(link)
        self.parent = self.link.parent

    def read(self) -> CachedModel | None:
        """The cached copy, resolved to its real directory (``None`` if there is none)."""
        if not self.link.exists():
            return None
        target = self.link.resolve()
        try:
            meta = json.loads((target / VERSION_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable last-known-good copy at %s: %s", target, exc)
            return None
        return CachedModel(target / "bundle", str(meta["version"]), meta.get("alias"),
                           str(meta.get("model_name", "")), str(meta.get("saved_at", "")))

    def holds(self, fetched: Fetched) -> bool:
        current = self.read()
        return current is not None and current.version == fetched.version and current.model_name == fetched.model_name

    def save(self, fetched: Fetched) -> None:
        """Make ``fetched`` the cached copy (moved if the caller owns it, else copied)."""
        if self.holds(fetched):
            return
        self.parent.mkdir(parents=True, exist_ok=True)
        staging = self.parent / f".lkg-staging-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
            if fetched.owned:
                shutil.move(str(fetched.bundle_dir), staging / "bundle")
            else:
                shutil.copytree(fetched.bundle_dir, staging / "bundle")
            meta = {"version": fetched.version, "alias": fetched.alias, "model_name": fetched.model_name,
                    "source": fetched.source, "saved_at": datetime.now(UTC).isoformat()}
            (staging / VERSION_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
            _fsync_tree(staging)
            final = self.parent / f"lkg-{_safe(fetched.version)}-{uuid.uuid4().hex[:8]}"
            staging.rename(final)
            self._point_to(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._prune()
        log.info("saved version %s as the last-known-good copy", fetched.version)

    def _point_to(self, target: Path) -> None:
        temporary = self.parent / f".lkg-link-{uuid.uuid4().hex[:8]}"
        os.symlink(target.name, temporary)  # relative: the home may be moved
        if self.link.exists() and not self.link.is_symlink():
            shutil.rmtree(self.link)  # a plain directory from a manual copy: replace it
        os.replace(temporary, self.link)
        fsync_dir(self.parent)

    def _prune(self) -> None:
        current = self.link.resolve().name if self.link.exists() else None
        copies = sorted(self.parent.glob("lkg-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in [p for p in copies if p.name != current][KEEP - 1:]:
            shutil.rmtree(old, ignore_errors=True)


def _safe(version: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in version)[:40]


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for directory in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        fsync_dir(directory)
