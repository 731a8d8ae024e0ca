"""Simulated residents of the demo cloud using a running server, so the loop (lists -> feedback -> A/B report)
runs on one machine.

Each simulated day, every sampled resident (or a ``--visit-rate`` share of them) asks the
server for their list (``GET /v1/users/{id}/recommendations``), looks at it and reacts; the
app's view of it is posted in one batch to ``POST /v1/interactions``: an ``impression`` for
every displayed slot, then the resident's clicks, reservations and attendances, each naming
the list (``recommendation_id``) and the slot (``position``). The server then attributes and
counts them as it would a real app's (``recsys ingest``, ``recsys experiment report``).

Taste. The demo cloud's ``ground_truth.json`` plants district x age band x category
multipliers, not individual tastes; the individual tastes the generator drew are not stored.
A resident's taste here is rebuilt from what the store knows about them, combined with the
planted effects:

    taste(c) = (distinct items of category c the resident engaged with in the store + PRIOR)
               x multiplier(resident's district, age band, c)        (1 where nothing is planted)
    affinity(item) = taste(category of item) / max over categories of taste

so a resident's favourite category has affinity 1, a category they never touched a small
one (``PRIOR`` keeps it above zero), and a planted segment favours its category as the
generator's residents did.

Click model (position-biased, a cascade-free examination model): the resident examines the
item at 1-based position ``p`` with probability ``position_decay ** (p - 1)``, and clicks an
examined item with probability ``click_base + click_gain * affinity``. A clicked item that
is not digital is reserved with probability ``reserve_base + reserve_gain * affinity``, and
a reservation is attended with probability ``attend_rate`` (the rest are no-shows).

Clock. The server stamps every served list with its own clock, and attribution counts an
interaction for a list only at or after the list's time (within the action's window), so a
simulated day cannot be dated in the past of its lists. Days therefore run one after the
other now, and an interaction is dated from its list's ``generated_at`` (the server's
clock): a click seconds later, a reservation a few minutes after the click, an attendance
hours after the reservation, never more than :data:`MAX_AHEAD` ahead of the list, inside
the server's accepted clock skew (a day). What carries over from one simulated day to the
next is what the server learnt: each day's lists follow the previous days' feedback.

Every draw comes from a generator seeded by (``--seed``, day, resident), so a run's choices
do not depend on the order the concurrent requests finish in.

Usage::

    python -m experiments.simulate --url http://127.0.0.1:8000 --api-key KEY --home ./.recsys \\
        --users 500 --days 3 [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from itertools import repeat
from pathlib import Path
from typing import Any

import httpx
import numpy as np

log = logging.getLogger(__name__)

PRIOR = 0.5
"""Pseudo-count per category: a category a resident never touched keeps some appeal."""
MAX_AHEAD = timedelta(hours=12)
"""Latest an interaction is dated after its list (the server refuses more than a day ahead of its clock)."""
ENGAGED = ("view", "click", "favorite", "share", "reserve", "attend", "rate")
"""Stored actions that show interest in an item's category."""
API_KEY_HEADER = "X-API-Key"
BATCH = 500
"""Interactions per POST at most (the server's default batch limit is larger)."""


@dataclass(frozen=True)
class ClickModel:
    """How a resident reacts to a list."""

    position_decay: float = 0.85
    click_base: float = 0.02
    click_gain: float = 0.35
    reserve_base: float = 0.05
    reserve_gain: float = 0.30
    attend_rate: float = 0.75


@dataclass(frozen=True)
class SimulationConfig:
    url: str
    api_key: str
    home: Path
    ground_truth: Path | None = None
    """Default: ``<home>/demo/ground_truth.json``, else the generator's planted effects."""
    users: int = 300
    days: int = 2
    seed: int = 0
    list_size: int = 10
    visit_rate: float = 1.0
    concurrency: int = 4
    model: ClickModel = field(default_factory=ClickModel)
    timeout: float = 30.0
    at: str | None = None
    """The moment the lists are asked for (the API's ``at``, ISO-8601); None: now. A demo cloud
    whose events ended in the past is simulated at its last day, so what the lists may hold (and
    so the verdict) does not drift with the calendar."""


@dataclass(frozen=True)
class Resident:
    user_id: str
    taste: Mapping[str, float]
    """Category -> affinity in (0, 1]; a category not listed has the smallest one (:attr:`floor`)."""
    floor: float

    def affinity(self, category: str | None) -> float:
        return self.taste.get(category or "", self.floor)


@dataclass
class Tally:
    """What happened in one arm (variant) of the server."""

    residents: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)

    def row(self) -> dict[str, Any]:
        c = self.counts
        shown = c["impression"]
        return {"residents": len(self.residents), "lists": c["lists"], "failed_lists": c["failed_lists"],
                "failed_posts": c["failed_posts"], "impressions": shown, "clicks": c["click"],
                "reservations": c["reserve"], "attendances": c["attend"],
                "click_through": c["click"] / shown if shown else None}


# ---- taste --------------------------------------------------------------------------------------
def planted_multipliers(truth: Mapping[str, Any]) -> dict[tuple[str, str, str], float]:
    """(region_code, age_band, category) -> multiplier, from ``ground_truth.json``'s effects."""
    return {(e["region_code"], e["age_band"], e["category"]): float(e["multiplier"]) for e in truth["effects"]}


def load_ground_truth(path: Path | None, home: Path) -> dict[str, Any]:
    """The planted truth: ``path``, else the home's demo files, else the generator's own effects."""
    candidate = path or home / "demo" / "ground_truth.json"
    if candidate.exists():
        truth: dict[str, Any] = json.loads(candidate.read_text(encoding="utf-8"))
        return truth
    if path is not None:
        raise FileNotFoundError(f"no ground truth at {path}")
    from democloud import EFFECTS

    log.info("no %s: using the generator's planted effects", candidate)
    return {"effects": [asdict(e) for e in EFFECTS]}


def taste_of(engaged: Mapping[str, int], categories: Sequence[str], region: str | None, age_band: str | None,
             multipliers: Mapping[tuple[str, str, str], float]) -> tuple[dict[str, float], float]:
    """A resident's affinity per category (max 1) and the affinity of a category outside ``categories``."""
    raw = {c: (engaged.get(c, 0) + PRIOR) * multipliers.get((region or "", age_band or "", c), 1.0)
           for c in categories}
    top = max(raw.values(), default=PRIOR)
    return {c: value / top for c, value in raw.items()}, PRIOR / top


def sample_residents(home: Path, count: int, multipliers: Mapping[tuple[str, str, str], float],
                     rng: np.random.Generator) -> list[Resident]:
    """``count`` residents with a stored history (fewer if the store has fewer), with their tastes."""
    import polars as pl

    from features import store
    from recsys.home import EngineHome

    engine_home = EngineHome.at(home)
    items = store.scan_items(engine_home).select("item_id", "category").collect()
    users = store.scan_users(engine_home).select("user_id", "region_code", "age_band").collect()
    engaged = (store.scan_interactions(engine_home).filter(pl.col("action").is_in(ENGAGED))
               .select("user_id", "item_id").unique().collect()
               .join(items, on="item_id").group_by("user_id", "category").len())
    with_history = users.join(engaged.select("user_id").unique(), on="user_id").sort("user_id")
    picked = rng.choice(with_history.height, size=min(count, with_history.height), replace=False)
    chosen = with_history[np.sort(picked).tolist()]
    categories = sorted(c for c in items["category"].unique().to_list() if c)
    per_user: dict[str, dict[str, int]] = {}
    for row in engaged.filter(pl.col("user_id").is_in(chosen["user_id"].to_list())).iter_rows(named=True):
        per_user.setdefault(row["user_id"], {})[row["category"]] = int(row["len"])
    residents = []
    for row in chosen.iter_rows(named=True):
        taste, floor = taste_of(per_user.get(row["user_id"], {}), categories, row["region_code"], row["age_band"],
                                multipliers)
        residents.append(Resident(row["user_id"], taste, floor))
    return residents


# ---- one visit ----------------------------------------------------------------------------------
def react(resident: Resident, body: Mapping[str, Any], model: ClickModel,
          rng: np.random.Generator) -> list[dict[str, Any]]:
    """The interactions the app posts for one displayed list: impressions, then what the resident did."""
    listed_at = datetime.fromisoformat(body["generated_at"])
    rec_id = body["recommendation_id"]
    latest = listed_at + MAX_AHEAD
    lines: list[dict[str, Any]] = []

    def line(item_id: str, action: str, position: int, at: datetime) -> dict[str, Any]:
        return {"user_id": resident.user_id, "item_id": item_id, "action": action,
                "ts": min(at, latest).isoformat(), "recommendation_id": rec_id, "position": position}

    for position, item in enumerate(body["items"], start=1):
        lines.append(line(item["item_id"], "impression", position, listed_at))
    for position, item in enumerate(body["items"], start=1):
        if rng.random() >= model.position_decay ** (position - 1):
            continue  # never looked at
        affinity = resident.affinity(item.get("category"))
        if rng.random() >= model.click_base + model.click_gain * affinity:
            continue
        clicked_at = listed_at + timedelta(seconds=2 + rng.exponential(20))
        lines.append(line(item["item_id"], "click", position, clicked_at))
        if item.get("kind") == "digital" or rng.random() >= model.reserve_base + model.reserve_gain * affinity:
            continue
        reserved_at = clicked_at + timedelta(seconds=rng.exponential(90))
        lines.append(line(item["item_id"], "reserve", position, reserved_at))
        if rng.random() < model.attend_rate:
            lines.append(line(item["item_id"], "attend", position, reserved_at + timedelta(hours=rng.uniform(1, 8))))
    return lines


@dataclass(frozen=True)
class Visit:
    user_id: str
    variant: str | None
    counts: Counter[str]


def visit(client: httpx.Client, resident: Resident, config: SimulationConfig, rng: np.random.Generator) -> Visit:
    """One resident asks for a list and the app posts what they did with it."""
    from urllib.parse import quote

    answer = client.get(f"/v1/users/{quote(resident.user_id, safe='')}/recommendations",
                        params={"n": config.list_size, **({"at": config.at} if config.at else {})})
    if answer.status_code != 200:
        log.warning("list of %s: %d %s", resident.user_id, answer.status_code, answer.text[:200])
        return Visit(resident.user_id, None, Counter(failed_lists=1))
    body = answer.json()
    lines = react(resident, body, config.model, rng)
    counts: Counter[str] = Counter(lists=1)
    for start in range(0, len(lines), BATCH):
        batch = lines[start:start + BATCH]
        posted = client.post("/v1/interactions", json=batch)
        rejected = posted.json().get("rejected", []) if posted.status_code == 202 else None
        if rejected is None or rejected:
            log.warning("interactions of %s: %d %s", resident.user_id, posted.status_code, posted.text[:200])
            counts["failed_posts"] += 1
            continue
        counts.update(row["action"] for row in batch)
    return Visit(resident.user_id, body.get("variant"), counts)


# ---- the run ------------------------------------------------------------------------------------
def simulate(config: SimulationConfig) -> dict[str, Any]:
    """Run ``config.days`` simulated days; per variant: residents, lists, impressions, outcomes."""
    truth = load_ground_truth(config.ground_truth, config.home)
    residents = sample_residents(config.home, config.users, planted_multipliers(truth),
                                 np.random.default_rng(config.seed))
    if not residents:
        raise ValueError(f"no resident with a stored history in {config.home}")
    tallies: dict[str, Tally] = {}
    headers = {API_KEY_HEADER: config.api_key}
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    with httpx.Client(base_url=config.url, headers=headers, timeout=config.timeout, limits=limits) as client, \
            ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        for day in range(config.days):
            visits = list(pool.map(_day_visit, repeat(client), repeat(config), repeat(day), range(len(residents)),
                                   residents))
            for done in visits:
                if done is None:
                    continue
                tally = tallies.setdefault(done.variant or "failed", Tally())
                tally.residents.add(done.user_id)
                tally.counts.update(done.counts)
            log.info("day %d of %d: %d visits", day + 1, config.days, sum(v is not None for v in visits))
    return {"residents": len(residents), "days": config.days, "seed": config.seed,
            "variants": {name: tally.row() for name, tally in sorted(tallies.items())}}


def _day_visit(client: httpx.Client, config: SimulationConfig, day: int, index: int,
               resident: Resident) -> Visit | None:
    rng = np.random.default_rng([config.seed, day, index])
    if rng.random() >= config.visit_rate:
        return None
    return visit(client, resident, config, rng)


# ---- command line -------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> tuple[SimulationConfig, bool]:
    """The run's configuration and whether to print JSON."""
    parser = argparse.ArgumentParser(prog="python -m experiments.simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running server")
    parser.add_argument("--api-key", default=os.environ.get("RECSYS_SIMULATE_KEY", ""),
                        help="a key with the read and write:interactions scopes (default $RECSYS_SIMULATE_KEY)")
    parser.add_argument("--home", type=Path, default=Path(".recsys"), help="the engine home the server uses")
    parser.add_argument("--ground-truth", type=Path, default=None, help="default <home>/demo/ground_truth.json")
    parser.add_argument("--users", type=int, default=300, help="residents to simulate")
    parser.add_argument("--days", type=int, default=2, help="simulated days")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list-size", type=int, default=10)
    parser.add_argument("--visit-rate", type=float, default=1.0, help="share of residents visiting each day")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--position-decay", type=float, default=ClickModel.position_decay)
    parser.add_argument("--click-base", type=float, default=ClickModel.click_base)
    parser.add_argument("--click-gain", type=float, default=ClickModel.click_gain)
    parser.add_argument("--at", default=None, help="ISO-8601 moment the lists are for (default now)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.users < 1 or args.days < 1 or not 0 < args.visit_rate <= 1 or args.concurrency < 1:
        parser.error("--users, --days and --concurrency must be positive and --visit-rate in (0, 1]")
    model = ClickModel(position_decay=args.position_decay, click_base=args.click_base, click_gain=args.click_gain)
    config = SimulationConfig(url=args.url, api_key=args.api_key, home=args.home, ground_truth=args.ground_truth,
                              users=args.users, days=args.days, seed=args.seed, list_size=args.list_size,
                              visit_rate=args.visit_rate, concurrency=args.concurrency, model=model, at=args.at)
    return config, args.json


def table(summary: Mapping[str, Any]) -> str:
    """The per-variant summary as a small text table."""
    columns = ("residents", "lists", "failed_lists", "impressions", "clicks", "reservations", "attendances",
               "click_through")
    head = f"{'variant':<11}" + "".join(f"{c:>14}" for c in columns)
    rows = [head]
    for name, row in summary["variants"].items():
        cells = "".join(f"{row[c]:>14.4f}" if c == "click_through" and row[c] is not None else f"{row[c]!s:>14}"
                        for c in columns)
        rows.append(f"{name:<11}{cells}")
    return "\n".join([f"{summary['residents']} residents, {summary['days']} days, seed {summary['seed']}", *rows])


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, as_json = parse_args(argv)
    summary = simulate(config)
    print(json.dumps(summary, ensure_ascii=False, indent=1) if as_json else table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
