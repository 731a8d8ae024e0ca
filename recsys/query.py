"""What a recommendation request asks and what it gets back, apart from how it is answered.

The types every layer passes to and from :mod:`recsys.delivery` (the API, batch
recommend, the reasons): the request's filters and what the caller knows about the user,
the list and its items, and the errors for an id the engine does not know. They depend on
nothing in the core but the residents' controls (:mod:`recsys.controls`), so any module can
name them without importing the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from recsys.controls import DEFAULT as DEFAULT_CONTROLS
from recsys.controls import UserControls


class UnknownItem(KeyError):
    """An item id the catalog does not hold."""


class UnknownRegion(KeyError):
    """A region with neither users nor items."""


@dataclass(frozen=True)
class Filters:
    at: float
    """Request time, epoch seconds."""
    kind: str | None = None
    category: str | None = None
    lat: float | None = None
    lon: float | None = None
    radius_km: float | None = None
    starts_after: float | None = None
    """Only items starting at or after this moment (epoch seconds); an item without a start time
    (always available) is left out once either bound of the window is given."""
    starts_before: float | None = None
    """Only items starting at or before this moment (epoch seconds)."""
    free_only: bool = False
    """Only items marked ``is_free``."""
    exclude: tuple[int, ...] = ()
    """Item indices the list must not show (what the app already shows, earlier pages)."""

    @property
    def narrows(self) -> bool:
        """Whether anything beyond the moment restricts the list (a catalogue-wide mask is needed)."""
        return bool(self.kind or self.category or self.radius_km is not None or self.free_only or self.exclude
                    or self.starts_after is not None or self.starts_before is not None)


@dataclass
class UserContext:
    """What the caller knows about a user beyond the model: live interactions, a profile, and
    the resident's own choices."""

    live_weights: Mapping[int, float] = field(default_factory=dict)
    region: str | None = None
    age_band: str | None = None
    dismissed: Mapping[int, float] = field(default_factory=dict)
    """Items the resident said ``not_interested`` to (index -> epoch seconds), beyond the artifact's."""
    controls: UserControls = DEFAULT_CONTROLS


class Recommended(NamedTuple):
    """One listed item (a named tuple: a request builds ten of these, and a frozen dataclass
    costs several times as much to construct)."""

    item: int
    item_id: str
    score: float
    reason: str
    editorial: bool = False
    """Placed by an editorial slot (:mod:`recsys.editorial`), not by the ranking."""
    full: bool = False
    """The event is at capacity (shown only where the capacity rules keep full events, marked)."""


@dataclass
class RecommendationList:
    items: list[Recommended]
    fallback: str | None = None
