"""The raw row every ingest source is brought to: the contract's columns as strings plus meta columns.

Provider files, the API's lines and quarantined rows all become frames of this one shape
before validation, so one validation serves them all. The meta columns travel with a row
to quarantine (where a retry finds them again) and are dropped when it is stored.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from features.validate import RAW_LINE, ROW, SOURCE, TABLE, TORN
from recsys.contract import ALL_COLUMNS

ORIGIN = "ingest_id"  # the run that first quarantined a row
DATE = "__date"  # the day partition an accepted interaction goes to
INCOMING = "incoming"  # table name of rows that came through the API's segments
APP = "__app"  # the app an API line names as its source (recsys.provenance.SOURCE)
META: dict[str, pl.DataType] = {
    ORIGIN: pl.String(), TABLE: pl.String(), SOURCE: pl.String(), ROW: pl.Int64(),
    RAW_LINE: pl.String(), TORN: pl.Boolean(), APP: pl.String(),
}


def raw(frame: pl.DataFrame | None, contract: str, **meta: Any) -> pl.DataFrame:
    """Meta columns (``meta`` fills the absent ones) and every column of ``contract`` as strings."""
    columns = ALL_COLUMNS[contract]
    schema = {**META, **{c: pl.String() for c in columns}}
    if frame is None or frame.height == 0:
        return pl.DataFrame(schema=schema)
    defaults = {TORN: False, **meta}
    return frame.select([
        (pl.col(name) if name in frame.columns else pl.lit(defaults.get(name))).cast(dtype).alias(name)
        for name, dtype in schema.items()
    ])
