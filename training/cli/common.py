"""Options and output helpers shared by every ``recsys`` verb."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from recsys.contract import ContractError
from recsys.home import EngineHome

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Engine home (store, MLflow, reports). Default $RECSYS_HOME or ./.recsys"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary")]

log = logging.getLogger(__name__)


def stdout_console() -> Console:
    """The console a command's summary goes to. ``soft_wrap``: a line is never broken at the
    terminal or pipe width, so scripts and tests can match whole messages (paths included)."""
    return Console(soft_wrap=True)


def stderr_console() -> Console:
    """The console errors and progress go to (never wraps, like :func:`stdout_console`)."""
    return Console(stderr=True, soft_wrap=True)


console = stderr_console()


def home_of(home: Path | None) -> EngineHome:
    return EngineHome.at(home)


def emit(summary: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Print a command's summary: JSON on stdout with ``--json``, else a short human table."""
    if as_json:
        sys.stdout.write(json.dumps(summary, ensure_ascii=False, default=str, indent=2) + "\n")
        return
    if render is not None:
        render(summary)
        return
    out = stdout_console()
    for key, value in summary.items():
        out.print(f"[bold]{key}[/bold]: {value}")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error on stderr and return the Exit to raise."""
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected input errors into exit code 2 with one clear line (no traceback)."""
    try:
        yield
    except ContractError as exc:
        raise fail(str(exc)) from exc
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
