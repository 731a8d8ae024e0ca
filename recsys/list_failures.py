"""Failed list requests on record, per experiment variant: the input of the error-rate guardrail.

Every server process appends one JSON line per list request it failed (a 5xx answer or an
unhandled exception on the user, region or similar-item list) to its own file under
``<home>/serving/list_failures/`` (:mod:`serving.list_failures`), fsynced like every other
record the servers keep, so the count survives restarts and is the same whichever worker
failed. A line holds the time, the variant the request was served under, the endpoint and
the status; nothing about the resident, so erasure has nothing to remove here.

``recsys experiment report`` counts the lines of the experiment's time span per variant
(:func:`count_failures`) and sets the challenger's against its served lists.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def failure_record(variant: str, endpoint: str, status: int, ts: datetime | None = None) -> dict[str, Any]:
    """The line of one failed list request."""
    moment = (ts or datetime.now(UTC)).astimezone(UTC)
    return {"ts": moment.isoformat(timespec="milliseconds"), "variant": variant, "endpoint": endpoint,
            "status": status}


def read_failures(directory: Path) -> list[dict[str, Any]]:
    """Every complete, readable line of every server's file (a torn last line is skipped)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:  # a file removed between listing and reading holds nothing to count
            continue
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("variant"), str) and isinstance(row.get("ts"), str):
                rows.append(row)
    return rows


def count_failures(directory: Path, since: datetime, until: datetime | None = None) -> Counter[str]:
    """Failed list requests per variant between ``since`` and ``until`` (both included)."""
    counts: Counter[str] = Counter()
    for row in read_failures(directory):
        try:
            moment = datetime.fromisoformat(row["ts"])
        except ValueError:
            log.warning("list failure line with an unreadable time skipped: %r", row["ts"])
            continue
        if moment >= since and (until is None or moment <= until):
            counts[row["variant"]] += 1
    return counts
