"""Options and output helpers shared by every ``recsys`` verb.

Exit codes, the same for every verb (a scheduler tells the outcomes apart by them):
:data:`EXIT_OK` 0 (done, promoted, or nothing to do), :data:`EXIT_FAILURE` 1 (an unexpected
failure), :data:`EXIT_BAD_INPUT` 2 (bad input or configuration, refused before any change),
:data:`EXIT_REFUSED` 3 (``recsys train``: a model was trained and registered but the gate
kept the champion). With ``--json`` an error is a JSON object on stdout too
(``{"error": ..., "exit_code": ...}``), so a script reads one stream whatever happened.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3

_json_errors = ContextVar("json_errors", default=False)
"""Whether this invocation asked for ``--json`` (errors then go to stdout as JSON too)."""

_json_document_written = ContextVar("json_document_written", default=False)
"""Whether this invocation already wrote its JSON document: stdout then holds exactly that one
document (it states the failure itself, e.g. ``store-verify``'s ``healthy: false``), so an error
after it is not written as a second one."""


def _remember_json(value: bool) -> bool:
    # an option callback runs while the verb's options are parsed: before any error it could raise
    _json_errors.set(bool(value))
    return value


def reset_json_errors() -> None:
    """Forget a previous invocation's ``--json`` (several invocations can share one process)."""
    _json_errors.set(False)
    _json_document_written.set(False)


JsonOption = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary (errors too)",
                                          callback=_remember_json)]

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
        _json_document_written.set(True)
        return
    if render is not None:
        render(summary)
        return
    out = stdout_console()
    for key, value in summary.items():
        out.print(f"[bold]{key}[/bold]: {value}")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print an error on stderr (and as JSON on stdout with ``--json``); return the Exit to raise."""
    console.print(f"[red]error:[/red] {escape(message)}")
    if _json_errors.get() and not _json_document_written.get():
        sys.stdout.write(json.dumps({"error": message, "exit_code": code}, ensure_ascii=False) + "\n")
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected input errors into exit code 2 with one clear line (no traceback).

    With ``--json`` an unexpected error is reported the same way with exit code 1 (its
    traceback goes to the log on stderr); without it the traceback is the report.
    """
    try:
        yield
    except ContractError as exc:
        raise fail(str(exc)) from exc
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    except Exception as exc:
        if not _json_errors.get():
            raise
        log.exception("unexpected failure")
        raise fail(f"{type(exc).__name__}: {exc}", EXIT_FAILURE) from exc
