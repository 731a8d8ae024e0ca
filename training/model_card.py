"""The algorithm description of a model version, written and logged with its MLflow run.

The text is :mod:`recsys.model_card`'s; this module gathers a version's facts where training
and the CLI find them (the registered bundle, the gate's decision on the run), writes the
Markdown and HTML files, logs them as artifacts of the run (``model_card/model_card.md`` and
``.html``), and logs the editorial pool the version carries (``editorial/pool.json``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from recsys.catalog import Catalog
from recsys.home import EngineHome
from recsys.model_card import CardFacts, facts_from_bundle, render_html, render_markdown
from recsys.settings import ControlSettings
from training import registry
from training.batch import load_registered

log = logging.getLogger(__name__)

ARTIFACT_DIR = "model_card"
MARKDOWN = "model_card.md"
HTML = "model_card.html"
POOL_ARTIFACT = "editorial/pool.json"


def merge_pool_file(catalog: Catalog, controls: ControlSettings) -> int:
    """Flag the items listed in the configured pool file ``editorial`` (ids the catalogue lacks are
    skipped with a warning); returns the pool's size."""
    if controls.editorial_pool_file:
        path = Path(controls.editorial_pool_file)
        if not path.is_file():
            raise ValueError(f"editorial_pool_file {path.name!r} does not exist")
        wanted = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        indices = catalog.items.indices(wanted)
        if (indices < 0).any():
            log.warning("%d ids of the editorial pool file are not in the catalogue", int((indices < 0).sum()))
        catalog.editorial[indices[indices >= 0]] = True
    return int(catalog.editorial.sum())


def log_pool(catalog: Catalog, controls: ControlSettings) -> None:
    """The pool and the slots this version fills, as an artifact of the active run."""
    pool = [{"item_id": catalog.items.id_of(int(i)), "title": catalog.title[int(i)]}
            for i in catalog.editorial.nonzero()[0]]
    mlflow.log_dict({"slots": controls.editorial_slots, "lists": controls.editorial_lists, "pool": pool},
                    POOL_ARTIFACT)
    mlflow.log_param("editorial.pool_size", len(pool))


def log_card(facts: CardFacts, run_id: str | None = None, client: MlflowClient | None = None) -> None:
    """Log the card's two files to ``run_id`` (default: the active run)."""
    for name, text in ((MARKDOWN, render_markdown(facts)), (HTML, render_html(facts))):
        if run_id is None:
            mlflow.log_text(text, f"{ARTIFACT_DIR}/{name}")
        else:
            (client or MlflowClient()).log_text(run_id, text, f"{ARTIFACT_DIR}/{name}")


def gate_of(tags: dict[str, str]) -> dict[str, Any]:
    """The gate's decision and reasons from a run's tags (``gate.*``)."""
    reasons = [tags[key] for key in sorted(tags) if key.startswith("gate.reason.")]
    return {"decision": tags["gate.decision"], "reasons": reasons} if "gate.decision" in tags else {}


def version_card(home: EngineHome, version: str | None, out_dir: Path, *, log_to_run: bool = True) -> dict[str, Any]:
    """Write the card of ``version`` (default: the champion) into ``out_dir``; returns what was written."""
    client = registry.connect(home)
    if version is not None and not any(v.version == str(version) for v in registry.versions(client)):
        raise ValueError(f"no registered version {version!r}")
    chosen, bundle = load_registered(home, version)
    info = next(v for v in registry.versions(client) if v.version == chosen)
    run = client.get_run(info.run_id) if info.run_id else None
    facts = facts_from_bundle(bundle, info.version, gate_of(dict(run.data.tags)) if run else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKDOWN).write_text(render_markdown(facts), encoding="utf-8")
    (out_dir / HTML).write_text(render_html(facts), encoding="utf-8")
    if log_to_run and run is not None:
        log_card(facts, run.info.run_id, client)
    return {"version": info.version, "run_id": info.run_id, "markdown": str(out_dir / MARKDOWN),
            "html": str(out_dir / HTML)}
