"""Property tests of validation and ingest: counts always reconcile, every rejected row says
why (and says what a plain-Python reading of the contract says), time parsing agrees with
``recsys.contract.parse_timestamp``, and ids of any script survive ingest unchanged."""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import store
from features.ingest import ingest
from features.validate import parse_times
from recsys.contract import ACTIONS, MAX_ID_LENGTH, Reason, latest_event_time, parse_timestamp
from recsys.home import EngineHome
from recsys.settings import EngineSettings

TZ = "Asia/Shanghai"
CATALOG = ("e1", "e2", "展览-3")

# --------------------------------------------------------------------------- time parsing


def two(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(lambda n: f"{n:02d}")


@st.composite
def iso_strings(draw: st.DrawFn) -> str:
    """ISO-8601 in the spellings providers use, with components sometimes out of range."""
    year = draw(st.one_of(st.integers(1900, 2100), st.sampled_from([1986, 1987, 1991])))
    month, day = draw(two(0, 13)), draw(two(0, 32))
    extended = draw(st.booleans())
    text = f"{year:04d}-{month}-{day}" if extended else f"{year:04d}{month}{day}"
    if draw(st.booleans()):  # with a time
        hour, minute, second = draw(two(0, 25)), draw(two(0, 60)), draw(two(0, 61))
        parts = draw(st.integers(1, 3))
        sep = ":" if draw(st.booleans()) else ""
        clock = sep.join([hour, minute, second][:parts])
        if parts == 3 and draw(st.booleans()):
            clock += draw(st.sampled_from([".", ","])) + draw(st.text("0123456789", min_size=1, max_size=9))
        text += draw(st.sampled_from(["T", "t", " "])) + clock
        offset = draw(st.one_of(
            st.just(""), st.just("Z"),
            st.tuples(st.sampled_from("+-"), two(0, 25), st.sampled_from(["", ":"]), two(0, 60)).map(
                lambda t: f"{t[0]}{t[1]}{t[2]}{t[3]}"),
            st.tuples(st.sampled_from("+-"), two(0, 25)).map(lambda t: t[0] + t[1]),
        ))
        text += offset
    return text


epoch_strings = st.one_of(
    st.integers(-70_000_000_000, 120_000_000_000).map(str),
    st.floats(-1e12, 1e12).map(repr),
    st.floats().map(repr),  # inf and nan too
    st.floats(0, 2e9).map(lambda f: f"{f:.6f}"),
    st.sampled_from(["1e9", "1E9", "+1700000000", " 1700000000 ", "1e400", "-0", ".5", "5."]),
)


def reference(text: str | None) -> object:
    try:
        return parse_timestamp(text, TZ)
    except OverflowError:  # the reference cannot express it; nothing to compare
        return "overflow"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(iso_strings(), epoch_strings), min_size=1, max_size=40))
def test_polars_time_parsing_agrees_with_parse_timestamp(texts: list[str]) -> None:
    parsed = parse_times(pl.Series(texts, dtype=pl.String), TZ).to_list()
    for text, mine in zip(texts, parsed, strict=True):
        expected = reference(text)
        if expected != "overflow":
            assert mine == expected, text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text("0123456789-:+TZ .,", max_size=26), min_size=1, max_size=40))
def test_whatever_polars_reads_as_a_time_python_reads_the_same(texts: list[str]) -> None:
    parsed = parse_times(pl.Series(texts, dtype=pl.String), TZ).to_list()
    for text, mine in zip(texts, parsed, strict=True):
        expected = reference(text)
        if mine is not None and expected != "overflow":
            assert mine == expected, text


# --------------------------------------------------------------------------- ingest invariants


def oracle_reason(row: dict[str, str | None]) -> Reason | None:
    """The contract read row by row in plain Python, in the validator's order."""
    def clean(v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    user, item, action, ts, value = (clean(row[c]) for c in ("user_id", "item_id", "action", "ts", "value"))
    if not (user and item and action and ts):
        return Reason.MISSING_FIELD
    if len(user) > MAX_ID_LENGTH or len(item) > MAX_ID_LENGTH:
        return Reason.ID_TOO_LONG
    if action.lower() not in ACTIONS:
        return Reason.UNKNOWN_ACTION
    moment = parse_timestamp(ts, TZ)
    if moment is None:
        return Reason.BAD_TIME
    if moment > latest_event_time(EngineSettings().max_future_skew_days):
        return Reason.FUTURE_TIME
    if value is not None:
        try:
            if not math.isfinite(float(value)):
                return Reason.BAD_VALUE
        except ValueError:
            return Reason.BAD_VALUE
        scale = EngineSettings()
        if action.lower() == "rate" and not scale.rating_min <= float(value) <= scale.rating_max:
            return Reason.RATING_OUT_OF_RANGE
    if item not in CATALOG:
        return Reason.UNKNOWN_ITEM
    return None


def oracle_key(row: dict[str, str | None]) -> tuple:
    value = (row["value"] or "").strip()
    return (row["user_id"].strip(), row["item_id"].strip(), row["action"].strip().lower(),
            parse_timestamp(row["ts"].strip(), TZ), float(value) if value else None)


rows = st.fixed_dictionaries({
    "user_id": st.sampled_from(["u1", "u2", " u3 ", "用户甲", "", "x" * (MAX_ID_LENGTH + 1)]),
    "item_id": st.sampled_from([*CATALOG, "e404", ""]),
    "action": st.sampled_from([*ACTIONS, "VIEW", "dance", ""]),
    "ts": st.sampled_from(["1795136000", "1795136000.5", "2026-11-20T10:00:00+08:00", "2026-11-20 10:00",
                           "2026-11-20T02:00:00Z", "2026-13-01", "soon", "", "2999-01-01T00:00:00Z"]),
    "value": st.sampled_from(["", "4", "4.0", "4.5", "abc", "inf", "nan", "0.5", "10", "-10", "10.5", "-11"]),
})


def catalog_file(directory: Path) -> Path:
    path = directory / "items.csv"
    pl.DataFrame({"item_id": list(CATALOG), "title": ["a", "b", "c"]}).write_csv(path)
    return path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(rows, max_size=30), repeat=st.booleans())
def test_counts_reconcile_and_every_rejection_matches_the_contract(batch: list[dict], repeat: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        home = EngineHome.at(directory / "home")
        ingest(home, items=catalog_file(directory))
        events = directory / "events.csv"
        pl.DataFrame(batch, schema={c: pl.String for c in rows_columns()}).write_csv(events)
        summary = ingest(home, interactions=events)
        counts = summary.tables["interactions"]
        assert counts.input_rows == len(batch)
        assert counts.accepted + counts.quarantined + counts.duplicates == counts.input_rows

        expected = [oracle_reason(r) for r in batch]
        valid_keys = [oracle_key(r) for r, reason in zip(batch, expected, strict=True) if reason is None]
        assert counts.accepted == len(set(valid_keys))
        assert counts.duplicates == len(valid_keys) - len(set(valid_keys))
        assert counts.reasons == dict(Counter(r.value for r in expected if r is not None))

        quarantine = store.scan_quarantine(home).collect().sort("row_number")
        assert quarantine.height == counts.quarantined
        assert all(reason for reason in quarantine["reason"].to_list())
        assert quarantine["reason"].to_list() == [r.value for r in expected if r is not None]
        assert store.scan_interactions(home).collect().height == counts.accepted

        if repeat:  # the same rows in another file (columns reordered): valid ones are duplicates now
            again = directory / "again.csv"
            pl.DataFrame(batch, schema={c: pl.String for c in reversed(rows_columns())}).write_csv(again)
            second = ingest(home, interactions=again).tables["interactions"]
            assert (second.accepted, second.duplicates) == (0, len(valid_keys))
            assert second.quarantined == counts.quarantined


def rows_columns() -> tuple[str, ...]:
    return ("user_id", "item_id", "action", "ts", "value")


ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")),
    min_size=1, max_size=24,
).filter(lambda s: s == s.strip())
chinese_ids = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=12)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_ids=st.lists(st.one_of(ids, chinese_ids), min_size=1, max_size=8, unique=True),
       item_ids=st.lists(st.one_of(ids, chinese_ids), min_size=1, max_size=8, unique=True),
       parquet=st.booleans())
def test_unicode_ids_survive_ingest_unchanged(user_ids: list[str], item_ids: list[str], parquet: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        home = EngineHome.at(directory / "home")
        items = pl.DataFrame({"item_id": item_ids, "title": item_ids})
        events = pl.DataFrame({
            "user_id": user_ids,
            "item_id": [item_ids[i % len(item_ids)] for i in range(len(user_ids))],
            "action": ["view"] * len(user_ids),
            "ts": [str(1795136000 + i) for i in range(len(user_ids))],
        })
        suffix = "parquet" if parquet else "csv"
        for frame, name in ((items, "items"), (events, "events")):
            getattr(frame, f"write_{suffix}")(directory / f"{name}.{suffix}")
        summary = ingest(home, items=directory / f"items.{suffix}", interactions=directory / f"events.{suffix}")
        assert summary.tables["interactions"].quarantined == 0
        stored_items = store.scan_items(home).collect()
        assert sorted(stored_items["item_id"].to_list()) == sorted(item_ids)
        assert stored_items.sort("item_id")["title"].to_list() == sorted(item_ids)
        stored = store.scan_interactions(home).collect()
        assert sorted(stored.select("user_id", "item_id").rows()) == sorted(
            events.select("user_id", "item_id").rows())
