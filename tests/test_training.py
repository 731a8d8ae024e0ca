"""Acceptance of the training capability on the synthetic cultural cloud.

- the hybrid beats the popularity baseline clearly and reaches cold items; pure ALS cannot;
- the gate: a retrain of the same recipe is promoted, a worse model is refused, and
  ``promote``, ``rollback`` and ``models`` move and show the champion;
- a failed run never moves the champion and leaves its MLflow run FAILED.

The demo home is built and trained once per session (``trained_demo`` in tests/conftest.py);
every test that changes the registry works on a copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

import recsys.models
from features.dataset import load_dataset
from recsys.home import EXPERIMENT, REGISTERED_MODEL, EngineHome
from tests.demo_store import (
    TrainedDemo,
    cli_json,
    copy_home,
    describe,
    prepare_mlflow_env,
    run_cli,
    train_cli,
)
from training import registry
from training.config import load_config
from training.train import TrainOptions, train

pytestmark = pytest.mark.usefixtures("own_mlflow_store")

LIFT_REQUIRED = 1.3


def champion_of(home: EngineHome) -> str | None:
    found = registry.champion(registry.connect(home))
    return found.version if found else None


def versions_of(home: EngineHome) -> dict[str, list[str]]:
    return {v.version: sorted(v.aliases) for v in registry.versions(registry.connect(home))}


def runs_of(home: EngineHome) -> list[Any]:
    """Every MLflow run of the home's experiment, newest first."""
    client: MlflowClient = registry.connect(home)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])


# --------------------------------------------------------------------------- 1. quality


def test_hybrid_beats_popularity_by_a_clear_margin(trained_demo: TrainedDemo) -> None:
    hybrid = trained_demo.hybrid
    ndcg, baseline = hybrid["key_metrics"]["ndcg@10"], hybrid["baseline_ndcg@10"]
    assert baseline > 0
    assert ndcg >= LIFT_REQUIRED * baseline, f"hybrid NDCG@10 {ndcg:.4f} vs popularity {baseline:.4f}"
    assert hybrid["lift_over_popularity"] == pytest.approx(ndcg / baseline, rel=1e-9)
    assert hybrid["key_metrics"]["recall@20"] > 0


def test_both_models_were_scored_on_the_same_split(trained_demo: TrainedDemo) -> None:
    # the popularity baseline is refitted per run: same value = same train/test window
    assert trained_demo.als["baseline_ndcg@10"] == pytest.approx(trained_demo.hybrid["baseline_ndcg@10"], rel=1e-12)


def test_the_test_window_has_positives_on_cold_items(trained_demo: TrainedDemo) -> None:
    """Without cold positives ALS's zero below would prove nothing."""
    config = load_config(model="hybrid")
    split = load_dataset(trained_demo.home, config.engine, test_days=7, seed=0).split
    assert split.cold_items.any()
    assert split.truth[:, np.flatnonzero(split.cold_items)].nnz > 0


def test_only_the_hybrid_reaches_cold_items(trained_demo: TrainedDemo) -> None:
    assert trained_demo.hybrid["key_metrics"]["cold_recall@20"] > 0
    assert trained_demo.als["key_metrics"]["cold_recall@20"] == 0.0


def test_first_model_becomes_champion(trained_demo: TrainedDemo) -> None:
    hybrid = trained_demo.hybrid
    assert (hybrid["version"], hybrid["promoted"], hybrid["champion"]) == ("1", True, "1")
    assert hybrid["gate"]["promote"] is True
    assert "no champion yet" in hybrid["gate"]["reasons"]


def test_no_promote_registers_a_candidate_only(trained_demo: TrainedDemo) -> None:
    als = trained_demo.als
    assert (als["version"], als["promoted"], als["champion"]) == ("2", False, "1")
    assert "--no-promote given" in als["gate"]["reasons"]
    assert versions_of(trained_demo.home) == {"1": ["champion"], "2": ["candidate"]}


def test_run_is_tracked_in_mlflow(trained_demo: TrainedDemo) -> None:
    hybrid = trained_demo.hybrid
    run = registry.connect(trained_demo.home).get_run(hybrid["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["promoted"] == "true"
    assert run.data.metrics["ndcg_at_10"] == pytest.approx(hybrid["key_metrics"]["ndcg@10"], rel=1e-9)
    assert run.data.params["model"] == "hybrid"
    version = registry.connect(trained_demo.home).get_model_version(REGISTERED_MODEL, "1")
    assert version.run_id == hybrid["run_id"]
    assert version.tags["config_hash"] == load_config(model="hybrid").config_hash()
    assert float(version.tags["ndcg_at_10"]) == pytest.approx(hybrid["key_metrics"]["ndcg@10"], abs=1e-6)


# --------------------------------------------------------------------------- 2. the gate


@dataclass
class GateStory:
    """Outputs and champion snapshots of a scripted sequence of commands on one copy."""

    home: EngineHome
    retrain: dict[str, Any]
    champion_after_retrain: str | None
    worse: dict[str, Any]
    champion_after_worse: str | None
    rollback: dict[str, Any]
    champion_after_rollback: str | None
    promote: dict[str, Any]
    champion_after_promote: str | None
    models: dict[str, Any]


@pytest.fixture(scope="module")
def story(trained_demo: TrainedDemo, tmp_path_factory: pytest.TempPathFactory) -> GateStory:
    prepare_mlflow_env()
    root = copy_home(trained_demo.root, tmp_path_factory.mktemp("gate") / "home")
    home = EngineHome.at(root)
    retrain = train_cli(root, "--model", "hybrid", "--force")  # the same data: nothing to do without --force
    after_retrain = champion_of(home)
    refused = run_cli("train", "--home", str(root), "--json", "--no-tune", "--model", "popularity", "--force")
    assert refused.exit_code == 3, describe(refused)  # trained, but the gate kept the champion
    worse = json.loads(refused.stdout)
    after_worse = champion_of(home)
    rollback = cli_json(run_cli("rollback", "--home", str(root), "--json"))
    after_rollback = champion_of(home)
    promote = cli_json(run_cli("promote", "--home", str(root), "--version", worse["version"], "--json"))
    after_promote = champion_of(home)
    models = cli_json(run_cli("models", "--home", str(root), "--json"))
    return GateStory(home, retrain, after_retrain, worse, after_worse, rollback, after_rollback, promote,
                     after_promote, models)


def test_same_recipe_and_seed_gives_the_same_score_and_is_promoted(trained_demo: TrainedDemo, story: GateStory) -> None:
    retrain = story.retrain
    assert retrain["version"] == "3"
    assert retrain["key_metrics"]["ndcg@10"] == pytest.approx(trained_demo.hybrid["key_metrics"]["ndcg@10"], rel=1e-6)
    assert retrain["promoted"] is True
    assert retrain["champion"] == "3"
    assert story.champion_after_retrain == "3"


def test_a_worse_model_is_refused_and_champion_stays(trained_demo: TrainedDemo, story: GateStory) -> None:
    worse = story.worse
    assert worse["version"] == "4"
    assert worse["promoted"] is False
    assert worse["gate"]["promote"] is False
    assert any("< champion" in reason for reason in worse["gate"]["reasons"])
    assert worse["champion"] == "3"
    assert story.champion_after_worse == "3"
    # the candidate is the popularity model itself, scored on the same split as the hybrid's baseline
    assert worse["key_metrics"]["ndcg@10"] == pytest.approx(trained_demo.hybrid["baseline_ndcg@10"], rel=1e-6)


def test_the_champion_is_refitted_on_the_new_window_for_the_comparison(trained_demo: TrainedDemo,
                                                                       story: GateStory) -> None:
    run = registry.connect(story.home).get_run(story.worse["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["promoted"] == "false"
    champion_ndcg = run.data.metrics["champion_ndcg_at_10_same_window"]
    assert champion_ndcg == pytest.approx(trained_demo.hybrid["key_metrics"]["ndcg@10"], rel=1e-6)


def test_rollback_restores_the_previous_champion(story: GateStory) -> None:
    assert story.rollback == {"champion": "1", "previous": "3"}
    assert story.champion_after_rollback == "1"


def test_promote_moves_the_champion_to_any_version(story: GateStory) -> None:
    assert story.promote == {"champion": "4", "previous": "1"}
    assert story.champion_after_promote == "4"


def test_models_lists_every_version_with_its_aliases(story: GateStory) -> None:
    rows = {row["version"]: row for row in story.models["versions"]}
    assert sorted(rows, key=int) == ["1", "2", "3", "4"]
    assert {v: sorted(row["aliases"]) for v, row in rows.items()} == {
        "1": [], "2": [], "3": [], "4": ["candidate", "champion"],
    }
    assert [rows[v]["tags"]["model"] for v in ("1", "2", "3", "4")] == ["hybrid", "als", "hybrid", "popularity"]
    assert all(row["run_id"] for row in rows.values())


def test_promote_of_a_missing_version_is_a_clear_error(story: GateStory) -> None:
    result = run_cli("promote", "--home", str(story.home.root), "--version", "99")
    assert result.exit_code == 2, describe(result)
    assert "no version 99" in result.stderr
    assert champion_of(story.home) == "4"


def test_rollback_walks_back_then_stops(trained_demo_copy: Path) -> None:
    root = trained_demo_copy
    home = EngineHome.at(root)
    cli_json(run_cli("promote", "--home", str(root), "--version", "2", "--json"))
    assert champion_of(home) == "2"
    assert cli_json(run_cli("rollback", "--home", str(root), "--json")) == {"champion": "1", "previous": "2"}
    assert champion_of(home) == "1"
    result = run_cli("rollback", "--home", str(root))
    assert result.exit_code == 2, describe(result)
    assert "nothing to roll back to" in result.stderr
    assert champion_of(home) == "1"


# --------------------------------------------------------------------------- 3. failures


@pytest.fixture()
def copied(trained_demo_copy: Path) -> EngineHome:
    home = EngineHome.at(trained_demo_copy)
    assert champion_of(home) == "1"
    return home


def _promoted_runs(home: EngineHome) -> set[str]:
    return {run.info.run_id for run in runs_of(home)
            if run.info.status == "FINISHED" and run.data.tags.get("promoted") == "true"}


def test_a_fit_that_raises_fails_the_command_and_keeps_the_champion(copied: EngineHome,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real_create = recsys.models.create

    def create(name: str, params: dict | None = None) -> recsys.models.Recommender:
        model = real_create(name, params)
        if name == "hybrid":
            def explode(data: recsys.models.TrainingData) -> None:
                raise RuntimeError("fit exploded")
            model.fit = explode  # type: ignore[method-assign]
        return model

    monkeypatch.setattr(recsys.models, "create", create)
    runs_before, promoted_before = len(runs_of(copied)), _promoted_runs(copied)
    result = run_cli("train", "--home", str(copied.root), "--model", "hybrid", "--json", "--no-tune", "--force")
    assert result.exit_code == 1, describe(result)  # a failure, reported as JSON on stdout with --json
    assert json.loads(result.stdout) == {"error": "RuntimeError: fit exploded", "exit_code": 1}
    assert champion_of(copied) == "1"
    assert sorted(versions_of(copied)) == ["1", "2"]
    assert len(runs_of(copied)) == runs_before  # failed before any run started
    assert _promoted_runs(copied) == promoted_before


def test_a_failure_while_logging_leaves_the_run_failed(copied: EngineHome, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_log(bundle_dir: Path) -> str:
        raise OSError("artifact store unavailable")

    monkeypatch.setattr(registry, "log_bundle", broken_log)
    promoted_before = _promoted_runs(copied)
    with pytest.raises(OSError, match="artifact store unavailable"):
        train(copied, TrainOptions(config=load_config(model="hybrid"), tune=False))
    assert champion_of(copied) == "1"
    assert sorted(versions_of(copied)) == ["1", "2"]
    newest = runs_of(copied)[0]
    assert newest.info.status == "FAILED"
    assert newest.data.tags.get("promoted") is None
    assert _promoted_runs(copied) == promoted_before
    assert mlflow.active_run() is None


def test_a_failure_after_registration_never_moves_the_champion(copied: EngineHome,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from training import gate

    def broken_gate(*args: Any, **kwargs: Any) -> gate.GateDecision:
        raise RuntimeError("gate crashed")

    monkeypatch.setattr(gate, "decide", broken_gate)
    with pytest.raises(RuntimeError, match="gate crashed"):
        train(copied, TrainOptions(config=load_config(model="popularity"), tune=False))
    assert champion_of(copied) == "1"
    # the candidate was registered before the crash; only the candidate alias moved
    assert versions_of(copied) == {"1": ["champion"], "2": [], "3": ["candidate"]}
    newest = runs_of(copied)[0]
    assert newest.info.status == "FAILED"
    assert newest.data.tags.get("promoted") is None


def test_a_corrupt_config_is_refused_before_any_work(copied: EngineHome, tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text('model = "hybrid"\n[params\ncf_weight = ', encoding="utf-8")
    runs_before = len(runs_of(copied))
    result = run_cli("train", "--home", str(copied.root), "--config", str(config), "--json", "--no-tune")
    assert result.exit_code == 2, describe(result)
    assert "cannot read config" in result.stderr
    error = json.loads(result.stdout)  # with --json, the error is JSON on stdout too
    assert error["exit_code"] == 2 and "cannot read config" in error["error"]
    assert champion_of(copied) == "1"
    assert len(runs_of(copied)) == runs_before


def test_invalid_params_are_refused_before_any_work(copied: EngineHome, tmp_path: Path) -> None:
    config = tmp_path / "bad_params.toml"
    config.write_text('model = "hybrid"\n[params]\ncf_weight = -1.0\n', encoding="utf-8")
    result = run_cli("train", "--home", str(copied.root), "--config", str(config), "--json", "--no-tune")
    assert result.exit_code == 2, describe(result)
    assert "cf_weight" in result.stderr
    assert champion_of(copied) == "1"
    assert sorted(versions_of(copied)) == ["1", "2"]
