"""The residents' controls in the server: one log per home, followed by every worker.

:class:`recsys.controls.ControlsLog` over ``store/user_controls.jsonl``: a choice made through
one worker is appended (fsynced) before the answer, and every worker reads what was appended
since its last look on the resident's next request (one ``stat`` when nothing changed), so a
switch takes effect "from the next request on, in every worker", and after a restart the
file is replayed. Users erased on request are skipped (:class:`serving.erasure.ErasedUsers`)
and forgotten when their erasure is seen.

:func:`restore_engaged_tags` writes the ``engaged_tag`` that brings a removed tag back when the
resident engages again with an item carrying it (posted to this worker; the line reaches the
others like any other choice).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from recsys import controls
from recsys.catalog import Catalog
from recsys.contract import NEGATIVE_ACTIONS, InteractionIn
from recsys.controls import ControlsLog
from recsys.profile import tag_mask
from serving.erasure import ErasedUsers
from serving.live import LiveInteractions
from serving.metrics import Metrics

log = logging.getLogger(__name__)


def restore_engaged_tags(log_: ControlsLog, catalog: Catalog, rows: Iterable[InteractionIn]) -> list[str]:
    """Append an ``engaged_tag`` for every removed tag an accepted engagement in ``rows`` carries;
    returns the restored tag keys (raises OSError when the log cannot be written)."""
    restored: list[str] = []
    for row in rows:
        if row.action in NEGATIVE_ACTIONS:
            continue
        removed = log_.of(row.user_id).removed_tags
        index = catalog.items.index_of(row.item_id)
        if not removed or index < 0:
            continue
        for key in list(removed):
            if tag_mask(catalog, key)[index]:
                log_.append(controls.record(row.user_id, controls.ENGAGED_TAG, tag=key))
                restored.append(key)
    return restored


def follow_erasures_and_controls(tombstones: Path, controls_path: Path, live: LiveInteractions,
                                 metrics: Metrics) -> tuple[ErasedUsers, ControlsLog]:
    """The home's erased users and residents' controls, wired together: an erasure seen by this
    process drops the user's live state and controls, and the controls log skips erased users."""
    log_: ControlsLog | None = None

    def forget(user_id: str) -> None:
        live.forget(user_id)
        if log_ is not None:
            log_.forget(user_id)

    erased = ErasedUsers(tombstones, on_erased=forget)
    log_ = ControlsLog(controls_path, is_erased=erased.__contains__)
    metrics.count_controls(log_.counts)
    return erased, log_
