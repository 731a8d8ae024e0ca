"""The registry's edges: ``recsys promote``/``rollback`` load a version before moving champion,
runs a killed training left RUNNING are closed as FAILED by the next training, and an emptied or
swapped ``mlflow.db`` is refused instead of silently restarting the registry at version 1.

Commands that meet a broken or swapped store run as separate processes (``recsys`` in a
subprocess), as an operator's would: MLflow keeps a store open per process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from recsys.home import REGISTERED_MODEL, EngineHome
from tests.demo_store import describe, run_cli
from tests.robustness_fixtures import recsys
from tests.serving_fixtures import ROOT, register_version, rules_data, write_bundle
from training import abandoned_runs, registry
from training.registry_identity import HOME_STORE, RegistryReplaced

pytestmark = pytest.mark.usefixtures("own_mlflow_store")

def run(*args: str) -> subprocess.CompletedProcess[str]:
    process = recsys(*args, text=True)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(), tmp_path_factory.mktemp("bundle") / "bundle", model="popularity")


@pytest.fixture
def home(tmp_path: Path, bundle: Path) -> EngineHome:
    """A registry with version 1 (champion) and version 2."""
    root = tmp_path / "home"
    register_version(root, bundle, champion=True)
    register_version(root, bundle, champion=False)
    return EngineHome.at(root)


def artifacts_of(home: EngineHome, version: str) -> Path:
    client = registry.connect(home)
    source = client.get_model_version(REGISTERED_MODEL, version).source
    return home.mlflow_artifacts / "models" / source.removeprefix("models:/")


def champion_of(home: EngineHome) -> str:
    """What ``recsys models --json`` calls champion (in this process: it only reads a sound store)."""
    result = run_cli("models", "--home", str(home.root), "--json")
    assert result.exit_code == 0, describe(result)
    return next(v["version"] for v in json.loads(result.stdout)["versions"] if "champion" in v["aliases"])


# --------------------------------------------------------------------------- promote and rollback


def test_promote_refuses_a_version_whose_artifacts_are_missing(home: EngineHome) -> None:
    shutil.rmtree(artifacts_of(home, "2"))
    result = run("promote", "--home", str(home.root), "--version", "2")
    assert result.returncode == 2, result.stderr
    assert "version 2: its artifacts are missing or cannot be downloaded" in one_line(result.stderr)
    assert "champion was not moved" in one_line(result.stderr)
    assert champion_of(home) == "1"


def test_promote_refuses_a_version_whose_bundle_is_broken(home: EngineHome) -> None:
    weights = next(artifacts_of(home, "2").rglob("weights.npz"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = run("promote", "--home", str(home.root), "--version", "2")
    assert result.returncode == 2, result.stderr
    assert "version 2 is broken" in one_line(result.stderr)
    assert champion_of(home) == "1"


def test_promote_moves_champion_to_a_sound_version_and_rollback_checks_its_target(home: EngineHome) -> None:
    result = run("promote", "--home", str(home.root), "--version", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"champion": "2", "previous": "1"}
    (next(artifacts_of(home, "1").rglob("manifest.json"))).write_text("{not json", encoding="utf-8")
    refused = run("rollback", "--home", str(home.root))
    assert refused.returncode == 2 and "version 1 is broken" in one_line(refused.stderr)
    assert champion_of(home) == "2"


def test_promote_of_an_unknown_version_is_a_clear_error(home: EngineHome) -> None:
    result = run("promote", "--home", str(home.root), "--version", "9")
    assert result.returncode == 2 and "no version 9 of cultural-recsys" in one_line(result.stderr)


# --------------------------------------------------------------------------- runs left RUNNING

DIES_MID_RUN = """
import os, sys
import mlflow
from recsys.home import EngineHome
from training import registry
registry.connect(EngineHome.at(sys.argv[1]))
with mlflow.start_run(run_name="killed", tags=registry.run_tags()) as parent:
    with mlflow.start_run(run_name="trial", nested=True) as child:
        print(parent.info.run_id, child.info.run_id, flush=True)
        os._exit(9)  # like SIGKILL: no handler closes the runs
"""


def start_run(**tags: str) -> str:
    """A run left RUNNING (not ended) with ``tags``; returns its id."""
    run_ = mlflow.MlflowClient().create_run(
        mlflow.get_experiment_by_name("cultural-recsys").experiment_id, tags=tags, run_name="open")
    return run_.info.run_id


def status_of(run_id: str) -> str:
    return mlflow.MlflowClient().get_run(run_id).info.status


def test_runs_of_a_dead_training_are_failed_at_the_next_training_start(home: EngineHome) -> None:
    died = subprocess.run([sys.executable, "-c", DIES_MID_RUN, str(home.root)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert died.returncode == 9, died.stderr
    parent, child = died.stdout.split()
    registry.connect(home)
    assert status_of(parent) == status_of(child) == "RUNNING"
    me = abandoned_runs.owner_tags()
    alive = start_run(**me)
    reused = start_run(**{**me, abandoned_runs.STARTED_TAG: "1"})  # our pid, another process's start time
    elsewhere = start_run(**{**me, abandoned_runs.HOST_TAG: "another-host", abandoned_runs.PID_TAG: "999999"})
    untagged = start_run()

    # the next training: it stops early (this home has no store) but has closed the runs by then
    result = run("train", "--home", str(home.root), "--no-tune")
    assert result.returncode == 2 and "no interactions" in one_line(result.stderr), result.stderr
    assert status_of(parent) == status_of(child) == status_of(reused) == "FAILED"
    assert status_of(alive) == status_of(elsewhere) == status_of(untagged) == "RUNNING"
    tags = mlflow.MlflowClient().get_run(parent).data.tags
    assert tags[abandoned_runs.REASON_TAG].startswith("its process ended")
    assert tags[abandoned_runs.HOST_TAG] == socket.gethostname()


def test_process_start_times_tell_a_reused_pid() -> None:
    started = abandoned_runs.process_started(os.getpid())
    if started is None:
        pytest.skip("no /proc on this system")
    assert not abandoned_runs.process_gone(os.getpid(), started)
    assert abandoned_runs.process_gone(os.getpid(), str(int(started) + 1))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert abandoned_runs.process_gone(int(gone.stdout), None)


# --------------------------------------------------------------------------- a lost or swapped registry


def assert_refused(home: EngineHome, *args: str) -> str:
    result = run(*args, "--home", str(home.root))
    text = one_line(result.stderr)
    assert result.returncode == 2, result.stderr
    assert "was emptied or replaced" in text and "Nothing was changed" in text, text
    assert f"delete {home.registry_marker}" in text and "Restore the store from a backup" in text
    return text


def test_the_home_records_its_registry(home: EngineHome) -> None:
    marker = json.loads(home.registry_marker.read_text(encoding="utf-8"))["registries"]
    assert list(marker) == [HOME_STORE] and marker[HOME_STORE]["versions"] == 2
    assert run("models", "--home", str(home.root)).returncode == 0


def test_an_emptied_mlflow_db_is_refused_until_the_operator_decides(home: EngineHome, bundle: Path) -> None:
    with open(home.mlflow_db, "r+b") as fh:
        fh.truncate(0)
    text = assert_refused(home, "models")
    assert "has no experiment 'cultural-recsys', but this home registered versions up to 2" in text
    assert_refused(home, "train", "--no-tune")
    assert_refused(home, "promote", "--version", "1")
    # adopting the new, empty registry is a deliberate step: the marker goes, the next command records anew
    home.registry_marker.unlink()
    listed = run("models", "--home", str(home.root), "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == {"versions": []}
    assert json.loads(home.registry_marker.read_text(encoding="utf-8"))["registries"][HOME_STORE]["versions"] == 0


def test_a_registry_swapped_for_another_is_refused(home: EngineHome, tmp_path: Path, bundle: Path) -> None:
    other = tmp_path / "other"
    register_version(other, bundle)
    shutil.copyfile(EngineHome.at(other).mlflow_db, home.mlflow_db)
    text = assert_refused(home, "models")
    assert "holds an experiment 'cultural-recsys' created at" in text and "not the one this home used" in text


def test_an_older_copy_of_the_registry_is_refused(home: EngineHome, tmp_path: Path, bundle: Path) -> None:
    backup = tmp_path / "mlflow.db.bak"
    shutil.copyfile(home.mlflow_db, backup)  # holds versions 1 and 2
    register_version(home.root, bundle, champion=False)  # version 3
    shutil.copyfile(backup, home.mlflow_db)
    text = assert_refused(home, "models")
    assert "holds versions of 'cultural-recsys' up to 2, but this home registered versions up to 3" in text


def test_connect_raises_a_value_error_naming_the_marker(tmp_path: Path, bundle: Path) -> None:
    home = EngineHome.at(tmp_path / "fresh")
    register_version(home.root, bundle)
    home.registry_marker.write_text(json.dumps({"registries": {HOME_STORE: {
        "experiment_id": "1", "experiment_created": 1, "versions": 1}}}), encoding="utf-8")
    with pytest.raises(RegistryReplaced, match="created at 1970-01-01T00:00:00"):
        registry.connect(home)
    assert issubclass(RegistryReplaced, ValueError)  # the CLI turns it into exit code 2
