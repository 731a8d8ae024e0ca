"""``recsys model-card``: the algorithm description of a model version (算法机制说明)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys.home import EngineHome
from training.cli.common import HomeOption, JsonOption, emit, home_of, user_errors


def model_card_cmd(
    version: Annotated[str | None, typer.Option("--version", help="Registered version (default champion)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Directory for model_card.md and model_card.html "
                                                           "(default <home>/reports/model_card/<version>)")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the mechanism description of a version for filing and for the public (Markdown and HTML,
    Chinese first), and log it as an artifact of the version's run."""
    from training.model_card import version_card

    engine_home = home_of(home)
    with user_errors():
        target = out or engine_home.reports / "model_card" / (version or _champion(engine_home))
        written = version_card(engine_home, version, target)
    emit(written, as_json)


def _champion(home: EngineHome) -> str:
    from training import registry

    champion = registry.champion(registry.connect(home))
    if champion is None:
        raise ValueError("no champion model yet: run `recsys train` first (or pass --version)")
    return champion.version


def register(app: typer.Typer) -> None:
    app.command("model-card")(model_card_cmd)
