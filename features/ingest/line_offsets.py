"""Small crash-safe writes shared by the ingest steps that read the API's JSON-lines segments.

A step remembers how far it read each segment in a JSON file of offsets, and replaces whole
Parquet files in one rename, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl

from recsys.durable import fsync_dir


def read_offsets(path: Path) -> dict[str, int]:
    """Per segment name, the byte offset read so far (none when the file is missing or unreadable)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}


def write_offsets(path: Path, offsets: dict[str, int]) -> None:
    """Replace the offsets file in one rename."""
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(json.dumps(offsets, sort_keys=True), encoding="utf-8")
    os.replace(staged, path)
    fsync_dir(path.parent)


def replace_parquet(frame: pl.DataFrame, target: Path) -> None:
    """Write ``frame`` beside ``target`` and rename it over: readers see the old table or the new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    frame.write_parquet(staged)
    with open(staged, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(staged, target)
    fsync_dir(target.parent)
