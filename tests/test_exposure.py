"""Exposure floors: the re-ranker's calibration, the evaluation's figures and the gate.

The acceptance run trains the shipped hybrid recipe with floors for three provider groups
of the demo cloud (rural venues, 非遗, the district cultural centres' alliance) on a copy of
the shared trained home, and checks each group's share of the top-10 slots against its floor
and the NDCG@10 cost, both as the evaluation measured them (printed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.catalog import Catalog
from recsys.exposure import ExposureGroup, ExposureSettings, Floors, calibrate, group_mask, rerank, shares
from recsys.users import UserTable
from training import gate
from training.config import load_config, shipped_recipe
from training.exposure_eval import floor_misses

FLOORS = """
[exposure.groups.rural_venues]
area_type = "rural"
min_share = {rural}
[exposure.groups.heritage]
categories = ["非遗"]
min_share = {heritage}
[exposure.groups.district_centres]
providers = ["区文化馆联盟"]
min_share = {centres}
"""


DEMO_FLOORS = {"rural": 0.05, "heritage": 0.06, "centres": 0.3}
"""Floors the re-ranker can reach within its depth (50 candidates) on the demo cloud: about 2.5x,
2x and 3x the groups' shares of the top-10 slots without floors (2.1%, 3.1% and 9.7%). A
rural floor of 25% is out of reach there: few rural items are among a user's 50 best."""


def tiny() -> tuple[Catalog, UserTable]:
    catalog = Catalog.from_columns(
        [f"i{i}" for i in range(6)], category=["非遗", "音乐", "音乐", "戏曲", "非遗", "音乐"],
        region=["r1", "r2", "r2", "r1", "r2", "r2"], provider=["a", "b", "b", "a", "b", "a"])
    users = UserTable.from_columns(["u0", "u1", "u2"], region=["r1", "r1", "r2"],
                                   area_type=["rural", "rural", "urban"])
    return catalog, users


def test_groups_select_by_every_given_attribute() -> None:
    catalog, users = tiny()
    assert group_mask(catalog, users, ExposureGroup(min_share=0.1, area_type="rural")).tolist() == [
        True, False, False, True, False, False]
    both = ExposureGroup(min_share=0.1, categories=["非遗"], providers=["b"])
    assert group_mask(catalog, users, both).tolist() == [False, False, False, False, True, False]


def test_calibration_meets_floors_where_it_costs_least() -> None:
    rng = np.random.default_rng(0)
    n_users, depth, n_items = 400, 30, 200
    catalog = Catalog.from_columns([f"i{i}" for i in range(n_items)],
                                   category=["非遗" if i % 10 == 0 else "音乐" for i in range(n_items)])
    users = UserTable.from_columns([f"u{u}" for u in range(n_users)])
    settings = ExposureSettings(groups={"heritage": ExposureGroup(min_share=0.2, categories=["非遗"])})
    items = np.stack([rng.choice(n_items, depth, replace=False) for _ in range(n_users)])
    scores = np.sort(rng.random((n_users, depth)), axis=1)[:, ::-1]
    floors = calibrate(items, scores, Floors.of(settings, catalog, users), 10)
    after = rerank(items, scores, floors, 10)
    share = shares(after, floors)[0]
    assert 0.2 <= share <= 0.21
    assert shares(items[:, :10], floors)[0] < 0.15
    assert 0 < floors.bonus[0] < 1


def test_the_gate_refuses_a_model_missing_a_floor() -> None:
    settings = ExposureSettings(groups={"heritage": ExposureGroup(min_share=0.1, categories=["非遗"])})
    decision = gate.decide(0.2, 1.0, None)
    gate.require_floors(decision, floor_misses({"exposure.heritage.share@10": 0.085}, settings))
    assert not decision.promote and "heritage" in decision.reasons[-1]
    fine = gate.decide(0.2, 1.0, None)
    gate.require_floors(fine, floor_misses({"exposure.heritage.share@10": 0.095}, settings))
    assert fine.promote


def test_floors_on_the_demo_cloud_cost_little(trained_demo_copy: Path, tmp_path: Path) -> None:
    from tests.demo_store import train_cli

    config = tmp_path / "floors.toml"
    config.write_text(shipped_recipe("hybrid").read_text(encoding="utf-8")
                      + FLOORS.format(**DEMO_FLOORS), encoding="utf-8")
    assert load_config(config).engine.exposure.enabled
    summary = train_cli(trained_demo_copy, "--config", str(config), "--no-promote", "--force")
    figures = summary["exposure"]
    for name in ("rural_venues", "heritage", "district_centres"):
        share, floor = figures[f"exposure.{name}.share@10"], figures[f"exposure.{name}.floor"]
        print(f"{name}: share {share:.4f} (before {figures[f'exposure.{name}.share_before@10']:.4f}) "
              f"floor {floor:.2f}")
        assert share >= floor - 0.01, name
    print(f"NDCG@10 {figures['exposure.ndcg@10.before']:.4f} -> {figures['exposure.ndcg@10.after']:.4f} "
          f"cost {figures['exposure.ndcg_cost']:.4%}")
    assert figures["exposure.ndcg_cost"] <= 0.02
    assert not any("exposure group" in reason for reason in summary["gate"]["reasons"])


def test_served_lists_meet_the_floor_over_many_users() -> None:
    """The bundle's calibrated bonuses are applied where lists are made: a user's list as the API
    makes it and batch lists give the group its floor share over many users (editorial slots,
    the operators' own, left off; MMR's category spread, which works against a one-category
    group, measured and printed)."""
    import datetime as dt

    from recsys import models
    from recsys.bundle import ModelBundle
    from recsys.delivery import DeliveryEngine
    from recsys.query import Filters
    from recsys.settings import ControlSettings, EngineSettings
    from tests.serving_fixtures import FAST_HYBRID, demo_data
    from training.batch import recommend_batch
    from training.exposure_eval import calibrated_manifest

    data = demo_data()
    floor = 0.12
    exposure = ExposureSettings(groups={"heritage": ExposureGroup(min_share=floor, categories=["非遗"])})
    settings = EngineSettings(exposure=exposure, controls=ControlSettings(editorial_slots=[]))
    at = dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()
    model = models.create("hybrid", FAST_HYBRID).fit(data)
    plain = DeliveryEngine(ModelBundle(model, data.catalog, data.users, data.weights, settings, {}))
    manifest = {"exposure": calibrated_manifest(plain, at, exposure)}
    floored = DeliveryEngine(ModelBundle(model, data.catalog, data.users, data.weights, settings, manifest))
    assert floored.floors is not None and plain.floors is None
    heritage = floored.floors.members[0]
    ids = data.users.users.ids_of(np.flatnonzero(np.diff(data.weights.indptr) > 0))

    def share(items: list[int]) -> float:
        return float(heritage[items].mean())

    def served(engine: DeliveryEngine, diversity: float) -> float:
        return share([r.item for user in ids[:800]
                      for r in engine.for_user(user, 10, Filters(at=at), diversity=diversity).items])

    before, after, spread = served(plain, 0.0), served(floored, 0.0), served(floored, 0.2)
    batch = recommend_batch(floored.bundle, ids, 10, at)
    in_batch = share([data.catalog.items.index_of(i) for i in batch["item_id"].to_list()])
    print(f"heritage share of served slots (floor {floor}): {before:.4f} without floors, {after:.4f} with "
          f"({spread:.4f} at diversity 0.2), batch {in_batch:.4f}")
    assert before < floor - 0.02
    assert after >= floor - 0.01 and in_batch >= floor - 0.01
    assert spread > before
