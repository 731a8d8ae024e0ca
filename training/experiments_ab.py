"""``recsys experiment start|status|stop|report``: the A/B test's lifecycle and its report.

Start writes a running :class:`recsys.experiment.ExperimentState` (a fresh salt) to the
home's experiment file, which every server process follows; stop writes it stopped (and with
``promote`` moves the champion alias to the challenger). The report reads the store's lists
served since the experiment started (``recsys ingest`` folds the servers' records first),
attributes outcomes (:mod:`features.online_metrics`), and compares the arms per user
(:func:`recsys.ab_stats.compare`): click-through decides the verdict; reservations and
attendance per list are reported beside it.

Guardrails (evaluated here, so a scheduled ``recsys experiment report`` is the watchdog): once
the challenger served ``min_lists`` lists, the experiment is stopped by itself when the
challenger's empty-list rate exceeds ``max_empty_rate``, its rural/urban click-through ratio
falls below ``min_rural_urban_ctr_ratio``, or its error rate exceeds ``max_error_rate``: failed
list requests are those the servers put on record per variant (:mod:`recsys.list_failures`,
written by :mod:`serving.list_failures`) within the experiment's span, plus any the caller
passes in (servers of another home); the rate is failures / (lists + failures), and a
challenger failing every request counts towards ``min_lists`` with its failures.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from features.ingest.exposures import read_exposures
from features.online_metrics import list_outcomes, per_user
from features.store import erased_users
from recsys.ab_stats import compare
from recsys.experiment import (
    CHALLENGER,
    CHAMPION,
    ExperimentState,
    Guardrails,
    new_experiment,
    read_state,
    stopped,
    write_state,
)
from recsys.home import EngineHome
from recsys.list_failures import count_failures
from training.online_report import store_frame

log = logging.getLogger(__name__)

METRICS = {"click_through": ("clicks", "shown"), "reservations_per_list": ("reserves", "lists"),
           "attendance_per_list": ("attends", "lists")}
"""Metric -> (per-user numerator, denominator) columns of :func:`features.online_metrics.per_user`."""
PRIMARY = "click_through"


def start(home: EngineHome, challenger: str, share: float, guardrails: Guardrails | None = None) -> ExperimentState:
    """Start an experiment; ValueError if one is running or the challenger is unknown."""
    current = read_state(home.experiment)
    if current is not None and current.running:
        raise ValueError(f"experiment {current.experiment_id} is running (challenger {current.challenger}); "
                         "stop it first")
    if not 0 < share < 1:
        raise ValueError("--share must be between 0 and 1 (exclusive)")
    champion = _check_challenger(home, challenger)
    state = new_experiment(challenger, share, champion, guardrails)
    write_state(home.experiment, state)
    return state


def _check_challenger(home: EngineHome, challenger: str) -> str | None:
    """The champion's version; ValueError when the challenger is neither a bundle directory nor registered."""
    if Path(challenger).is_dir():
        return None
    from training import registry

    client = registry.connect(home)
    known = {v.version for v in registry.versions(client)}
    if challenger not in known:
        raise ValueError(f"version {challenger!r} is not registered (known: {', '.join(sorted(known)) or 'none'})")
    champion = registry.champion(client)
    if champion is not None and champion.version == challenger:
        raise ValueError(f"version {challenger} is the champion already")
    return champion.version if champion is not None else None


def status(home: EngineHome) -> ExperimentState | None:
    return read_state(home.experiment)


def stop(home: EngineHome, *, promote: bool = False, reason: str = "stopped by the operator") -> ExperimentState:
    """Stop the running experiment (every worker serves the champion within its check interval)."""
    state = read_state(home.experiment)
    if state is None or not state.running:
        raise ValueError("no experiment is running")
    done = stopped(state, reason + (" (challenger promoted)" if promote else ""))
    write_state(home.experiment, done)
    if promote:
        if Path(state.challenger).is_dir():
            raise ValueError("a bundle directory cannot be promoted; register it first")
        from training import registry

        registry.promote(registry.connect(home), state.challenger, by="experiment")
    return done


def units(home: EngineHome, state: ExperimentState) -> pl.DataFrame:
    """Per variant x user outcomes of the lists served during ``state``'s experiment."""
    erased = frozenset(erased_users(home))
    exposures = read_exposures(home, erased)
    begin = datetime.fromisoformat(state.started_at)
    during = exposures.filter(pl.col("ts") >= begin)
    if state.stopped_at is not None:
        during = during.filter(pl.col("ts") <= datetime.fromisoformat(state.stopped_at))
    outcomes = list_outcomes(during.filter(pl.col("endpoint") == "users"), store_frame(home, "interactions"),
                             store_frame(home, "users"), store_frame(home, "items"))
    return per_user(outcomes)


def compare_units(frame: pl.DataFrame, seed: int = 0, resamples: int = 2000) -> dict[str, Any]:
    """Per metric: both arms with 95% intervals, the difference and the verdict."""
    arms = {v: frame.filter(pl.col("variant") == v) for v in (CHAMPION, CHALLENGER)}
    out = {}
    for name, (num, den) in METRICS.items():
        pairs = [(arms[v][num].to_numpy(), arms[v][den].to_numpy()) for v in (CHAMPION, CHALLENGER)]
        out[name] = compare(pairs[0], pairs[1], seed=seed, resamples=resamples).to_dict()
    return out


def guardrail_breach(frame: pl.DataFrame, guardrails: Guardrails, errors: int = 0) -> str | None:
    """Why the challenger must stop, or None."""
    challenger = frame.filter(pl.col("variant") == CHALLENGER)
    lists = int(challenger["lists"].sum())
    if lists + errors < guardrails.min_lists:
        return None
    if errors / (lists + errors) > guardrails.max_error_rate:
        return f"error rate {errors / (lists + errors):.2%} above {guardrails.max_error_rate:.2%}"
    if lists < guardrails.min_lists:
        return None
    empty = int(challenger["empty"].sum()) / lists
    if empty > guardrails.max_empty_rate:
        return f"empty-list rate {empty:.2%} above {guardrails.max_empty_rate:.2%}"
    ctr = {area: _ratio(challenger.filter(pl.col("area_type") == area)) for area in ("rural", "urban")}
    if ctr["urban"] and ctr["urban"] > 0 and not math.isnan(ctr["rural"]):
        ratio = ctr["rural"] / ctr["urban"]
        if ratio < guardrails.min_rural_urban_ctr_ratio:
            return f"rural/urban click-through {ratio:.2f} below {guardrails.min_rural_urban_ctr_ratio:.2f}"
    return None


def _ratio(frame: pl.DataFrame) -> float:
    shown = int(frame["shown"].sum())
    return int(frame["clicks"].sum()) / shown if shown else math.nan


def failed_lists(home: EngineHome, state: ExperimentState) -> dict[str, int]:
    """Failed list requests per variant the servers recorded during ``state``'s experiment."""
    until = datetime.fromisoformat(state.stopped_at) if state.stopped_at is not None else None
    counts = count_failures(home.list_failures, datetime.fromisoformat(state.started_at), until)
    return {variant: int(counts.get(variant, 0)) for variant in (CHAMPION, CHALLENGER)}


def report(home: EngineHome, *, seed: int = 0, errors: int = 0, enforce: bool = True) -> dict[str, Any]:
    """The experiment's report; a tripped guardrail stops a running experiment (``enforce``).

    ``errors``: failed challenger list requests not on record in this home, added to those that are.
    """
    state = read_state(home.experiment)
    if state is None:
        raise ValueError("no experiment has been started in this home")
    frame = units(home, state)
    metrics = compare_units(frame, seed)
    failed = failed_lists(home, state)
    breach = guardrail_breach(frame, state.guardrails, failed[CHALLENGER] + errors)
    if breach is not None and state.running and enforce:
        log.warning("guardrail tripped, stopping experiment %s: %s", state.experiment_id, breach)
        state = stopped(state, f"guardrail: {breach}")
        write_state(home.experiment, state)
    primary = metrics[PRIMARY]
    return {"experiment": state.model_dump(), "users": {v: int((frame["variant"] == v).sum())
                                                         for v in (CHAMPION, CHALLENGER)},
            "metrics": metrics, "verdict": primary["verdict"], "users_needed": primary["users_needed"],
            "failed_lists": failed, "guardrail": breach}
