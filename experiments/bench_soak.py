"""Soak benchmark: the API under a steady request rate for minutes, with a model reload midway.

    python -m experiments.bench_soak [--duration 120] [--rate 100] [--users 20000] [--items 2000]

1. Builds (once, cached under ``--workdir``) an engine home: the synthetic cultural cloud
   (``democloud``, activity up to today so items are current), two hybrid models
   fitted on it with different settings, both registered in the home's MLflow registry
   through ``training.registry``; version 1 is the champion.
2. Starts a real uvicorn process (one worker) serving the champion from the registry, with
   an app key (``RECSYS_API_KEYS``, scopes read + write:interactions) that every request
   sends as ``X-API-Key`` (personal lists and posts need one) and an admin key for the
   reload. The limits stay on, with the key's rate raised to twice the soak rate so the
   soak's own pace is never refused.
3. Sends an open-loop load at a fixed rate (requests are scheduled at ``i / rate`` whatever
   the answers do, so a slow server cannot slow the load down) for ``--duration`` seconds:
   60 % personal lists (known users, and 10 % strangers), 20 % similar items, 20 % posted
   interactions (1-3 per request). Halfway, version 2 becomes champion and
   ``POST /v1/admin/reload`` swaps it in under the load.
4. Reports errors (any non-2xx or transport error), p50/p99/max latency per kind, the
   achieved rate, the reload's outcome and duration, and the server's resident memory
   (``VmRSS``) after warm-up, every 10 s, and at the end (growth = leak suspicion).

Every loop is bounded in count and time and only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "soak-admin-key-0123456789"
APP_KEY = "soak-app-key-0123456789"
"""The load's app key: plain-text keys need at least 16 characters (``serving.auth``)."""
APP_SCOPES = "read+write:interactions"
MAX_IN_FLIGHT = 256
"""Cap on concurrent requests: a stalled server shows as errors and latency, not as a fork bomb."""


# ---- the engine home --------------------------------------------------------------------
def build_home(workdir: Path, users: int, items: int, days: int, seed: int) -> Path:
    """A home with two registered versions of a hybrid model (1 = champion); cached by size."""
    root = workdir / f"home-{users}x{items}x{days}-s{seed}"
    marker = root / "soak.json"
    if marker.exists():
        log.info("reusing the engine home at %s", root)
        return root
    shutil.rmtree(root, ignore_errors=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from democloud import DemoConfig, generate
    from features.dataset import StoreFrames, build_dataset
    from recsys import models
    from recsys.bundle import ModelBundle
    from recsys.home import EngineHome
    from recsys.settings import EngineSettings
    from training import registry

    started = time.perf_counter()
    demo = generate(DemoConfig(users=users, items=items, days=days, seed=seed))
    frames = StoreFrames(demo.interactions.lazy(), demo.users.lazy(), demo.items.lazy())
    data = build_dataset(frames, EngineSettings(), test_days=None, seed=seed).full
    home = EngineHome.at(root)
    client = registry.connect(home)
    for version, params in enumerate(({"als": {"factors": 32, "iterations": 8}},
                                      {"als": {"factors": 48, "iterations": 8}, "content_weight": 0.5}), start=1):
        model = models.create("hybrid", params).fit(data)
        manifest = {"trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metrics": {},
                    "synthetic": "experiments.bench_soak", "params": params}
        bundle = ModelBundle(model, data.catalog, data.users, data.weights, EngineSettings(), manifest)
        bundle_dir = bundle.save(workdir / f"bundle-{version}")
        with mlflow.start_run(run_name=f"soak-{version}"):
            registered = registry.register(client, registry.log_bundle(bundle_dir), tags={"soak": str(version)})
        if version == 1:
            registry.promote(client, registered)
        shutil.rmtree(bundle_dir)
    marker.write_text(json.dumps({"users": data.users.users.ids[:5000], "items": data.catalog.items.ids[:2000]}),
                      encoding="utf-8")
    log.info("engine home built in %.1fs", time.perf_counter() - started)
    return root


def promote(root: Path, version: str) -> None:
    from recsys.home import EngineHome
    from training import registry

    registry.promote(registry.connect(EngineHome.at(root)), version)


# ---- the server -------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, log_file: Path, rate: float) -> subprocess.Popen[bytes]:
    from serving.config import ServingSettings, env_name

    per_key = max(ServingSettings.model_fields["rate_per_key"].default, 2 * rate)
    env = {**os.environ, "RECSYS_HOME": str(root), "RECSYS_ADMIN_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1",
           env_name("api_keys"): f"{APP_KEY}={APP_SCOPES}", env_name("rate_per_key"): str(per_key),
           env_name("burst_per_key"): str(int(2 * per_key)),
           "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return process


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server not ready after {timeout}s")


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---- the load ---------------------------------------------------------------------------
@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)

    def record(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)


def request_for(index: int, rng: random.Random, users: list[str], items: list[str]) -> tuple[str, str, str, Any]:
    """(kind, method, path, body) of the ``index``-th request of the mix."""
    draw = rng.random()
    if draw < 0.6:
        user = users[rng.randrange(len(users))] if rng.random() >= 0.1 else f"stranger-{index}"
        return "recommendations", "GET", f"/v1/users/{user}/recommendations?n=10", None
    if draw < 0.8:
        return "similar", "GET", f"/v1/items/{items[rng.randrange(len(items))]}/similar?n=10", None
    user = users[rng.randrange(len(users))]
    batch = [{"user_id": user, "item_id": items[rng.randrange(len(items))], "action": rng.choice(
        ["view", "click", "favorite", "reserve"]), "ts": time.time()} for _ in range(rng.randint(1, 3))]
    return "interactions", "POST", "/v1/interactions", batch


async def one(client, tally: Tally, gate: asyncio.Semaphore, kind: str, method: str, path: str, body: Any) -> None:
    import httpx

    async with gate:
        started = time.perf_counter()
        try:
            response = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            tally.errors.append(f"{kind}: {type(exc).__name__}")
            return
        tally.record(kind, time.perf_counter() - started)
        if response.status_code >= 300:
            tally.errors.append(f"{kind}: {response.status_code} {response.text[:120]}")
        elif kind == "recommendations":
            version = response.json().get("model_version", "?")
            tally.versions[version] = tally.versions.get(version, 0) + 1


async def soak(base: str, pid: int, root: Path, args: argparse.Namespace, users: list[str],
               items: list[str]) -> dict[str, Any]:
    import httpx

    rng = random.Random(args.seed)
    tally = Tally()
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    total = int(args.duration * args.rate)
    memory = [(0.0, rss_mib(pid))]
    reload: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits, headers=key_headers()) as client:
        started = time.perf_counter()
        tasks: list[asyncio.Task] = []
        reload_task: asyncio.Task | None = None
        next_sample = 10.0
        for index in range(total):
            due = started + index / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elapsed = time.perf_counter() - started
            if reload_task is None and elapsed >= args.duration / 2:
                reload_task = asyncio.create_task(do_reload(client, root, reload))
            if elapsed >= next_sample:
                memory.append((round(elapsed, 1), rss_mib(pid)))
                next_sample += 10.0
            tasks.append(asyncio.create_task(one(client, tally, gate, *request_for(index, rng, users, items))))
        await asyncio.gather(*tasks)
        if reload_task is not None:
            await reload_task
        wall = time.perf_counter() - started
    memory.append((round(wall, 1), rss_mib(pid)))
    return summarize(tally, total, wall, memory, reload, args)


async def do_reload(client, root: Path, out: dict[str, Any]) -> None:
    await asyncio.to_thread(promote, root, "2")
    started = time.perf_counter()
    from serving.auth import API_KEY_HEADER

    response = await client.post("/v1/admin/reload", headers={API_KEY_HEADER: ADMIN_KEY}, timeout=120)
    out.update(status=response.status_code, body=response.json(), seconds=round(time.perf_counter() - started, 2))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summarize(tally: Tally, total: int, wall: float, memory: list[tuple[float, float]],
              reload: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    kinds = {kind: {"requests": len(values), "p50_ms": round(percentile(values, 50) * 1000, 2),
                    "p99_ms": round(percentile(values, 99) * 1000, 2), "max_ms": round(max(values) * 1000, 2)}
             for kind, values in sorted(tally.latencies.items())}
    everything = [v for values in tally.latencies.values() for v in values]
    return {
        "duration_s": round(wall, 1), "target_rate": args.rate, "requests": total,
        "achieved_rate": round(total / wall, 1), "errors": len(tally.errors), "error_samples": tally.errors[:10],
        "p50_ms": round(percentile(everything, 50) * 1000, 2), "p99_ms": round(percentile(everything, 99) * 1000, 2),
        "by_kind": kinds, "reload": reload, "versions_served": tally.versions,
        "rss_mib": {"start": round(memory[0][1], 1), "end": round(memory[-1][1], 1),
                    "growth": round(memory[-1][1] - memory[0][1], 1),
                    "samples": [(t, round(m, 1)) for t, m in memory]},
    }


def key_headers() -> dict[str, str]:
    """The app key every request of the load sends."""
    from serving.auth import API_KEY_HEADER

    return {API_KEY_HEADER: APP_KEY}


def warm_up(base: str, users: list[str], items: list[str], count: int = 300) -> None:
    """Touch every route a few hundred times so caches and allocator pools settle before RSS is read."""
    import httpx

    with httpx.Client(base_url=base, timeout=30, headers=key_headers()) as client:
        for k in range(count):
            client.get(f"/v1/users/{users[k % len(users)]}/recommendations", params={"n": 10}).raise_for_status()
            client.get(f"/v1/items/{items[k % len(items)]}/similar", params={"n": 10}).raise_for_status()


# ---- main -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (open loop)")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recsys-bench-soak"))
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 3600 or not 0 < args.rate <= 2000:
        parser.error("--duration must be in (0, 3600] and --rate in (0, 2000]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("mlflow", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)

    root = build_home(args.workdir, args.users, args.items, args.days, args.seed)
    promote(root, "1")
    picked = json.loads((root / "soak.json").read_text(encoding="utf-8"))
    shutil.rmtree(root / "store" / "incoming", ignore_errors=True)  # posts of an earlier run
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(root, port, args.workdir / "server.log", args.rate)
    try:
        wait_ready(base, server)
        warm_up(base, picked["users"], picked["items"])
        figures = asyncio.run(soak(base, server.pid, root, args, picked["users"], picked["items"]))
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    if not args.json:
        report(figures)


def report(figures: dict[str, Any]) -> None:
    memory = figures["rss_mib"]
    print(f"\n{figures['requests']} requests in {figures['duration_s']} s "
          f"({figures['achieved_rate']}/s of {figures['target_rate']}/s target): {figures['errors']} errors; "
          f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")
    for kind, row in figures["by_kind"].items():
        print(f"  {kind:16s} {row['requests']:6d} req  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
              f"max {row['max_ms']:7.2f} ms")
    reload = figures["reload"]
    print(f"reload: HTTP {reload.get('status')} in {reload.get('seconds')} s -> {reload.get('body')}; "
          f"lists by version: {figures['versions_served']}")
    print(f"server RSS: {memory['start']} MiB after warm-up -> {memory['end']} MiB at the end "
          f"(growth {memory['growth']} MiB)")


if __name__ == "__main__":
    main()
