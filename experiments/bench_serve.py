"""Serving benchmark: personal recommendations vs a bare endpoint, same server, same load;
and the same with API keys and rate limits on vs off.

    python -m experiments.bench_serve [--users 200000] [--items 20000] [--duration 20] [--rounds 1]

1. Builds (once, cached under ``--workdir``) a synthetic bundle: users in 64 taste clusters,
   each favouring ~300 items, plus a Zipf-popular background; ~20 interactions per user; a
   hybrid model with 64 ALS factors; a catalog with kinds, places, end times and hidden items;
   and, as training does, every user's precomputed candidates (``recsys.candidates``; about
   1-1.5 ms per user, so ~5 minutes for 200,000 users, once).
2. Starts a real uvicorn process (one worker) running the product app plus one bare
   endpoint that returns a pre-built JSON body as large as a real 10-item list
   (``bench_app`` below: the bare route exists only in this benchmark).
3. Runs a closed-loop load generator in a separate process (asyncio + httpx, bounded
   concurrency, fixed duration) against (a) ``/v1/users/{id}/recommendations?n=10`` for
   random known users and (b) the bare endpoint; prints requests/s, p50, p99 and the ratios
   (targets: throughput ratio >= 0.7, p99 ratio <= 2).
4. Does both twice: on a server with the trust boundary *off* (no keys, personal reads
   open, no rate limits) and on one with it *on* (every request sends a ``read`` key, per-key
   and per-address rate limits on, set high enough that the load never reaches them, so what
   is measured is the cost of checking); the servers alternate ``--rounds`` times, so drift
   in what else the machine runs falls on both. Prints the on/off ratios (target >= 0.9).
5. ``--compare exposures`` instead compares exposure logging (every served list appended and
   written before its answer and fsynced within 0.2 s, :mod:`serving.exposures`) off and on, trust
   boundary off in both, alternating the same way (target: throughput ratio >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from serving.auth import API_KEY_HEADER
from serving.connections import PROTOCOL

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("event", "exhibition", "opera", "film", "digital")
KIND_SHARE = (0.34, 0.14, 0.12, 0.15, 0.25)
CATEGORIES = ("戏曲", "音乐", "舞蹈", "话剧", "讲座", "非遗", "亲子", "数字艺术", "书画", "摄影", "电影", "阅读")
REGIONS = tuple(f"1101{d:02d}" for d in (1, 2, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19))
AGES = ("0-17", "18-34", "35-59", "60+")
CLUSTERS = 64
CLUSTER_ITEMS = 300
BARE_PATH = "/bench/bare"
NOW = time.time()
BENCH_KEY = "bench-app-key-read-only-0001"
GUARD_OFF = {"RECSYS_OPEN_PERSONAL_READS": "true", "RECSYS_RATE_PER_KEY": "0", "RECSYS_RATE_PER_IP": "0"}
GUARD_ON = {"RECSYS_API_KEYS": f"{BENCH_KEY}=read", "RECSYS_OPEN_PERSONAL_READS": "false",
            "RECSYS_RATE_PER_KEY": "1000000", "RECSYS_BURST_PER_KEY": "1000000",
            "RECSYS_RATE_PER_IP": "1000000", "RECSYS_BURST_PER_IP": "1000000"}
"""Limits on, but far above what one load generator sends: the checks run, nothing is refused."""


# ---- the synthetic bundle ---------------------------------------------------------------
def build_bundle(directory: Path, n_users: int, n_items: int, seed: int = 0, iterations: int = 4) -> Path:
    """Fit and save the benchmark bundle (skipped when ``directory`` already holds one for these sizes)."""
    from recsys import models
    from recsys.bundle import ModelBundle
    from recsys.candidate_scoring import attach_candidates
    from recsys.confidence import to_confidence
    from recsys.models.base import TrainingData
    from recsys.settings import EngineSettings

    manifest_path = directory / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if (manifest.get("n_users"), manifest.get("n_items"), manifest.get("seed")) == (n_users, n_items, seed):
            log.info("reusing the bundle at %s", directory)
            return ensure_candidates(directory)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    catalog = synthetic_catalog(n_items, rng)
    users = synthetic_users(n_users, rng)
    weights = synthetic_weights(n_users, n_items, rng)
    settings = EngineSettings()
    data = TrainingData(to_confidence(weights, settings.confidence, settings.alpha), weights, catalog, users, seed)
    log.info("synthetic data: %d users x %d items, %d interactions (%.1fs)", n_users, n_items, weights.nnz,
             time.perf_counter() - started)
    params = {"als": {"factors": 64, "iterations": iterations}}
    model = models.create("hybrid", params).fit(data)
    log.info("hybrid model fitted (%.1fs)", time.perf_counter() - started)
    manifest = {"trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seed": seed,
                "metrics": {}, "synthetic": "experiments.bench_serve"}
    bundle = attach_candidates(ModelBundle(model, catalog, users, weights, settings, manifest))
    log.info("candidates computed (%.1fs)", time.perf_counter() - started)
    bundle.save(directory)
    log.info("bundle saved to %s (%.1fs)", directory, time.perf_counter() - started)
    return directory


def ensure_candidates(directory: Path) -> Path:
    """Add the candidates to a cached bundle saved before training computed them."""
    from recsys.bundle import ModelBundle
    from recsys.candidate_scoring import attach_candidates
    from recsys.candidates import FILE_NAME

    if not (directory / FILE_NAME).is_file():
        log.info("computing the candidates of the cached bundle (once)")
        attach_candidates(ModelBundle.load(directory)).candidates.save(directory / FILE_NAME)
    return directory


def synthetic_catalog(n: int, rng: np.random.Generator):
    from recsys.catalog import Catalog

    kind = rng.choice(len(KINDS), size=n, p=KIND_SHARE)
    digital = kind == KINDS.index("digital")
    lat = np.where(digital, np.nan, 39.9 + rng.normal(0, 0.15, n))
    lon = np.where(digital, np.nan, 116.4 + rng.normal(0, 0.2, n))
    one_evening = np.isin(kind, [KINDS.index("event"), KINDS.index("opera"), KINDS.index("film")])
    ends = np.where(one_evening, NOW + rng.uniform(-10, 60, n) * 86400, np.nan)
    category = rng.integers(0, len(CATEGORIES), n)
    # what a list item renders: start times (digital items have none), venues, providers, prices
    starts = np.where(digital, np.nan, NOW + rng.uniform(-30, 60, n) * 86400)
    return Catalog.from_columns(
        [f"it{i:06d}" for i in range(n)],
        title=[f"《活动{i}》" for i in range(n)],
        kind=[KINDS[k] for k in kind],
        category=[CATEGORIES[c] for c in category],
        region=[None if digital[i] else REGIONS[i % len(REGIONS)] for i in range(n)],
        tags=[[CATEGORIES[c] + "·" + str(i % 7)] for i, c in enumerate(category)],
        lat=[None if np.isnan(v) else float(v) for v in lat],
        lon=[None if np.isnan(v) else float(v) for v in lon],
        starts_at=[None if np.isnan(v) else float(v) for v in starts],
        ends_at=[None if np.isnan(v) else float(v) for v in ends],
        hidden=(rng.random(n) < 0.01).tolist(),
        venue=[None if digital[i] else f"v{i % 997:04d}" for i in range(n)],
        provider=[f"{REGIONS[i % len(REGIONS)]}文化馆" for i in range(n)],
        is_free=(rng.random(n) < 0.7).tolist(),
    )


def synthetic_users(n: int, rng: np.random.Generator):
    from recsys.users import UserTable

    region = rng.integers(0, len(REGIONS), n)
    age = rng.integers(0, len(AGES), n)
    return UserTable.from_columns(
        [f"u{u:07d}" for u in range(n)],
        region=[REGIONS[r] for r in region], age_band=[AGES[a] for a in age],
        area_type=["rural" if r >= 8 else "urban" for r in region],
    )


def synthetic_weights(n_users: int, n_items: int, rng: np.random.Generator) -> sp.csr_matrix:
    """~20 interactions per user: 80 % within the user's taste cluster, 20 % Zipf-popular."""
    zipf = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popular_cdf = np.cumsum(zipf[rng.permutation(n_items)]) / zipf.sum()
    cluster_items = np.stack([rng.choice(n_items, CLUSTER_ITEMS, replace=False) for _ in range(CLUSTERS)])
    within = 1.0 / np.arange(1, CLUSTER_ITEMS + 1) ** 0.7
    within_cdf = np.cumsum(within) / within.sum()
    counts = rng.poisson(18, n_users) + 2
    rows = np.repeat(np.arange(n_users), counts)
    cluster = rng.integers(0, CLUSTERS, n_users)[rows]
    in_cluster = rng.random(len(rows)) < 0.8
    cols = np.where(
        in_cluster,
        cluster_items[cluster, np.minimum(np.searchsorted(within_cdf, rng.random(len(rows))), CLUSTER_ITEMS - 1)],
        np.minimum(np.searchsorted(popular_cdf, rng.random(len(rows))), n_items - 1),
    )
    values = rng.choice(np.array([1.0, 1.0, 1.0, 3.0, 5.0, 8.0], dtype=np.float32), len(rows))
    weights = sp.csr_matrix((values, (rows, cols)), shape=(n_users, n_items), dtype=np.float32)
    weights.sum_duplicates()
    return weights


# ---- the benchmark app --------------------------------------------------------------------
def bench_app():
    """The product app plus a bare endpoint returning a body the size of a real 10-item list."""
    from serving.app import create_app

    app = create_app()
    payload = json.loads(Path(os.environ["BENCH_PAYLOAD"]).read_text(encoding="utf-8"))

    @app.get(BARE_PATH, include_in_schema=False)
    async def bare() -> dict[str, Any]:
        return payload

    return app


# ---- the load generator (runs in its own process) -----------------------------------------
async def generate_load(base: str, paths: list[str], concurrency: int, duration: float, warmup: float,
                        seed: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``concurrency`` closed-loop clients, each with its own keep-alive connection.

    One ``httpx.AsyncClient`` per client: a single shared pool serialises on its own
    bookkeeping and caps out far below what the server can answer (measured: a shared pool
    of 32 connections made fewer requests per second than one connection).
    """
    import httpx

    rng = random.Random(seed)
    latencies: list[float] = []
    errors: dict[str, Any] = {"count": 0, "example": None}
    sent = [0]

    async def client_loop(measure_from: float, until: float) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30, headers=headers) as client:
            while (started := time.perf_counter()) < until:
                path = paths[rng.randrange(len(paths))]
                try:
                    response = await client.get(path)
                    ok, problem = response.status_code == 200, response.text[:200]
                except httpx.HTTPError as exc:
                    ok, problem = False, repr(exc)
                sent[0] += 1
                if started >= measure_from:
                    if ok:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors["count"] += 1
                        errors["example"] = errors["example"] or problem

    start = time.perf_counter()
    await asyncio.gather(*(client_loop(start + warmup, start + warmup + duration) for _ in range(concurrency)))
    values = np.array(latencies)
    return {
        "requests": len(values), "sent": sent[0], "errors": errors["count"], "error_example": errors["example"],
        "rps": len(values) / duration,
        "p50_ms": float(np.percentile(values, 50) * 1000) if len(values) else float("nan"),
        "p99_ms": float(np.percentile(values, 99) * 1000) if len(values) else float("nan"),
    }


def run_loadgen_process(base: str, paths: list[str], args: argparse.Namespace, workdir: Path,
                        server_pid: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The load generator in a separate process, so it never shares the server's interpreter.

    Also reports the server's CPU seconds per request (all requests, warm-up included): unlike
    requests/s it does not depend on what else the machine runs or on the load generator.
    """
    spec = workdir / "loadgen.json"
    spec.write_text(json.dumps({"base": base, "paths": paths, "concurrency": args.concurrency,
                                "duration": args.duration, "warmup": args.warmup, "seed": args.seed,
                                "headers": headers}))
    cpu_before = process_cpu_seconds(server_pid)
    out = subprocess.run([sys.executable, "-m", "experiments.bench_serve", "--loadgen", str(spec)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = process_cpu_seconds(server_pid) - cpu_before
    result["server_cpu_ms"] = cpu * 1000 / result["sent"] if result["sent"] else float("nan")
    return result


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- orchestration ------------------------------------------------------------------------
def start_server(workdir: Path, bundle: Path, port: int, guard: dict[str, str]) -> subprocess.Popen[bytes]:
    """The benchmark app in uvicorn, with the protocol, options and limits ``recsys serve`` uses."""
    import httpx

    env = {**os.environ, "RECSYS_HOME": str(workdir / "home"), "RECSYS_MODEL_DIR": str(bundle),
           "BENCH_PAYLOAD": str(workdir / "payload.json"), "MLFLOW_DISABLE_TELEMETRY": "true", **guard}
    for name in ("RECSYS_ADMIN_KEY", "RECSYS_API_KEYS_FILE"):
        env.pop(name, None)
    log_file = open(workdir / "server.log", "ab")  # noqa: SIM115 - the child writes to it while it runs
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "experiments.bench_serve:bench_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--log-level", "warning", "--http", PROTOCOL,
         "--no-access-log"],
        cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(workdir / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise TimeoutError("server did not become ready")


def write_payload(workdir: Path, bundle: Path) -> None:
    """A real 10-item list (computed in-process) as the bare endpoint's body."""
    from recsys.bundle import ModelBundle
    from recsys.delivery import DeliveryEngine
    from recsys.query import Filters
    from serving.encode import user_list_json
    from serving.paging import encode_cursor

    engine = DeliveryEngine(ModelBundle.load(bundle))
    user = "u0000001"
    filters = Filters(at=time.time())
    result = engine.for_user(user, 10, filters)
    # the API's own body for this list (every field an item carries), as the bare endpoint's
    version = "local-000000000000"
    cursor = encode_cursor(version, filters.at, [r.item for r in result.items])
    body = json.loads(user_list_json(version, engine, result, user, filters, cursor).body)
    (workdir / "payload.json").write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")


def known_users(bundle: Path, count: int, seed: int) -> list[str]:
    ids = json.loads((bundle / "users" / "users.json").read_text(encoding="utf-8"))["users"]
    return random.Random(seed).sample(ids, min(count, len(ids)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--port", type=int, default=8991)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the off and on servers")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recsys-bench-serve"))
    parser.add_argument("--loadgen", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compare", choices=("trust", "exposures"), default="trust",
                        help="what the two servers differ in: keys and rate limits, or exposure logging")
    args = parser.parse_args(argv)
    if args.loadgen:  # child mode: run one load and print its figures as JSON
        spec = json.loads(args.loadgen.read_text())
        result = asyncio.run(generate_load(spec["base"], spec["paths"], spec["concurrency"], spec["duration"],
                                           spec["warmup"], spec["seed"], spec.get("headers")))
        sys.stdout.write(json.dumps(result) + "\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(args.workdir / f"bundle-{args.users}x{args.items}", args.users, args.items, args.seed)
    write_payload(args.workdir, bundle)
    users = [f"/v1/users/{u}/recommendations?n=10" for u in known_users(bundle, 20_000, args.seed)]
    if args.compare == "exposures":
        compare_exposures(args, bundle, users)
        return
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {"off": [], "on": []}
    for _ in range(args.rounds):  # alternating, so the machine's drift falls on both
        for name, guard, headers in (("off", GUARD_OFF, None), ("on", GUARD_ON, {API_KEY_HEADER: BENCH_KEY})):
            runs[name].append(measure(args, bundle, users, guard, headers))
    report(mean_figures(runs["off"]), args, "trust boundary off (no keys, no rate limits)")
    report(mean_figures(runs["on"]), args, "trust boundary on (read key sent, per-key and per-address limits on)")
    compare(mean_figures(runs["off"]), mean_figures(runs["on"]))


def compare_exposures(args: argparse.Namespace, bundle: Path, users: list[str]) -> None:
    """Exposure logging off and on, alternating ``--rounds`` times on the same machine."""
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for name in ("off", "on"):
            logging_env = {**GUARD_OFF, "RECSYS_EXPOSURE_LOG": "true" if name == "on" else "false"}
            runs[name].append(measure(args, bundle, users, logging_env, None))
    off, on = mean_figures(runs["off"]), mean_figures(runs["on"])
    report(off, args, "exposure logging off")
    report(on, args, "exposure logging on (written before each answer, fsynced within 0.2 s)")
    a, b = off["recommendations"], on["recommendations"]
    sys.stdout.write(f"exposure logging on / off: throughput {b['rps']:.0f} / {a['rps']:.0f} req/s = "
                     f"{b['rps'] / a['rps']:.3f}, p99 {b['p99_ms']:.2f} / {a['p99_ms']:.2f} ms, server CPU per "
                     f"request {b['server_cpu_ms']:.3f} / {a['server_cpu_ms']:.3f} ms (target: throughput ratio "
                     f">= 0.9)\n")


def measure(args: argparse.Namespace, bundle: Path, users: list[str], guard: dict[str, str],
            headers: dict[str, str] | None) -> dict[str, dict[str, Any]]:
    """Both targets on one server started with ``guard``'s settings."""
    server = start_server(args.workdir, bundle, args.port, guard)
    base = f"http://127.0.0.1:{args.port}"
    try:
        return {
            "recommendations": run_loadgen_process(base, users, args, args.workdir, server.pid, headers),
            "bare": run_loadgen_process(base, [BARE_PATH], args, args.workdir, server.pid, headers),
        }
    finally:
        server.terminate()
        server.wait(30)


def mean_figures(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per target, the mean of every numeric figure over the rounds (the first error example kept)."""
    merged: dict[str, dict[str, Any]] = {}
    for target in rounds[0]:
        figures = [r[target] for r in rounds]
        merged[target] = {key: (float(np.mean([f[key] for f in figures])) if isinstance(figures[0][key], int | float)
                                else figures[0][key]) for key in figures[0]}
    return merged


def compare(off: dict[str, dict[str, Any]], on: dict[str, dict[str, Any]]) -> None:
    lines = ["keys and rate limits on / off:"]
    for target in ("recommendations", "bare"):
        a, b = off[target], on[target]
        lines.append(f"  {target:<16} throughput {b['rps']:.0f} / {a['rps']:.0f} req/s = {b['rps'] / a['rps']:.3f}, "
                     f"server CPU per request {b['server_cpu_ms']:.3f} / {a['server_cpu_ms']:.3f} ms "
                     f"= {b['server_cpu_ms'] / a['server_cpu_ms']:.3f} (target: throughput ratio >= 0.9)")
    sys.stdout.write("\n".join(lines) + "\n")


def report(figures: dict[str, dict[str, Any]], args: argparse.Namespace, title: str) -> None:
    rec, bare = figures["recommendations"], figures["bare"]
    lines = [f"{title}: {args.users:,} users x {args.items:,} items, hybrid (ALS 64 factors), 1 worker, "
             f"concurrency {args.concurrency}, {args.duration:.0f}s per target, mean of {args.rounds} round(s)",
             f"{'target':<18}{'requests':>10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
             f"{'server CPU ms/req':>19}"]
    for name, f in figures.items():
        lines.append(f"{name:<18}{f['requests']:>10.0f}{f['rps']:>10.0f}{f['p50_ms']:>10.2f}{f['p99_ms']:>10.2f}"
                     f"{f['errors']:>8.0f}{f['server_cpu_ms']:>19.3f}")
    throughput, tail = rec["rps"] / bare["rps"], rec["p99_ms"] / bare["p99_ms"]
    lines.append(f"throughput ratio {throughput:.2f} (target >= 0.7), p99 ratio {tail:.2f} (target <= 2)")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
