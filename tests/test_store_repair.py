"""The store never deletes on doubt: a lost, emptied or damaged ingest log stops every
command with a message naming ``recsys store-repair`` (nothing deleted), ``store-repair``
rebuilds the log from the data files without losing a row, and a corrupt Parquet file is
named by ``store-verify`` and by the command that fails on it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from click.testing import Result
from typer.testing import CliRunner

from features import store, writer
from features.ingest import ingest
from features.repair import repair_store, verify_store
from features.store import StoreDamaged
from recsys.home import EngineHome
from training.cli import app


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def recsys(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def counts(home: EngineHome) -> dict[str, int]:
    """What a reader sees, table by table."""
    return {
        "interactions": store.scan_interactions(home).select(pl.len()).collect().item(),
        "quarantine": store.scan_quarantine(home).select(pl.len()).collect().item(),
        "items": store.scan_items(home).select(pl.len()).collect().item(),
        "users": store.scan_users(home).select(pl.len()).collect().item(),
    }


def data_files(home: EngineHome) -> list[str]:
    return sorted(p.relative_to(home.store).as_posix() for p in home.store.rglob("*.parquet"))


@pytest.fixture
def built(tmp_path: Path) -> EngineHome:
    """Three committed runs: catalog + users + interactions (one row quarantined), then two
    more interaction files on other days."""
    home = EngineHome.at(tmp_path / "home")
    items = write_csv(tmp_path / "items.csv", "item_id,title", "e1,Opera", "e2,Film", "e3,Talk")
    users = write_csv(tmp_path / "users.csv", "user_id,area_type", "u1,urban", "u2,rural")
    first = write_csv(tmp_path / "i1.csv", "user_id,item_id,action,ts",
                      "u1,e1,view,2026-11-01T10:00:00+08:00", "u2,e2,reserve,2026-11-02T10:00:00+08:00",
                      "u2,e404,view,2026-11-02T11:00:00+08:00")
    second = write_csv(tmp_path / "i2.csv", "user_id,item_id,action,ts",
                       "u1,e3,attend,2026-11-03T10:00:00+08:00", "u1,e2,click,2026-11-04T10:00:00+08:00")
    third = write_csv(tmp_path / "i3.csv", "user_id,item_id,action,ts", "u2,e3,favorite,2026-11-05T10:00:00+08:00")
    ingest(home, items=items, users=users, interactions=first)
    ingest(home, interactions=second)
    ingest(home, interactions=third)
    return home


def _empty(home: EngineHome) -> None:
    home.ingest_log.write_bytes(b"")


def _deleted(home: EngineHome) -> None:
    home.ingest_log.unlink()


def _garbage(home: EngineHome) -> None:
    home.ingest_log.write_bytes(b"\x00" * 64 + b"\n" + home.ingest_log.read_bytes()[70:])


def _lost_lines(home: EngineHome) -> None:
    first = home.ingest_log.read_bytes().splitlines(keepends=True)[0]
    home.ingest_log.write_bytes(first)


DAMAGE: dict[str, Callable[[EngineHome], None]] = {
    "emptied": _empty, "deleted": _deleted, "overwritten": _garbage, "cut to its first line": _lost_lines}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_log_loses_no_row(built: EngineHome, tmp_path: Path, damage: str) -> None:
    control, files = counts(built), data_files(built)
    assert control == {"interactions": 5, "quarantine": 1, "items": 3, "users": 2}
    DAMAGE[damage](built)

    for verb in (["ingest"], ["store-info"], ["report", "--min-users", "1"]):
        refused = recsys(*verb, "--home", str(built.root))
        assert refused.exit_code == 2, (verb, refused.output)
        assert "recsys store-repair" in refused.stderr and "Traceback" not in refused.output
    extra = write_csv(tmp_path / "late.csv", "user_id,item_id,action,ts", "u1,e1,share,2026-11-06T10:00:00+08:00")
    assert recsys("ingest", "--home", str(built.root), "--interactions", str(extra)).exit_code == 2
    assert data_files(built) == files  # nothing was deleted
    with pytest.raises(StoreDamaged, match="store-repair"):
        writer.recover(built)
    assert data_files(built) == files

    verified = recsys("store-verify", "--home", str(built.root), "--json")
    assert verified.exit_code == 2 and json.loads(verified.stdout)["healthy"] is False

    repaired = recsys("store-repair", "--home", str(built.root), "--json")
    assert repaired.exit_code == 0, repaired.output
    assert json.loads(repaired.stdout)["changed"] is True
    assert counts(built) == control
    assert data_files(built) == files

    log_bytes = built.ingest_log.read_bytes()
    again = recsys("store-repair", "--home", str(built.root), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["changed"] is False
    assert built.ingest_log.read_bytes() == log_bytes  # idempotent

    healthy = recsys("store-verify", "--home", str(built.root), "--json")
    assert healthy.exit_code == 0, healthy.output
    report = json.loads(healthy.stdout)
    assert report["healthy"] and report["rows"] == control

    # The store works again: the next ingest adds to it and deletes nothing.
    after = recsys("ingest", "--home", str(built.root), "--interactions", str(extra), "--json")
    assert after.exit_code == 0, after.output
    assert counts(built)["interactions"] == control["interactions"] + 1


def test_repair_keeps_readable_lines_and_a_copy_of_the_old_log(built: EngineHome) -> None:
    lines = built.ingest_log.read_bytes().splitlines(keepends=True)
    original = lines[0] + b"{not json\n" + lines[1] + lines[2]
    built.ingest_log.write_bytes(original)
    summary = repair_store(built)
    assert summary["changed"] and summary["dropped_log_lines"] == [2] and summary["committed_runs"] == []
    assert Path(summary["backup"]).read_bytes() == original
    entries = store.ingest_log(built)
    assert [e["ingest_id"] for e in entries] == [json.loads(line)["ingest_id"] for line in lines]
    assert entries[0]["sources"] == json.loads(lines[0])["sources"]  # what made re-ingests skip files
    assert counts(built)["interactions"] == 5


def test_a_crash_leftover_is_still_removed_by_the_next_writer(built: EngineHome) -> None:
    """One run newer than every committed one, without a line: the crash recover() is for."""
    files = data_files(built)
    leftover = built.interactions / "date=2030-01-01" / "20300101T000000000000Z-deadbeef.parquet"
    leftover.parent.mkdir()
    pl.read_parquet(built.interactions.glob("date=*/*.parquet").__next__()).write_parquet(leftover)
    assert counts(built)["interactions"] == 5  # readers ignore it
    writer.recover(built)
    assert data_files(built) == files


def test_a_run_older_than_a_committed_one_is_never_deleted(built: EngineHome) -> None:
    """The log lost a line in the middle: the lone orphan is older than a committed run."""
    lines = built.ingest_log.read_bytes().splitlines(keepends=True)
    built.ingest_log.write_bytes(lines[0] + lines[2])
    files = data_files(built)
    result = recsys("ingest", "--home", str(built.root))
    assert result.exit_code == 2 and "store-repair" in result.stderr
    assert data_files(built) == files
    assert repair_store(built)["committed_runs"] == [json.loads(lines[1])["ingest_id"]]
    assert counts(built)["interactions"] == 5


def test_a_file_repeating_committed_rows_is_committed_retired(built: EngineHome) -> None:
    """What a crashed erasure compaction leaves: a rewrite of a committed partition. Committing
    it as live would count its rows twice."""
    original = sorted(built.interactions.glob("date=2026-11-02/*.parquet"))[0]
    rewrite = original.with_name("20300101T000000000000Z-c0ffee00.parquet")
    shutil.copy(original, rewrite)
    summary = repair_store(built)
    assert summary["redundant_files"] == [str(rewrite)]
    assert counts(built)["interactions"] == 5
    writer.recover(built)
    assert not rewrite.exists() and original.exists()
    assert verify_store(built)["healthy"]


# ---- corrupt files ---------------------------------------------------------------------------
def _corrupt(path: Path) -> None:
    """Overwrite a few bytes of a real Parquet file (inside its first column chunk)."""
    data = bytearray(path.read_bytes())
    data[4:12] = b"\xde\xad\xbe\xef" * 2
    path.write_bytes(bytes(data))


def test_a_corrupt_partition_is_named_by_verify_and_by_the_failing_command(built: EngineHome) -> None:
    bad = sorted(built.interactions.glob("date=2026-11-03/*.parquet"))[0]
    _corrupt(bad)

    verified = recsys("store-verify", "--home", str(built.root), "--json")
    assert verified.exit_code == 2
    report = json.loads(verified.stdout)
    assert [c["path"] for c in report["corrupt"]] == [str(bad)]
    assert report["orphans"] == [] and report["missing"] == []

    with pytest.raises(StoreDamaged, match=str(bad)):
        store.scan_interactions(built).collect()
    failed = recsys("report", "--home", str(built.root), "--min-users", "1")
    assert failed.exit_code == 2 and str(bad) in failed.stderr and "Traceback" not in failed.output
    trained = recsys("train", "--home", str(built.root), "--model", "popularity", "--no-tune", "--no-promote")
    assert trained.exit_code == 2 and str(bad) in trained.stderr, trained.output

    log_bytes = built.ingest_log.read_bytes()
    refused = recsys("store-repair", "--home", str(built.root))
    assert refused.exit_code == 2 and str(bad) in refused.stderr
    assert built.ingest_log.read_bytes() == log_bytes


def test_a_corrupt_catalog_is_named(built: EngineHome) -> None:
    _corrupt(built.items)
    with pytest.raises(StoreDamaged, match="items.parquet"):
        store.scan_items(built).collect()
    report = verify_store(built)
    assert not report["healthy"] and [c["path"] for c in report["corrupt"]] == [str(built.items)]


def test_verify_names_a_file_the_log_commits_but_that_is_gone(built: EngineHome) -> None:
    gone = sorted(built.interactions.glob("date=2026-11-05/*.parquet"))[0]
    gone.unlink()
    report = verify_store(built)
    assert not report["healthy"] and report["missing"] == [str(gone)]


def test_an_empty_home_is_healthy_and_has_nothing_to_repair(tmp_path: Path) -> None:
    home = EngineHome.at(tmp_path / "nothing")
    assert verify_store(home)["healthy"]
    assert repair_store(home)["changed"] is False
    assert not home.root.exists()
