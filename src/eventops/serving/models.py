"""Loaded models and the slot that holds the one being served, swapped atomically.

`load_model` resolves a URI to a pinned version first (``models:/churn@champion`` becomes
``models:/churn/7``; the alias can move while we download, the version cannot), loads the MLflow
pyfunc, reads its input schema from the signature and warms it with one predict on its input
example through the same checks a request goes through. Only a model that passed all of that
can be put in a `ModelSlot`.

A swap is one reference assignment. A request is bound to the model current when it was
admitted (its inputs were checked against that model's schema), so requests already admitted
finish on the old model and the old model is freed when the last of them answers: no request
fails because of a swap.

MLflow's tracking and registry URIs are process-wide (`mlflow.set_tracking_uri`); a server
process serves one deployment, so `load_model(tracking_uri=...)` sets them for the process.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from eventops.errors import NotFound, ValidationError
from eventops.serving.inputs import Inputs, from_columns, from_tensor_value, from_tensors
from eventops.serving.schema import InputError, InputSchema, NDArray, null_column

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: the URI as asked and the pinned URI that was loaded."""

    requested: str
    pinned: str
    name: str | None = None  # registered model name
    version: str | None = None  # registry version (None until known for runs:/ and paths)
    alias: str | None = None

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None and self.name is not None


@dataclass(eq=False)
class LoadedModel:
    """One loaded, warmed model. Compared by identity: two loads are two models."""

    ref: ModelRef
    version: str
    pyfunc: Any
    schema: InputSchema
    takes_params: bool = False
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.ref.name or "model"

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> Any:
        if params and self.takes_params:
            return self.pyfunc.predict(model_input, params=dict(params))
        return self.pyfunc.predict(model_input)

    def assemble(self, parts: Sequence[Inputs]) -> Any:
        """One model input from several checked requests (rows in order)."""
        return assemble(self.schema, parts)


class ModelSlot:
    """The model a role (primary, challenger) serves now; `swap` replaces it atomically."""

    def __init__(self, role: str, uri: str, model: LoadedModel | None = None) -> None:
        self.role = role
        self.uri = uri
        self._model = model
        self.swaps = 0
        self._lock = threading.Lock()  # one reload at a time per slot

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    @property
    def ready(self) -> bool:
        return self._model is not None

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Serve `model` from now on; returns the previous one (still answering its requests)."""
        previous, self._model = self._model, model
        if previous is not None:  # the first model loaded is not a swap
            self.swaps += 1
        return previous

    @property
    def reload_lock(self) -> threading.Lock:
        return self._lock


# ---------------------------------------------------------------------- resolving and loading
def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, None, alias); ``models:/name/3`` -> (name, "3", None)."""
    body = uri.removeprefix("models:/").strip("/")
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        return name, None, alias
    name, _, version = body.partition("/")
    return name, version or None, None


def resolve(uri: str, client: Any | None = None) -> ModelRef:
    """Pin a URI to a version: aliases and ``latest`` are looked up in the registry."""
    if not uri.startswith("models:/"):
        return ModelRef(uri, uri)
    name, version, alias = parse_models_uri(uri)
    if version is None and alias is None:  # models:/<model id> (an MLflow 3 logged model)
        return ModelRef(uri, uri, version=name)
    client = client or registry_client()
    try:
        if alias is not None:
            found = client.get_model_version_by_alias(name, alias)
            version = str(found.version)
        elif version == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise NotFound(f"model {name!r} has no versions", field="model_uri", rule="exists")
            version = str(max(int(v.version) for v in versions))
    except NotFound:
        raise
    except Exception as exc:
        raise NotFound(
            f"cannot resolve {uri}: {_short(exc)}", field="model_uri", rule="resolvable"
        ) from None
    return ModelRef(uri, f"models:/{name}/{version}", name, version, alias)


def registry_client(tracking_uri: str | None = None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def use_tracking_uri(tracking_uri: str | None) -> None:
    """Point this process's MLflow (tracking and registry) at `tracking_uri`."""
    if tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)


def load_model(
    uri: str | ModelRef, *, tracking_uri: str | None = None, warm: bool = True
) -> LoadedModel:
    """Load (and warm) the model a URI names; NotFound / ValidationError name the URI."""
    use_tracking_uri(tracking_uri)
    ref = uri if isinstance(uri, ModelRef) else resolve(uri)
    started = time.perf_counter()
    import mlflow.pyfunc

    try:
        pyfunc = mlflow.pyfunc.load_model(ref.pinned)
    except Exception as exc:
        raise NotFound(
            f"cannot load {ref.pinned}: {_short(exc)}", field="model_uri", rule="loadable"
        ) from None
    metadata = pyfunc.metadata
    schema = InputSchema.from_mlflow(metadata.get_input_schema())
    version = ref.version or _local_version(metadata)
    model = LoadedModel(
        ref,
        version,
        pyfunc,
        schema,
        takes_params=metadata.get_params_schema() is not None,
    )
    if warm:
        warm_up(model)
    model.load_seconds = time.perf_counter() - started
    log.info("loaded %s (version %s) in %.2fs", ref.pinned, version, model.load_seconds)
    return model


def _local_version(metadata: Any) -> str:
    run_id = getattr(metadata, "run_id", None)
    uuid = getattr(metadata, "model_uuid", None) or "unknown"
    return f"run-{run_id}" if run_id else f"local-{uuid[:12]}"


def warm_up(model: LoadedModel) -> None:
    """One predict on the model's input example, checked like a request (if it has one)."""
    try:
        example = model.pyfunc.input_example
    except Exception:  # an example that cannot be read: nothing to warm with
        example = None
    if example is None:
        return
    try:
        inputs = example_inputs(model.schema, example)
        model.predict(model.assemble([inputs]))
    except InputError as exc:
        raise ValidationError(
            f"the model's own input example fails its signature: {exc}",
            field="input_example",
            rule="signature",
        ) from None
    except Exception as exc:
        raise ValidationError(
            f"the model fails to predict its own input example: {_short(exc)}",
            field="input_example",
            rule="predict",
        ) from None


def example_inputs(schema: InputSchema, example: Any) -> Inputs:
    if hasattr(example, "to_dict") and hasattr(example, "columns"):  # a pandas DataFrame
        columns = {str(c): _example_column(example[c]) for c in example.columns}
        return from_columns(schema, columns, "input_example")
    if isinstance(example, dict):
        return from_tensors(schema, example, "input_example")
    return from_tensor_value(schema, np.asarray(example).tolist(), "input_example")


def _example_column(series: Any) -> Any:
    """A DataFrame column as the checks take it: naive datetimes as datetime64[ns] (as lists
    they would be Timestamps, which the datetime rule, made for JSON strings, refuses)."""
    if series.dtype.kind == "M" and getattr(series.dtype, "tz", None) is None:
        return series.to_numpy(dtype="datetime64[ns]")
    return series.tolist()


# ---------------------------------------------------------------------- batches in and out
def assemble(schema: InputSchema, parts: Sequence[Inputs]) -> Any:
    """The model input for these requests: a DataFrame for column signatures, arrays else."""
    import pandas as pd

    if schema.columns:
        names = schema.names
        if all(p.form == "matrix" for p in parts):
            matrix = parts[0].data if len(parts) == 1 else np.concatenate([p.data for p in parts])
            return pd.DataFrame(matrix, columns=names, copy=False)
        columns: dict[str, NDArray] = {}
        for column in schema.columns:
            arrays = []
            for part in parts:
                found = part.columns(names).get(column.name)
                arrays.append(found if found is not None else null_column(column, part.rows))
            columns[column.name] = _concat(arrays)
        return pd.DataFrame(columns, copy=False)
    if parts[0].form == "tensor":
        return _concat([p.data for p in parts])
    keys = list(parts[0].data)
    joined = {k: _concat([p.data[k] for p in parts]) for k in keys}
    if schema.tensors:
        return joined
    return pd.DataFrame(joined, copy=False)


def _concat(arrays: list[NDArray]) -> NDArray:
    if len(arrays) == 1:
        return arrays[0]
    if len({a.dtype for a in arrays}) > 1 and any(a.dtype == object for a in arrays):
        arrays = [a.astype(object) for a in arrays]
    return np.concatenate(arrays)


Outputs = NDArray | dict[str, NDArray]


def normalise(prediction: Any) -> Outputs:
    """Predictions as an array (rows first) or a dict of arrays (one per output column)."""
    if isinstance(prediction, np.ndarray):
        return prediction
    if hasattr(prediction, "to_numpy") and hasattr(prediction, "columns"):  # DataFrame
        return {str(c): prediction[c].to_numpy() for c in prediction.columns}
    if hasattr(prediction, "to_numpy"):  # Series
        return np.asarray(prediction.to_numpy())
    if isinstance(prediction, dict):
        return {str(k): np.asarray(v) for k, v in prediction.items()}
    return np.asarray(prediction)


def output_rows(outputs: Outputs) -> int | None:
    if isinstance(outputs, dict):
        lengths = {len(v) if v.ndim else 1 for v in outputs.values()}
        return lengths.pop() if len(lengths) == 1 else None
    return len(outputs) if outputs.ndim else None


def split(outputs: Outputs, sizes: Sequence[int]) -> list[Outputs]:
    """The outputs of each request, in order (the caller checked the row count)."""
    bounds = np.cumsum([0, *sizes])
    if isinstance(outputs, dict):
        return [{k: v[a:b] for k, v in outputs.items()} for a, b in _pairs(bounds)]
    return [outputs[a:b] for a, b in _pairs(bounds)]


def _pairs(bounds: NDArray) -> list[tuple[int, int]]:
    return list(itertools.pairwise(int(b) for b in bounds))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


Loader = Callable[[ModelRef], LoadedModel]

__all__ = [
    "LoadedModel",
    "Loader",
    "ModelRef",
    "ModelSlot",
    "Outputs",
    "assemble",
    "load_model",
    "normalise",
    "output_rows",
    "parse_models_uri",
    "registry_client",
    "resolve",
    "split",
    "use_tracking_uri",
    "warm_up",
]
