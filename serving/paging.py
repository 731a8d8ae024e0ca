"""Cursor pagination of the recommendation lists: opaque cursors over a bounded list.

A list is made for one moment, by one model, and a user's history can change between two
pages (a click on page one). Slicing a list recomputed per page could then show an item
twice; so a cursor carries what was already shown, and the next page is the list made with
those items excluded. Pages therefore never repeat an item, whatever changed in between.
The cursor also carries the first page's moment (when the app gave none), so every page
sees the same ended and started items.

A list is bounded: after :data:`MAX_LISTED` items (the catalogue indices a cursor can carry
in a short URL) ``next_cursor`` is null, as it is when a page comes back short. A cursor
names the model version it was made under; under another version the indices would name
other items, so it is refused (422) and the app starts again without one.

The cursor is ``base64url(zlib(json))`` of ``[format, version, moment, shown indices as
deltas]``: opaque to apps (they pass it back as is), readable to an operator, and about 300
characters at the bound.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_LISTED = 200
"""Items one paged list may show in all, across its pages."""
MAX_CURSOR_LENGTH = 4096
"""Longest cursor read (a cursor made here stays far below)."""
FORMAT = 1


class BadCursor(ValueError):
    """A cursor this server cannot continue from (the message says why)."""


@dataclass(frozen=True)
class Page:
    """Where a paged list stands: its moment and the items shown so far."""

    at: float
    shown: tuple[int, ...]


def encode_cursor(version: str, at: float, shown: Sequence[int]) -> str:
    """The opaque cursor continuing a list after ``shown`` (catalogue indices)."""
    ordered = sorted(set(shown))
    deltas = [b - a for a, b in zip([0, *ordered], ordered, strict=False)]
    raw = json.dumps([FORMAT, version, at, deltas], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, version: str, n_items: int) -> Page:
    """The page a cursor continues from; :class:`BadCursor` if it is not one of ours for ``version``."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise BadCursor("longer than any cursor this API makes")
    try:
        raw = zlib.decompressobj().decompress(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)),
                                              1 << 16)
        form, made_for, at, deltas = json.loads(raw)
    except (binascii.Error, zlib.error, ValueError, TypeError, UnicodeDecodeError):
        raise BadCursor("not a cursor of this API (pass next_cursor back as it came)") from None
    if form != FORMAT or not isinstance(made_for, str) or not _is_moment(at) or not _are_deltas(deltas):
        raise BadCursor("not a cursor of this API (pass next_cursor back as it came)")
    if made_for != version:
        raise BadCursor(f"made for model version {made_for!r}, and {version!r} is served now: the list changed, "
                        "start again without a cursor")
    shown = tuple(_running_sum(deltas))
    if shown and shown[-1] >= n_items:
        raise BadCursor("names items the served catalogue does not hold")
    return Page(at=float(at), shown=shown)


def next_cursor(version: str, page: Page, listed: Sequence[int], n: int) -> str | None:
    """The cursor of the page after ``listed`` (this page's items), or None when the list ends:
    a short page, or the bound reached."""
    shown = (*page.shown, *listed)
    if len(listed) < n or len(shown) >= MAX_LISTED:
        return None
    return encode_cursor(version, page.at, shown)


def _is_moment(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _are_deltas(value: object) -> bool:
    return (isinstance(value, list) and len(value) <= MAX_LISTED
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)
            and all(d > 0 for d in value[1:]))


def _running_sum(deltas: list[int]) -> list[int]:
    total, out = 0, []
    for delta in deltas:
        total += delta
        out.append(total)
    return out
