"""Catalogue changes made since a model was trained, laid over the model's catalogue.

An app creates, replaces and amends items between two trainings (``PUT``/``PATCH`` on the
API). :class:`CatalogChanges` keeps them per item id, in order: a replacement holds every
column (an absent one is empty), an amendment only the columns it names, and later changes
win. :func:`resolved_rows` turns them into valid typed rows against a catalogue: an amended
item keeps the catalogue's values for the columns the changes do not name.
:func:`overlaid_catalog` builds the catalogue the server then serves: the changed items'
columns rewritten in place and the new items appended after the trained ones, so every
matrix of the model keeps its item axis as a prefix (:mod:`recsys.models.new_items` scores
the appended ones).

Changes are kept as the texts a provider file would carry (:func:`recsys.item_rules.field_text`),
so the server and ``recsys ingest`` read the same line the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import scipy.sparse as sp

from recsys.bundle import ModelBundle
from recsys.catalog import Catalog
from recsys.contract import ITEM_COLUMNS, parse_timestamp
from recsys.item_rules import ItemRow, Problem, check_item
from recsys.models.new_items import WithNewItems

log = logging.getLogger(__name__)

Texts = dict[str, str | None]
"""A row's columns as the texts a provider file would carry."""


@dataclass(frozen=True)
class ItemChange:
    """One accepted write: a replacement (every column) or an amendment (the named columns)."""

    item_id: str
    fields: Mapping[str, str | None]
    replace: bool
    written_at: float
    """When the server accepted it (epoch seconds): a restarted server replays the newer ones."""


@dataclass
class _Pending:
    fields: Texts = field(default_factory=dict)
    complete: bool = False
    """Whether a replacement set every column (then the catalogue's old values do not show through)."""


class CatalogChanges:
    """The changes of each item id, merged in the order they were accepted."""

    def __init__(self) -> None:
        self._items: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def apply(self, change: ItemChange) -> None:
        if change.replace:
            self._items[change.item_id] = _Pending({c: change.fields.get(c) for c in ITEM_COLUMNS}, complete=True)
            self._items[change.item_id].fields["item_id"] = change.item_id
            return
        pending = self._items.setdefault(change.item_id, _Pending({"item_id": change.item_id}))
        pending.fields.update({c: v for c, v in change.fields.items() if c in ITEM_COLUMNS and c != "item_id"})

    def texts(self, catalog: Catalog, item_id: str) -> Texts | None:
        """The item's columns after the changes (the catalogue's where they name none); None if unchanged."""
        pending = self._items.get(item_id)
        if pending is None:
            return None
        if pending.complete:
            return dict(pending.fields)
        index = catalog.items.index_of(item_id)
        base = row_texts(catalog, index) if index >= 0 else {"item_id": item_id}
        return {**base, **pending.fields}

    def item_ids(self) -> list[str]:
        return list(self._items)


def change_record(change: ItemChange, source: str | None) -> dict[str, object]:
    """An accepted change as the line its server appends (and ingest and the other servers read)."""
    return {"op": "put" if change.replace else "patch", "item_id": change.item_id, "fields": dict(change.fields),
            "written_at": datetime.fromtimestamp(change.written_at, UTC).isoformat(), "source": source}


def change_of(record: Mapping[str, object] | None) -> ItemChange | None:
    """A line's change (None when the line is not one: torn, or not written by a server)."""
    if record is None:
        return None
    op, item_id, fields, written = (record.get(k) for k in ("op", "item_id", "fields", "written_at"))
    if op not in ("put", "patch") or not isinstance(item_id, str) or not item_id.strip():
        return None
    if not isinstance(fields, dict):
        return None
    if not all(isinstance(v, str | None) for v in fields.values()):
        return None
    moment = parse_timestamp(written)
    return ItemChange(item_id.strip(), {str(k): v for k, v in fields.items()}, op == "put",
                      moment.timestamp() if moment is not None else math.inf)


def resolved_rows(changes: CatalogChanges, catalog: Catalog, timezone: str) -> list[ItemRow]:
    """Every changed item as a valid typed row over ``catalog`` (a row that is not valid any more is
    skipped with a warning: each change was checked when accepted, against the catalogue of then)."""
    rows = []
    for item_id in changes.item_ids():
        texts = changes.texts(catalog, item_id)
        checked = check_item(texts or {}, timezone)
        if isinstance(checked, Problem):
            log.warning("live change of item %r no longer holds over this catalogue (%s: %s); not applied",
                        item_id, checked.reason.value, checked.detail)
            continue
        rows.append(checked)
    return rows


def row_texts(catalog: Catalog, index: int) -> Texts:
    """One catalogue item's columns as texts (what an amendment is laid over)."""
    tags = catalog.tags[index].indices
    return {
        "item_id": catalog.items.id_of(index), "title": catalog.title[index] or None,
        "kind": catalog.kind_name(index), "category": catalog.category_name(index),
        "tags": "|".join(catalog.tag_names[t] for t in tags.tolist()) or None,
        "region_code": _name(catalog.regions, catalog.region[index]),
        "venue_id": _at(catalog.venue, index), "provider": _at(catalog.provider, index),
        "series_id": _at(catalog.series, index),
        "lat": _number(catalog.lat[index]), "lon": _number(catalog.lon[index]),
        "starts_at": _time(catalog.starts_at[index]), "ends_at": _time(catalog.ends_at[index]),
        "capacity": _number(catalog.capacity[index], whole=True),
        "min_age": _number(catalog.min_age[index], whole=True),
        "is_free": _flag(catalog.is_free[index]), "hidden": _flag(catalog.hidden[index]),
        "editorial": _flag(catalog.editorial[index]),
    }


def _name(names: list[str], code: int) -> str | None:
    return names[int(code)] if code >= 0 else None


def _at(values: list[str | None], index: int) -> str | None:
    return values[index] if index < len(values) else None


def _number(value: float, whole: bool = False) -> str | None:
    if math.isnan(value):
        return None
    return str(int(value)) if whole else repr(float(value))


def _time(value: float) -> str | None:
    return None if math.isnan(value) else datetime.fromtimestamp(float(value), UTC).isoformat()


def _flag(value: bool | np.bool_) -> str:
    return "true" if value else "false"


def overlaid_catalog(catalog: Catalog, rows: Iterable[ItemRow]) -> Catalog:
    """``catalog`` with ``rows`` laid over it: known ids rewritten in place, new ids appended.

    Vocabularies only grow at their end, so every code the trained catalogue uses keeps its
    meaning; the original catalogue is not touched.
    """
    rows = list(rows)
    known = [(catalog.items.index_of(r.item_id), r) for r in rows]
    changed = [(i, r) for i, r in known if i >= 0]
    added = [r for i, r in known if i < 0]
    n_old, n = len(catalog), len(catalog) + len(added)
    positions = [i for i, _ in changed] + list(range(n_old, n))
    ordered = [r for _, r in changed] + added
    kinds, categories, regions = list(catalog.kinds), list(catalog.categories), list(catalog.regions)

    def codes(old: np.ndarray, names: list[str], values: list[str | None]) -> np.ndarray:
        out = np.concatenate([old, np.full(len(added), -1, dtype=old.dtype)])
        out[positions] = [_code(names, v) for v in values]
        return out

    def floats(old: np.ndarray, values: list[float | None]) -> np.ndarray:
        out = np.concatenate([np.asarray(old, dtype=np.float64), np.full(len(added), np.nan)])
        out[positions] = [np.nan if v is None else float(v) for v in values]
        return out

    def flags(old: np.ndarray, values: list[bool | None]) -> np.ndarray:
        out = np.concatenate([old.astype(bool), np.zeros(len(added), dtype=bool)])
        out[positions] = [bool(v) for v in values]
        return out

    def texts(old: list[str | None], values: list[str | None]) -> list[str | None]:
        out = [*(old if len(old) == n_old else [None] * n_old), *([None] * len(added))]
        for position, value in zip(positions, values, strict=True):
            out[position] = value
        return out

    tags, tag_names = _tags(catalog, positions, [r.tags for r in ordered], n)
    title = texts(list(catalog.title), [r.title or "" for r in ordered])
    return Catalog(
        items=catalog.items.extended(r.item_id for r in added),
        title=[t or "" for t in title],
        kind=codes(catalog.kind, kinds, [r.kind for r in ordered]), kinds=kinds,
        category=codes(catalog.category, categories, [r.category for r in ordered]), categories=categories,
        region=codes(catalog.region, regions, [r.region_code for r in ordered]), regions=regions,
        tags=tags, tag_names=tag_names,
        lat=floats(catalog.lat, [r.lat for r in ordered]), lon=floats(catalog.lon, [r.lon for r in ordered]),
        starts_at=floats(catalog.starts_at, [r.starts_at for r in ordered]),
        ends_at=floats(catalog.ends_at, [r.ends_at for r in ordered]),
        hidden=flags(catalog.hidden, [r.hidden for r in ordered]),
        venue=texts(catalog.venue, [r.venue_id for r in ordered]),
        provider=texts(catalog.provider, [r.provider for r in ordered]),
        min_age=floats(catalog.min_age, [r.min_age for r in ordered]),
        editorial=flags(catalog.editorial, [r.editorial for r in ordered]),
        is_free=flags(catalog.is_free, [r.is_free for r in ordered]),
        capacity=floats(catalog.capacity, [r.capacity for r in ordered]),
        series=texts(catalog.series, [r.series_id for r in ordered]),
    )


def _code(names: list[str], value: str | None) -> int:
    """The code of ``value`` in ``names``, appending it when new (-1 for no value)."""
    if value is None:
        return -1
    try:
        return names.index(value)
    except ValueError:
        names.append(value)
        return len(names) - 1


def _tags(catalog: Catalog, positions: list[int], rows: list[tuple[str, ...]],
          n: int) -> tuple[sp.csr_matrix, list[str]]:
    """The tag matrix with the rows at ``positions`` replaced (new tag names appended as columns)."""
    names = list(catalog.tag_names)
    lookup = {name: column for column, name in enumerate(names)}
    entries_rows: list[int] = []
    entries_columns: list[int] = []
    for position, tags in zip(positions, rows, strict=True):
        for tag in dict.fromkeys(tags):
            if tag not in lookup:
                lookup[tag] = len(names)
                names.append(tag)
            entries_rows.append(position)
            entries_columns.append(lookup[tag])
    old = catalog.tags.tocoo()
    keep = ~np.isin(old.row, positions)
    row = np.concatenate([old.row[keep], np.array(entries_rows, dtype=np.int64)])
    column = np.concatenate([old.col[keep], np.array(entries_columns, dtype=np.int64)])
    data = np.ones(len(row), dtype=np.float32)
    return sp.csr_matrix((data, (row, column)), shape=(n, len(names))), names


def overlaid_bundle(bundle: ModelBundle, catalog: Catalog) -> ModelBundle:
    """``bundle`` serving ``catalog`` (the bundle's own catalogue, changed and perhaps grown).

    Unchanged length: everything but the catalogue is the bundle's own. Grown: the model
    scores the new items by their facets (:class:`recsys.models.new_items.WithNewItems`), the
    histories gain empty columns, and the per-user candidates and the approximate index go:
    both were computed over the trained items only, and would never offer a new one.
    """
    added = len(catalog) - len(bundle.catalog)
    if added < 0 or catalog.items.ids[: len(bundle.catalog)] != bundle.catalog.items.ids:
        raise ValueError("an overlaid catalogue must keep the trained items, in order, as its prefix")
    if added == 0:
        return ModelBundle(bundle.model, catalog, bundle.users, bundle.weights, bundle.settings, bundle.manifest,
                           bundle.candidates, bundle.ann, bundle.dismissed)
    return ModelBundle(WithNewItems(bundle.model, bundle.catalog, catalog), catalog, bundle.users,
                       _widened(bundle.weights, len(catalog)), bundle.settings, bundle.manifest,
                       dismissed=None if bundle.dismissed is None else _widened(bundle.dismissed, len(catalog)))


def _widened(matrix: sp.csr_matrix, columns: int) -> sp.csr_matrix:
    """The same rows with empty columns appended (sharing the arrays: nothing is copied)."""
    return sp.csr_matrix((matrix.data, matrix.indices, matrix.indptr), shape=(matrix.shape[0], columns))
