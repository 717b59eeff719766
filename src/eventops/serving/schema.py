"""A model's input schema (from its MLflow signature) and the rules one value must follow.

The schema is named columns (`ColSpec`) or tensors (`TensorSpec`). Rules, per column type:

* double/float: JSON numbers; ``null`` is a missing value (NaN). Strings and booleans are
  refused, even ``"1.5"``.
* long/integer: JSON integers only (``1.0`` is refused); ``null`` is refused (no NaN in ints).
* boolean: ``true``/``false`` only. string: JSON strings (``null`` allowed). binary: base64
  strings. datetime: ISO 8601 strings. Array/Object/Map types are passed through unchecked.
* Tensors: the element type must fit the spec's dtype and every fixed dimension must match.

Every refusal is an `InputError` carrying the HTTP status, the field (the column) and the rule.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eventops.errors import ValidationError

NDArray = np.ndarray[Any, Any]
FLOAT_KINDS: dict[str, np.dtype[Any]] = {
    "double": np.dtype(np.float64),
    "float": np.dtype(np.float32),
}
INT_KINDS: dict[str, np.dtype[Any]] = {"long": np.dtype(np.int64), "integer": np.dtype(np.int32)}
OBJECT_KINDS = ("string", "binary", "any")
NUMBER_TYPES = frozenset({float, int})
_NONE = type(None)


class InputError(ValidationError):
    """A request refused before it joins a batch: HTTP `status`, the field and the rule."""

    def __init__(self, message: str, *, field: str, rule: str, status: int = 422) -> None:
        super().__init__(message, field=field, rule=rule)
        self.http_status = status


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # an MLflow DataType name, or "any"
    required: bool = True

    @property
    def dtype(self) -> np.dtype[Any]:
        if self.kind in FLOAT_KINDS:
            return FLOAT_KINDS[self.kind]
        if self.kind in INT_KINDS:
            return INT_KINDS[self.kind]
        if self.kind == "boolean":
            return np.dtype(np.bool_)
        if self.kind == "datetime":
            return np.dtype("datetime64[ns]")
        return np.dtype(object)


@dataclass(frozen=True)
class Tensor:
    name: str | None
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # -1: any size


@dataclass(frozen=True)
class InputSchema:
    """Columns or tensors (never both); neither means the model has no signature."""

    columns: tuple[Column, ...] = ()
    tensors: tuple[Tensor, ...] = ()

    @classmethod
    def from_mlflow(cls, schema: Any) -> InputSchema:
        """From an `mlflow.types.Schema` (None: no signature)."""
        if schema is None:
            return cls()
        if schema.is_tensor_spec():
            return cls(tensors=tuple(Tensor(s.name, s.type, tuple(s.shape)) for s in schema.inputs))
        columns = []
        for index, spec in enumerate(schema.inputs):
            kind = getattr(spec.type, "name", None)
            if kind not in (*FLOAT_KINDS, *INT_KINDS, "boolean", "string", "binary", "datetime"):
                kind = "any"
            columns.append(Column(spec.name or str(index), kind, bool(spec.required)))
        return cls(columns=tuple(columns))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def matrix_dtype(self) -> np.dtype[Any] | None:
        """The one numeric dtype of every column when there is one: the fast path."""
        kinds = {c.kind for c in self.columns}
        if len(kinds) == 1 and all(c.required for c in self.columns):
            kind = next(iter(kinds))
            if kind in FLOAT_KINDS or kind in INT_KINDS:
                return self.columns[0].dtype
        return None

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


# ---------------------------------------------------------------------- one column
def type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", _NONE: "null",
            list: "array", dict: "object"}.get(type(value), type(value).__name__)  # fmt: skip


def _refuse(column: Column, values: Sequence[Any], ok: frozenset[type], what: str) -> InputError:
    row = next(i for i, v in enumerate(values) if type(v) not in ok)
    value = values[row]
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    rule = "not-null" if value is None else "type"
    return InputError(
        f"row {row}: expected {what} ({column.kind}), got {type_name(value)} {shown}",
        field=column.name,
        rule=rule,
    )


def convert_column(column: Column, values: Sequence[Any]) -> NDArray:
    """Values of one column as an array of the column's dtype, or InputError naming the row.

    An array that already has the column's (non-object) dtype was converted by us (CSV fields,
    a DataFrame's datetime column) and is taken as it is: `tolist()` would turn datetimes into
    integers, which the datetime rule then refuses."""
    if isinstance(values, np.ndarray):
        if values.ndim == 1 and values.dtype == column.dtype and values.dtype != object:
            return values
        values = values.tolist()
    types = set(map(type, values))
    kind = column.kind
    if kind in FLOAT_KINDS:
        if types <= NUMBER_TYPES:
            return np.array(values, dtype=column.dtype)
        if types <= NUMBER_TYPES | {_NONE}:
            return np.array([np.nan if v is None else v for v in values], dtype=column.dtype)
        raise _refuse(column, values, NUMBER_TYPES | {_NONE}, "a number")
    if kind in INT_KINDS:
        if not types <= {int}:
            raise _refuse(column, values, frozenset({int}), "an integer")
        try:
            return np.array(values, dtype=column.dtype)
        except OverflowError:
            raise InputError(
                f"a value is out of range for {kind}", field=column.name, rule="range"
            ) from None
    if kind == "boolean":
        if not types <= {bool}:
            raise _refuse(column, values, frozenset({bool}), "true or false")
        return np.array(values, dtype=np.bool_)
    if kind == "string":
        if not types <= {str, _NONE}:
            raise _refuse(column, values, frozenset({str, _NONE}), "a string")
        return _object_array(values)
    if kind == "binary":
        return _binary(column, values, types)
    if kind == "datetime":
        return _datetime(column, values, types)
    return _object_array(values)


def _object_array(values: Sequence[Any]) -> NDArray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _binary(column: Column, values: Sequence[Any], types: set[type]) -> NDArray:
    if not types <= {str, bytes, _NONE}:
        raise _refuse(column, values, frozenset({str, bytes, _NONE}), "base64 text")
    decoded: list[bytes | None] = []
    for row, value in enumerate(values):
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise InputError(
                    f"row {row}: not valid base64", field=column.name, rule="base64"
                ) from None
        decoded.append(value)
    return _object_array(decoded)


def _datetime(column: Column, values: Sequence[Any], types: set[type]) -> NDArray:
    if not types <= {str, _NONE}:
        raise _refuse(column, values, frozenset({str, _NONE}), "an ISO 8601 date-time")
    try:
        return np.array(["NaT" if v is None else v.rstrip("Z") for v in values], "datetime64[ns]")
    except ValueError:
        for row, value in enumerate(values):
            try:
                np.datetime64(value.rstrip("Z") if value else "NaT")
            except ValueError:
                raise InputError(
                    f"row {row}: {value!r} is not an ISO 8601 date-time",
                    field=column.name,
                    rule="datetime",
                ) from None
        raise


def null_column(column: Column, rows: int) -> NDArray:
    """What a missing optional column becomes: NaN, NaT, or None."""
    if column.kind in FLOAT_KINDS:
        return np.full(rows, np.nan, dtype=column.dtype)
    if column.kind == "datetime":
        return np.full(rows, np.datetime64("NaT"), dtype=column.dtype)
    return np.full(rows, None, dtype=object)


def check_tensor(tensor: Tensor, value: Any, where: str) -> NDArray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise InputError(
            "the array is ragged (rows of different lengths)", field=where, rule="shape"
        ) from None
    want = tensor.dtype
    kind = array.dtype.kind
    fits = (
        (want.kind == "f" and kind in "fiu")
        or (want.kind in "iu" and kind in "iu")
        or (want.kind == "b" and kind == "b")
        or (want.kind in "OUS" and kind in "OUS")
    )
    if not fits:
        got = {"U": "strings", "O": "mixed or null values", "b": "booleans", "f": "numbers"}
        raise InputError(
            f"expected {want} values, got {got.get(kind, str(array.dtype))}",
            field=where,
            rule="type",
        )
    if array.ndim != len(tensor.shape) or any(
        w not in (-1, g) for w, g in zip(tensor.shape, array.shape, strict=False)
    ):
        raise InputError(
            f"expected shape {list(tensor.shape)} (-1: any), got {list(array.shape)}",
            field=where,
            rule="shape",
        )
    return array.astype(want, copy=False) if want.kind not in "OUS" else array


__all__ = [
    "Column",
    "InputError",
    "InputSchema",
    "NDArray",
    "Tensor",
    "check_tensor",
    "convert_column",
    "null_column",
]
