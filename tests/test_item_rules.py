"""The API's row-by-row item rules (recsys.item_rules) and ingest's vectorised ones
(features.validate) give every row the same verdict: the same reason, or the same typed values."""

from __future__ import annotations

import math

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.validate import REASON, typed, validate_items
from recsys.contract import ITEM_COLUMNS, Reason
from recsys.item_rules import ItemRow, Problem, check_item, field_text, tags_text

TZ = "Asia/Shanghai"

numbers = st.one_of(
    st.none(), st.just(""), st.just(" "),
    st.floats(-200, 200, allow_nan=False).map(repr), st.integers(-5, 200).map(str),
    st.sampled_from(["1e2", "nan", "inf", "-0", "+3", ".5", "5.", "1_0", "１２", "abc", "12.0", "1e400", "0x10"]),
)
times = st.one_of(
    st.none(), st.just(""),
    st.sampled_from(["2026-11-20T19:30:00+08:00", "2026-11-20 19:30", "20261120T193000", "2026-11-20",
                     "2026-11-20T19:30:00Z", "2026-13-01", "2026-11-20T19:30:60", "1700000000", "1e20",
                     "2026-11-20T19:30+2500", "0000-01-01", "2026-W47", "soon", "2026-11-20t19:30:00.123456789",
                     "1795000000.5", "-1e12"]),
)
flags = st.one_of(st.none(), st.sampled_from(["true", "FALSE", "1", "0", "yes", "否", "是", "maybe", " ", "2"]))
ids = st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=5), st.just("x" * 257))
regions = st.one_of(st.none(), st.sampled_from(["110101", "11010", "abcdef", "1101011", " 110229 "]))


@st.composite
def item_texts(draw: st.DrawFn) -> dict[str, str | None]:
    return {
        "item_id": draw(ids), "title": draw(st.one_of(st.none(), st.text(max_size=5))),
        "kind": draw(st.one_of(st.none(), st.sampled_from(["event", "digital"]))), "category": None,
        "tags": draw(st.one_of(st.none(), st.sampled_from(["a|b", " a | |b ", "|", "戏曲"]))),
        "region_code": draw(regions), "venue_id": draw(ids), "lat": draw(numbers), "lon": draw(numbers),
        "starts_at": draw(times), "ends_at": draw(times), "capacity": draw(numbers), "provider": None,
        "is_free": draw(flags), "hidden": draw(flags), "min_age": draw(numbers), "editorial": draw(flags),
        "series_id": draw(ids),
    }


def polars_verdicts(rows: list[dict[str, str | None]]) -> list[dict]:
    frame = pl.DataFrame(rows, schema={c: pl.String for c in ITEM_COLUMNS})
    return validate_items(frame.lazy(), TZ).collect().to_dicts()


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(item_texts(), min_size=1, max_size=20))
def test_row_rules_agree_with_ingest(rows: list[dict[str, str | None]]) -> None:
    for row, verdict in zip(rows, polars_verdicts(rows), strict=True):
        mine = check_item(row, TZ)
        if isinstance(mine, Problem):
            assert verdict[REASON] == mine.reason.value, (row, mine, verdict[REASON])
            continue
        assert verdict[REASON] is None, (row, verdict[REASON])
        assert_same_values(mine, verdict)


def assert_same_values(mine: ItemRow, verdict: dict) -> None:
    for column in ("lat", "lon", "capacity", "min_age", "region_code", "venue_id", "series_id", "is_free",
                   "editorial", "hidden"):
        assert getattr(mine, column) == verdict[typed(column)], column
    for column in ("starts_at", "ends_at"):
        theirs = verdict[typed(column)]
        ours = getattr(mine, column)
        assert (ours is None) == (theirs is None), column
        if ours is not None:
            assert math.isclose(ours, theirs.timestamp(), abs_tol=1e-6), column
    assert list(mine.tags) == verdict[typed("tags")]


def test_json_values_read_as_the_texts_a_file_would_carry() -> None:
    assert field_text(True) == "true" and field_text(12) == "12" and tags_text(["a", "b"]) == "a|b"
    assert field_text(None) is None and field_text({"x": 1}) == '{"x": 1}'
    row = check_item({"item_id": "e1", "capacity": field_text(30), "hidden": field_text(False),
                      "tags": tags_text(["戏曲", "周末"]), "lat": "39.9", "lon": "116.4"}, TZ)
    assert isinstance(row, ItemRow) and row.capacity == 30 and row.tags == ("戏曲", "周末") and not row.hidden
    problem = check_item({"item_id": "e1", "starts_at": "2026-11-21", "ends_at": "2026-11-20"}, TZ)
    assert isinstance(problem, Problem) and problem.reason == Reason.ENDS_BEFORE_STARTS
