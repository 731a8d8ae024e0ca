"""Provider files: hash them, skip those already ingested, read the rest as strings.

A file is identified by its sha256: the same bytes ingested twice are skipped, whatever the
file is called. A file that cannot be read, or lacks a required column, raises
:class:`recsys.contract.ContractError` naming it before the store is touched. CSV and
Parquet are both read as the strings a CSV would carry, so one validation serves both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features import store
from features.validate import ROW
from recsys.contract import ALL_COLUMNS, ContractError, check_columns
from recsys.home import EngineHome

_PARQUET_SUFFIXES = {".parquet", ".pq"}


@dataclass(eq=False)  # identity: files are compared by object
class ProviderFile:
    """One provider file, read as strings (``frame`` is None when skipped as already ingested)."""

    table: str
    path: Path
    sha256: str
    frame: pl.DataFrame | None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def as_text(name: str, dtype: pl.DataType, source: str) -> pl.Expr:
    """A Parquet column as the string a CSV would carry (times keep their zone, lists join on ``|``)."""
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:  # naive: read later in the settings' zone
            return column.dt.strftime("%Y-%m-%dT%H:%M:%S%.6f")
        return column.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    if isinstance(dtype, pl.Date):
        return column.dt.strftime("%Y-%m-%d")
    if isinstance(dtype, pl.List | pl.Array):
        if isinstance(dtype, pl.Array):
            column = column.arr.to_list()
        return column.list.eval(pl.element().cast(pl.String)).list.join("|")
    if dtype.is_numeric() or isinstance(dtype, pl.String | pl.Boolean | pl.Categorical | pl.Enum | pl.Null):
        return column.cast(pl.String)
    raise ContractError(source, f"column {name!r} has unsupported type {dtype}", column=name)


def _scan(path: Path) -> tuple[pl.LazyFrame, dict[str, pl.DataType]]:
    if _is_parquet(path):
        frame = pl.scan_parquet(path)
    else:
        frame = pl.scan_csv(
            path, infer_schema=False, separator="\t" if path.suffix.lower() == ".tsv" else ",",
            with_column_names=lambda names: [n.strip() for n in names],
        )
    return frame, dict(frame.collect_schema())


def read_table_file(table: str, path: Path) -> pl.DataFrame:
    """Read one provider file as strings with the contract's columns plus its row numbers.

    Raises :class:`ContractError` naming the file (and column) when the file cannot be read
    or lacks a required column. Extra columns are ignored; missing optional ones are null.
    """
    source = str(path)
    if not path.is_file():
        raise ContractError(source, "file not found")
    try:
        frame, schema = _scan(path)
        check_columns(table, source, list(schema))
        columns = [
            (as_text(c, schema[c], source) if c in schema else pl.lit(None, pl.String)).alias(c)
            for c in ALL_COLUMNS[table]
        ]
        text = frame.select(columns).with_row_index(ROW, offset=1).collect()
    except ContractError:
        raise
    except (pl.exceptions.PolarsError, OSError, UnicodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ContractError(source, f"not readable as CSV or Parquet: {first_line}") from exc
    return text.with_columns(pl.col(ROW).cast(pl.Int64))


def ingested_hashes(entries: Iterable[dict]) -> set[tuple[str, str]]:
    """(table, sha256) of every file a committed run ingested."""
    return {(s.get("table"), s.get("sha256")) for e in entries for s in e.get("sources", [])}


def open_files(home: EngineHome, files: dict[str, Path | None]) -> list[ProviderFile]:
    """Hash and read every requested file (no lock, nothing written)."""
    known = ingested_hashes(store.ingest_log(home))
    inputs = []
    for table, path in files.items():
        if path is None:
            continue
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise ContractError(str(path), "file not found")
        sha = _sha256(path)
        frame = None if (table, sha) in known else read_table_file(table, path)
        inputs.append(ProviderFile(table, path, sha, frame))
    return inputs

