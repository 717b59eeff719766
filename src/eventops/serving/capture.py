"""Capture: a sample of requests, with their predictions, written to the lake for monitoring.

A sampled request's inputs, outputs, prediction ids, model version, role and time are kept in
memory (references to the arrays the request already built: nothing is copied on the request
path) and written as one lake batch of dataset ``predictions_<deployment>`` every
`flush_rows` rows or `flush_seconds` seconds, and on shutdown. `Lake.commit_batch` announces
each batch with ``dataset.batch.ingested`` (through the outbox), so monitors and triggers see
new captured data like any other data.

Columns of a batch:

* ``prediction_id`` (string), ``served_at`` (timestamp, UTC), ``model_version`` (string),
  ``role`` (``primary``, ``canary`` or ``shadow``);
* one column per input column, under its own name (a name clashing with the ones above or
  below is prefixed with ``input_``); tensor inputs: ``input`` (or the tensor's name) as lists;
* ``prediction`` for one output per row, ``prediction_0..k`` for k outputs per row (class
  probabilities), ``prediction_<name>`` for named outputs (a DataFrame).

If the lake cannot take a batch (store down), its rows stay buffered and the next flush tries
again; beyond `max_buffer_rows` the oldest are dropped and counted, so a long outage costs
memory up to a bound, never the server.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from eventops.serving.inputs import Inputs
from eventops.serving.models import Outputs
from eventops.serving.schema import NDArray

log = logging.getLogger(__name__)

RESERVED = frozenset({"prediction_id", "served_at", "model_version", "role", "prediction"})


class LakeWriter(Protocol):
    def commit_batch(self, name: str, table: pa.Table, *, source: str) -> Any: ...


class Relay(Protocol):
    def relay_once(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Captured:
    inputs: Inputs
    names: tuple[str, ...]
    outputs: Outputs
    ids: list[str]
    version: str
    role: str
    served_at: datetime


class PredictionCapture:
    """Buffers sampled predictions and commits them to the lake from a thread of its own."""

    def __init__(
        self,
        lake: LakeWriter,
        dataset: str,
        *,
        sample: float = 1.0,
        flush_rows: int = 1000,
        flush_seconds: float = 10.0,
        max_buffer_rows: int = 100_000,
        relay: Relay | None = None,
        source: str = "serving",
        seed: int | None = None,
        on_rows: Any = None,  # callable(outcome: str, rows: int), for metrics
    ) -> None:
        if not 0 <= sample <= 1:
            raise ValueError("sample must be between 0 and 1")
        self.lake = lake
        self.dataset = dataset
        self.sample = sample
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_buffer_rows = max_buffer_rows
        self.relay = relay
        self.source = source
        self.on_rows = on_rows
        self._random = random.Random(seed)
        self._buffer: deque[Captured] = deque()
        self._rows = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.rows_committed = 0
        self.rows_dropped = 0
        self.last_error: str | None = None

    def wants(self) -> bool:
        """Whether to capture the next request (the sample is per request)."""
        return self.sample >= 1 or (self.sample > 0 and self._random.random() < self.sample)

    def record(
        self,
        inputs: Inputs,
        names: tuple[str, ...],
        outputs: Outputs,
        ids: list[str],
        version: str,
        role: str = "primary",
    ) -> None:
        """Keep one request's predictions for the next flush (cheap: no copies)."""
        item = Captured(inputs, names, outputs, ids, version, role, datetime.now(UTC))
        with self._lock:
            self._buffer.append(item)
            self._rows += inputs.rows
            dropped = 0
            while self._rows > self.max_buffer_rows and len(self._buffer) > 1:
                old = self._buffer.popleft()
                self._rows -= old.inputs.rows
                dropped += old.inputs.rows
            # after a failed flush the rows wait for the next interval: waking a retry on every
            # request past flush_rows would rebuild a table of everything buffered each time
            due = self._rows >= self.flush_rows and self.last_error is None
        if dropped:
            self.rows_dropped += dropped
            self._count("dropped", dropped)
        if due:
            self._due.set()

    @property
    def buffered_rows(self) -> int:
        return self._rows

    # ------------------------------------------------------------------ flushing
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"capture-{self.dataset}", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 30.0, attempts: int = 5) -> None:
        """Stop the flusher and write what is buffered, retrying a failed commit a few times
        (workers stopping together race to create the dataset; the lake says retry)."""
        self._stop.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for attempt in range(attempts):
            try:
                self.flush()
                return
            except Exception as exc:
                if attempt == attempts - 1:
                    log.error(
                        "capture: %d row(s) for %s not written at shutdown: %s",
                        self._rows, self.dataset, exc,
                    )  # fmt: skip
                    self.rows_dropped += self._rows
                    self._count("dropped", self._rows)
                    return
                time.sleep(0.1 * 2**attempt + self._random.random() * 0.1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._due.wait(self.flush_seconds)
            self._due.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception as exc:  # kept buffered; the next flush tries again
                log.warning("capture flush to %s failed: %s", self.dataset, exc)
                self._due.clear()  # the next try comes after a whole interval (see `record`)

    def flush(self) -> int:
        """Commit everything buffered (one lake batch, unless it cannot share one table);
        returns the rows committed. A failed commit puts its rows and the ones after it back."""
        with self._flush_lock:
            with self._lock:
                items = list(self._buffer)
                self._buffer.clear()
                self._rows = 0
            if not items:
                return 0
            groups = self._tables(items)
            committed = 0
            try:
                for index, (table, _) in enumerate(groups):
                    try:
                        self.lake.commit_batch(self.dataset, table, source=self.source)
                    except Exception as exc:
                        self.last_error = f"{type(exc).__name__}: {exc}"
                        left = [item for _, group in groups[index:] for item in group]
                        with self._lock:  # put them back in front
                            self._buffer.extendleft(reversed(left))
                            self._rows += sum(item.inputs.rows for item in left)
                        raise
                    self.batches += 1
                    committed += table.num_rows
                self.last_error = None
            finally:
                if committed:
                    self.rows_committed += committed
                    self._count("committed", committed)
        if self.relay is not None and committed:
            try:
                self.relay.relay_once()
            except Exception as exc:  # the events wait in the outbox for the next relay
                log.warning("relay after capture batch failed: %s", exc)
        return committed

    def _tables(self, items: list[Captured]) -> list[tuple[pa.Table, list[Captured]]]:
        """The tables to commit: one, unless the items cannot share one (a model without a
        signature took 1-D and 2-D inputs; a model's outputs changed type). Then one per
        shape of columns; an item that cannot become a table at all (a model that answered
        fewer rows than it was given) is dropped, counted and logged, not kept: kept, it
        would fail every later flush and so stop all capture."""
        try:
            return [(to_table(items), items)]
        except Exception as exc:
            log.info("capture: the buffered requests do not fit one table (%s); splitting", exc)
        groups: dict[pa.Schema, tuple[list[pa.Table], list[Captured]]] = {}
        dropped = 0
        for item in items:
            try:
                table = to_table([item])
            except Exception as exc:
                dropped += item.inputs.rows
                log.error(
                    "capture: dropping %d row(s) of %s that cannot be written: %s: %s",
                    item.inputs.rows, self.dataset, type(exc).__name__, exc,
                )  # fmt: skip
                continue
            tables, members = groups.setdefault(table.schema, ([], []))
            tables.append(table)
            members.append(item)
        if dropped:
            self.rows_dropped += dropped
            self._count("dropped", dropped)
        return [(pa.concat_tables(tables), members) for tables, members in groups.values()]

    def _count(self, outcome: str, rows: int) -> None:
        if self.on_rows is not None:
            self.on_rows(outcome, rows)


# ---------------------------------------------------------------------- table building
def to_table(items: list[Captured]) -> pa.Table:
    """One Arrow table of captured requests (columns missing in some requests are nulls)."""
    parts: list[dict[str, Any]] = [_columns(item) for item in items]
    sizes = [item.inputs.rows for item in items]
    names: list[str] = []
    for part in parts:
        names += [n for n in part if n not in names]
    arrays = {}
    for name in names:
        chunks = [part.get(name) for part in parts]
        arrays[name] = _join(chunks, sizes)
    return pa.table(arrays)


def _columns(item: Captured) -> dict[str, Any]:
    rows = item.inputs.rows
    out: dict[str, Any] = {
        "prediction_id": pa.array(item.ids, pa.string()),
        "served_at": pa.array([item.served_at] * rows, pa.timestamp("us", tz="UTC")),
        "model_version": pa.array([item.version] * rows, pa.string()),
        "role": pa.array([item.role] * rows, pa.string()),
    }
    for name, values in item.inputs.columns(item.names).items():
        key = f"input_{name}" if name in RESERVED or name.startswith("prediction_") else name
        out[key] = _arrow(values)
    outputs = item.outputs
    if isinstance(outputs, dict):
        for name, values in outputs.items():
            out[f"prediction_{name}"] = _arrow(values)
    elif outputs.ndim == 2:
        for j in range(outputs.shape[1]):
            out[f"prediction_{j}"] = _arrow(outputs[:, j])
    else:
        out["prediction"] = _arrow(outputs)
    return out


def _arrow(values: NDArray) -> pa.Array:
    if values.ndim > 1:
        flat = pa.array(np.ascontiguousarray(values).reshape(len(values), -1).ravel())
        width = int(np.prod(values.shape[1:]))
        return pa.FixedSizeListArray.from_arrays(flat, width)
    if values.dtype == object:
        return pa.array(values.tolist())
    return pa.array(values)


def _join(chunks: list[pa.Array | None], sizes: list[int]) -> pa.ChunkedArray:
    types = [c.type for c in chunks if c is not None]
    kind = types[0]
    if any(t != kind for t in types):
        kind = pa.string() if any(pa.types.is_string(t) for t in types) else pa.float64()
    filled = [
        pa.nulls(size, kind) if c is None else (c if c.type == kind else c.cast(kind))
        for c, size in zip(chunks, sizes, strict=True)
    ]
    return pa.chunked_array(filled, kind)


__all__ = ["Captured", "LakeWriter", "PredictionCapture", "to_table"]
