"""Right to erasure: ``DELETE /v1/users/{id}`` -> tombstone -> the user is served as unknown at
once -> the next ``recsys ingest`` removes every row of theirs from every store file (day
partitions, users table, quarantine, the API's incoming segments) in one crash-safe commit,
and the planner report stops counting them."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from features import store, writer
from features.ingest import TableCounts, ingest, read_incoming
from recsys.bundle import ModelBundle
from recsys.home import EngineHome
from serving.app import create_app
from serving.auth import API_KEY_HEADER
from tests.demo_store import cli_json, run_cli
from tests.serving_fixtures import WRITER_KEY, keyed_settings, rules_data, write_bundle

ADMIN_KEY = "erasure-admin-key"
ERASED = "u1"
KEPT = ("u0", "u2", "u3", "张三")
DAYS = ("2026-11-18T10:00:00+08:00", "2026-11-19T11:00:00+08:00")
REGIONS = {"u0": "110101", "u1": "110119", "u2": "110101", "u3": "110119", "张三": "110119"}


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("erasure-model") / "bundle")


def provider_files(directory: Path, item_ids: list[str]) -> dict[str, Path]:
    """Items matching the model's catalog, five users, and their interactions over two days
    (one row of u1 and one of u2 name an unknown item and go to quarantine)."""
    directory.mkdir(parents=True, exist_ok=True)
    items = write_csv(directory / "items.csv", "item_id,title,kind,category,region_code",
                      [f"{i},活动{n},event,{'戏曲' if n % 2 else '音乐'},110101" for n, i in enumerate(item_ids)])
    users = write_csv(directory / "users.csv", "user_id,region_code,age_band,area_type",
                      [f"{u},{region},60+,rural" for u, region in REGIONS.items()])
    rows = [f"{u},{item_ids[(k * 7 + d * 3 + j) % len(item_ids)]},view,{day},"
            for k, u in enumerate(REGIONS) for d, day in enumerate(DAYS) for j in range(3)]
    rows += [f"{ERASED},no-such-item,view,{DAYS[0]},", f"u2,no-such-item,view,{DAYS[0]},"]
    interactions = write_csv(directory / "interactions.csv", "user_id,item_id,action,ts,value", rows)
    return {"items": items, "users": users, "interactions": interactions}


@pytest.fixture
def home(tmp_path: Path, bundle: Path) -> EngineHome:
    home = EngineHome.at(tmp_path / "home")
    catalog = ModelBundle.load(bundle).catalog
    summary = ingest(home, **provider_files(tmp_path / "provider", catalog.items.ids))
    assert summary.committed and summary.tables["interactions"].quarantined == 2
    return home


def make_client(home: EngineHome, bundle: Path) -> TestClient:
    """The client of an app backend: its key reads and posts, and may not erase."""
    app = create_app(keyed_settings(home=home.root, model_dir=bundle, admin_key=ADMIN_KEY))
    return TestClient(app, headers={API_KEY_HEADER: WRITER_KEY})


@pytest.fixture
def client(home: EngineHome, bundle: Path) -> Iterator[TestClient]:
    with make_client(home, bundle) as c:
        yield c


def recommend(client: TestClient, user: str) -> dict:
    response = client.get(f"/v1/users/{user}/recommendations", params={"n": 10})
    assert response.status_code == 200, response.text
    return response.json()


def post(client: TestClient, *rows: tuple[str, str]) -> dict:
    body = [{"user_id": u, "item_id": i, "action": "reserve", "ts": DAYS[1]} for u, i in rows]
    response = client.post("/v1/interactions", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def erase(client: TestClient, user: str, key: str | None = ADMIN_KEY):
    """``DELETE /v1/users/{user}`` with ``key`` (None: with none at all)."""
    return client.delete(f"/v1/users/{user}", headers={API_KEY_HEADER: key or ""})


# ---- what the store holds, file by file --------------------------------------------------
def user_ids_in_parquet(home: EngineHome) -> dict[str, set[str]]:
    """Per parquet file under the store (committed or not), the user ids it physically holds,
    including ids named inside quarantined raw lines."""
    found = {}
    for path in sorted(home.store.rglob("*.parquet*")):
        frame = pl.read_parquet(path)
        ids = set(frame["user_id"].drop_nulls().to_list()) if "user_id" in frame.columns else set()
        if "raw_line" in frame.columns:
            ids |= {u for u in REGIONS for line in frame["raw_line"].drop_nulls().to_list()
                    if json.dumps(u, ensure_ascii=False) in line}
        found[str(path.relative_to(home.store))] = ids
    return found


def segment_users(home: EngineHome) -> list[str]:
    """Every user id a line of an incoming segment names (blank lines name none)."""
    named = []
    for segment in sorted(home.incoming.glob("*.jsonl")):
        for line in segment.read_text(encoding="utf-8").splitlines():
            named += [u for u in REGIONS if json.dumps(u, ensure_ascii=False) in line]
    return named


def stored_counts(home: EngineHome) -> dict[str, int]:
    frame = store.scan_interactions(home).collect()
    return dict(frame.group_by("user_id").len().iter_rows())


def report_active_users(root: Path) -> dict[str, int]:
    summary = cli_json(run_cli("report", "--home", str(root), "--min-users", "1", "--json"))
    regions = json.loads((Path(summary["files"]["summary"])).read_text(encoding="utf-8"))["regions"]
    return {code: block["active_users"] for code, block in regions.items()}


# ---- the whole story --------------------------------------------------------------------
def test_erased_user_leaves_the_api_the_store_and_the_report(home: EngineHome, client: TestClient,
                                                            bundle: Path) -> None:
    items = ModelBundle.load(bundle).catalog.items.ids
    report_before = report_active_users(home.root)
    counts_before = stored_counts(home)
    assert counts_before[ERASED] == 6 and report_before == {"110101": 2, "110119": 3}

    # Posted before the erasure: pending in the segment, folded into the live state.
    assert post(client, (ERASED, items[5]), (ERASED, items[6]), ("u2", items[7]))["accepted"] == 3
    segment = next(home.incoming.glob("*.jsonl"))
    with open(segment, "a", encoding="utf-8") as fh:  # a torn line (a crash mid-write) naming the user
        fh.write('{"user_id":"u1","item_id":\n')
    personal = recommend(client, ERASED)
    assert personal["fallback"] is None and client.app.state.services.live.of(ERASED)

    assert erase(client, ERASED, key=None).status_code == 401
    assert erase(client, ERASED, key="wrong").status_code == 401
    assert erase(client, ERASED, key=WRITER_KEY).status_code == 403  # an app's key may not erase
    response = erase(client, ERASED)
    assert response.status_code == 200 and response.json()["status"] == "erased"
    tombstones = [json.loads(line) for line in home.tombstones.read_text(encoding="utf-8").splitlines()]
    assert tombstones == [{"user_id": ERASED, "erased_at": response.json()["erased_at"]}]
    again = erase(client, ERASED)
    assert again.json() == {**response.json(), "status": "already_erased"}
    assert len(home.tombstones.read_text(encoding="utf-8").splitlines()) == 1

    # Served as a stranger at once: same list as an id no model knows, under the caller's id.
    assert client.app.state.services.live.of(ERASED) == {}
    now = recommend(client, ERASED)
    stranger = recommend(client, "never-seen-anywhere")
    assert now["user_id"] == ERASED and now["fallback"] == stranger["fallback"] == "popularity"
    assert [i["item_id"] for i in now["items"]] == [i["item_id"] for i in stranger["items"]]
    refused = post(client, (ERASED, items[8]), ("u3", items[8]))
    assert refused["accepted"] == 1 and [(r["index"], r["reason"]) for r in refused["rejected"]] == [
        (0, "user_erased")]
    # Readers already skip the user; the files still hold them until the next ingest.
    assert ERASED not in stored_counts(home)
    assert any(ERASED in ids for ids in user_ids_in_parquet(home).values())
    assert ERASED not in set(read_incoming(home)[0]["user_id"].to_list())

    summary = cli_json(run_cli("ingest", "--home", str(home.root), "--json"))
    incoming = summary["tables"]["incoming"]
    assert incoming["erased"] == 3 and incoming["accepted"] == 2 and incoming["reconciles"]
    assert all(table["reconciles"] for table in summary["tables"].values())

    physical = user_ids_in_parquet(home)
    assert physical and all(ERASED not in ids for ids in physical.values()), physical
    assert ERASED not in segment_users(home) and segment_users(home).count("u2") == 1
    assert set().union(*physical.values()) >= set(KEPT)
    entry = store.ingest_log(home)[-1]
    assert entry["erasure"]["erased_users"] == 1 and entry["erasure"]["blanked_lines"] == 3
    assert entry["retires"] and not any((home.store / path).exists() for path in entry["retires"])
    quarantine = store.scan_quarantine(home).collect()
    assert quarantine["user_id"].to_list() == ["u2"]  # the other user's bad row stays

    expected = {user: n for user, n in counts_before.items() if user != ERASED}
    expected["u2"] += 1
    expected["u3"] += 1
    assert stored_counts(home) == expected
    assert report_active_users(home.root) == {"110101": 2, "110119": 2}
    info = cli_json(run_cli("store-info", "--home", str(home.root), "--json"))
    assert info["users"] == len(KEPT) and info["interactions"] == sum(expected.values())

    # Nothing is left to compact: the next run has nothing to do.
    assert ingest(home).tables == {}

    # A restarted server reads the tombstones and still treats the user as unknown.
    with make_client(home, bundle) as restarted:
        assert recommend(restarted, ERASED)["fallback"] == "popularity"
        assert post(restarted, (ERASED, items[9]))["accepted"] == 0


def test_a_chinese_id_is_erased_end_to_end(home: EngineHome, client: TestClient) -> None:
    user = "张三"
    assert erase(client, user).json()["status"] == "erased"
    assert recommend(client, user)["fallback"] == "popularity"
    ingest(home)
    assert all(user not in ids for ids in user_ids_in_parquet(home).values())
    assert user not in store.scan_users(home).collect()["user_id"].to_list()


def test_the_erasure_reaches_another_worker(home: EngineHome, bundle: Path) -> None:
    items = ModelBundle.load(bundle).catalog.items.ids
    with make_client(home, bundle) as first, make_client(home, bundle) as second:
        assert post(second, ("u2", items[3]))["accepted"] == 1  # u2 is in the model too
        assert second.app.state.services.live.of("u2")
        assert erase(first, "u2").status_code == 200
        time.sleep(1.1)  # each worker looks at the tombstones at most once a second
        assert recommend(second, "u2")["fallback"] == "popularity"
        assert second.app.state.services.live.of("u2") == {}
        assert post(second, ("u2", items[4]))["accepted"] == 0


def test_later_provider_rows_of_an_erased_user_are_counted_and_dropped(
        home: EngineHome, client: TestClient, tmp_path: Path) -> None:
    erase(client, ERASED)
    ingest(home)
    items = store.scan_items(home).collect()["item_id"].to_list()
    late = write_csv(tmp_path / "late.csv", "user_id,item_id,action,ts,value",
                     [f"{ERASED},{items[0]},attend,{DAYS[1]},", f"u0,{items[1]},attend,{DAYS[1]},",
                      f"{ERASED},nowhere,view,{DAYS[1]},"])
    users = write_csv(tmp_path / "late-users.csv", "user_id,area_type", [f"{ERASED},urban", "u9,urban"])
    summary = ingest(home, interactions=late, users=users)
    assert summary.tables["interactions"] == TableCounts(3, 1, 0, 0, {}, erased=2)
    assert summary.tables["users"] == TableCounts(2, 1, 0, 0, {}, erased=1)
    assert summary.tables["interactions"].to_dict()["erased"] == 2
    assert all(ERASED not in ids for ids in user_ids_in_parquet(home).values())


# ---- crash safety of the compaction -------------------------------------------------------
class Crash(BaseException):
    """A simulated process death: no except-Exception handler runs."""


def snapshot(home: EngineHome) -> dict:
    def rows(frame: pl.LazyFrame, drop: tuple[str, ...] = ()) -> list[str]:
        return sorted(map(str, frame.collect().drop(drop).rows()))

    return {"interactions": rows(store.scan_interactions(home)), "users": rows(store.scan_users(home)),
            "quarantine": rows(store.scan_quarantine(home), drop=("ingest_id",))}


@pytest.mark.parametrize("step", ["written", "backed_up", "replaced", "committed", "finished"])
def test_a_crash_while_compacting_reads_the_same_and_the_next_ingest_finishes(
        step: str, home: EngineHome, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    erase(client, ERASED)
    before = snapshot(home)  # readers already filter the user out
    assert ERASED not in str(before)

    def crash(at: str) -> None:
        if at == step:
            raise Crash(at)

    monkeypatch.setattr(writer, "crash_point", crash)
    with pytest.raises(Crash):
        ingest(home)
    monkeypatch.undo()
    assert snapshot(home) == before  # before recovery, at every step
    writer.recover(home)
    assert snapshot(home) == before
    ingest(home)
    assert snapshot(home) == before
    assert all(ERASED not in ids for ids in user_ids_in_parquet(home).values())
    leftovers = [p.name for p in home.store.rglob("*") if p.name.endswith((".staged", ".prev", ".absent"))]
    assert leftovers == []


def test_a_store_copied_before_the_erasure_is_cleaned_by_its_own_ingest(home: EngineHome, client: TestClient,
                                                                        tmp_path: Path) -> None:
    """A tombstone added by hand (no server running) is honoured the same way."""
    copy = EngineHome.at(tmp_path / "copy")
    shutil.copytree(home.root, copy.root)
    copy.tombstones.write_text(json.dumps({"user_id": "u3", "erased_at": "2026-11-20T00:00:00Z"}) + "\n")
    summary = ingest(copy)
    assert summary.committed and summary.tables == {}
    assert all("u3" not in ids for ids in user_ids_in_parquet(copy).values())
    assert store.ingest_log(copy)[-1]["kind"] == "erasure"
