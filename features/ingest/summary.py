"""What an ingest run reports and logs: per-table counts that reconcile, and its log entry.

For every table ``input_rows == accepted + quarantined + duplicates + erased``: a row is
stored, sent to quarantine with its reason, recognised as already stored (or repeated in
the batch), or dropped because its user was erased on request. The same counts go into
the run's line of ``ingest_log.jsonl``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONFLICT_EXAMPLES = 5
"""How many conflicting ids an ingest summary names (it counts them all)."""


@dataclass
class TableCounts:
    """What happened to the rows of one table in one run."""

    input_rows: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    skipped_same_file: bool = False
    erased: int = 0
    """Rows of users erased on request: dropped, never stored."""
    conflicting_ids: int = 0
    """Ids (items, users) given by several valid rows of this run with different values; the last row wins."""
    conflict_examples: list[str] = field(default_factory=list)
    """Up to :data:`CONFLICT_EXAMPLES` of those ids, smallest first."""
    flagged: dict[str, int] = field(default_factory=dict)
    """Accepted rows flagged as likely poisoning (:mod:`features.poisoning`), per reason: stored, left out."""
    flagged_by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    """The same per source (app name or ``file:<name>``), then per reason."""

    @property
    def reconciles(self) -> bool:
        return self.input_rows == self.accepted + self.quarantined + self.duplicates + self.erased

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if not self.erased:  # the usual case keeps the usual shape
            del values["erased"]
        if not self.conflicting_ids:
            del values["conflicting_ids"], values["conflict_examples"]
        if not self.flagged:
            del values["flagged"], values["flagged_by_source"]
        return {**values, "reconciles": self.reconciles}


@dataclass
class IngestSummary:
    """The outcome of one ``ingest`` or ``retry_quarantine`` run."""

    ingest_id: str
    tables: dict[str, TableCounts]
    quarantine_file: Path | None
    committed: bool = False
    removed_segments: list[str] = field(default_factory=list)
    """Fully ingested API segments of stopped servers deleted by this run (:mod:`features.incoming`)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ingest_id": self.ingest_id,
            "committed": self.committed,
            "tables": {name: counts.to_dict() for name, counts in self.tables.items()},
            "quarantine_file": str(self.quarantine_file) if self.quarantine_file else None,
            "removed_segments": list(self.removed_segments),
            "rule": "input_rows = accepted + quarantined + duplicates (+ erased)",
        }


def add_erased(tables: dict[str, TableCounts], dropped: dict[str, int]) -> None:
    """Count rows dropped for erased users (per source table) as input and erased."""
    for table, n in dropped.items():
        counts = tables.setdefault(table, TableCounts())
        counts.input_rows += n
        counts.erased += n


def log_entry(kind: str, counts: dict[str, TableCounts], **extra: Any) -> dict[str, Any]:
    """The run's line of the ingest log, before the files it commits are added."""
    return {
        "kind": kind,
        "time": datetime.now(UTC).isoformat(),
        "tables": {name: c.to_dict() for name, c in counts.items()},
        **extra,
    }


def log_summary(summary: IngestSummary) -> None:
    for name, c in summary.tables.items():
        log.info("%s %s: %d in = %d accepted + %d quarantined + %d duplicates", summary.ingest_id, name,
                 c.input_rows, c.accepted, c.quarantined, c.duplicates)
