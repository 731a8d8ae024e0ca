"""What each ``diversity`` setting costs in accuracy and buys in category spread, on the demo cloud.

The synthetic Beijing cultural cloud is cut as ``recsys train`` cuts it (time split: test =
the last ``--test-days``), the default hybrid is fitted on the training part, and every user
with test truth (up to ``--max-users``) gets the API's list (:meth:`DeliveryEngine.for_user`,
n = 10, at the cutoff) at each setting. The table reports NDCG@10 (and its change from
``diversity = 0``), the mean number of categories in a list, the share of lists with at
least three, and the mean share of a list's largest category. The peer is the same lists at
``diversity = 0`` (pure score order).

Usage::

    python -m experiments.diversity_cost                         # 6,000 users, 600 items, 45 days
    python -m experiments.diversity_cost --users 20000 --items 2000 --days 60
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

SETTINGS = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 0.9, 1.0)
N = 10


@dataclass(frozen=True)
class Row:
    diversity: float
    ndcg: float
    categories: float
    three_or_more: float
    top_share: float
    ms_per_list: float


def measure(args: argparse.Namespace) -> tuple[list[Row], int, int]:
    """The rows of the table, the users measured and the categories of the catalogue."""
    from democloud import DemoConfig, generate
    from features.dataset import StoreFrames, build_dataset
    from recsys import metrics, models
    from recsys.bundle import ModelBundle
    from recsys.delivery import DeliveryEngine
    from recsys.query import Filters
    from recsys.settings import EngineSettings

    demo = generate(DemoConfig(users=args.users, items=args.items, days=args.days, seed=args.seed,
                               end_date=dt.date(2026, 10, 31)))
    frames = StoreFrames(demo.interactions.lazy(), demo.users.lazy(), demo.items.lazy())
    settings = EngineSettings()
    dataset = build_dataset(frames, settings, test_days=args.test_days, seed=args.seed,
                            now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    split = dataset.split
    if split is None:
        raise SystemExit("the demo cloud gave no time split: use more users or days")
    train = split.train
    model = models.create("hybrid").fit(train)
    engine = DeliveryEngine(ModelBundle(model, train.catalog, train.users, train.weights, settings,
                                        returns=split.returns))
    rows = np.flatnonzero(np.diff(split.truth.indptr) > 0)[:args.max_users]
    truth = split.truth[rows]
    ids = train.users.users.ids_of(rows)
    at = split.cutoff.timestamp()
    category = train.catalog.category
    table = []
    for diversity in SETTINGS:
        lists = np.full((len(rows), N), -1, dtype=np.int64)
        started = time.perf_counter()
        for position, user in enumerate(ids):
            chosen = [r.item for r in engine.for_user(user, N, Filters(at=at), diversity=diversity).items]
            lists[position, :len(chosen)] = chosen
        seconds = time.perf_counter() - started
        spread = [_spread(category[row[row >= 0]]) for row in lists]
        table.append(Row(
            diversity=diversity, ndcg=float(np.nanmean(metrics.per_user_ndcg(lists, truth, N))),
            categories=float(np.mean([s[0] for s in spread])),
            three_or_more=float(np.mean([s[0] >= 3 for s in spread])),
            top_share=float(np.mean([s[1] for s in spread])), ms_per_list=1000 * seconds / max(len(rows), 1)))
        log.info("diversity %.2f done", diversity)
    return table, len(rows), len(train.catalog.categories)


def _spread(categories: np.ndarray) -> tuple[int, float]:
    """(distinct categories, share of the largest one) of one list (unknown category = its own)."""
    if len(categories) == 0:
        return 0, 0.0
    _, counts = np.unique(categories, return_counts=True)
    return len(counts), float(counts.max() / len(categories))


def render(table: list[Row], users: int, categories: int) -> str:
    """The table as Markdown."""
    base = table[0].ndcg
    lines = [f"{users} users with test truth, lists of {N}, {categories} categories in the catalogue",
             "", "| diversity | NDCG@10 | vs 0 | categories / list | lists with >= 3 | largest category share "
             "| ms / list |", "|---|---|---|---|---|---|---|"]
    for row in table:
        change = (row.ndcg / base - 1) if base > 0 else float("nan")
        lines.append(f"| {row.diversity:.2f} | {row.ndcg:.4f} | {change:+.1%} | {row.categories:.2f} | "
                     f"{row.three_or_more:.0%} | {row.top_share:.0%} | {row.ms_per_list:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--test-days", type=float, default=7)
    parser.add_argument("--max-users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table, users, categories = measure(args)
    print(f"python -m experiments.diversity_cost --users {args.users} --items {args.items} --days {args.days} "
          f"--test-days {args.test_days:g} --max-users {args.max_users} --seed {args.seed}")
    print(render(table, users, categories))


if __name__ == "__main__":
    main()
