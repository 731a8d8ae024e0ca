"""``recsys serve``: run the recommendation API with uvicorn; ``recsys api-key``: make a key.

Options travel to the app factory (``serving.app:create_app``) as ``RECSYS_*`` environment
variables, because with ``--workers N`` uvicorn starts fresh processes that build the app
themselves and see nothing but the environment (every other ``RECSYS_*`` variable of the
caller, such as ``RECSYS_ADMIN_KEY`` or ``RECSYS_API_KEYS``, reaches them the same way). The
workers keep each other in step through the home: an interaction posted to one is folded
into every other's live state, and an admin reload reaches all of them, within
``--tail-interval`` seconds.

Before uvicorn starts, the settings and keys are checked (a malformed or too short key, or
an unreadable keys file, exits with code 2 and a message naming it), and the soft
file-descriptor limit is raised to the hard one so the connection cap can be reached.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer

from serving.config import DEFAULT_RELOAD_INTERVAL
from training.cli.common import HomeOption, console, fail, home_of, stdout_console

APP_FACTORY = "serving.app:create_app"
KEY_BYTES = 32
"""Random bytes of a generated key (43 URL-safe characters)."""


def serve_env(home: Path, reload_interval: float, model_dir: Path | None,
              tail_interval: float | None = None, **settings: Any) -> dict[str, str]:
    """The environment the workers need (keys are read from the caller's own env).

    ``settings``: further :class:`~serving.config.ServingSettings` fields by name; None
    leaves the caller's variable (or the default) in force.
    """
    from serving.config import env_name

    env = {"RECSYS_HOME": str(home), "RECSYS_RELOAD_INTERVAL": str(reload_interval),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    if model_dir is not None:
        env["RECSYS_MODEL_DIR"] = str(model_dir.expanduser().resolve())
    if tail_interval is not None:  # else the caller's RECSYS_TAIL_INTERVAL, or the default
        env["RECSYS_TAIL_INTERVAL"] = str(tail_interval)
    for name, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, Path):
            value = value.expanduser().resolve()
        env[env_name(name)] = str(value)
    return env


def _help(field: str) -> str:
    from serving.config import describe

    return describe(field)


def serve_cmd(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each loads the model)")] = 1,
    reload_interval: Annotated[float, typer.Option(
        "--reload-interval", min=0,
        help="Seconds between registry polls; reload when the champion changes (0 = never)")
    ] = DEFAULT_RELOAD_INTERVAL,
    model_dir: Annotated[Path | None, typer.Option(
        "--model-dir", file_okay=False, help="Serve this bundle directory instead of the registry champion")] = None,
    tail_interval: Annotated[float | None, typer.Option(
        "--tail-interval", min=0,
        help="Seconds between looks at what the other workers were posted and asked to reload "
             "(default 0.5; 0 = workers do not follow each other)")] = None,
    api_keys_file: Annotated[Path | None, typer.Option(
        "--api-keys-file", dir_okay=False, help=_help("api_keys_file"))] = None,
    open_personal_reads: Annotated[bool | None, typer.Option(
        "--open-personal-reads/--keyed-personal-reads", help=_help("open_personal_reads"))] = None,
    rate_per_key: Annotated[float | None, typer.Option(min=0, help=_help("rate_per_key"))] = None,
    rate_per_ip: Annotated[float | None, typer.Option(min=0, help=_help("rate_per_ip"))] = None,
    daily_rows_per_key: Annotated[int | None, typer.Option(min=0, help=_help("daily_rows_per_key"))] = None,
    max_in_flight: Annotated[int | None, typer.Option(min=1, help=_help("max_in_flight"))] = None,
    max_connections: Annotated[int | None, typer.Option(min=1, help=_help("max_connections"))] = None,
    header_timeout: Annotated[float | None, typer.Option(min=0.001, help=_help("header_timeout"))] = None,
    body_timeout: Annotated[float | None, typer.Option(min=0.001, help=_help("body_timeout"))] = None,
    access_log: Annotated[bool | None, typer.Option("--access-log/--no-access-log",
                                                    help=_help("access_log"))] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    home: HomeOption = None,
) -> None:
    """Serve recommendations over HTTP (docs at /docs, metrics at /metrics).

    Personal lists and every write need an API key (X-API-Key) with the right scope: set
    RECSYS_API_KEYS_FILE (hashed keys, see `recsys api-key`), RECSYS_API_KEYS or
    RECSYS_ADMIN_KEY. Bursts, wrong-key throttling and keep-alive are set by RECSYS_BURST_PER_KEY,
    RECSYS_BURST_PER_IP, RECSYS_WRONG_KEYS_PER_MINUTE and RECSYS_KEEP_ALIVE_TIMEOUT.
    """
    import uvicorn

    engine_home = home_of(home)
    os.environ.update(serve_env(
        engine_home.root, reload_interval, model_dir, tail_interval, api_keys_file=api_keys_file,
        open_personal_reads=open_personal_reads, rate_per_key=rate_per_key, rate_per_ip=rate_per_ip,
        daily_rows_per_key=daily_rows_per_key, max_in_flight=max_in_flight, max_connections=max_connections,
        header_timeout=header_timeout, body_timeout=body_timeout, access_log=access_log,
    ))
    options = checked_uvicorn_options()
    source = f"bundle {model_dir}" if model_dir else "the registry champion"
    console.print(f"serving {source} on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''})")
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level, **options)


def checked_uvicorn_options() -> dict[str, Any]:
    """Check the settings and keys of the environment (exit 2 with the reason), then the
    uvicorn options they imply; raises the file-descriptor limit for the connection cap."""
    from pydantic import ValidationError

    from serving.auth import KeyConfigError, KeyRing
    from serving.config import ServingSettings
    from serving.connections import raise_fd_limit, uvicorn_options

    try:
        settings = ServingSettings()
        secret = settings.admin_key.get_secret_value() if settings.admin_key else None
        inline = settings.api_keys.get_secret_value() if settings.api_keys else None
        KeyRing.from_settings(secret, inline, settings.api_keys_file)
    except ValidationError as exc:
        raise fail("; ".join(_setting_problem(error) for error in exc.errors())) from None
    except KeyConfigError as exc:
        raise fail(str(exc)) from None
    raise_fd_limit()
    return uvicorn_options(settings)


def _setting_problem(error: Any) -> str:
    from serving.config import env_name

    field = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return message if message.startswith("RECSYS_") else f"{env_name(field)}: {message}"


def new_key() -> str:
    """A fresh random API key (URL-safe, well over the minimum length)."""
    return secrets.token_urlsafe(KEY_BYTES)


def api_key_cmd(
    app_name: Annotated[str, typer.Option("--app", help="The app's name (its table in the keys file)")],
    scopes: Annotated[list[str], typer.Option(
        "--scope", help="A scope of the key: read, write:interactions, write:items, admin (repeat for more)")],
) -> None:
    """Generate an API key: prints the key (give it to the app, once) and the keys-file table
    holding only its SHA-256 (add it to RECSYS_API_KEYS_FILE; the server re-reads the file)."""
    from serving.auth import KeyConfigError, hash_key, parse_scopes

    try:
        checked = sorted(scope.value for scope in parse_scopes(scopes, "--scope"))
    except KeyConfigError as exc:
        raise fail(str(exc)) from None
    if not app_name.replace("-", "").replace("_", "").isalnum():
        raise fail("--app: use letters, digits, - and _ (it names a TOML table)")
    key = new_key()
    out = stdout_console()
    out.print(f"key (give it to the app; it is not stored anywhere): {key}", markup=False)
    out.print("keys file table:", markup=False)
    out.print(f"[{app_name}]\nsha256 = \"{hash_key(key)}\"\nscopes = {checked!r}".replace("'", '"'), markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the app."""
    app.command("serve")(serve_cmd)
    app.command("api-key")(api_key_cmd)
