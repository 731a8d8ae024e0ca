"""Fixtures any test module may ask for.

The trained homes are built once per session and shared: treat them as read-only, and copy one
(``trained_demo_copy``, or :func:`tests.demo_store.copy_home`) before changing its store or registry.

* ``trained_demo``: the demo home (:data:`tests.demo_store.DEMO`, 20k users, ingested) after
  ``train --model hybrid`` (version 1, champion) and ``train --model als --no-promote``
  (version 2, candidate), as a :class:`~tests.demo_store.TrainedDemo`;
* ``trained_demo_copy``: a copy of it of the test's own (its root);
* ``trained_small_home``: the small demo home (:data:`tests.robustness_fixtures.SMALL_DEMO`,
  2k users) with a trained hybrid as version 1 (champion), for tests that train, kill or race
  commands on a copy of it (its root);
* ``own_mlflow_store``: MLflow quiet and pointed at no store outside the test's homes (no
  ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` from the environment) while the test runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.demo_store import TrainedDemo

# The helpers are imported where used: collecting a light test module need not import the CLI.


@pytest.fixture
def own_mlflow_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.demo_store import MLFLOW_QUIET, MLFLOW_URI_VARIABLES

    for name, value in MLFLOW_QUIET.items():
        monkeypatch.setenv(name, value)
    for name in MLFLOW_URI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory: pytest.TempPathFactory) -> TrainedDemo:
    from tests import demo_store

    return demo_store.trained_demo(tmp_path_factory)


@pytest.fixture
def trained_demo_copy(trained_demo: TrainedDemo, tmp_path: Path) -> Path:
    from tests.demo_store import copy_home

    return copy_home(trained_demo.root, tmp_path / "home")


@pytest.fixture(scope="session")
def trained_small_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests import robustness_fixtures

    return robustness_fixtures.trained_small_home(tmp_path_factory)
