"""Verbs of the `recsys` command line (train_cmds)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the app."""
