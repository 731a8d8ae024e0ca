"""The tuned default against every fixed recipe, on the real data sets, by the engine's own protocol.

    python -m experiments.bench_tune [--dataset goodbooks|ml|all] [--budget S] [--trials N] [--seed 0]
                                     [--json FILE]

For each data set the store is cut as ``recsys train`` cuts it (``protocol="auto"``: a time split
where the windows can judge a model, else a per-user holdout; train | validation | test). The
search runs on validation only, with the default budget for the store's size unless ``--budget``
is given; the winner and every shipped recipe are then fitted on train + validation and scored
once on the test part, so all rows share one test truth. The table shows NDCG@10, Recall@20,
the wall time of each row (the search included for the tuned row) and the trials run.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from experiments.datasets import load_goodbooks, load_movielens
from features.dataset import StoreFrames, build_dataset
from recsys import models
from training.config import TrainConfig, load_config, shipped_recipe, shipped_recipes
from training.evaluate import evaluate
from training.tune import DatasetCache, TuneOptions, tune

log = logging.getLogger(__name__)

LOADERS = {"goodbooks": load_goodbooks, "ml": load_movielens}
TEST_DAYS = 7.0


def score(recipe: TrainConfig, cache: DatasetCache) -> dict[str, float]:
    """``recipe`` fitted on train + validation, scored on the test part, with its wall time."""
    started = time.perf_counter()
    data = cache.get(recipe.engine)
    assert data.split is not None
    model = models.create(recipe.model, recipe.params).fit(data.split.train)
    result = evaluate(model, data.split, recipe.engine, segments=False)
    return {"ndcg@10": result.ndcg10, "recall@20": result.metrics["recall@20"],
            "seconds": time.perf_counter() - started}


def run(dataset: str, *, budget: float | None, trials: int | None, seed: int) -> dict[str, Any]:
    contract = LOADERS[dataset]()
    frames = StoreFrames(contract.interactions.lazy(), contract.users.lazy(), contract.items.lazy())
    configured = load_config()
    first = build_dataset(frames, configured.engine, test_days=TEST_DAYS, seed=seed, validation=True,
                          protocol="auto")
    cache = DatasetCache(frames, TEST_DAYS, seed, first, configured.engine)
    started = time.perf_counter()
    tuning = tune(cache, configured, TuneOptions(budget_seconds=budget, trials=trials, seed=seed))
    tuned = score(tuning.best, cache)
    tuned["seconds"] = time.perf_counter() - started  # the search and the final fit
    rows = {f"tuned ({tuning.best.model})": {**tuned, "trials": len(tuning.trials)}}
    for name in sorted(shipped_recipes()):
        rows[name] = {**score(load_config(shipped_recipe(name)), cache), "trials": 1}
        log.info("%s %s: %s", dataset, name, rows[name])
    return {"dataset": dataset, "split": first.note, "test_users": first.split.eval_users if first.split else 0,
            "tuning": tuning.summary(), "best_recipe": tuning.best.to_dict(), "rows": rows}


def print_table(result: dict[str, Any]) -> None:
    rows = result["rows"]
    best_fixed = max(v["ndcg@10"] for k, v in rows.items() if not k.startswith("tuned"))
    print(f"\n{result['dataset']}: {result['split']}; {result['test_users']} test users")
    print(f"{'recipe':<22} {'NDCG@10':>8} {'Recall@20':>9} {'seconds':>8} {'trials':>6}")
    for name, row in rows.items():
        print(f"{name:<22} {row['ndcg@10']:>8.4f} {row['recall@20']:>9.4f} {row['seconds']:>8.1f} {row['trials']:>6}")
    tuned = next(v for k, v in rows.items() if k.startswith("tuned"))
    print(f"tuned / best fixed recipe: {tuned['ndcg@10'] / best_fixed:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=(*LOADERS, "all"), default="all")
    parser.add_argument("--budget", type=float, default=None, help="search seconds (default: sized to the store)")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = list(LOADERS) if args.dataset == "all" else [args.dataset]
    results = [run(name, budget=args.budget, trials=args.trials, seed=args.seed) for name in names]
    for result in results:
        print_table(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
