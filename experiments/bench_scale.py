"""Scale benchmark: the training engines on ~5M interactions, and exact vs approximate serving at 1M items.

    python -m experiments.bench_scale [--part train|serve|all] [--users 220000] [--items 10000]
                                      [--days 60] [--master local[2]] [--serve-items 1000000]
                                      [--factors 64] [--queries 300] [--driver-memory 6g]
                                      [--json FILE]

1. Training (``--part train``): one synthetic cultural cloud (:mod:`democloud`,
   ~5M interactions at the default size) is written as provider files and committed to a
   temporary engine home with :func:`features.ingest.ingest`, then trained twice with the
   same ALS recipe (factors, regularization, iterations, seed): ``recsys train`` with
   implicit (:func:`training.train.train`) and with Spark MLlib on ``--master``
   (:func:`training.spark_train.train_spark`). Both run the whole job (features, fit on the
   train split, evaluation with the serving rules, fit on all data, bundle, MLflow), never
   promoting; printed side by side: wall time, the fit steps, NDCG@10 and recall@20 on the
   same 7-day test window. (implicit refits warm-started for ``refit_iterations``, Spark
   fits all data from scratch for ``iterations``: the job's own recipe on each engine.)
2. Serving (``--part serve``): ``--serve-items`` items x ``--factors`` factors drawn around
   planted directions with long-tailed norms (as ALS gives popular items), each direction's
   items of one category, 5% of items never interacted with; users near one direction each,
   each with 20 seen items and a catalog where 20% of items have ended. Per query, on one core (BLAS pinned to one
   thread, as the server runs): the exact path (user vector x every item, top 10 among the
   allowed ones; what full scoring does) against :func:`recsys.ann.ann_top_n` on the index
   :class:`recsys.ann.InnerProductIndex` builds with the engine's default settings; p50 and
   p99 latency and recall@10 of the approximate list against the exact one, for a plain
   request, n = 50 (a diversified list's pool), and a category filter (1 in 12 items) on the
   user's own taste's category or on a category far from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

BENCH_END_DATE = dt.date(2025, 6, 30)
"""A fixed end date so that every run generates the same data."""
RECALL_TARGET = 0.95


# ---- 1. training engines ---------------------------------------------------------------
def build_store(root: Path, users: int, items: int, days: int, seed: int) -> dict[str, int]:
    """Generate the synthetic cloud and ingest it into the engine home at ``root``."""
    from democloud import DemoConfig, generate, write_demo
    from features.ingest import ingest
    from recsys.home import EngineHome

    data = generate(DemoConfig(users=users, items=items, days=days, seed=seed, end_date=BENCH_END_DATE))
    counts = {"users": data.users.height, "items": data.items.height, "interactions": data.interactions.height}
    paths = write_demo(data, root / "provider")
    del data
    summary = ingest(EngineHome.at(root / "home"), interactions=paths["interactions"], users=paths["users"],
                     items=paths["items"])
    if not summary.committed:
        raise RuntimeError("the synthetic store was not committed")
    return counts


def train_both(home_root: Path, master: str, factors: int, iterations: int, seed: int,
               driver_memory: str = "6g") -> dict[str, Any]:
    """The same ALS recipe trained by implicit and by Spark on the same store."""
    from recsys.home import EngineHome
    from training.config import TrainConfig
    from training.spark_train import SparkOptions, train_spark
    from training.train import TrainOptions, train

    home = EngineHome.at(home_root)
    config = TrainConfig(model="als", params={"factors": factors, "iterations": iterations})
    options = TrainOptions(config=config, seed=seed, promote=False, tune=False)
    results: dict[str, Any] = {"params": config.resolved_params}
    for name, run in (("implicit", lambda: train(home, options)),
                      ("spark", lambda: train_spark(home, options, SparkOptions(
                          master=master, conf={"spark.driver.memory": driver_memory})))):
        started = time.perf_counter()
        result = run()
        wall = time.perf_counter() - started
        results[name] = {
            "wall_seconds": round(wall, 1),
            "fit_train_seconds": result.timings.get("fit als on train"),
            "fit_all_seconds": result.timings.get("refit on all data"),
            "features_seconds": result.timings.get("build features"),
            "steps": result.timings,
            "ndcg@10": result.metrics.get("ndcg@10"),
            "recall@20": result.metrics.get("recall@20"),
        }
        log.info("%s: %.1f s, NDCG@10 %.4f", name, wall, result.metrics.get("ndcg@10", float("nan")))
    return results


# ---- 2. exact vs approximate serving -----------------------------------------------------
def planted_factors(n_items: int, dim: int, n_users: int, seed: int, clusters: int = 2000
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(item factors, known-item mask, user vectors, item category, user's own category).

    Items and users lie around planted taste directions; a direction's items share one of 12
    categories (so a category filter is aligned with taste, as in a real catalog). Item norms
    are long-tailed (log-normal), as ALS gives popular items larger factors.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    cluster_category = rng.integers(0, 12, clusters)
    item_cluster = rng.integers(0, clusters, n_items)
    items = np.empty((n_items, dim), dtype=np.float32)
    for start in range(0, n_items, 200_000):  # in slices: the temporaries of one 1M x 64 draw are large
        stop = min(n_items, start + 200_000)
        items[start:stop] = centres[item_cluster[start:stop]]
        items[start:stop] += 0.7 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    items *= (rng.lognormal(0.0, 0.6, n_items) / np.sqrt(dim)).astype(np.float32)[:, None]
    known = rng.random(n_items) > 0.05
    user_cluster = rng.integers(0, clusters, n_users)
    users = centres[user_cluster] + 0.5 * rng.standard_normal((n_users, dim), dtype=np.float32)
    return items, known, users.astype(np.float32), cluster_category[item_cluster], cluster_category[user_cluster]


def serve_compare(n_items: int, dim: int, queries: int, seed: int) -> dict[str, Any]:
    from recsys.ann import InnerProductIndex, ann_top_n
    from recsys.ranking import top_k
    from recsys.settings import AnnSettings

    started = time.perf_counter()
    items, known, users, category, taste = planted_factors(n_items, dim, queries, seed)
    log.info("planted %d x %d factors in %.1f s", n_items, dim, time.perf_counter() - started)
    rss_before = peak_rss_gib()
    started = time.perf_counter()
    index = InnerProductIndex.build(items, known, AnnSettings(min_items=0, seed=seed))
    build_seconds = time.perf_counter() - started
    rng = np.random.default_rng(seed + 1)
    available = (rng.random(n_items) > 0.2) & known  # ended items; unknown items are never scored
    histories = [rng.choice(n_items, 20, replace=False) for _ in range(queries)]
    # the category filter: the user's own taste's category, or one far from it (offset 6 of 12)
    cases = {"plain n=10": (None, 10), "plain n=50": (None, 50), "own category n=10": (0, 10),
             "other category n=10": (6, 10)}
    out: dict[str, Any] = {
        "items": n_items, "factors": dim, "queries": queries, "index": dict(index.params),
        "build_seconds": round(build_seconds, 1), "peak_rss_gib_after_build": round(peak_rss_gib(), 2),
        "peak_rss_gib_before_build": round(rss_before, 2), "cases": {},
    }
    with threadpool_limits(limits=1, user_api="blas"):
        for name, (wanted_category, n) in cases.items():
            exact_ms, ann_ms, recalls = [], [], []
            for user, seen, own in zip(users, histories, taste, strict=True):
                allowed = available.copy()
                allowed[seen] = False
                if wanted_category is not None:
                    allowed &= category == (own + wanted_category) % 12
                t0 = time.perf_counter()
                exact = top_k(items @ user, n, allowed)
                t1 = time.perf_counter()
                approximate, _ = ann_top_n(index, user, allowed, n)
                t2 = time.perf_counter()
                exact_ms.append((t1 - t0) * 1e3)
                ann_ms.append((t2 - t1) * 1e3)
                recalls.append(len(set(exact.tolist()) & set(approximate.tolist())) / max(len(exact), 1))
            out["cases"][name] = {
                "exact_p50_ms": round(float(np.percentile(exact_ms, 50)), 2),
                "exact_p99_ms": round(float(np.percentile(exact_ms, 99)), 2),
                "ann_p50_ms": round(float(np.percentile(ann_ms, 50)), 2),
                "ann_p99_ms": round(float(np.percentile(ann_ms, 99)), 2),
                f"recall@{n}": round(float(np.mean(recalls)), 4),
                "min_recall": round(float(np.min(recalls)), 2),
            }
            log.info("%s: %s", name, out["cases"][name])
    return out


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ---- report ------------------------------------------------------------------------------
def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    if "train" in result:
        t = result["train"]
        d, p = t["data"], t["params"]
        lines += [
            f"(1) training: {d['interactions']:,} interactions, {d['users']:,} users, {d['items']:,} items "
            f"(store built in {t['store_seconds']} s); ALS factors={p['factors']} iterations={p['iterations']} "
            f"regularization={p['regularization']} refit_iterations={p['refit_iterations']}",
            f"    {'engine':<10} {'wall s':>8} {'features s':>11} {'fit train s':>12} {'fit all s':>10} "
            f"{'NDCG@10':>8} {'recall@20':>10}",
        ]
        for engine in ("implicit", "spark"):
            r = t[engine]
            lines.append(f"    {engine:<10} {r['wall_seconds']:>8} {r['features_seconds']:>11} "
                         f"{r['fit_train_seconds']:>12} {r['fit_all_seconds']:>10} {r['ndcg@10']:>8.4f} "
                         f"{r['recall@20']:>10.4f}")
        lines.append(f"    Spark master {t['master']}")
    if "serve" in result:
        s = result["serve"]
        ix = s["index"]
        lines += [
            "",
            f"(2) serving: {s['items']:,} items x {s['factors']} factors, {s['queries']} queries, one core; index "
            f"IVF-Flat (MIPS->L2) nlist={ix['nlist']} nprobe={ix['nprobe']}, built in {s['build_seconds']} s, "
            f"peak RSS {s['peak_rss_gib_before_build']} -> {s['peak_rss_gib_after_build']} GiB",
            f"    {'case':<22} {'exact p50':>10} {'exact p99':>10} {'ANN p50':>9} {'ANN p99':>9} {'recall':>8}",
        ]
        for name, c in s["cases"].items():
            recall = next(v for k, v in c.items() if k.startswith("recall@"))
            verdict = "" if recall >= RECALL_TARGET else "  (below the 0.95 target)"
            lines.append(f"    {name:<22} {c['exact_p50_ms']:>8} ms {c['exact_p99_ms']:>7} ms "
                         f"{c['ann_p50_ms']:>6} ms {c['ann_p99_ms']:>6} ms {recall:>8.4f}{verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("train", "serve", "all"), default="all")
    parser.add_argument("--users", type=int, default=220_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="6g",
                        help="Spark driver heap; in local mode it holds the executors too")
    parser.add_argument("--serve-items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result: dict[str, Any] = {}
    if args.part in ("serve", "all"):
        result["serve"] = serve_compare(args.serve_items, args.factors, args.queries, args.seed)
    if args.part in ("train", "all"):
        with tempfile.TemporaryDirectory(prefix="recsys-bench-scale-") as tmp:
            started = time.perf_counter()
            counts = build_store(Path(tmp), args.users, args.items, args.days, args.seed)
            store_seconds = round(time.perf_counter() - started, 1)
            trained = train_both(Path(tmp) / "home", args.master, args.factors, args.iterations, args.seed,
                                 args.driver_memory)
        result["train"] = {"data": counts, "store_seconds": store_seconds, "master": args.master, **trained}
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
