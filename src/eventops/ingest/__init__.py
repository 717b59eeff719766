"""Ingestion paths into the lake: HTTP (`ingest.http`), streams (`ingest.stream`), files.

Every path ends in `Lake.commit_batch`, which owns validation, quarantine, schema evolution and
the events. What the paths share is turning JSON records into an Arrow table, done here once so
that a record means the same thing whichever door it came through:

* the columns are the union of the records' keys, in order of first appearance (a record that
  lacks a key gets a null there; `pa.Table.from_pylist` would only look at the first record);
* nested values (objects, lists) are kept as compact JSON text: the shape of nested data varies
  from record to record and batch to batch, and as Arrow structs each variation is a type change
  for the catalog (a new nested key is lost in the cast to the stored struct, a changed nested
  type rejects the whole batch); JSON text never conflicts, loses nothing and stays queryable
  (DuckDB's `json_extract`);
* a column whose values do not share one Arrow type (``1`` and ``"a"``, ``1`` and ``true``, an
  integer past int64) becomes text, so the lake's schema reconciliation casts it to the
  dataset's type and sends only the rows that do not parse to quarantine with rule ``type``,
  instead of the whole batch failing on one odd value.

This module stays light (pyarrow only): importing `eventops.ingest.files` imports it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from eventops.errors import ValidationError

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def record_error(value: object) -> str | None:
    """Why `value` cannot be one record (None if it can): it must be a non-empty JSON object."""
    if not isinstance(value, dict):
        return f"must be a JSON object, got {json_kind(value)}"
    if not value:
        return "is an empty object; a record needs at least one field"
    return None


def records_to_table(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """An Arrow table from JSON objects: union of keys, nested values as JSON text."""
    if not records:
        raise ValidationError("no records", field="records", rule="non-empty")
    count = len(records)
    columns: dict[str, list[Any]] = {}
    for index, record in enumerate(records):
        for key, value in record.items():
            column = columns.get(key)
            if column is None:
                column = columns[key] = [None] * count
            column[index] = _JSON.encode(value) if isinstance(value, dict | list) else value
    if not columns:
        raise ValidationError("the records have no fields", field="records", rule="non-empty")
    return pa.table({name: _array(values) for name, values in columns.items()})


def _array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        text = [v if v is None or isinstance(v, str) else _JSON.encode(v) for v in values]
        return pa.array(text, pa.string())


def json_kind(value: object) -> str:
    """How a JSON value is named in error messages: 'a string', 'an array', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


__all__ = ["json_kind", "record_error", "records_to_table"]
