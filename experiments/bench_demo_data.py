"""Benchmark: the synthetic cultural cloud at scale (default 1M users, about 20M interactions).

Each measurement runs in its own child process so that its peak resident memory
(``resource.getrusage(...).ru_maxrss``) is its own:

* ``ours``: :func:`democloud.generate` plus :func:`democloud.write_demo`
  (vectorised numpy, polars frames, zstd Parquet);
* ``peer``: pandas reads the same four tables back and writes them again with
  ``DataFrame.to_parquet`` (pyarrow engine), the common alternative for the write step.

Usage::

    python experiments/bench_demo_data.py                       # full size
    python experiments/bench_demo_data.py --users 100000 --items 4000 --days 30 --no-peer
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TABLES = ("users", "items", "interactions")


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_ours(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from democloud import DemoConfig, generate, write_demo

    config = DemoConfig(users=args.users, items=args.items, days=args.days, seed=args.seed,
                        end_date=dt.date.fromisoformat(args.end_date))
    started = time.perf_counter()
    data = generate(config)
    generated = time.perf_counter()
    write_demo(data, out)
    written = time.perf_counter()
    return {
        "interactions": data.interactions.height, "users": data.users.height, "items": data.items.height,
        "generate_s": round(generated - started, 2), "write_s": round(written - generated, 2),
        "total_s": round(written - started, 2), "peak_rss_gib": round(peak_rss_gib(), 2),
        "bytes_on_disk": sum(p.stat().st_size for p in out.glob("*.parquet")),
    }


def run_peer(out: Path) -> dict[str, Any]:
    import pandas as pd

    started = time.perf_counter()
    frames = {name: pd.read_parquet(out / f"{name}.parquet", engine="pyarrow") for name in TABLES}
    read = time.perf_counter()
    peer_dir = out / "pandas"
    peer_dir.mkdir(exist_ok=True)
    for name, frame in frames.items():
        frame.to_parquet(peer_dir / f"{name}.parquet", engine="pyarrow", index=False)
    written = time.perf_counter()
    return {
        "read_s": round(read - started, 2), "write_s": round(written - read, 2),
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "bytes_on_disk": sum(p.stat().st_size for p in peer_dir.glob("*.parquet")),
    }


def child(role: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    command = [sys.executable, __file__, "--role", role, "--out", str(out), "--users", str(args.users),
               "--items", str(args.items), "--days", str(args.days), "--seed", str(args.seed),
               "--end-date", args.end_date]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=52, help="52 days give about 20M interactions at 1M users")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--end-date", default="2025-11-20")
    parser.add_argument("--out", type=Path, default=None, help="Keep the files here (default: a temp dir)")
    parser.add_argument("--no-peer", action="store_true", help="Skip the pandas write peer")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON")
    parser.add_argument("--role", choices=("ours", "peer"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role == "ours":
        print(json.dumps(run_ours(args, args.out)))
        return
    if args.role == "peer":
        print(json.dumps(run_peer(args.out)))
        return

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_demo_"))
    try:
        results = {"config": {k: getattr(args, k) for k in ("users", "items", "days", "seed", "end_date")}}
        results["ours"] = child("ours", args, out)
        if not args.no_peer:
            results["peer_pandas"] = child("peer", args, out)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    report(results, as_json=args.json)


def report(results: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    ours = results["ours"]
    rate = ours["interactions"] / max(ours["generate_s"], 1e-9)
    print(f"config: {results['config']}")
    print(f"ours  : {ours['interactions']:,} interactions, {ours['users']:,} users, {ours['items']:,} items")
    print(f"        generate {ours['generate_s']} s ({rate / 1e6:.2f} M rows/s), write {ours['write_s']} s, "
          f"total {ours['total_s']} s, peak RSS {ours['peak_rss_gib']} GiB, "
          f"{ours['bytes_on_disk'] / 2**20:.0f} MiB Parquet")
    peer = results.get("peer_pandas")
    if peer:
        print(f"pandas: read {peer['read_s']} s, write {peer['write_s']} s, peak RSS {peer['peak_rss_gib']} GiB, "
              f"{peer['bytes_on_disk'] / 2**20:.0f} MiB Parquet (same frames, pyarrow engine)")


if __name__ == "__main__":
    main()
