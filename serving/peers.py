"""Interactions posted to the other servers of the home, folded into this process's live state.

Every process appends what it accepts to its own segment in ``store/incoming/``
(:mod:`serving.segments`). :class:`PeerInteractions` reads the other servers' new complete
lines (:mod:`serving.segment_tail`) every ``tail_interval`` seconds, checks them against the
data contract (:mod:`serving.segment_lines`) and folds them into this process's live state
(users erased on request excepted).

A process that starts (or is restarted) reads the existing segments once and keeps the
lines whose event time is after the served model's ``data_end``: those cannot be in the
model, so a restarted worker knows recent posts as well as its siblings do. Lines at or
before ``data_end`` are taken to be in the model already and are not replayed (a post
back-dated before ``data_end`` and not yet trained on is the one thing a restart misses;
the next training run has it). A segment last written before ``data_end`` is not even
read, so a start costs what was posted since the model's data, not every segment the
home keeps. A model without ``data_end`` replays nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from recsys.contract import latest_event_time
from serving.erasure import ErasedUsers
from serving.live import LiveInteractions
from serving.segment_lines import checked_row, event_time, read_record
from serving.segment_tail import SegmentTail
from serving.state import ServedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TailStats:
    """What one look at the other servers' segments did."""

    lines: int = 0
    """Complete, non-blank lines read."""
    applied: int = 0
    """Lines folded into the live state."""
    invalid: int = 0
    """Lines that are no row of the data contract (skipped, and logged as a count)."""
    erased: int = 0
    """Lines of users erased on request."""
    trained: int = 0
    """Lines skipped on a first look because the model already holds them (at or before ``data_end``)."""
    future: int = 0
    """Lines dated further ahead of this machine's clock than the allowed skew (the POST route rejects
    them and ingest quarantines them: live state must not keep them either)."""


class PeerInteractions:
    """Folds interactions posted to the other servers of the home into this process's live state."""

    def __init__(self, tail: SegmentTail, live: LiveInteractions, erased: ErasedUsers,
                 current: Callable[[], ServedModel | None]) -> None:
        self.tail = tail
        self.live = live
        self.erased = erased
        self.current = current
        self.caught_up = False
        """Whether the existing segments were read once (after that, every new line counts)."""

    def poll(self) -> TailStats:
        """Apply what the other servers accepted since the last call (blocking file IO: run in a thread).

        Nothing is read while no model is served: the weights of actions come with the model,
        and the lines wait on disk until one is.
        """
        served = self.current()
        if served is None:
            return TailStats()
        after = -math.inf if self.caught_up else data_end_of(served)
        settings = served.bundle.settings
        latest = latest_event_time(settings.max_future_skew_days).timestamp()
        counts = {"lines": 0, "applied": 0, "invalid": 0, "erased": 0, "trained": 0, "future": 0}

        def handle(line: bytes) -> None:
            record = read_record(line)
            # On a first look most lines are old: their time alone settles them, at a third of
            # the cost of the full check.
            if record is not None and after > -math.inf and (event_time(record, settings.timezone) or 0) <= after:
                counts["trained"] += 1
                return
            row = checked_row(record, settings.timezone) if record is not None else None
            if row is None:
                counts["invalid"] += 1
            elif row.timestamp(settings.timezone).timestamp() > latest:
                # Written by a server that did not check the clock: a live event from the future
                # would outlive every reload (no data_end ever reaches it).
                counts["future"] += 1
            elif row.user_id in self.erased:
                counts["erased"] += 1
            else:
                self.live.record(row.user_id, row.item_id, row.action, settings.weight_of(row.action, row.value),
                                 row.timestamp(settings.timezone).timestamp())
                if row.user_id in self.erased:  # erased while we added: what the erasure forgot comes back
                    self.live.forget(row.user_id)
                counts["applied"] += 1

        # A segment last written before data_end holds only lines the model was trained on (an
        # event after data_end posted before it would be a post from the future): not read at all,
        # so a start costs what was posted since the last training, not every segment ever kept.
        counts["lines"] = self.tail.read(handle, unchanged_since=after)
        if not self.caught_up:
            self.caught_up = True
            log.info("caught up with the other servers' posted interactions: %d applied, %d already in the model",
                     counts["applied"], counts["trained"])
        if counts["invalid"]:
            log.warning("skipped %d unreadable lines in the other servers' segments", counts["invalid"])
        if counts["future"]:
            log.warning("skipped %d lines dated after this machine's clock plus %g days in the other servers' "
                        "segments", counts["future"], settings.max_future_skew_days)
        return TailStats(**counts)


def data_end_of(served: ServedModel) -> float:
    """The served model's last training event (epoch seconds); +inf when unknown (replay nothing)."""
    data_end = served.data_end()
    if data_end is None:
        log.warning("version %s has no readable data_end: earlier posts to other servers are not replayed",
                    served.version)
        return math.inf
    return data_end
