"""The API's catalogue writes: new complete lines of ``store/incoming/items/*.jsonl``, as item rows.

A server appends one line per accepted write (:func:`recsys.live_catalog.change_record`): a
replacement carries every column, an amendment only the ones it names. Each committed run
records per segment what it consumed (``item_lines`` in its log line, the same spans as the
interactions' ``incoming``), and the next run resumes there.

The lines of one run are applied in the order the servers accepted them, after the run's
provider files, each over the item as it stands: a replacement is the row itself; an
amendment is laid over the latest row of its id (an earlier line of the run, else the run's
provider file, else the store) and becomes that whole row. The rows then take the catalogue's
one way in (validation, last-wins upsert, quarantine with a reason), so an interaction on an
item created through the API in the same run finds it in the catalogue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import polars as pl

from features.ingest.api_lines import committed_offsets, new_segment_lines
from features.ingest.files import as_text
from features.validate import RAW_LINE, ROW, SOURCE, TABLE, TORN
from recsys.appendlog import json_object
from recsys.contract import ITEM_COLUMNS
from recsys.home import EngineHome
from recsys.live_catalog import change_of

log = logging.getLogger(__name__)

LOG_KEY = "item_lines"
"""The ingest log field recording which bytes of the item segments a run consumed."""


@dataclass
class ItemLine:
    """One line of an item segment: its change (None when torn), where it is, and its text."""

    record: dict[str, Any] | None
    source: str
    row: int
    raw: str


@dataclass
class ItemLines:
    lines: list[ItemLine]
    offsets: dict[str, dict[str, int]]
    """Per segment name: ``start`` and ``end`` bytes, ``first_line`` number and ``lines`` consumed."""


def read_item_lines(home: EngineHome, entries: list[dict]) -> ItemLines:
    """New complete lines of every item segment, from the committed offset up to the last newline."""
    found: list[ItemLine] = []
    offsets: dict[str, dict[str, int]] = {}
    for segment, lines, span in new_segment_lines(home.item_lines, committed_offsets(entries, LOG_KEY)):
        for number, line in enumerate(lines, start=span["first_line"]):
            if line.strip():
                found.append(ItemLine(json_object(line), str(segment), number,
                                      line.decode("utf-8", errors="replace")))
        offsets[segment.name] = span
    return ItemLines(found, offsets)


def item_rows(lines: ItemLines, file_items: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """The lines as raw item rows (the contract's columns as text, meta columns for quarantine)."""
    latest: dict[str, dict[str, str | None]] = {}
    for row in file_items.select(ITEM_COLUMNS).to_dicts():  # the run's provider files, in order
        if row.get("item_id"):
            latest[str(row["item_id"]).strip()] = row
    changes = [(line, change_of(line.record)) for line in lines.lines]
    rows: list[dict[str, Any]] = []
    store_rows: dict[str, dict[str, str | None]] | None = None
    for line, change in sorted(changes, key=lambda pair: pair[1].written_at if pair[1] else float("-inf")):
        meta = {TABLE: "items", SOURCE: line.source, ROW: line.row, TORN: change is None,
                RAW_LINE: line.raw if change is None else None}
        if change is None:
            rows.append({**meta, **dict.fromkeys(ITEM_COLUMNS)})
            continue
        if change.replace:
            texts = {c: change.fields.get(c) for c in ITEM_COLUMNS}
        else:
            base = latest.get(change.item_id)
            if base is None:
                store_rows = _stored_texts(stored) if store_rows is None else store_rows
                base = store_rows.get(change.item_id, {"item_id": change.item_id})
            texts = {**{c: base.get(c) for c in ITEM_COLUMNS}, **change.fields}
        texts["item_id"] = change.item_id
        latest[change.item_id] = texts
        rows.append({**meta, **texts})
    schema = {TABLE: pl.String(), SOURCE: pl.String(), ROW: pl.Int64(), TORN: pl.Boolean(), RAW_LINE: pl.String(),
              **{c: pl.String() for c in ITEM_COLUMNS}}
    return pl.DataFrame(rows, schema=schema)


def _stored_texts(stored: pl.DataFrame) -> dict[str, dict[str, str | None]]:
    """The store's items as the texts a provider file would carry (what an amendment is laid over)."""
    if stored.height == 0:
        return {}
    present = [c for c in ITEM_COLUMNS if c in stored.columns]
    texts = stored.select([as_text(c, stored.schema[c], "items.parquet").alias(c) for c in present])
    return {row["item_id"]: row for row in texts.to_dicts()}
