"""Read the latest planners' report (``<home>/reports/latest``) for the API.

The report job publishes a whole new directory with a rename, so the identity of
``summary.json`` (inode, mtime, size) changes with every report; the parsed JSON is cached
under that key and re-read only when it changes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ReportUnavailable(LookupError):
    """No report has been written yet (or it is being replaced this instant)."""


class ReportUnreadable(RuntimeError):
    """A report file exists but cannot be parsed."""


class ReportFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._summary: dict[str, Any] | None = None

    @property
    def summary_path(self) -> Path:
        return self.directory / "summary.json"

    @property
    def html_path(self) -> Path:
        return self.directory / "report.html"

    def summary(self) -> dict[str, Any]:
        """The parsed ``summary.json``, cached on its file identity."""
        try:
            stat = os.stat(self.summary_path)
        except FileNotFoundError as exc:
            raise ReportUnavailable("no report has been written yet; run `recsys report`") from exc
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key != self._key or self._summary is None:
                self._summary = self._read()
                self._key = key
            return self._summary

    def _read(self) -> dict[str, Any]:
        try:
            document = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:  # replaced between stat and open
            raise ReportUnavailable("the report is being replaced; retry") from exc
        except (OSError, ValueError) as exc:
            raise ReportUnreadable(f"cannot read {self.summary_path.name}: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("regions"), dict):
            raise ReportUnreadable(f"{self.summary_path.name} has no regions table")
        return document

    def html(self) -> bytes:
        try:
            return self.html_path.read_bytes()
        except FileNotFoundError as exc:
            raise ReportUnavailable("no report has been written yet; run `recsys report`") from exc
