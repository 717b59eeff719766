"""Wire formats shared by every route, and MLflow scoring: bodies to checked `Inputs`, back.

* MLflow scoring (`POST /invocations`, also the SageMaker contract): a JSON object with exactly
  one of ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs`` (and optional
  ``params``), or ``text/csv`` with a header line (or none: the signature's columns, in
  order). Answer: ``{"predictions": [...], "prediction_ids": [...]}`` (or CSV when the client
  sends ``Accept: text/csv``).
* Open Inference Protocol v2 lives in `eventops.serving.open_inference`.

JSON is parsed with orjson and numbers go straight into numpy (no pandas per request: it costs
~1.5 ms per request against ~0.1 ms; see FIELD-NOTES). Every problem is an `InputError`: 400 for
a body that cannot be read (not JSON, not CSV, no known format key), 415 for an unsupported
content type, 422 for a body that does not fit the signature.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from eventops.serving.inputs import (
    Inputs,
    from_columns,
    from_records,
    from_rows,
    from_tensor_value,
    from_tensors,
)
from eventops.serving.models import Outputs
from eventops.serving.schema import (
    FLOAT_KINDS,
    INT_KINDS,
    Column,
    InputError,
    InputSchema,
    NDArray,
    convert_column,
)

MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class Parsed:
    inputs: Inputs
    params: dict[str, Any] | None = None


def bad_request(message: str, field: str, rule: str) -> InputError:
    return InputError(message, field=field, rule=rule, status=400)


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def load_json(body: bytes) -> Any:
    if not body.strip():
        raise bad_request("the body is empty", "body", "non-empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"not valid JSON ({exc})", "body", "json") from None


# ---------------------------------------------------------------------- MLflow scoring
def parse_invocation(body: bytes, content_type: str | None, schema: InputSchema) -> Parsed:
    """An MLflow scoring request (JSON or CSV), checked against `schema`."""
    media = media_type(content_type)
    if media in ("application/json", ""):
        return parse_mlflow_json(load_json(body), schema)
    if media == "text/csv":
        return Parsed(parse_csv(body, schema))
    raise InputError(
        f"unsupported content type {media!r}; send application/json or text/csv",
        field="content-type",
        rule="media-type",
        status=415,
    )


def parse_mlflow_json(payload: Any, schema: InputSchema) -> Parsed:
    if type(payload) is not dict:
        raise bad_request(
            f"the body must be a JSON object with one of {', '.join(MLFLOW_KEYS)}", "body", "object"
        )
    keys = [k for k in MLFLOW_KEYS if k in payload]
    unknown = sorted(set(payload) - {*MLFLOW_KEYS, "params"})
    if len(keys) != 1 or unknown:
        found = ", ".join(keys + unknown) or "none"
        raise bad_request(
            f"send exactly one of {', '.join(MLFLOW_KEYS)} (and optionally params); got {found}",
            "body",
            "format",
        )
    key = keys[0]
    value = payload[key]
    params = payload.get("params")
    if params is not None and type(params) is not dict:
        raise bad_request("params must be a JSON object", "params", "object")
    if key == "dataframe_split":
        if type(value) is not dict or "data" not in value:
            raise bad_request(
                "dataframe_split must be an object with data (and columns)", key, "object"
            )
        columns = value.get("columns")
        if columns is not None and (
            type(columns) is not list or not all(type(c) is str for c in columns)
        ):
            raise InputError(
                "columns must be an array of names", field=f"{key}.columns", rule="array"
            )
        inputs = from_rows(schema, value["data"], columns, f"{key}.data")
    elif key == "dataframe_records":
        inputs = from_records(schema, value, key)
    elif type(value) is dict:
        inputs = from_tensors(schema, value, key)
    elif type(value) is not list:
        raise InputError(f"{key} must be an array or an object", field=key, rule="array")
    elif value and all(type(v) is dict for v in value):
        inputs = from_records(schema, value, key)
    else:
        inputs = from_tensor_value(schema, value, key)
    return Parsed(inputs, params or None)


def parse_csv(body: bytes, schema: InputSchema) -> Inputs:
    """CSV with a header line naming the columns, or without one when the first line is not
    column names and has exactly the signature's columns (the SageMaker batch transform habit);
    fields are converted by the column's type."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad_request("the CSV is not UTF-8", "body", "utf-8") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if r]
    except csv.Error as exc:  # a field over the csv module's size limit, for one
        raise bad_request(f"not valid CSV ({exc})", "body", "csv") from None
    names = [c.name for c in schema.columns]
    if rows and names and len(rows[0]) == len(names) and not set(rows[0]) <= set(names):
        # No header line (SageMaker batch transform sends one record per request this way):
        # the fields are the signature's columns, in its order.
        header, data = names, rows
    elif len(rows) < 2:
        raise InputError("send a header line and at least one row", field="body", rule="non-empty")
    else:
        header, data = rows[0], rows[1:]
    for index, row in enumerate(data):
        if len(row) != len(header):
            raise InputError(
                f"line {index + 2} has {len(row)} fields, the header {len(header)}",
                field=f"line {index + 2}",
                rule="shape",
            )
    strings = {
        name: list(values) for name, values in zip(header, zip(*data, strict=True), strict=True)
    }
    if not schema.columns:
        guessed: dict[str, Any] = {n: _guess(v) for n, v in strings.items()}
        return from_columns(schema, guessed, "body")
    columns: dict[str, Any] = {}
    for column in schema.columns:
        if column.name in strings:
            columns[column.name] = _csv_column(column, strings[column.name])
    return from_columns(schema, columns, "body")


def _csv_column(column: Column, values: list[str]) -> NDArray:
    kind = column.kind
    convert: Any
    if kind in FLOAT_KINDS:
        convert, what = _csv_float, "a number"
    elif kind in INT_KINDS:
        convert, what = int, "an integer"
    elif kind == "boolean":
        convert, what = _csv_bool, "true or false"
    else:
        return convert_column(column, values)
    try:
        return np.array([convert(v) for v in values], dtype=column.dtype)
    except (ValueError, OverflowError):
        for row, value in enumerate(values):
            try:
                np.array([convert(value)], dtype=column.dtype)
            except (ValueError, OverflowError):
                raise InputError(
                    f"row {row}: {value!r} is not {what} ({kind})", field=column.name, rule="type"
                ) from None
        raise


def _csv_float(value: str) -> float:
    return float(value) if value.strip() else float("nan")


def _csv_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(value)


def _guess(values: list[str]) -> NDArray:
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        return np.array(values, dtype=object)


# ---------------------------------------------------------------------- answers
def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_NUMPY, default=_default)


def mlflow_body(outputs: Outputs, ids: Sequence[str]) -> bytes:
    if isinstance(outputs, dict):
        lists = {k: v.tolist() for k, v in outputs.items()}
        records = [dict(zip(lists, row, strict=True)) for row in zip(*lists.values(), strict=True)]
        return dumps({"predictions": records, "prediction_ids": ids})
    return dumps({"predictions": outputs, "prediction_ids": ids})


def csv_body(outputs: Outputs, ids: Sequence[str]) -> bytes:
    if isinstance(outputs, dict):
        header = list(outputs)
        columns = [v.tolist() for v in outputs.values()]
    elif outputs.ndim == 2:
        header = [f"prediction_{j}" for j in range(outputs.shape[1])]
        columns = [outputs[:, j].tolist() for j in range(outputs.shape[1])]
    else:
        header, columns = ["prediction"], [outputs.tolist()]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prediction_id", *header])
    writer.writerows(zip(ids, *columns, strict=False))
    return out.getvalue().encode()


def error_body(exc: Any, *, v2: bool = False) -> bytes:
    """``{"error": {field, rule, message}}``; v2 routes put the message in ``error`` (the spec)."""
    field, rule, message = (
        getattr(exc, "field", None),
        getattr(exc, "rule", None),
        str(getattr(exc, "message", exc)),
    )
    if v2:
        return dumps({"error": message, "field": field, "rule": rule})
    status = getattr(exc, "http_status", 500)
    code = (
        "BAD_REQUEST"
        if 400 <= status < 500
        else "TEMPORARILY_UNAVAILABLE"
        if status == 503
        else "INTERNAL_ERROR"
    )
    return dumps(
        {
            "error_code": code,
            "message": message,
            "error": {"field": field, "rule": rule, "message": message},
        }
    )


__all__ = [
    "MLFLOW_KEYS",
    "Parsed",
    "csv_body",
    "dumps",
    "error_body",
    "load_json",
    "media_type",
    "mlflow_body",
    "parse_csv",
    "parse_invocation",
    "parse_mlflow_json",
]
