"""``recsys experiment start|status|stop|report``: A/B tests between the champion and a challenger."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from training.cli.common import HomeOption, JsonOption, emit, home_of, stdout_console, user_errors

experiment_app = typer.Typer(help="A/B test a challenger version against the champion", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the app."""
    app.add_typer(experiment_app, name="experiment")


@experiment_app.command("start")
def start_cmd(
    challenger: Annotated[str, typer.Option("--challenger", help="Registered version (or a bundle directory)")],
    share: Annotated[float, typer.Option("--share", help="Share of signed-in users given the challenger")] = 0.2,
    max_empty_rate: Annotated[float, typer.Option("--max-empty-rate", min=0, max=1)] = 0.1,
    min_rural_urban_ctr: Annotated[float, typer.Option("--min-rural-urban-ctr", min=0)] = 0.7,
    max_error_rate: Annotated[float, typer.Option("--max-error-rate", min=0, max=1)] = 0.02,
    home: HomeOption = None, as_json: JsonOption = False,
) -> None:
    """Start serving the challenger to a share of users (every worker follows within a second)."""
    from recsys.experiment import Guardrails
    from training.experiments_ab import start

    with user_errors():
        state = start(home_of(home), challenger, share, Guardrails(
            max_empty_rate=max_empty_rate, min_rural_urban_ctr_ratio=min_rural_urban_ctr,
            max_error_rate=max_error_rate))
    emit(state.model_dump(), as_json)


@experiment_app.command("status")
def status_cmd(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """The experiment file's state (none, running or stopped)."""
    from training.experiments_ab import status

    with user_errors():
        state = status(home_of(home))
    emit({"experiment": state.model_dump() if state else None}, as_json, _render_status)


def _render_status(summary: dict[str, Any]) -> None:
    state = summary["experiment"]
    out = stdout_console()
    if state is None:
        out.print("no experiment", markup=False)
        return
    out.print(f"{state['experiment_id']}: {state['status']}, challenger {state['challenger']} "
              f"(champion {state['champion']}) on {state['share']:.0%} of users since {state['started_at']}"
              + (f"; stopped {state['stopped_at']}: {state['stop_reason']}" if state["stopped_at"] else ""),
              markup=False)


@experiment_app.command("stop")
def stop_cmd(promote: Annotated[bool, typer.Option("--promote", help="Make the challenger champion")] = False,
             home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Stop the experiment: everyone gets the champion (with --promote: the challenger becomes it)."""
    from training.experiments_ab import stop

    with user_errors():
        state = stop(home_of(home), promote=promote)
    emit({"experiment": state.model_dump(), "promoted": promote}, as_json, _render_status)


@experiment_app.command("report")
def report_cmd(seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed")] = 0,
               errors: Annotated[int, typer.Option("--errors", min=0,
                                                   help="Failed challenger list requests not on record in this "
                                                        "home (its servers' are counted already)")] = 0,
               home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Per-variant metrics with 95% intervals, the difference, the verdict; enforces the guardrails."""
    from training.experiments_ab import report

    with user_errors():
        summary = report(home_of(home), seed=seed, errors=errors)
    emit(summary, as_json, _render_report)


def _render_report(summary: dict[str, Any]) -> None:
    out = stdout_console()
    users = summary["users"]
    out.print(f"users: champion {users['champion']}, challenger {users['challenger']}", markup=False)
    for name, m in summary["metrics"].items():
        a, b, d = m["champion"], m["challenger"], m["difference"]
        out.print(f"{name}: champion {a['value']:.4f} [{a['low']:.4f}, {a['high']:.4f}]  challenger "
                  f"{b['value']:.4f} [{b['low']:.4f}, {b['high']:.4f}]  difference {d['value']:+.4f} "
                  f"[{d['low']:+.4f}, {d['high']:+.4f}]: {m['verdict']}", markup=False)
    needed = summary["users_needed"]
    out.print(f"verdict: challenger {summary['verdict']}"
              + (f" (about {needed} more users per arm needed)" if needed else ""), markup=False)
    failed = summary["failed_lists"]
    out.print(f"failed list requests: champion {failed['champion']}, challenger {failed['challenger']}",
              markup=False)
    if summary["guardrail"]:
        out.print(f"guardrail tripped: {summary['guardrail']}", markup=False)
