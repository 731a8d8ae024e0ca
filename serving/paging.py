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

The cursor is ``base64url`` of ``format|version|moment|shown indices as deltas``, deflated
once it is long: opaque to apps (they pass it back as is), readable to an operator, about
70 characters after a page of 10 and 450 at the bound.
"""

from __future__ import annotations

import base64
import binascii
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
PLAIN, ZLIB = b"j", b"z"
"""The cursor's first byte: the JSON as it is, or deflated (longer lists)."""
COMPRESS_ABOVE = 240


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
    deltas = ",".join(str(b - a) for a, b in zip([0, *ordered], ordered, strict=False))
    raw = f"{FORMAT}|{version}|{at!r}|{deltas}".encode()
    # zlib only where it pays: its setup costs more CPU than a whole first page's cursor is worth
    packed = ZLIB + zlib.compress(raw, 6) if len(raw) > COMPRESS_ABOVE else PLAIN + raw
    return base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, version: str, n_items: int) -> Page:
    """The page a cursor continues from; :class:`BadCursor` if it is not one of ours for ``version``."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise BadCursor("longer than any cursor this API makes")
    try:
        packed = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        raw = zlib.decompressobj().decompress(packed[1:], 1 << 16) if packed[:1] == ZLIB else (
            packed[1:] if packed[:1] == PLAIN else b"")
        form, rest = raw.decode("utf-8").split("|", 1)
        made_for, moment, listed = rest.rsplit("|", 2)  # the version may hold "|", the rest cannot
        at = float(moment)
        deltas = [int(d) for d in listed.split(",")] if listed else []
    except (binascii.Error, zlib.error, ValueError, UnicodeDecodeError):
        raise BadCursor("not a cursor of this API (pass next_cursor back as it came)") from None
    if form != str(FORMAT) or not math.isfinite(at) or not _are_deltas(deltas):
        raise BadCursor("not a cursor of this API (pass next_cursor back as it came)")
    if made_for != version:
        raise BadCursor(f"made for model version {made_for!r}, and {version!r} is served now: the list changed, "
                        "start again without a cursor")
    shown = tuple(_running_sum(deltas))
    if shown and shown[-1] >= n_items:
        raise BadCursor("names items the served catalogue does not hold")
    return Page(at=at, shown=shown)


def next_cursor(version: str, page: Page, listed: Sequence[int], n: int) -> str | None:
    """The cursor of the page after ``listed`` (this page's items), or None when the list ends:
    a short page, or the bound reached."""
    shown = (*page.shown, *listed)
    if len(listed) < n or len(shown) >= MAX_LISTED:
        return None
    return encode_cursor(version, page.at, shown)


def _are_deltas(value: list[int]) -> bool:
    return len(value) <= MAX_LISTED and all(d >= 0 for d in value[:1]) and all(d > 0 for d in value[1:])


def _running_sum(deltas: list[int]) -> list[int]:
    total, out = 0, []
    for delta in deltas:
        total += delta
        out.append(total)
    return out
