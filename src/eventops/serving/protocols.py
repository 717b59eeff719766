"""Wire formats: request bodies to checked `Inputs`, outputs to response bodies.

* MLflow scoring (`POST /invocations`, also the SageMaker contract): a JSON object with exactly
  one of ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs`` (and optional
  ``params``), or ``text/csv`` with a header line. Answer: ``{"predictions": [...],
  "prediction_ids": [...]}`` (or CSV when the client sends ``Accept: text/csv``).
* Open Inference Protocol v2 (`POST /v2/models/{name}/infer`): ``inputs`` as one tensor per
  column (shape ``[n]`` or ``[n, 1]``) or a single ``[n, columns]`` tensor whose columns follow
  the signature's order. Answer: ``outputs`` with ``parameters.prediction_ids``.

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
    from_flat,
    from_records,
    from_rows,
    from_tensor_value,
    from_tensors,
)
from eventops.serving.models import LoadedModel, Outputs
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
V2_TYPES = {
    "BOOL": "b", "UINT8": "u", "UINT16": "u", "UINT32": "u", "UINT64": "u", "INT8": "i",
    "INT16": "i", "INT32": "i", "INT64": "i", "FP16": "f", "FP32": "f", "FP64": "f", "BYTES": "S",
}  # fmt: skip
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
    """CSV with a header line naming the columns; fields are converted by the column's type."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad_request("the CSV is not UTF-8", "body", "utf-8") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if len(rows) < 2:
        raise InputError("send a header line and at least one row", field="body", rule="non-empty")
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


# ---------------------------------------------------------------------- Open Inference v2
def parse_v2(payload: Any, schema: InputSchema) -> tuple[Parsed, str | None]:
    """A v2 inference request: (checked inputs, the request's id)."""
    if type(payload) is not dict:
        raise bad_request("the body must be a JSON object with inputs", "body", "object")
    request_id = payload.get("id")
    tensors = payload.get("inputs")
    if type(tensors) is not list or not tensors:
        raise InputError(
            "inputs must be a non-empty array of tensors", field="inputs", rule="array"
        )
    params = payload.get("parameters")
    if params is not None and type(params) is not dict:
        raise bad_request("parameters must be a JSON object", "parameters", "object")
    decoded = [_v2_tensor(t, i) for i, t in enumerate(tensors)]
    inputs = _v2_inputs(schema, decoded)
    return Parsed(inputs, None), request_id if isinstance(request_id, str) else None


@dataclass(frozen=True, slots=True)
class _V2Tensor:
    where: str
    name: str
    shape: list[int]
    datatype: str
    flat: list[Any]


def _v2_tensor(tensor: Any, index: int) -> _V2Tensor:
    where = f"inputs[{index}]"
    if type(tensor) is not dict:
        raise InputError("a tensor must be an object", field=where, rule="object")
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if type(name) is not str:
        raise InputError("name must be a string", field=f"{where}.name", rule="required")
    if type(shape) is not list or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise InputError("shape must be an array of sizes", field=f"{where}.shape", rule="shape")
    if datatype not in V2_TYPES:
        raise InputError(
            f"datatype must be one of {', '.join(V2_TYPES)}",
            field=f"{where}.datatype",
            rule="datatype",
        )
    data = tensor.get("data")
    if type(data) is not list:
        raise InputError("data must be an array", field=f"{where}.data", rule="array")
    flat = data if not data or type(data[0]) is not list else _flatten(data, f"{where}.data")
    size = int(np.prod(shape))
    if len(flat) != size:
        raise InputError(
            f"{len(flat)} values do not fill shape {shape}", field=f"{where}.data", rule="shape"
        )
    return _V2Tensor(where, name, shape, datatype, flat)


def _flatten(data: list[Any], where: str) -> list[Any]:
    try:
        array = np.asarray(data, dtype=object)
    except ValueError:
        raise InputError("the data is ragged", field=where, rule="shape") from None
    return list(array.ravel())


def _v2_inputs(schema: InputSchema, tensors: list[_V2Tensor]) -> Inputs:
    names = set(schema.names)
    if schema.columns:
        if len(tensors) == 1 and len(tensors[0].shape) == 2 and tensors[0].name not in names:
            t = tensors[0]
            if t.shape[1] != len(schema.columns):
                raise InputError(
                    f"a 2-D input needs {len(schema.columns)} columns (the signature's, in order); "
                    f"got shape {t.shape}",
                    field=f"{t.where}.shape",
                    rule="shape",
                )
            for column in schema.columns:
                _check_datatype(column, t)
            return from_flat(schema, t.flat, t.shape[0], f"{t.where}.data")
        columns: dict[str, list[Any]] = {}
        for t in tensors:
            found = schema.column(t.name)
            if found is None:
                continue
            if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
                raise InputError(
                    f"a column's tensor has shape [n] or [n, 1]; got {t.shape}",
                    field=f"{t.where}.shape",
                    rule="shape",
                )
            _check_datatype(found, t)
            columns[t.name] = t.flat
        return from_columns(schema, columns, "inputs")
    arrays = {t.name: np.asarray(t.flat).reshape(t.shape) for t in tensors}
    if len(arrays) == 1 and (not schema.tensors or schema.tensors[0].name is None):
        return from_tensor_value(schema, next(iter(arrays.values())), tensors[0].where)
    return from_tensors(schema, arrays, "inputs")


def _check_datatype(column: Column, tensor: _V2Tensor) -> None:
    given = V2_TYPES[tensor.datatype]
    kind = column.kind
    fits = (
        kind == "any"
        or (kind in FLOAT_KINDS and given in "fiu")
        or (kind in INT_KINDS and given in "iu")
        or (kind == "boolean" and given == "b")
        or (kind in ("string", "binary", "datetime") and given == "S")
    )
    if not fits:
        raise InputError(
            f"column {column.name!r} is {kind}; datatype {tensor.datatype} does not fit",
            field=f"{tensor.where}.datatype",
            rule="datatype",
        )


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


def v2_datatype(dtype: np.dtype[Any]) -> str:
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in "iu":
        return f"{'U' if dtype.kind == 'u' else ''}INT{dtype.itemsize * 8}"
    if dtype.kind == "f":
        return f"FP{dtype.itemsize * 8}"
    return "BYTES"


def v2_body(
    model: LoadedModel, name: str, outputs: Outputs, ids: Sequence[str], request_id: str | None
) -> bytes:
    named = outputs if isinstance(outputs, dict) else {"predict": outputs}
    tensors = [
        {"name": key, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape),
         "data": np.ascontiguousarray(arr).ravel()}
        for key, arr in named.items()
    ]  # fmt: skip
    body: dict[str, Any] = {"model_name": name, "model_version": model.version}
    if request_id is not None:
        body["id"] = request_id
    body["parameters"] = {"prediction_ids": ids}
    body["outputs"] = tensors
    return dumps(body)


def v2_metadata(model: LoadedModel, name: str) -> dict[str, Any]:
    """`GET /v2/models/{name}`: the inputs the signature declares, one tensor per column."""
    schema = model.schema
    inputs: list[dict[str, Any]] = [
        {"name": c.name, "datatype": _column_datatype(c), "shape": [-1],
         "parameters": {"required": c.required}}
        for c in schema.columns
    ]  # fmt: skip
    inputs += [
        {"name": t.name or "input", "datatype": v2_datatype(t.dtype), "shape": list(t.shape)}
        for t in schema.tensors
    ]
    outputs: list[dict[str, Any]] = []
    try:
        spec = model.pyfunc.metadata.get_output_schema()
    except Exception:  # a model without an output schema
        spec = None
    if spec is not None:
        for index, item in enumerate(spec.inputs):
            kind = getattr(item, "type", None)
            datatype = v2_datatype(kind) if isinstance(kind, np.dtype) else _mlflow_type(kind)
            outputs.append({"name": item.name or f"output-{index}", "datatype": datatype,
                            "shape": list(getattr(item, "shape", (-1,)))})  # fmt: skip
    return {
        "name": name,
        "versions": [model.version],
        "platform": "mlflow",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"model_uri": model.ref.pinned},
    }


def _column_datatype(column: Column) -> str:
    if column.kind in ("string", "binary", "datetime", "any"):
        return "BYTES"
    return v2_datatype(column.dtype)


def _mlflow_type(kind: Any) -> str:
    name = getattr(kind, "name", "")
    dtypes: dict[str, np.dtype[Any]] = {**FLOAT_KINDS, **INT_KINDS, "boolean": np.dtype(np.bool_)}
    return v2_datatype(dtypes[name]) if name in dtypes else "BYTES"


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
    "parse_v2",
    "v2_body",
    "v2_metadata",
]
