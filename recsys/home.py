"""The engine home: one directory holding the store, the MLflow data and the reports.

Every command resolves its paths through :class:`EngineHome` so that the layout is
written down once. The home is ``$RECSYS_HOME`` or ``./.recsys``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".recsys"
REGISTERED_MODEL = "cultural-recsys"
EXPERIMENT = "cultural-recsys"
CHAMPION = "champion"
"""The registered model's alias that servers load and the training gate promotes to."""


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Return the engine home: the argument, else ``$RECSYS_HOME``, else ``./.recsys``."""
    chosen = home or os.environ.get("RECSYS_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class EngineHome:
    """Paths inside one engine home. Creating the object touches nothing on disk."""

    root: Path

    @classmethod
    def at(cls, home: str | os.PathLike[str] | None = None) -> EngineHome:
        return cls(resolve_home(home))

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def items(self) -> Path:
        return self.store / "items.parquet"

    @property
    def users(self) -> Path:
        return self.store / "users.parquet"

    @property
    def interactions(self) -> Path:
        """Hive-partitioned by day: ``interactions/date=YYYY-MM-DD/<ingest-id>.parquet``."""
        return self.store / "interactions"

    @property
    def quarantine(self) -> Path:
        return self.store / "quarantine"

    @property
    def ingest_log(self) -> Path:
        return self.store / "ingest_log.jsonl"

    @property
    def incoming(self) -> Path:
        """Durable JSON-lines segments written by the API, picked up by the next ingest."""
        return self.store / "incoming"

    @property
    def item_lines(self) -> Path:
        """Durable JSON-lines segments of catalogue writes to the API (one per server process),
        folded into ``items.parquet`` by the next ingest (:mod:`recsys.live_catalog`)."""
        return self.incoming / "items"

    @property
    def tombstones(self) -> Path:
        """Erased users (right to erasure), applied to reads and compacted on the next ingest."""
        return self.store / "tombstones.jsonl"

    @property
    def controls(self) -> Path:
        """The residents' own choices (personalisation, senior mode, interest tags): recsys.controls."""
        return self.store / "user_controls.jsonl"

    @property
    def requests(self) -> Path:
        """Residents' requests (点单), rewritten whole by each ingest that changes them."""
        return self.store / "requests.parquet"

    @property
    def request_lines(self) -> Path:
        """Durable JSON-lines segments of requests posted to the API, one per server process."""
        return self.store / "requests_incoming"

    @property
    def exposure_lines(self) -> Path:
        """Durable JSON-lines segments of served lists (exposures), one per server process."""
        return self.store / "exposures_incoming"

    @property
    def exposures(self) -> Path:
        """Served lists folded in by ingest, ``date=YYYY-MM-DD/`` Parquet partitions."""
        return self.store / "exposures"

    @property
    def experiment(self) -> Path:
        """The A/B test every server process follows (:mod:`recsys.experiment`)."""
        return self.root / "serving" / "experiment.json"

    @property
    def list_failures(self) -> Path:
        """Failed list requests per variant, one file per server process (:mod:`recsys.list_failures`)."""
        return self.root / "serving" / "list_failures"

    @property
    def lock(self) -> Path:
        return self.store / ".writer.lock"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def registry_marker(self) -> Path:
        """Which model registry this home uses (its identity), to notice a lost or swapped one."""
        return self.root / "registry.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def online_report(self) -> Path:
        """The latest online report (``recsys online-report``), whose summary ``GET /v1/online/metrics`` serves."""
        return self.root / "online" / "latest"

    @property
    def serving_cache(self) -> Path:
        """The last-known-good copy of the model a server serves."""
        return self.root / "serving" / "last_known_good"

    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` if set, else a SQLite store inside the home."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db}"
