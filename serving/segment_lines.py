"""A line of a server's segment as a row of the data contract, checked as the POST route checks it.

Shared by the processes that fold the other servers' lines into their live state
(:mod:`serving.peers`): a line that is no JSON object, or breaks the contract, is no row.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from recsys.appendlog import json_object
from recsys.contract import InteractionIn, parse_timestamp


def parse_line(line: bytes, timezone: str) -> tuple[InteractionIn, float] | None:
    """A segment line checked against the data contract, with its event time (epoch seconds); None if invalid."""
    record = read_record(line)
    row = checked_row(record, timezone) if record is not None else None
    return (row, row.timestamp(timezone).timestamp()) if row is not None else None


def read_record(line: bytes) -> dict[str, Any] | None:
    """A segment line as a JSON object (None if it is not one)."""
    return json_object(line)


def checked_row(record: dict[str, Any], timezone: str) -> InteractionIn | None:
    """The record as a row of the data contract (None if it breaks it), as the POST route checks it.

    The item is not looked up in the catalog: the writing server did that with its own
    model, live state is kept by item id, and each request maps ids onto its catalog anyway.
    """
    try:
        row = InteractionIn.model_validate(record)
        row.timestamp(timezone)
    except (ValueError, ValidationError):  # ValueError: an unreadable time
        return None
    return row


def event_time(record: dict[str, Any], timezone: str) -> float | None:
    """The record's event time in epoch seconds (None if it has no readable one)."""
    moment = parse_timestamp(record.get("ts"), timezone)
    return moment.timestamp() if moment is not None else None
