"""Validated ingestion into the store: provider files and the API's incoming segments.

``ingest`` reads interactions/users/items (CSV or Parquet) plus every new complete line of
``store/incoming/*.jsonl``, validates them with :mod:`features.validate`, and in one
transaction (:mod:`features.writer`) appends the good interactions to the day partitions,
upserts users and items by id, and sends every other row to ``store/quarantine`` with its
reason. For every table ``input_rows == accepted + quarantined + duplicates`` where a
duplicate is a valid row already in the store or repeated earlier in the same batch.

A file that cannot be read or lacks a required column raises
:class:`recsys.contract.ContractError` before anything touches the disk. A file whose
sha256 is already in the log is skipped. ``retry_quarantine`` runs the same validation
over the quarantined rows (an interaction whose item arrived since then now passes).

Right to erasure: rows of a user listed in ``store/tombstones.jsonl`` never enter the
store (they are counted as ``erased``: ``input_rows == accepted + quarantined + duplicates
+ erased``), and every ingest compacts users erased since the last compaction away
(:mod:`features.ingest.erasure`).

Segments of stopped servers that are wholly in the store are deleted after a retention
period (:mod:`features.incoming`), so the folder does not grow with every server start.

The package, one module per job:

* :mod:`~features.ingest.files`: provider files, hashed and read as strings;
* :mod:`~features.ingest.api_lines`: the API's new complete lines;
* :mod:`~features.ingest.erasure`: erased users dropped from batches and compacted out of the store;
* :mod:`~features.ingest.evaluate`: validation, de-duplication, upserts and counts of one batch;
* :mod:`~features.ingest.commit`: one run's changes as one transaction;
* :mod:`~features.ingest.jobs`: ``ingest``, ``retry_quarantine``, ``read_incoming``;
* :mod:`~features.ingest.info`: ``store_info``;
* :mod:`~features.ingest.summary` and :mod:`~features.ingest.columns`: counts and the raw row shape.

This module is the package's interface: import the jobs from here.
"""

from features.ingest.files import read_table_file
from features.ingest.info import store_info
from features.ingest.jobs import ingest, read_incoming, retry_quarantine
from features.ingest.summary import CONFLICT_EXAMPLES, IngestSummary, TableCounts
from features.lock import StoreLocked, writer_lock
from features.writer import recover

__all__ = [
    "CONFLICT_EXAMPLES", "IngestSummary", "StoreLocked", "TableCounts", "ingest", "read_incoming", "read_table_file",
    "recover", "retry_quarantine", "store_info", "writer_lock",
]
