"""Where a reference or a current window comes from: a file, a folder of Parquet, a lake dataset.

`resolve("data/ref.parquet", field="--reference")` and `resolve("churn", field="--reference")`
give a `ColumnSource`. The rule, in order:

1. an existing path: a `.parquet` / `.pq` file or a folder of Parquet files (read lazily, one
   column at a time, so comparing two large files never holds either whole in memory), a
   `.csv` file, or a `.jsonl` / `.ndjson` / `.json` file (newline-delimited objects, or one JSON
   array);
2. something that looks like a path (has a separator or one of those suffixes) but does not
   exist: `NotFound`;
3. otherwise a lake dataset of the configured lake (eventops.toml / EVENTOPS_*), every committed
   batch read with `Lake.read`; `NotFound` when there is none by that name.

Errors name the option (`field`) and the rule, so `eventops drift` can say which side is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as pa_ds
import pyarrow.json as pa_json

from eventops.config import load_settings
from eventops.errors import NotFound, ValidationError
from eventops.monitoring.frames import ColumnSource

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
SUFFIXES = PARQUET_SUFFIXES + CSV_SUFFIXES + JSON_SUFFIXES


class ParquetColumns:
    """A Parquet file or folder as a ColumnSource: the schema and row count from the footers,
    each column read only when asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._dataset = pa_ds.dataset(self.path, format="parquet")

    @property
    def files(self) -> list[str]:
        return list(self._dataset.files)

    @property
    def schema(self) -> pa.Schema:
        return self._dataset.schema

    @property
    def num_rows(self) -> int:
        return int(self._dataset.count_rows())

    def column(self, name: str) -> pa.ChunkedArray:
        return self._dataset.to_table(columns=[name]).column(0)


def resolve(spec: str, *, field: str) -> ColumnSource:
    """The data named by `spec` (see the module docstring for the rule)."""
    spec = spec.strip()
    if not spec:
        raise ValidationError(
            "give a file, a folder of Parquet or a lake dataset", field=field, rule="required"
        )
    path = Path(spec).expanduser()
    if path.exists():
        return _read_path(path, field)
    if os.sep in spec or "/" in spec or spec.lower().endswith(SUFFIXES):
        raise NotFound(f"no such file or folder: {spec}", field=field, rule="exists")
    return _read_dataset(spec, field)


def _read_path(path: Path, field: str) -> ColumnSource:
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            source = ParquetColumns(path)
            if not source.files:
                raise ValidationError(
                    f"{path} holds no Parquet files", field=field, rule="parquet-folder"
                )
            return source
        if suffix in PARQUET_SUFFIXES:
            return ParquetColumns(path)
        if suffix in CSV_SUFFIXES:
            table: ColumnSource = pa_csv.read_csv(path)
            return table
        if suffix in JSON_SUFFIXES:
            return _read_json(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise ValidationError(f"cannot read {path}: {exc}", field=field, rule="readable") from None
    raise ValidationError(
        f"{path.name}: expected a folder or a file ending in {', '.join(SUFFIXES)}",
        field=field,
        rule="format",
    )


def _read_json(path: Path) -> ColumnSource:
    """Newline-delimited objects (Arrow's reader), or one JSON array of objects."""
    with path.open("rb") as handle:
        first = handle.read(4096).lstrip()
    if first.startswith(b"["):
        rows = json.loads(path.read_text())
        if not all(isinstance(row, dict) for row in rows):
            raise ValueError("the JSON array must hold objects")
        converted: ColumnSource = pa.Table.from_pylist(rows)
        return converted
    table: ColumnSource = pa_json.read_json(path)
    return table


def _read_dataset(name: str, field: str) -> ColumnSource:
    from eventops.lake.catalog import Lake  # the catalog brings SQLAlchemy: only when needed

    lake = Lake.from_settings(load_settings())
    try:
        if name not in lake.names():
            raise NotFound(
                f"no file, folder or lake dataset named {name!r}",
                field=field,
                rule="path-or-dataset",
            )
        table: ColumnSource = lake.read(name)
        return table
    finally:
        lake.store.close()
