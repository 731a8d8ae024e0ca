"""Training benchmark: the whole ``recsys train`` job against the same work done by bare implicit.

    python -m experiments.bench_train [--users 220000] [--items 10000] [--days 60] [--seed 0]
                                      [--keep DIR] [--profile] [--json F]

1. Generates a synthetic cultural cloud (:mod:`democloud`, ~5M interactions at the
   default size) and writes it into a temporary engine home as a committed store: the
   catalog and users tables, one Parquet file per day under ``interactions/date=.../``
   named by one ingest id, and that id's line in ``ingest_log.jsonl``.
2. Times ``recsys train --no-tune --model als --home H --no-promote --json`` end to end in a
   subprocess (wall time: interpreter start, imports, features, fit, evaluation, refit,
   MLflow logging and registration, and the serving candidate lists), with the step
   timings the job reports. (``--no-tune`` only where the CLI has it: without a recipe
   search, that is what ``recsys train`` did before it had one.)
3. The peer, in this process, on the job's full confidence matrix (built by the engine's own
   pipeline, not timed): a bare ``implicit.cpu.als.AlternatingLeastSquares`` fit with the
   same factors, regularization and threads, BLAS pinned to one thread as the job does,
   then its own batched ``model.recommend(userids, user_items, N=k,
   filter_already_liked_items=True)`` for the users the job gives serving lists to (every
   user with history, at most ``--candidate-users``, the most active) with the job's
   ``k``.

Accounting: the job fits ALS twice, ``iterations`` on the train split and then a
warm-started refit of ``refit_iterations`` on all data, so the peer fits
``iterations + refit_iterations`` on the full matrix (the train split is a little smaller,
so the peer slightly overstates the job's ALS work); the job's serving lists are the peer's
``recommend``. The ratio job / peer is the cost of everything the job does besides that
work (features, evaluation, MLflow, the bundle, each list's reasons). The target is <= 1.3.
Both sides also report their CPU seconds (user + system, over every thread and worker
process): on a machine shared with other work, wall times move with the load while the CPU
ratio stays put, so read the wall ratio from a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from democloud import DemoConfig, generate
from features.dataset import load_dataset
from recsys.candidate_scoring import DEFAULT_K, most_active_rows
from recsys.candidates import DEFAULT_MAX_USERS
from recsys.home import EngineHome
from training.config import load_config

log = logging.getLogger(__name__)

TARGET_RATIO = 1.3
SERVING_STEP = "save bundle"
"""The job step that holds the serving candidate lists (and the bundle write)."""
BENCH_END_DATE = dt.date(2025, 6, 30)
"""A fixed end date so that every run generates the same data."""
INGEST_ID = "bench-0001"


@dataclass
class JobTiming:
    wall_seconds: float
    cpu_seconds: float
    """User + system CPU of the job and every process it waited for (its candidate workers)."""
    summary: dict[str, Any]
    arguments: list[str]
    """The ``recsys`` arguments it ran with."""


def write_store(home: EngineHome, config: DemoConfig) -> dict[str, int]:
    """Generate the synthetic data and commit it to ``home``'s store under one ingest id."""
    data = generate(config)
    home.interactions.mkdir(parents=True, exist_ok=True)
    data.items.write_parquet(home.items)
    data.users.write_parquet(home.users)
    days = data.interactions.with_columns(pl.col("ts").dt.date().alias("__date")).partition_by(
        "__date", as_dict=True, include_key=False)
    for (day,), frame in sorted(days.items()):
        folder = home.interactions / f"date={day.isoformat()}"
        folder.mkdir(exist_ok=True)
        frame.write_parquet(folder / f"{INGEST_ID}.parquet")
    with open(home.ingest_log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"ingest_id": INGEST_ID, "source": "experiments.bench_train"}) + "\n")
    return {"interactions": data.interactions.height, "users": data.users.height, "items": data.items.height,
            "day_files": len(days)}


def recsys_command() -> list[str]:
    """The installed ``recsys`` entry point, else the same CLI through this interpreter."""
    found = shutil.which("recsys")
    return [found] if found else [sys.executable, "-c", "from training.cli import main; main()"]


def train_flags() -> list[str]:
    """``--no-tune`` where ``recsys train`` has it (the job then fits the configured recipe)."""
    done = subprocess.run([*recsys_command(), "train", "--help"], capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "200"})
    return ["--no-tune"] if "--no-tune" in done.stdout else []


def time_train_job(home: EngineHome, model: str = "als", *, verbose: bool = False) -> JobTiming:
    """Wall time of ``recsys train`` in a fresh process, and its JSON summary."""
    command = [*recsys_command(), *(["--verbose"] if verbose else []), "train", *train_flags(), "--model", model,
               "--home", str(home.root), "--no-promote", "--json"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the job must use the temporary home's store
    log.info("job: %s", " ".join(command))
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=None if verbose else subprocess.PIPE, text=True,
                          env=env, check=False)
    wall = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"recsys train failed ({done.returncode}):\n{(done.stderr or '')[-4000:]}")
    return JobTiming(wall, cpu, json.loads(done.stdout), command[len(recsys_command()):])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class PeerTiming:
    fit_seconds: float
    recommend_seconds: float
    cpu_seconds: float
    """CPU of this process (all of implicit's threads) over the fit and the recommend."""
    users: int

    @property
    def seconds(self) -> float:
        return self.fit_seconds + self.recommend_seconds


def bare_implicit(matrix, users: np.ndarray, k: int, *, factors: int, regularization: float, iterations: int,
                  num_threads: int, seed: int = 0) -> PeerTiming:
    """A bare implicit ALS fit of ``matrix``, then its batched top ``k`` of ``users`` without their
    own items (BLAS pinned to one thread for both, as in the job)."""
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=1.0,
                                        iterations=iterations, num_threads=num_threads, random_state=seed,
                                        calculate_training_loss=False)
        cpu_before = time.process_time()
        started = time.perf_counter()
        model.fit(matrix, show_progress=False)
        fitted = time.perf_counter()
        ids, _ = model.recommend(users, matrix[users], N=k, filter_already_liked_items=True)
        done = time.perf_counter()
        cpu = time.process_time() - cpu_before
    if ids.shape != (len(users), min(k, matrix.shape[1])):
        raise RuntimeError(f"implicit recommended {ids.shape} for {len(users)} users")
    return PeerTiming(fitted - started, done - fitted, cpu, len(users))


def run(config: DemoConfig, root: Path, *, profile: bool = False) -> dict[str, Any]:
    """Build the store under ``root``, time both sides and return every figure."""
    home = EngineHome.at(root)
    t0 = time.perf_counter()
    counts = write_store(home, config)
    log.info("store written in %.1f s: %s", time.perf_counter() - t0, counts)

    als = load_config(None, "als")
    params = als.resolved_params
    job = time_train_job(home, "als", verbose=profile)

    full = load_dataset(home, als.engine, test_days=None).full
    matrix = full.matrix.astype(np.float32).tocsr()
    users = most_active_rows(full.weights, DEFAULT_MAX_USERS)
    peer = bare_implicit(matrix, users, DEFAULT_K, factors=params["factors"],
                         regularization=params["regularization"],
                         iterations=params["iterations"] + params["refit_iterations"],
                         num_threads=params["num_threads"])
    serving = float(job.summary.get("timings", {}).get(SERVING_STEP, 0.0))
    return {
        "data": {**counts, "pairs": int(matrix.nnz), "matrix": list(matrix.shape)},
        "params": {k: params[k] for k in ("factors", "regularization", "iterations", "refit_iterations",
                                          "num_threads")},
        "engine": als.engine.model_dump(include={"confidence", "alpha", "half_life_days"}),
        "k": DEFAULT_K,
        "list_users": peer.users,
        "job_command": " ".join(["recsys", *("H" if a == str(home.root) else a for a in job.arguments)]),
        "job_wall_seconds": round(job.wall_seconds, 2),
        "job_reported_seconds": job.summary.get("seconds"),
        "job_steps": job.summary.get("timings", {}),
        "peer_fit_seconds": round(peer.fit_seconds, 2),
        "peer_recommend_seconds": round(peer.recommend_seconds, 2),
        "peer_seconds": round(peer.seconds, 2),
        "ratio": round(job.wall_seconds / peer.seconds, 3),
        "job_cpu_seconds": round(job.cpu_seconds, 2),
        "peer_cpu_seconds": round(peer.cpu_seconds, 2),
        "cpu_ratio": round(job.cpu_seconds / peer.cpu_seconds, 3),
        "load_average": list(os.getloadavg()),
        "serving_step_seconds": round(serving, 2),
        "ndcg@10": job.summary.get("key_metrics", {}).get("ndcg@10"),
    }


def render(result: dict[str, Any]) -> str:
    p, d = result["params"], result["data"]
    steps = "\n".join(f"    {name:<32} {seconds:8.2f} s" for name, seconds in result["job_steps"].items())
    verdict = "meets" if result["ratio"] <= TARGET_RATIO else "MISSES"
    return "\n".join([
        f"data: {d['interactions']:,} interactions, {d['users']:,} users, {d['items']:,} items "
        f"-> {d['pairs']:,} user-item pairs",
        f"ALS: factors={p['factors']} regularization={p['regularization']} iterations={p['iterations']} "
        f"refit_iterations={p['refit_iterations']} num_threads={p['num_threads']} (0 = all cores); "
        f"engine {result['engine']}; serving lists: k={result['k']} for {result['list_users']:,} users",
        "",
        f"(a) {result['job_command']}, wall time   {result['job_wall_seconds']:8.2f} s"
        f"   (job's own clock {result['job_reported_seconds']} s; the rest is interpreter start and imports)",
        steps,
        f"(b) bare implicit: ALS fit, {p['iterations']}+{p['refit_iterations']} iterations on the full matrix"
        f"  {result['peer_fit_seconds']:8.2f} s",
        f"    + model.recommend(users, user_items, N={result['k']}, filter_already_liked_items=True) for the "
        f"same {result['list_users']:,} users  {result['peer_recommend_seconds']:8.2f} s",
        f"    = {result['peer_seconds']:8.2f} s",
        "",
        f"(a) / (b) = {result['ratio']:.2f}x ({verdict} the {TARGET_RATIO}x target): what the job does besides "
        "fitting ALS and ranking every covered user's items.",
        f"Of (a), {result['serving_step_seconds']:.1f} s is '{SERVING_STEP}' (the bundle and its serving lists, "
        "with each candidate's reason anchor).",
        f"CPU seconds (user + system, every thread and worker): job {result['job_cpu_seconds']:.1f}, peer "
        f"{result['peer_cpu_seconds']:.1f}, ratio {result['cpu_ratio']:.2f}x (steadier than wall time on a shared "
        f"machine; load average at the end {result['load_average'][0]:.1f} on {os.cpu_count()} cores)",
        f"The job's NDCG@10 on its 7-day test window: {result['ndcg@10']}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=220_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="build the engine home here and keep it (default: a temp dir)")
    parser.add_argument("--profile", action="store_true", help="run the job with --verbose logging")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = DemoConfig(users=args.users, items=args.items, days=args.days, seed=args.seed,
                        end_date=BENCH_END_DATE)
    if args.keep:
        if args.keep.exists() and any(args.keep.iterdir()):
            parser.error(f"{args.keep} is not empty")
        result = run(config, args.keep, profile=args.profile)
    else:
        with tempfile.TemporaryDirectory(prefix="recsys-bench-train-") as tmp:
            result = run(config, Path(tmp), profile=args.profile)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
