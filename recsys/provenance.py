"""Where a stored interaction came from, and whether ingest flagged it: the shared names.

Poisoning defences (:mod:`features.poisoning`) judge rows by who sent them, so every
interaction carries its *source* from the moment it is received: the API writes the posting
app's name (the key's app, :mod:`serving.auth`) into each line of its incoming segments, and
ingest names a provider file ``file:<file name>``. The store keeps the source and the flag
(the reason ingest set aside a row, or null) as two extra columns of every interaction.

The names live here, in the core, because the API (which writes the line field) and the
feature pipelines (which read it and own the rules) must agree on them and may not import
each other.
"""

from __future__ import annotations

from pathlib import PurePath

SOURCE = "source"
"""The field of an incoming line and the stored column: who sent the interaction."""

FLAG = "flag"
"""The stored column holding why ingest flagged a row (null: not flagged)."""

UNKNOWN_API_SOURCE = "api"
"""Source of a posted line that names no app (written before sources were recorded)."""

FILE_PREFIX = "file:"


def file_source(path: str | PurePath) -> str:
    """The source of rows read from a provider file: ``file:<name>`` (no directory: no paths in the store)."""
    return f"{FILE_PREFIX}{PurePath(path).name}"
