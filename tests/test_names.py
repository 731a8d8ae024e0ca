"""Names the engine's parts must agree on are defined once: the alias a server loads is the one
training promotes to, and a download's bundle is found by one rule (the shallowest manifest)."""

from pathlib import Path

import pytest

from recsys.bundle import MANIFEST_FILE, BundleError, find_bundle_dir
from recsys.home import CHAMPION
from serving.config import ServingSettings
from training import registry


def test_the_served_alias_is_the_promoted_one() -> None:
    assert ServingSettings.model_fields["model_alias"].default == CHAMPION == registry.CHAMPION


def _manifest(root: Path, relative: str) -> None:
    path = root / relative / MANIFEST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}", encoding="utf-8")


def test_the_bundle_in_a_download_is_the_shallowest_manifest_then_the_first_path(tmp_path: Path) -> None:
    _manifest(tmp_path, "b/deeper/still")
    _manifest(tmp_path, "b/bundle")
    _manifest(tmp_path, "a/bundle")
    assert find_bundle_dir(tmp_path) == tmp_path / "a" / "bundle"
    _manifest(tmp_path, "z")
    assert find_bundle_dir(tmp_path) == tmp_path / "z"
    _manifest(tmp_path, ".")
    assert find_bundle_dir(tmp_path) == tmp_path


def test_a_download_without_a_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    with pytest.raises(BundleError, match=MANIFEST_FILE):
        find_bundle_dir(tmp_path)
