"""Durability primitives shared by the store writers and the API: fsync a file or a folder.

A rename or a new file is only durable once its directory entry is; every writer that
promises "nothing acknowledged is lost" goes through these two functions.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file's data and metadata to disk."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
