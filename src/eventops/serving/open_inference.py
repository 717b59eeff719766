"""Open Inference Protocol v2 (KServe / MLServer / Triton): infer requests and metadata.

``POST /v2/models/{name}/infer`` takes ``inputs`` as one tensor per column (shape ``[n]`` or
``[n, 1]``, named after the column) or a single ``[n, columns]`` tensor whose columns follow the
signature's order (``GET /v2/models/{name}`` lists them); ``data`` may be flat (row-major) or
nested. A tensor's datatype must fit its column: ``FP*``/``INT*``/``UINT*`` for double/float,
``INT*``/``UINT*`` for long/integer, ``BOOL`` for boolean, ``BYTES`` for text, binary and
datetime. The answer carries one output per model output and the prediction ids in
``parameters.prediction_ids``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eventops.serving.inputs import Inputs, from_columns, from_flat, from_tensor_value, from_tensors
from eventops.serving.models import LoadedModel, Outputs
from eventops.serving.protocols import Parsed, bad_request, dumps
from eventops.serving.schema import (
    FLOAT_KINDS,
    INT_KINDS,
    Column,
    InputError,
    InputSchema,
    NDArray,
)

V2_TYPES = {
    "BOOL": "b", "UINT8": "u", "UINT16": "u", "UINT32": "u", "UINT64": "u", "INT8": "i",
    "INT16": "i", "INT32": "i", "INT64": "i", "FP16": "f", "FP32": "f", "FP64": "f", "BYTES": "S",
}  # fmt: skip


def parse_infer(payload: Any, schema: InputSchema) -> tuple[Parsed, str | None]:
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
    nested = bool(data) and type(data[0]) is list
    flat = _flatten(data, shape, f"{where}.data") if nested else data
    size = math.prod(shape)  # Python ints: np.prod would wrap around for huge shapes
    if len(flat) != size:
        raise InputError(
            f"{len(flat)} values do not fill shape {shape}", field=f"{where}.data", rule="shape"
        )
    return _V2Tensor(where, name, shape, datatype, flat)


def _flatten(data: list[Any], shape: list[int], where: str) -> list[Any]:
    """Nested data, row-major; its nesting must be the declared shape (no ragged rows)."""
    try:
        array = np.asarray(data, dtype=object)
    except ValueError:
        raise InputError("the data is ragged", field=where, rule="shape") from None
    flat = list(array.ravel())
    if list(array.shape) != shape or any(type(v) is list for v in flat):
        raise InputError(
            f"the nested data does not have shape {shape} (ragged, or nested differently)",
            field=where,
            rule="shape",
        )
    return flat


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
    arrays = {t.name: _array(t) for t in tensors}
    if len(arrays) == 1 and (not schema.tensors or schema.tensors[0].name is None):
        return from_tensor_value(schema, next(iter(arrays.values())), tensors[0].where)
    return from_tensors(schema, arrays, "inputs")


def _array(tensor: _V2Tensor) -> NDArray:
    try:
        return np.asarray(tensor.flat).reshape(tensor.shape)
    except (ValueError, TypeError):  # a list among the values: nested deeper than the shape
        raise InputError(
            f"the data does not fit shape {tensor.shape} (values must not be arrays)",
            field=f"{tensor.where}.data",
            rule="shape",
        ) from None


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
def v2_datatype(dtype: np.dtype[Any]) -> str:
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in "iu":
        return f"{'U' if dtype.kind == 'u' else ''}INT{dtype.itemsize * 8}"
    if dtype.kind == "f":
        return f"FP{dtype.itemsize * 8}"
    return "BYTES"


def infer_body(
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


def model_metadata(model: LoadedModel, name: str) -> dict[str, Any]:
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


__all__ = ["V2_TYPES", "infer_body", "model_metadata", "parse_infer", "v2_datatype"]
