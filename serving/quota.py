"""Daily row quota per app for posted interactions, shared by every server process of a home.

Each ``POST /v1/interactions`` reserves its rows (every posted element, accepted or not:
a quota bounds what an app may make the engine read and judge) before it is processed. The
reservations of a UTC day are appended as JSON lines to ``<home>/serving/quota/<day>.jsonl``
under an exclusive ``flock``, which every process (``--workers N``, a restarted server, the
other replicas on a shared home) reads up to its end first: the check and the reservation are
one atomic step across processes, so the quota holds for the app as a whole, not per worker.

The ledger is not fsynced (a quota is not a record of what was stored); a machine crash may
forget the last reservations, in the app's favour. Files of past days are deleted when a new
day's first reservation is made.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

DAY_SECONDS = 86_400


class QuotaExceeded(Exception):
    """The app's rows for today would pass the quota."""

    def __init__(self, remaining: int, retry_after: float) -> None:
        super().__init__(f"{remaining} rows left today")
        self.remaining = remaining
        self.retry_after = retry_after


class DailyQuota:
    """At most ``rows_per_day`` rows per app and UTC day (0 = no quota)."""

    def __init__(self, directory: Path, rows_per_day: int, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.rows_per_day = rows_per_day
        self.clock = clock
        self._lock = threading.Lock()
        self._day: str | None = None
        self._offset = 0
        self._used: dict[str, int] = {}

    def reserve(self, app: str, rows: int) -> None:
        """Count ``rows`` for ``app`` today, or raise :class:`QuotaExceeded` and count nothing."""
        if self.rows_per_day == 0 or rows <= 0:
            return
        now = self.clock()
        day = datetime.fromtimestamp(now, UTC).date().isoformat()
        with self._lock, self._ledger(day) as ledger:
            counts, torn = self._read_new(ledger)
            used = counts.get(app, 0)
            if used + rows > self.rows_per_day:
                raise QuotaExceeded(max(0, self.rows_per_day - used), seconds_to_midnight(now))
            line = json.dumps({"app": app, "rows": rows}, ensure_ascii=False).encode("utf-8") + b"\n"
            if torn:
                line = b"\n" + line
            ledger.write(line)
            ledger.flush()
            self._offset += len(line)
            self._used[app] = used + rows

    def used(self, app: str) -> int:
        """Rows counted for ``app`` today as this process last read them."""
        return self._used.get(app, 0)

    @contextlib.contextmanager
    def _ledger(self, day: str) -> Iterator[BinaryIO]:
        """Today's ledger, open for appending and locked against every other process."""
        if day != self._day:
            self._start_day(day)
        with open(self.directory / f"{day}.jsonl", "a+b") as ledger:
            fcntl.flock(ledger, fcntl.LOCK_EX)  # released when the file closes
            yield ledger

    def _start_day(self, day: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._day, self._offset, self._used = day, 0, {}
        for old in self.directory.glob("*.jsonl"):
            if old.stem < day:
                with contextlib.suppress(OSError):  # another process may have removed it first
                    old.unlink()

    def _read_new(self, ledger: BinaryIO) -> tuple[dict[str, int], bool]:
        """Fold the lines appended since the last look (by any process) into the counts; also
        whether the file ends in a torn line (a crash mid-write), which the next line must not extend."""
        end = os.fstat(ledger.fileno()).st_size
        if end <= self._offset:
            return self._used, False
        ledger.seek(self._offset)
        chunk = ledger.read(end - self._offset)
        for line in chunk.splitlines():
            self._count(line)
        self._offset = end
        return self._used, not chunk.endswith(b"\n")

    def _count(self, line: bytes) -> None:
        try:
            record = json.loads(line)
            app, rows = str(record["app"]), int(record["rows"])
        except (ValueError, KeyError, TypeError):
            if line.strip():
                log.warning("skipping an unreadable quota ledger line")
            return
        self._used[app] = self._used.get(app, 0) + rows


def seconds_to_midnight(now: float) -> float:
    """Seconds until the next UTC day starts (when a quota resets)."""
    moment = datetime.fromtimestamp(now, UTC)
    midnight = datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
    return max(1.0, (midnight - moment).total_seconds())
