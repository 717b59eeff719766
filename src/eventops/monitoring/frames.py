"""How monitoring reads its inputs: column by column, from anything shaped like a table.

Drift and quality checks look at one column at a time, so they take any `ColumnSource` — an
object with a `schema`, a `num_rows` and `column(name)` — rather than a whole table in memory.
A pyarrow Table is one; `eventops.monitoring.sources.ParquetColumns` is another that reads each
column from Parquet only when asked, so the peak memory of a check is a few columns, not two
tables. pandas DataFrames are converted to Arrow once (pandas is only imported if the caller
already did).

A column's *kind* decides its tests: numbers are `numeric`; strings, booleans, dictionary
(pandas category) columns and any column the caller declares categorical (typically small
integer codes) are `categorical`; everything else (timestamps, nested types, binary) is not
tested and is reported as skipped with its type.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eventops.errors import ValidationError

Kind: TypeAlias = Literal["numeric", "categorical"]


@runtime_checkable
class ColumnSource(Protocol):
    """A table read one column at a time (a pyarrow Table qualifies as it is)."""

    @property
    def schema(self) -> pa.Schema: ...

    @property
    def num_rows(self) -> int: ...

    def column(self, name: str) -> pa.ChunkedArray: ...


def as_source(frame: Any, *, field: str) -> ColumnSource:
    """A ColumnSource for a pyarrow Table, a pandas DataFrame or a ColumnSource.

    `field` names the argument in the error ("reference", "--current", ...).
    """
    if isinstance(frame, pa.Table):
        table: ColumnSource = frame
        return table
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(frame, pandas.DataFrame):
        try:
            converted: ColumnSource = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            raise ValidationError(
                f"the DataFrame cannot be converted to Arrow: {exc}",
                field=field,
                rule="arrow-convertible",
            ) from None
        return converted
    if isinstance(frame, ColumnSource):
        return frame
    raise ValidationError(
        f"expected a pyarrow Table or a pandas DataFrame, got {type(frame).__name__}",
        field=field,
        rule="table",
    )


def is_numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def kind_of(kind: pa.DataType, *, declared_categorical: bool = False) -> Kind | None:
    """numeric, categorical, or None for a type no drift test applies to."""
    if declared_categorical and (is_numeric(kind) or _is_text_like(kind)):
        return "categorical"
    if is_numeric(kind):
        return "numeric"
    if _is_text_like(kind):
        return "categorical"
    return None


def accepts(kind: Kind, arrow_type: pa.DataType) -> bool:
    """Can a column of `arrow_type` be compared as `kind` (the reference's kind)?"""
    if kind == "numeric":
        return is_numeric(arrow_type)
    return is_numeric(arrow_type) or _is_text_like(arrow_type)


def _is_text_like(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_dictionary(kind)
    )


def finite_values(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, int]:
    """(the finite values as float64, how many were null, NaN or infinite).

    A float64 column without nulls in one chunk is viewed, not copied; the only copy made is
    the one that drops missing values, and only when there are some.
    """
    if not pa.types.is_float64(column.type):
        column = pc.cast(column, pa.float64(), safe=False)  # int64 beyond 2**53 rounds
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    values = column.to_numpy(zero_copy_only=False)  # nulls become NaN
    finite = np.isfinite(values)
    if finite.all():
        return values, 0
    kept = values[finite]
    return kept, len(values) - len(kept)


def category_counts(column: pa.ChunkedArray | pa.Array) -> tuple[dict[str, int], int]:
    """({category as text: count}, nulls). Booleans read "true"/"false", numbers as written."""
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    nulls = int(column.null_count)
    counts = pc.value_counts(column)
    keys = counts.field("values").to_pylist()
    numbers = counts.field("counts").to_pylist()
    out: dict[str, int] = {}
    for key, count in zip(keys, numbers, strict=True):
        if key is None:
            continue
        text = ("true" if key else "false") if isinstance(key, bool) else str(key)
        out[text] = out.get(text, 0) + int(count)
    return out, nulls
