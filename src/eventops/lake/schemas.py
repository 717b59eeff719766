"""Schema versions and the rules for evolving them.

A dataset's schema is an Arrow schema with versions. A batch is reconciled with the current
version before it is written:

* same columns, castable types → the current version (CSV/JSON inference noise such as an
  int64 column for a declared double is not a change);
* new columns → a new version with them added as nullable (compatible evolution);
* a nullable column missing from the batch → filled with nulls, same version;
* a required (non-nullable) column missing, or a typed column that cannot be cast (float into
  int64, string into timestamp from a typed source) → `SchemaConflict`, the batch is rejected,
  unless the new schema is declared first (`Catalog.declare_schema`).

Textual sources (CSV, JSON) give string columns where a value does not parse: those rows, and
only those, fail with rule ``type`` and go to quarantine.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eventops.errors import ValidationError

_INT = r"^\s*[-+]?\d+\s*$"
_FLOAT = r"^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|nan|inf|infinity)\s*$"
_BOOL = {"true", "false", "1", "0", "yes", "no", "t", "f"}


class SchemaConflict(ValidationError):
    """The batch's schema cannot be reconciled with the dataset's current version."""

    http_status = 409


_TYPE_NAMES: dict[str, pa.DataType] = {
    "bool": pa.bool_(), "boolean": pa.bool_(),
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(), "int": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float": pa.float64(), "float32": pa.float32(), "float64": pa.float64(), "double": pa.float64(),
    "string": pa.string(), "str": pa.string(), "utf8": pa.string(), "large_string": pa.large_string(),
    "date": pa.date32(), "date32": pa.date32(), "binary": pa.binary(),
}  # fmt: skip
_TIMESTAMP = re.compile(r"^timestamp\[(s|ms|us|ns)(?:,\s*tz=([\w/+:-]+))?\]$", re.IGNORECASE)


def arrow_type(name: str, *, field_name: str = "type") -> pa.DataType:
    """Parse a type as written in specs and shown in schemas: int64, double, string, timestamp[us]."""
    key = name.strip().lower()
    if key in _TYPE_NAMES:
        return _TYPE_NAMES[key]
    match = _TIMESTAMP.match(name.strip())  # the time zone keeps its case: Europe/Paris
    if match:
        return pa.timestamp(match.group(1).lower(), tz=match.group(2))
    raise ValidationError(
        f"unknown type {name!r}; use bool, int32, int64, float32, double, string, date, timestamp[us], ...",
        field=field_name,
        rule="arrow-type",
    )


def schema_to_json(schema: pa.Schema) -> list[dict[str, Any]]:
    """Readable columns for the catalog, each with its exact Arrow type serialised alongside:
    the text form of a type (``dictionary<values=string, ...>``, ``decimal128(10, 2)``) cannot
    always be parsed back, the IPC form always can."""
    return [
        {
            "name": f.name,
            "type": str(f.type),
            "nullable": f.nullable,
            "arrow": base64.b64encode(pa.schema([f]).serialize().to_pybytes()).decode(),
        }
        for f in schema
    ]


def _field(column: dict[str, Any]) -> pa.Field:
    if "arrow" in column:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(column["arrow"]))).field(0)
    kind = arrow_type(column["type"], field_name=f"schema.{column['name']}")
    return pa.field(column["name"], kind, column.get("nullable", True))


def schema_from_json(columns: list[dict[str, Any]]) -> pa.Schema:
    return pa.schema([_field(c) for c in columns])


def normalise(schema: pa.Schema) -> pa.Schema:
    """The schema a first batch declares: all-null columns become strings, all columns nullable
    unless declared otherwise (an inferred batch cannot prove a column is required)."""
    fields = []
    for f in schema:
        kind = pa.string() if pa.types.is_null(f.type) else f.type
        if pa.types.is_large_string(kind):
            kind = pa.string()
        fields.append(pa.field(f.name, kind, True))
    return pa.schema(fields)


@dataclass
class Reconciled:
    table: pa.Table
    schema: pa.Schema
    new_version: bool
    changes: list[dict[str, Any]] = field(default_factory=list)
    type_errors: dict[str, np.ndarray[Any, np.dtype[np.bool_]]] = field(default_factory=dict)
    raw_values: dict[str, pa.ChunkedArray] = field(default_factory=dict)


def _text_cast(
    column: pa.ChunkedArray, target: pa.DataType
) -> tuple[pa.ChunkedArray, np.ndarray[Any, np.dtype[np.bool_]]]:
    """Cast a string column, returning the cast values and a mask of the rows that failed."""
    text = column
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), False)
    if pa.types.is_integer(target) or pa.types.is_floating(target):
        pattern = _INT if pa.types.is_integer(target) else _FLOAT
        ok = pc.fill_null(pc.match_substring_regex(text, pattern, ignore_case=True), True)
    elif pa.types.is_boolean(target):
        ok = pc.fill_null(
            pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(text)), pa.array(sorted(_BOOL))), True
        )
    else:
        values = text.to_pylist()
        flags = []
        for value in values:
            try:
                pa.array([value], pa.string()).cast(target)
                flags.append(True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                flags.append(value is None)
        ok = pa.array(flags)
    ok = pc.or_(ok, blank)
    failed = ~np.asarray(pc.fill_null(ok, True).to_numpy(zero_copy_only=False), dtype=bool)
    cleaned = pc.if_else(pc.or_(pc.invert(ok), blank), pa.scalar(None, pa.string()), text)
    if pa.types.is_boolean(target):
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(cleaned))
        truthy = pc.is_in(lowered, pa.array(["true", "1", "yes", "t"]))
        cast = pc.if_else(pc.is_null(lowered), pa.scalar(None, pa.bool_()), truthy)
    else:
        cast = pc.cast(pc.utf8_trim_whitespace(cleaned), target)
    return pa.chunked_array([cast]) if isinstance(cast, pa.Array) else cast, failed


def reconcile(current: pa.Schema | None, table: pa.Table) -> Reconciled:
    if current is None:
        schema = normalise(table.schema)
        return Reconciled(
            table.cast(schema),
            schema,
            True,
            [{"change": "created", "columns": schema_to_json(schema)}],
        )
    columns: list[pa.ChunkedArray] = []
    fields: list[pa.Field] = []
    result = Reconciled(table, current, False)
    present = set(table.column_names)
    for target in current:
        if target.name not in present:
            if not target.nullable:
                raise SchemaConflict(
                    "required column is missing from the batch",
                    field=target.name,
                    rule="required-column",
                )
            columns.append(pa.chunked_array([pa.nulls(table.num_rows, target.type)]))
            fields.append(target)
            continue
        column = table.column(target.name)
        if column.type != target.type:
            column = _cast_column(column, target, result)
        columns.append(column)
        fields.append(target)
    for name in table.column_names:
        if name in current.names:
            continue
        kind = normalise(pa.schema([table.schema.field(name)])).field(name).type
        fields.append(pa.field(name, kind, True))
        columns.append(table.column(name).cast(kind))
        result.changes.append({"change": "added", "column": name, "type": str(kind)})
        result.new_version = True
    result.schema = pa.schema(fields)
    result.table = pa.Table.from_arrays(columns, schema=result.schema.with_metadata(None))
    return result


def _cast_column(column: pa.ChunkedArray, target: pa.Field, result: Reconciled) -> pa.ChunkedArray:
    source = column.type
    if pa.types.is_null(source):
        return pa.chunked_array([pa.nulls(len(column), target.type)])
    textual = pa.types.is_string(source) or pa.types.is_large_string(source)
    if textual and not (pa.types.is_string(target.type) or pa.types.is_large_string(target.type)):
        cast, failed = _text_cast(column.cast(pa.string()), target.type)
        if failed.any():
            result.type_errors[target.name] = failed
            result.raw_values[target.name] = column
        return cast
    try:
        return column.cast(target.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise SchemaConflict(
            f"type changed from {target.type} to {source}, which does not convert without loss; "
            "declare the new schema first (eventops datasets declare)",
            field=target.name,
            rule="type-change",
        ) from None
