"""Batch recommendations from a registered model, with the API's business rules.

Known users are scored in vectorised batches; users the model does not know get the same
fallbacks as the API (segment, region, global popularity). Residents' own choices are read from
the home's controls log (:mod:`recsys.controls`), as the API reads them: a resident who switched
personalisation off, removed a tag, chose senior mode or dismissed an item gets the API's list
for them (:meth:`recsys.delivery.DeliveryEngine.for_user`, no diversity). The minors rule holds
for every row (:mod:`recsys.audience`), and editorial slots are filled as the API fills them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from features import store
from recsys.bundle import ModelBundle
from recsys.controls import UserControls, read_controls
from recsys.delivery import DeliveryEngine
from recsys.home import EngineHome
from recsys.query import Filters, UserContext
from training import registry

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "rank", "item_id", "score"]


def load_registered(home: EngineHome, version: str | None = None) -> tuple[str, ModelBundle]:
    """The champion (or ``version``) bundle from the registry."""
    client = registry.connect(home)
    if version is None:
        champion = registry.champion(client)
        if champion is None:
            raise ValueError("no champion model yet: run `recsys train` first (or pass --version)")
        version = champion.version
    return version, ModelBundle.load(registry.download_bundle(client, version))


def read_user_ids(path: Path) -> list[str]:
    """User ids from a CSV/Parquet file with a ``user_id`` column (or a one-column file)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    if "user_id" not in frame.columns:
        raise ValueError(f"{path}: missing required column 'user_id'")
    return frame["user_id"].cast(pl.String).drop_nulls().unique(maintain_order=True).to_list()


def home_controls(home: EngineHome) -> dict[str, UserControls]:
    """The residents' choices recorded in ``home`` (users erased on request left out)."""
    return read_controls(home.controls, store.erased_users(home))


def recommend_batch(bundle: ModelBundle, user_ids: Sequence[str] | None, n: int, at: float,
                    progress: Callable[[int, int], None] | None = None,
                    controls: Mapping[str, UserControls] | None = None) -> pl.DataFrame:
    """``user_id, rank, item_id, score`` for the given users (``None`` = every known user);
    ``controls`` are the residents' choices (:func:`home_controls`)."""
    if not 1 <= n <= 1000:
        raise ValueError(f"n must be in 1..1000, got {n}")
    engine = DeliveryEngine(bundle)
    controls = controls or {}
    ids = list(bundle.users.users.ids) if user_ids is None else list(user_ids)
    rows = bundle.users.users.indices(ids)
    known = (rows >= 0) & ~_own_lists(engine, ids, rows, controls)
    frames = []
    known_rows = rows[known]
    known_ids = np.asarray(ids, dtype=object)[known]
    batch = 4096
    for start in range(0, len(known_rows), batch):
        items, scores = engine.floored_rows(known_rows[start:start + batch], n, at)  # exposure floors
        items, scores = engine.with_editorial_rows(known_rows[start:start + batch], items, scores, at)
        frames.append(_frame(known_ids[start:start + batch], items, scores, bundle))
        if progress:
            progress(min(start + batch, len(known_rows)), len(ids))
    filters = Filters(at=at)
    unknown = [uid for uid, ok in zip(ids, known, strict=True) if not ok]
    records = [(uid, rank, rec.item_id, rec.score) for uid in unknown
               for rank, rec in enumerate(engine.for_user(
                   uid, n, filters, diversity=0.0,
                   context=UserContext(controls=controls[uid]) if uid in controls else None).items, start=1)]
    if records:
        frames.append(pl.DataFrame(records, schema=dict(zip(COLUMNS, [pl.String, pl.Int32, pl.String, pl.Float32],
                                                             strict=True)), orient="row"))
    if not frames:
        return pl.DataFrame(schema={"user_id": pl.String, "rank": pl.Int32, "item_id": pl.String,
                                    "score": pl.Float32})
    return pl.concat(frames)


def _own_lists(engine: DeliveryEngine, ids: list[str], rows: np.ndarray,
               controls: Mapping[str, UserControls]) -> np.ndarray:
    """Which users need a list of their own: a recorded choice, or a dismissal the artifact holds."""
    dismissed = engine.bundle.dismissed
    has_dismissals = (np.diff(dismissed.indptr) > 0) if dismissed is not None else None
    own = np.zeros(len(ids), dtype=bool)
    for position, (user_id, row) in enumerate(zip(ids, rows.tolist(), strict=True)):
        chosen = user_id in controls and not controls[user_id].untouched
        own[position] = chosen or (has_dismissals is not None and row >= 0 and bool(has_dismissals[row]))
    return own


def _frame(user_ids: np.ndarray, items: np.ndarray, scores: np.ndarray, bundle: ModelBundle) -> pl.DataFrame:
    n = items.shape[1]
    filled = items >= 0
    item_ids = np.asarray(bundle.catalog.items.ids, dtype=object)
    return pl.DataFrame({
        "user_id": np.repeat(user_ids, n)[filled.ravel()].tolist(),
        "rank": np.tile(np.arange(1, n + 1, dtype=np.int32), len(user_ids))[filled.ravel()],
        "item_id": item_ids[items[filled]].tolist(),
        "score": scores[filled].astype(np.float32),
    })


def write_output(frame: pl.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        frame.write_parquet(tmp)
    elif out.suffix == ".csv":
        frame.write_csv(tmp)
    else:
        raise ValueError(f"{out}: output must end in .csv or .parquet")
    tmp.replace(out)
