"""The latest online report's summary for ``GET /v1/online/metrics``.

``recsys online-report`` computes the metrics from the store and publishes
``<home>/online/latest/summary.json`` with a rename; the server only reads it (it cannot
compute them: the store's tables need the feature pipelines, and one process's counters see
one worker's traffic). The parsed document is cached on the file's identity (inode, mtime,
size), so a new report is served at its first request.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class OnlineReportMissing(LookupError):
    """No online report has been written yet (or it is being replaced this instant)."""


class OnlineReportFile:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "summary.json"
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._document: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The parsed summary; :class:`OnlineReportMissing` when there is none to read."""
        try:
            stat = os.stat(self.path)
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            with self._lock:
                if key != self._key or self._document is None:
                    document = json.loads(self.path.read_text(encoding="utf-8"))
                    if not isinstance(document, dict):
                        raise ValueError("not a JSON object")
                    self._document, self._key = document, key
                return self._document
        except FileNotFoundError as exc:
            raise OnlineReportMissing("no online report has been written yet; run `recsys online-report`") from exc
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", self.path, exc)
            raise OnlineReportMissing(f"the online report cannot be read ({exc}); run `recsys online-report`") from exc
