"""Ingest into the store: quarantine reasons, reconciliation, idempotence, crash safety,
incoming API segments, quarantine retry, the writer lock and the CLI verbs."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from features import store, writer
from features.ingest import TableCounts, ingest, read_incoming, retry_quarantine, store_info
from features.lock import StoreLocked, writer_lock
from recsys.contract import MAX_ID_LENGTH, ContractError, Reason
from recsys.home import EngineHome
from training.cli import app

LONG_ID = "x" * (MAX_ID_LENGTH + 1)


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def home(tmp_path: Path) -> EngineHome:
    return EngineHome.at(tmp_path / "home")


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "items.csv",
        "item_id,title,kind,tags,lat,lon,starts_at,ends_at,capacity,is_free,hidden",
        "e1,昆曲《牡丹亭》,show,戏曲| 昆曲 ,31.23,121.47,2026-11-20T19:30:00+08:00,2026-11-20T22:00:00+08:00,300,yes,",
        "e2,Library talk,lecture,,,,2026-11-21 14:00,2026-11-21 16:00,50.0,0,No",
        "e3,On-demand film,video,film,,,,,,true,1",
    )


def interactions_file(tmp_path: Path, name: str = "interactions.csv") -> Path:
    return write_csv(
        tmp_path / name, "user_id,item_id,action,ts,value",
        "u1,e1,reserve,2026-11-20T10:00:00+08:00,",
        "u1,e2,view,1795136000,",
        "u2,e3,rate,2026-11-19 23:30:00,4.5",
        "u3,e1,click,1795136000.25,",
    )


def snapshot(home: EngineHome) -> dict:
    """Everything a reader can see, independent of ingest ids."""
    def rows(frame: pl.LazyFrame, *, drop: tuple[str, ...] = ()) -> list:
        df = frame.collect().drop(drop)
        return sorted(map(str, df.rows()))

    return {
        "interactions": rows(store.scan_interactions(home)),
        "items": rows(store.scan_items(home)),
        "users": rows(store.scan_users(home)),
        "quarantine": rows(store.scan_quarantine(home), drop=("ingest_id",)),
        "ingests": len(store.ingest_log(home)),
    }


def data_files(home: EngineHome) -> list[str]:
    if not home.store.exists():
        return []
    return sorted(str(p.relative_to(home.store)) for p in home.store.rglob("*")
                  if p.is_file() and p.name != ".writer.lock")


# --------------------------------------------------------------------------- validation + counts


def test_mixed_files_quarantine_every_bad_row_with_its_reason(home: EngineHome, tmp_path: Path) -> None:
    items = write_csv(
        tmp_path / "items.csv",
        "item_id,title,kind,tags,lat,lon,starts_at,ends_at,capacity,is_free,hidden,extra",
        "e1,Opera,show,戏曲|京剧,39.9,116.4,2026-11-20T19:30:00+08:00,2026-11-20T22:00:00+08:00,300,yes,,x",  # 1 ok
        ",No id,show,,,,,,,,,",                                                          # 2 missing id
        f"{LONG_ID},Long,show,,,,,,,,,",                                                 # 3 id too long
        "e4,Bad lat,show,,north,116.4,,,,,,",                                            # 4 bad number
        "e5,Bad capacity,show,,,,,,12.5,,,",                                             # 5 bad number
        "e6,Out of range,show,,91,116.4,,,,,,",                                          # 6 coordinates
        "e7,Only lat,show,,39.9,,,,,,,",                                                 # 7 coordinates
        "e8,Bad time,show,,,,next friday,,,,,",                                          # 8 time
        "e9,Ends first,show,,,,2026-11-20T20:00:00,2026-11-20T19:00:00,,,,",             # 9 ends < starts
        "e10,Bad flag,show,,,,,,,maybe,,",                                               # 10 value
        "e11,Lecture,lecture,,,,,,,no,true,",                                            # 11 ok
    )
    users = write_csv(
        tmp_path / "users.csv", "user_id,region_code,age_band,area_type,registered_at",
        "u1,310101,18-34,urban,2025-01-01",   # 1 ok
        ",310101,18-34,urban,",               # 2 missing id
        "u3,310101,18-34,suburb,",            # 3 area type
        "u4,310101,18-34,Rural,yesterday",    # 4 time
        f"{LONG_ID},,,,",                     # 5 id too long
        "u6,,,,",                             # 6 ok
    )
    interactions = write_csv(
        tmp_path / "interactions.csv", "user_id,item_id,action,ts,value",
        "u1,e1,reserve,2026-11-20T10:00:00+08:00,",  # 1 ok
        "u1,e1,reserve,2026-11-20T02:00:00Z,",       # 2 same moment: duplicate
        ",e1,view,1795136000,",                       # 3 missing user
        "u2,e1,view,,",                               # 4 missing ts
        "u2,e1,dance,1795136000,",                    # 5 unknown action
        "u2,e1,view,tomorrow,",                       # 6 bad time
        "u2,e1,rate,1795136000,five",                 # 7 bad value
        "u2,e4,view,1795136000,",                     # 8 e4 was quarantined: not in catalog
        f"{LONG_ID},e1,view,1795136000,",             # 9 id too long
        "u2,e11,rate,1795136000,4",                   # 10 ok
        "u2,e1,VIEW,1795136000.5,",                   # 11 ok (action case-insensitive)
    )
    summary = ingest(home, items=items, users=users, interactions=interactions)

    quarantine = pl.read_parquet(summary.quarantine_file)
    found = {(t, n): r for t, n, r in quarantine.select("table", "row_number", "reason").iter_rows()}
    assert found == {
        ("items", 2): Reason.MISSING_FIELD, ("items", 3): Reason.ID_TOO_LONG,
        ("items", 4): Reason.BAD_NUMBER, ("items", 5): Reason.BAD_NUMBER,
        ("items", 6): Reason.BAD_COORDINATES, ("items", 7): Reason.BAD_COORDINATES,
        ("items", 8): Reason.BAD_TIME, ("items", 9): Reason.ENDS_BEFORE_STARTS, ("items", 10): Reason.BAD_VALUE,
        ("users", 2): Reason.MISSING_FIELD, ("users", 3): Reason.BAD_AREA_TYPE,
        ("users", 4): Reason.BAD_TIME, ("users", 5): Reason.ID_TOO_LONG,
        ("interactions", 3): Reason.MISSING_FIELD, ("interactions", 4): Reason.MISSING_FIELD,
        ("interactions", 5): Reason.UNKNOWN_ACTION, ("interactions", 6): Reason.BAD_TIME,
        ("interactions", 7): Reason.BAD_VALUE, ("interactions", 8): Reason.UNKNOWN_ITEM,
        ("interactions", 9): Reason.ID_TOO_LONG,
    }
    # Original values are kept as strings, with where they came from.
    bad_time = quarantine.filter(pl.col("table") == "interactions", pl.col("row_number") == 6).row(0, named=True)
    assert (bad_time["ts"], bad_time["user_id"], bad_time["source"]) == ("tomorrow", "u2", str(interactions))
    assert summary.tables["items"] == TableCounts(11, 2, 9, 0, {
        "unparseable_number": 2, "coordinates_out_of_range": 2, "missing_required_field": 1, "id_too_long": 1,
        "unparseable_time": 1, "ends_at_before_starts_at": 1, "unparseable_value": 1})
    assert summary.tables["users"].to_dict() | {"reasons": {}} == {
        "input_rows": 6, "accepted": 2, "quarantined": 4, "duplicates": 0, "reasons": {},
        "skipped_same_file": False, "reconciles": True}
    inter = summary.tables["interactions"]
    assert (inter.input_rows, inter.accepted, inter.quarantined, inter.duplicates) == (11, 3, 7, 1)
    assert all(c.reconciles for c in summary.tables.values())

    stored = store.scan_interactions(home).collect().sort("ts")
    assert stored.height == 3
    assert stored["action"].to_list() == ["rate", "view", "reserve"]
    assert stored["ts"][2] == datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    items_df = store.scan_items(home).collect().sort("item_id")
    assert items_df["item_id"].to_list() == ["e1", "e11"]
    assert items_df.row(0, named=True) | {"starts_at": None, "ends_at": None} == {
        "item_id": "e1", "title": "Opera", "kind": "show", "category": None, "tags": ["戏曲", "京剧"],
        "region_code": None, "venue_id": None, "lat": 39.9, "lon": 116.4, "starts_at": None, "ends_at": None,
        "capacity": 300, "provider": None, "is_free": True, "hidden": False, "min_age": None, "editorial": None,
        "series_id": None}
    assert items_df.row(1, named=True)["is_free"] is False and items_df.row(1, named=True)["hidden"] is True
    users_df = store.scan_users(home).collect().sort("user_id")
    assert users_df["user_id"].to_list() == ["u1", "u6"]
    assert users_df["registered_at"][0] == datetime(2024, 12, 31, 16, 0, tzinfo=UTC)  # naive = Shanghai


def test_items_types_and_partition_dates_follow_the_settings_time_zone(home: EngineHome, tmp_path: Path,
                                                                        catalog: Path) -> None:
    summary = ingest(home, items=catalog, interactions=interactions_file(tmp_path))
    assert summary.tables["interactions"].accepted == 4
    items_df = store.scan_items(home).collect().sort("item_id")
    assert items_df["tags"].to_list() == [["戏曲", "昆曲"], [], ["film"]]
    assert items_df["capacity"].to_list() == [300, 50, None]
    assert items_df["is_free"].to_list() == [True, False, True]
    assert items_df["hidden"].to_list() == [False, False, True]
    # 2026-11-19 23:30 local (naive) is 15:30 UTC; 1795136000 is 2026-11-20 08:53:20 in Shanghai.
    dates = sorted(p.parent.name for p in store.interaction_files(home))
    assert dates == ["date=2026-11-19", "date=2026-11-20"]
    by_date = {p.parent.name: pl.read_parquet(p).height for p in store.interaction_files(home)}
    assert by_date == {"date=2026-11-19": 1, "date=2026-11-20": 3}


def test_parquet_input_with_typed_columns_matches_csv(home: EngineHome, tmp_path: Path) -> None:
    items = pl.DataFrame({
        "item_id": ["e1", "e2"], "tags": [["a", "b"], None], "lat": [31.2, None], "lon": [121.4, None],
        "capacity": [10, None], "is_free": [True, None],
        "starts_at": [datetime(2026, 11, 20, 19, 30), None],  # naive: local time
    })
    interactions = pl.DataFrame({
        "user_id": ["用户一", "u2", "u3"], "item_id": ["e1", "e2", "e2"], "action": ["view", "rate", "view"],
        "ts": [datetime(2026, 11, 20, 2, 0, tzinfo=UTC), datetime(2026, 11, 20, 3, 0, tzinfo=UTC), None],
        "value": [None, 5.0, None],
    })
    items.write_parquet(tmp_path / "items.parquet")
    interactions.write_parquet(tmp_path / "interactions.parquet")
    summary = ingest(home, items=tmp_path / "items.parquet", interactions=tmp_path / "interactions.parquet")
    assert summary.tables["interactions"].reasons == {Reason.MISSING_FIELD.value: 1}
    stored = store.scan_interactions(home).collect().sort("ts")
    assert stored["user_id"].to_list() == ["用户一", "u2"]
    assert stored["ts"].to_list() == [datetime(2026, 11, 20, 2, tzinfo=UTC), datetime(2026, 11, 20, 3, tzinfo=UTC)]
    items_df = store.scan_items(home).collect().sort("item_id")
    assert items_df["tags"].to_list() == [["a", "b"], []]
    assert items_df["starts_at"][0] == datetime(2026, 11, 20, 11, 30, tzinfo=UTC)


# --------------------------------------------------------------------------- idempotence


def test_second_ingest_of_the_same_file_adds_nothing(home: EngineHome, tmp_path: Path, catalog: Path) -> None:
    interactions = interactions_file(tmp_path)
    ingest(home, items=catalog, interactions=interactions)
    before = snapshot(home)
    again = ingest(home, items=catalog, interactions=interactions)
    assert again.tables["interactions"].skipped_same_file and again.tables["items"].skipped_same_file
    assert again.tables["interactions"].accepted == 0 and not again.committed
    assert snapshot(home) == before


def test_same_rows_in_another_file_are_counted_as_duplicates(home: EngineHome, tmp_path: Path,
                                                             catalog: Path) -> None:
    ingest(home, items=catalog, interactions=interactions_file(tmp_path))
    before = store.scan_interactions(home).collect().height
    # Same events, columns reordered, times spelled differently, one new row and one repeated.
    other = write_csv(
        tmp_path / "other.csv", "ts,user_id,item_id,action,value",
        "2026-11-20T02:00:00Z,u1,e1,reserve,",
        "1795136000.0,u1,e2,view,",
        "2026-11-19T23:30:00+08:00,u2,e3,rate,4.50",
        "1795136000.25,u3,e1,click,",
        "1795136001,u3,e1,click,",
        "1795136001,u3,e1,click,",
    )
    summary = ingest(home, interactions=other)
    counts = summary.tables["interactions"]
    assert (counts.input_rows, counts.accepted, counts.quarantined, counts.duplicates) == (6, 1, 0, 5)
    assert store.scan_interactions(home).collect().height == before + 1


def test_users_and_items_are_upserted_by_id(home: EngineHome, tmp_path: Path) -> None:
    first = write_csv(tmp_path / "u1.csv", "user_id,region_code,area_type", "u1,310101,urban", "u2,310102,rural")
    ingest(home, users=first)
    second = write_csv(tmp_path / "u2.csv", "user_id,region_code,area_type",
                       "u1,310101,urban",      # identical to the stored row: duplicate
                       "u2,320000,rural",      # replaces
                       "u3,330000,",           # new
                       "u3,330001,urban")      # replaces the row above
    counts = ingest(home, users=second).tables["users"]
    assert (counts.input_rows, counts.accepted, counts.quarantined, counts.duplicates) == (4, 3, 0, 1)
    users = store.scan_users(home).collect().sort("user_id")
    assert users.select("user_id", "region_code", "area_type").rows() == [
        ("u1", "310101", "urban"), ("u2", "320000", "rural"), ("u3", "330001", "urban")]


# --------------------------------------------------------------------------- whole-file errors


def test_missing_column_exits_2_naming_file_and_column_and_writes_nothing(tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "events.csv", "user_id,item,action,ts", "u1,e1,view,1795136000")
    home_dir = tmp_path / "fresh-home"
    result = CliRunner().invoke(app, ["ingest", "--interactions", str(bad), "--home", str(home_dir)])
    assert result.exit_code == 2
    output = re.sub(r"\s+", "", result.output)
    assert re.sub(r"\s+", "", str(bad)) in output and "'item_id'" in output
    assert not home_dir.exists()
    with pytest.raises(ContractError) as err:
        ingest(EngineHome.at(home_dir), interactions=bad)
    assert err.value.column == "item_id" and err.value.source == str(bad)
    assert not home_dir.exists()


def test_unreadable_or_absent_file_is_a_contract_error(tmp_path: Path) -> None:
    home = EngineHome.at(tmp_path / "h")
    ragged = write_csv(tmp_path / "ragged.csv", "user_id,item_id,action,ts", "u1,e1,view,1,2,3")
    with pytest.raises(ContractError, match="ragged.csv"):
        ingest(home, interactions=ragged)
    with pytest.raises(ContractError, match="file not found"):
        ingest(home, interactions=tmp_path / "absent.csv")
    assert not home.root.exists()


# --------------------------------------------------------------------------- crash safety


@pytest.fixture
def baseline(tmp_path: Path, catalog: Path) -> EngineHome:
    """A store with a catalog, users and interactions; later ingests change all three."""
    home = EngineHome.at(tmp_path / "baseline")
    users = write_csv(tmp_path / "users.csv", "user_id,area_type", "u1,urban", "u2,rural")
    ingest(home, items=catalog, users=users, interactions=interactions_file(tmp_path))
    return home


def second_batch(tmp_path: Path) -> dict[str, Path]:
    items = write_csv(tmp_path / "items2.csv", "item_id,title,kind",
                      "e1,Opera (new run),show", "e9,Exhibition,exhibition")
    users = write_csv(tmp_path / "users2.csv", "user_id,area_type", "u2,urban", "u9,rural")
    interactions = write_csv(tmp_path / "inter2.csv", "user_id,item_id,action,ts,value",
                             "u9,e9,attend,2026-11-22T10:00:00+08:00,", "u9,e404,view,1795136000,")
    return {"items": items, "users": users, "interactions": interactions}


def expected_after(baseline: EngineHome, tmp_path: Path) -> dict:
    reference = EngineHome.at(tmp_path / "reference")
    shutil.copytree(baseline.root, reference.root)
    ingest(reference, **second_batch(tmp_path))
    return snapshot(reference)


class Crash(BaseException):
    """A simulated process death: no except-Exception handler runs."""


INVISIBLE = ["written", "backed_up"]  # nothing a reader sees has changed yet
SWAPPING = ["replaced:items.parquet", "replaced:users.parquet", "replaced"]  # tables swapped, not committed
POST_COMMIT = ["committed", "finished"]


@pytest.mark.parametrize("step", INVISIBLE + SWAPPING + POST_COMMIT)
def test_crash_at_any_step_reads_before_or_after_and_recovers(
        step: str, baseline: EngineHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before, after = snapshot(baseline), expected_after(baseline, tmp_path)
    assert before != after

    def crash(at: str) -> None:
        if at == step:
            raise Crash(at)

    monkeypatch.setattr(writer, "crash_point", crash)
    with pytest.raises(Crash):
        ingest(baseline, **second_batch(tmp_path))
    monkeypatch.undo()
    if step in INVISIBLE:
        assert snapshot(baseline) == before  # even before recovery
    elif step in POST_COMMIT:
        assert snapshot(baseline) == after
    writer.recover(baseline)
    assert snapshot(baseline) == (after if step in POST_COMMIT else before)
    leftovers = [f for f in data_files(baseline) if f.endswith((".staged", ".prev", ".absent"))]
    assert leftovers == []
    # The next writer succeeds and ends in the state a clean run gives.
    ingest(baseline, **second_batch(tmp_path))
    assert snapshot(baseline) == after


def test_failing_log_append_rolls_back_and_next_ingest_succeeds(
        baseline: EngineHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before, files_before = snapshot(baseline), data_files(baseline)
    after = expected_after(baseline, tmp_path)
    log_bytes = baseline.ingest_log.read_bytes()

    def half_a_line(home: EngineHome, entry: dict) -> None:
        with open(home.ingest_log, "ab") as fh:
            fh.write(json.dumps(entry).encode()[:40])
        raise OSError("disk full")

    monkeypatch.setattr(writer, "append_log_line", half_a_line)
    with pytest.raises(OSError, match="disk full"):
        ingest(baseline, **second_batch(tmp_path))
    monkeypatch.undo()
    assert snapshot(baseline) == before
    assert data_files(baseline) == files_before
    assert baseline.ingest_log.read_bytes() == log_bytes
    ingest(baseline, **second_batch(tmp_path))
    assert snapshot(baseline) == after
    assert len(store.ingest_log(baseline)) == len(log_bytes.splitlines()) + 1


def test_failing_first_log_append_leaves_an_empty_store(
        home: EngineHome, tmp_path: Path, catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_a_line(home: EngineHome, entry: dict) -> None:
        home.ingest_log.write_bytes(json.dumps(entry).encode()[:40])
        raise OSError("disk full")

    monkeypatch.setattr(writer, "append_log_line", half_a_line)
    with pytest.raises(OSError, match="disk full"):
        ingest(home, items=catalog, interactions=interactions_file(tmp_path))
    monkeypatch.undo()
    assert data_files(home) == ["ingest_log.jsonl"] and home.ingest_log.read_bytes() == b""
    assert snapshot(home) == {"interactions": [], "items": [], "users": [], "quarantine": [], "ingests": 0}
    assert ingest(home, items=catalog, interactions=interactions_file(tmp_path)).tables["interactions"].accepted == 4


def test_failing_replace_restores_the_old_tables(
        baseline: EngineHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before, files_before = snapshot(baseline), data_files(baseline)
    real_replace = os.replace

    def replace_users_fails(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "users.parquet" and str(src).endswith(".staged"):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_users_fails)
    with pytest.raises(OSError, match="rename failed"):
        ingest(baseline, **second_batch(tmp_path))
    monkeypatch.undo()
    # items.parquet had already been replaced; the rollback put the old one back.
    assert snapshot(baseline) == before
    assert data_files(baseline) == files_before
    summary = ingest(baseline, **second_batch(tmp_path))
    assert summary.committed and summary.tables["items"].accepted == 2


def test_recover_removes_uncommitted_leftovers_and_repairs_a_torn_log(baseline: EngineHome) -> None:
    before, files_before = snapshot(baseline), data_files(baseline)
    orphan = baseline.interactions / "date=2030-01-01" / "20300101T000000000000Z-deadbeef.parquet"
    orphan.parent.mkdir(parents=True)
    pl.DataFrame({"user_id": ["u1"]}).write_parquet(orphan)
    baseline.quarantine.mkdir(exist_ok=True)
    (baseline.quarantine / "20300101T000000000000Z-deadbeef.parquet").write_bytes(b"junk")
    (baseline.store / "items.parquet.20300101T000000000000Z-deadbeef.staged").write_bytes(b"junk")
    with open(baseline.ingest_log, "ab") as fh:
        fh.write(b'{"ingest_id": "20300101T000000000000Z-dead')
    writer.recover(baseline)
    assert data_files(baseline) == files_before
    assert not orphan.parent.exists()
    assert baseline.ingest_log.read_bytes().endswith(b"}\n")
    assert snapshot(baseline) == before


# --------------------------------------------------------------------------- incoming segments


def test_incoming_segments_are_picked_up_once_and_torn_lines_quarantined(
        home: EngineHome, catalog: Path) -> None:
    ingest(home, items=catalog)
    home.incoming.mkdir(parents=True)
    segment = home.incoming / "api-0001.jsonl"
    lines = [
        json.dumps({"user_id": "u1", "item_id": "e1", "action": "view", "ts": 1795136000}),
        json.dumps({"user_id": "用户", "item_id": "e2", "action": "rate", "ts": "2026-11-20T10:00:00+08:00",
                    "value": 5}, ensure_ascii=False),
        '{"user_id": "u2", "item_id": ',            # torn in the middle, newline written
        "",                                           # blank lines are not rows
        json.dumps({"user_id": "u3", "item_id": "e404", "action": "view", "ts": 1795136000}),
    ]
    partial = '{"user_id": "u4", "item_id": "e1", "action": "vi'  # still being written
    segment.write_text("\n".join(lines) + "\n" + partial, encoding="utf-8")

    pending, offsets = read_incoming(home)
    assert sorted(pending["user_id"].to_list()) == ["u1", "用户"]
    assert offsets == {"api-0001.jsonl": segment.stat().st_size - len(partial.encode())}
    assert store.scan_interactions(home).collect().height == 0  # read_incoming writes nothing

    first = ingest(home)
    assert first.tables["incoming"] == TableCounts(4, 2, 2, 0, {
        Reason.TORN_LINE.value: 1, Reason.UNKNOWN_ITEM.value: 1})
    quarantine = pl.read_parquet(first.quarantine_file).sort("row_number")
    assert quarantine["row_number"].to_list() == [3, 5]
    assert quarantine["raw_line"][0] == '{"user_id": "u2", "item_id": '
    assert store_info(home)["incoming_pending_bytes"] == len(partial.encode())

    assert ingest(home).tables == {}  # nothing new: no run, nothing committed
    with open(segment, "a", encoding="utf-8") as fh:
        fh.write('ew", "ts": 1795136000}\n')
    second = ingest(home)
    assert second.tables["incoming"] == TableCounts(1, 1, 0, 0, {})
    stored = store.scan_interactions(home).collect()
    assert sorted(stored["user_id"].to_list()) == ["u1", "u4", "用户"]
    assert ingest(home).tables == {}
    assert read_incoming(home)[0].height == 0


def test_only_wholly_ingested_segments_of_stopped_servers_are_removed_after_retention(
        home: EngineHome, catalog: Path) -> None:
    ingest(home, items=catalog)
    home.incoming.mkdir(parents=True)
    line = json.dumps({"user_id": "u1", "item_id": "e1", "action": "view", "ts": 1795136000}) + "\n"
    names = {
        "stopped": "20261101T000000000000Z-11.jsonl",
        "running": "20261101T000000000000Z-12.jsonl",   # its writer still holds the flock
        "recent": "20261101T000000000000Z-13.jsonl",    # written within the retention period
        "torn": "20261101T000000000000Z-14.jsonl",      # writer died mid-line: read to its end first
        "tool": "export.jsonl",                         # not a server's: never touched
    }
    for key, name in names.items():
        text = line.replace("u1", key)
        (home.incoming / name).write_text(text + ('{"user_id": "x' if key == "torn" else ""), encoding="utf-8")
    month_ago = time.time() - 30 * 86_400
    for key in ("stopped", "running", "torn", "tool"):
        os.utime(home.incoming / names[key], (month_ago, month_ago))
    with open(home.incoming / names["running"], "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        first = ingest(home)
        assert sorted(first.removed_segments) == sorted([names["stopped"], names["torn"]])
        assert sorted(p.name for p in home.incoming.iterdir()) == sorted(
            [names["running"], names["recent"], names["tool"]])
        assert first.to_dict()["removed_segments"] == first.removed_segments
    stored = sorted(store.scan_interactions(home).collect()["user_id"].to_list())
    assert stored == ["recent", "running", "stopped", "tool", "torn"]  # every line was kept first
    assert store.scan_quarantine(home).collect()["reason"].to_list() == [Reason.TORN_LINE.value]

    # the writer has stopped now; a zero retention removes what is wholly ingested at once
    again = ingest(home, keep_incoming_days=0)
    assert sorted(again.removed_segments) == sorted([names["running"], names["recent"]])
    assert [p.name for p in home.incoming.iterdir()] == ["export.jsonl"]
    assert again.tables == {} and store.scan_interactions(home).collect().height == 5
    # a segment with lines not yet committed stays, whatever its age
    pending = home.incoming / "20261101T000000000000Z-15.jsonl"
    pending.write_text(line, encoding="utf-8")
    os.utime(pending, (month_ago, month_ago))
    assert ingest(home, keep_incoming_days=0, include_incoming=False).removed_segments == []
    assert pending.exists()


# --------------------------------------------------------------------------- quarantine retry


def test_retry_accepts_interactions_once_their_item_arrives(home: EngineHome, tmp_path: Path,
                                                           catalog: Path) -> None:
    ingest(home, items=catalog)
    early = write_csv(tmp_path / "early.csv", "user_id,item_id,action,ts,value",
                      "u1,e7,reserve,1795136000,", "u2,e7,view,1795136001,", "u3,e1,dance,1795136002,")
    first = ingest(home, interactions=early)
    assert first.tables["interactions"].reasons == {"item_not_in_catalog": 2, "unknown_action": 1}

    nothing_yet = retry_quarantine(home)
    assert not nothing_yet.committed and nothing_yet.tables["interactions"].quarantined == 3

    ingest(home, items=write_csv(tmp_path / "late.csv", "item_id,title,kind", "e7,Late show,show"))
    retried = retry_quarantine(home)
    assert retried.committed
    assert retried.tables["interactions"] == TableCounts(3, 2, 1, 0, {"unknown_action": 1})
    assert sorted(store.scan_interactions(home).collect()["user_id"].to_list()) == ["u1", "u2"]
    remaining = store.scan_quarantine(home).collect()
    assert remaining.select("user_id", "reason", "row_number", "ingest_id").rows() == [
        ("u3", "unknown_action", 3, first.ingest_id)]
    assert [p.stem for p in home.quarantine.glob("*.parquet")] == [retried.ingest_id]
    info = store_info(home)
    assert info["quarantine"] == {"rows": 1, "by_reason": {"unknown_action": 1}}
    assert info["quarantine_retries"] == 1
    again = retry_quarantine(home)
    assert not again.committed and again.tables["interactions"] == TableCounts(1, 0, 1, 0, {"unknown_action": 1})


# --------------------------------------------------------------------------- lock


def test_second_writer_gets_store_locked(home: EngineHome, tmp_path: Path, catalog: Path) -> None:
    with writer_lock(home, command="recsys ingest --items big.csv"):
        with pytest.raises(StoreLocked, match=rf"store is locked by pid {os.getpid()} \(recsys ingest --items"):
            ingest(home, items=catalog)
        with pytest.raises(StoreLocked):
            retry_quarantine(home)
        result = CliRunner().invoke(app, ["ingest", "--items", str(catalog), "--home", str(home.root)])
        assert result.exit_code == 2
        assert "store is locked by pid" in re.sub(r"\s+", " ", result.output)
    assert ingest(home, items=catalog).committed  # released


def test_writer_waits_for_the_lock_when_asked(home: EngineHome, catalog: Path) -> None:
    held = threading.Event()

    def hold() -> None:
        with writer_lock(home, command="holder"):
            held.set()
            time.sleep(0.3)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    started = time.monotonic()
    summary = ingest(home, items=catalog, wait_seconds=5)
    thread.join()
    assert summary.committed and time.monotonic() - started >= 0.2


# --------------------------------------------------------------------------- CLI + store-info


def test_cli_ingest_json_and_store_info(home: EngineHome, tmp_path: Path, catalog: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "--items", str(catalog), "--interactions",
                                 str(interactions_file(tmp_path)), "--home", str(home.root), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tables"]["interactions"]["accepted"] == 4 and summary["committed"] is True
    result = runner.invoke(app, ["store-info", "--home", str(home.root), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["interactions"], info["items"], info["users"], info["ingests"]) == (4, 3, 0, 1)
    assert info["interactions_by_action"] == {"click": 1, "rate": 1, "reserve": 1, "view": 1}
    assert info["items_by_kind"] == {"lecture": 1, "show": 1, "video": 1}
    assert info["date_range"] == {"first": "2026-11-19T15:30:00+00:00", "last": "2026-11-20T02:00:00+00:00"}
    assert info["quarantine"] == {"rows": 0, "by_reason": {}}
    human = runner.invoke(app, ["store-info", "--home", str(home.root)])
    assert human.exit_code == 0 and "interactions 4" in human.output


def test_store_info_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    home = EngineHome.at(tmp_path / "nowhere")
    info = store_info(home)
    assert (info["interactions"], info["items"], info["ingests"]) == (0, 0, 0)
    assert not home.root.exists()
