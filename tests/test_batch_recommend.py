"""Acceptance of ``recsys recommend``: the file format and the delivery rules, checked
against the store itself (not against the model's own view of it).

Runs on the session's trained demo home (the ``trained_demo`` fixture: version 1 hybrid =
champion, version 2 ALS).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from recsys.contract import parse_timestamp
from tests.demo_store import (
    TrainedDemo,
    cli_json,
    describe,
    run_cli,
    stored_interactions,
    stored_items,
)

pytestmark = pytest.mark.usefixtures("own_mlflow_store")

AT = "2026-11-01T09:00:00+08:00"
"""The morning after the demo data ends: many events have ended by then."""
N = 10
KNOWN_USERS = 300
UNKNOWN_USERS = ["nobody-1", "nobody-2", "新用户-3"]
COLUMNS = ["user_id", "rank", "item_id", "score"]


@dataclass(frozen=True)
class StoreFacts:
    """What the rules are checked against, read straight from the store."""

    engaged: pl.DataFrame
    """Distinct (user_id, item_id) pairs with any interaction."""
    ended: pl.DataFrame
    """item_id of items whose ends_at is before AT."""
    hidden: pl.DataFrame
    """item_id of hidden items."""
    heavy_users: list[str]
    """The users with the most distinct items (the exclusion rule bites hardest on them)."""


@pytest.fixture(scope="module")
def facts(trained_demo: TrainedDemo) -> StoreFacts:
    at = parse_timestamp(AT)
    interactions = stored_interactions(trained_demo.home)
    items = stored_items(trained_demo.home)
    engaged = interactions.select("user_id", "item_id").unique()
    heavy = (engaged.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])
             .head(KNOWN_USERS)["user_id"].to_list())
    return StoreFacts(
        engaged=engaged,
        ended=items.filter(pl.col("ends_at") < at).select("item_id"),
        hidden=items.filter(pl.col("hidden")).select("item_id"),
        heavy_users=heavy,
    )


@dataclass(frozen=True)
class Run:
    summary: dict[str, Any]
    frame: pl.DataFrame


def _read(path: Path) -> pl.DataFrame:
    if path.suffix == ".csv":
        return pl.read_csv(path, schema_overrides={"user_id": pl.String, "item_id": pl.String})
    return pl.read_parquet(path)


def recommend(root: Path, out: Path, *options: str) -> Run:
    summary = cli_json(run_cli("recommend", "--home", str(root), "-n", str(N), "--at", AT, "--out", str(out),
                               "--json", *options))
    return Run(summary, _read(out))


@pytest.fixture(scope="module")
def users_file(facts: StoreFacts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.csv"
    ids = [*facts.heavy_users, *UNKNOWN_USERS, facts.heavy_users[0]]  # a repeated id counts once
    pl.DataFrame({"user_id": ids, "note": ["x"] * len(ids)}).write_csv(path)
    return path


@pytest.fixture(scope="module")
def champion_run(trained_demo: TrainedDemo, users_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("recs") / "recs.csv"
    return recommend(trained_demo.root, out, "--users", str(users_file))


@pytest.fixture(scope="module")
def all_run(trained_demo: TrainedDemo, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("recs-all") / "recs.parquet"
    return recommend(trained_demo.root, out, "--all")


@pytest.fixture(scope="module")
def version_run(trained_demo: TrainedDemo, users_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("recs-v2") / "recs.parquet"
    return recommend(trained_demo.root, out, "--users", str(users_file), "--version", "2")


def assert_delivery_rules(frame: pl.DataFrame, facts: StoreFacts) -> None:
    """No engaged, ended or hidden item; ranks 1..n; scores never rise down a list."""
    assert frame.columns == COLUMNS
    assert frame.height > 0
    engaged = frame.join(facts.engaged, on=["user_id", "item_id"], how="semi")
    assert engaged.height == 0, f"recommended already-engaged items:\n{engaged.head(5)}"
    ended = frame.join(facts.ended, on="item_id", how="semi")
    assert ended.height == 0, f"recommended ended items:\n{ended.head(5)}"
    hidden = frame.join(facts.hidden, on="item_id", how="semi")
    assert hidden.height == 0, f"recommended hidden items:\n{hidden.head(5)}"
    per_user = frame.group_by("user_id", maintain_order=True).agg(
        pl.col("rank"), pl.col("score"), pl.col("item_id").n_unique().alias("distinct"), pl.len(),
    )
    assert per_user["len"].to_list() == [N] * per_user.height
    assert per_user["distinct"].to_list() == [N] * per_user.height
    assert all(ranks == list(range(1, N + 1)) for ranks in per_user["rank"].to_list())
    assert all(all(a >= b for a, b in zip(s, s[1:], strict=False)) for s in per_user["score"].to_list())


# --------------------------------------------------------------------------- the rules bite


def test_the_store_makes_every_rule_matter(facts: StoreFacts, trained_demo: TrainedDemo) -> None:
    """Each rule must exclude something popular, or passing it would prove nothing."""
    items = stored_items(trained_demo.home).height
    assert facts.ended.height >= 0.2 * items
    assert facts.hidden.height > 0
    heavy = facts.engaged.filter(pl.col("user_id").is_in(facts.heavy_users))
    open_items = stored_items(trained_demo.home).filter(
        ~pl.col("hidden") & (pl.col("ends_at").is_null() | (pl.col("ends_at") >= parse_timestamp(AT)))
    ).select("item_id")
    assert heavy.join(open_items, on="item_id", how="semi").height >= KNOWN_USERS  # still bookable, yet engaged


# --------------------------------------------------------------------------- --users


def test_users_file_output_format_and_summary(champion_run: Run, facts: StoreFacts) -> None:
    frame, summary = champion_run.frame, champion_run.summary
    assert frame.columns == COLUMNS
    assert frame.schema["rank"].is_integer() and frame.schema["score"].is_float()
    assert summary["version"] == "1"
    assert summary["users"] == KNOWN_USERS + len(UNKNOWN_USERS)
    assert summary["rows"] == frame.height == (KNOWN_USERS + len(UNKNOWN_USERS)) * N
    assert datetime.fromisoformat(summary["at"]) == parse_timestamp(AT)
    assert set(frame["user_id"].unique().to_list()) == set(facts.heavy_users) | set(UNKNOWN_USERS)


def test_users_file_lists_obey_the_delivery_rules(champion_run: Run, facts: StoreFacts) -> None:
    assert_delivery_rules(champion_run.frame, facts)


def test_known_users_get_personal_lists(champion_run: Run, facts: StoreFacts) -> None:
    known = champion_run.frame.filter(pl.col("user_id").is_in(facts.heavy_users))
    lists = known.group_by("user_id").agg(pl.col("item_id").sort_by("rank").alias("items"))
    distinct = {tuple(items) for items in lists["items"].to_list()}
    assert len(distinct) > KNOWN_USERS // 2


def test_unknown_users_get_the_same_fallback_list(champion_run: Run) -> None:
    unknown = champion_run.frame.filter(pl.col("user_id").is_in(UNKNOWN_USERS))
    assert unknown.group_by("user_id").len()["len"].to_list() == [N] * len(UNKNOWN_USERS)
    lists = unknown.group_by("user_id").agg(pl.col("item_id").sort_by("rank").alias("items"))
    assert len({tuple(items) for items in lists["items"].to_list()}) == 1


# --------------------------------------------------------------------------- --all


def test_all_users_parquet(all_run: Run, trained_demo: TrainedDemo, facts: StoreFacts) -> None:
    users = trained_demo.demo.data.users.height
    assert all_run.summary["users"] == users
    assert all_run.frame.height == users * N
    assert all_run.frame.schema == {"user_id": pl.String, "rank": pl.Int32, "item_id": pl.String,
                                    "score": pl.Float32}
    assert_delivery_rules(all_run.frame, facts)


def test_all_and_users_file_agree(all_run: Run, champion_run: Run, facts: StoreFacts) -> None:
    def lists(frame: pl.DataFrame) -> dict[str, list[str]]:
        chosen = frame.filter(pl.col("user_id").is_in(facts.heavy_users))
        grouped = chosen.group_by("user_id").agg(pl.col("item_id").sort_by("rank"))
        return dict(zip(grouped["user_id"].to_list(), grouped["item_id"].to_list(), strict=True))

    assert lists(all_run.frame) == lists(champion_run.frame)


# --------------------------------------------------------------------------- --version


def test_version_option_uses_that_model(version_run: Run, champion_run: Run, facts: StoreFacts) -> None:
    assert version_run.summary["version"] == "2"
    assert version_run.frame.height == champion_run.frame.height
    assert_delivery_rules(version_run.frame, facts)
    keys = ["user_id", "rank", "item_id"]
    same = version_run.frame.join(champion_run.frame, on=keys, how="semi").height
    assert same < version_run.frame.height  # ALS ranks differently from the hybrid champion


def test_unknown_version_is_a_clear_error(trained_demo: TrainedDemo, users_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.csv"
    result = run_cli("recommend", "--home", str(trained_demo.root), "--users", str(users_file), "--out", str(out),
                     "--version", "99")
    assert result.exit_code == 2, describe(result)
    assert "no version 99" in result.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- input errors


def test_users_file_without_user_id_exits_2(trained_demo: TrainedDemo, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    pl.DataFrame({"uid": ["u1", "u2"]}).write_csv(users)
    out = tmp_path / "recs.csv"
    result = run_cli("recommend", "--home", str(trained_demo.root), "--users", str(users), "--out", str(out))
    assert result.exit_code == 2, describe(result)
    assert "missing required column 'user_id'" in " ".join(result.stderr.split())
    assert not out.exists()


def test_missing_users_file_exits_2(trained_demo: TrainedDemo, tmp_path: Path) -> None:
    result = run_cli("recommend", "--home", str(trained_demo.root), "--users", str(tmp_path / "none.csv"),
                     "--out", str(tmp_path / "recs.csv"))
    assert result.exit_code == 2, describe(result)
    assert "no such file" in result.stderr


def test_neither_users_nor_all_exits_2(trained_demo: TrainedDemo, tmp_path: Path) -> None:
    result = run_cli("recommend", "--home", str(trained_demo.root), "--out", str(tmp_path / "recs.csv"))
    assert result.exit_code == 2, describe(result)
    assert "--users FILE or --all" in result.stderr


def test_unreadable_time_exits_2(trained_demo: TrainedDemo, tmp_path: Path) -> None:
    result = run_cli("recommend", "--home", str(trained_demo.root), "--all", "--at", "next tuesday",
                     "--out", str(tmp_path / "recs.csv"))
    assert result.exit_code == 2, describe(result)
    assert "cannot read" in result.stderr


def test_unsupported_output_suffix_exits_2(trained_demo: TrainedDemo, users_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.json"
    result = run_cli("recommend", "--home", str(trained_demo.root), "--users", str(users_file), "--out", str(out))
    assert result.exit_code == 2, describe(result)
    assert ".csv or .parquet" in result.stderr
    assert not out.exists()
