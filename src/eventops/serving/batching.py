"""Adaptive micro-batching: concurrent requests become one `predict` call.

Why: a tree ensemble or a neural network costs nearly the same per call whatever the rows (a
100-tree RandomForest: ~10 ms for 1 row, ~13 ms for 100), so answering 16 waiting requests with
one call is ~16x the throughput of one call each.

How: requests (already checked against the schema) wait in a queue. The batch loop takes the
oldest request and everything that can share its call: same model object (a swap starts a new
batch), same params, same layout, up to `max_batch_rows` rows (a larger request goes alone). It
dispatches as soon as the batch is full, or `max_wait_ms` after the oldest request arrived.
While one batch predicts in the worker thread, the next one fills, so under load requests
rarely wait for the timer: the wait adapts to the load by itself.

`predict` runs in one worker thread per batcher, never on the event loop, so parsing and
answering other requests go on meanwhile. Results are split back by row counts. If a batch
fails, or the model returns a different number of rows than it was given, every request of it
is retried alone: one request the model refuses never fails another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from eventops.errors import BackendUnavailable, EventOpsError
from eventops.serving.inputs import Inputs
from eventops.serving.models import LoadedModel, Outputs, normalise, output_rows, split

log = logging.getLogger(__name__)

BatchObserver = Callable[[str, int, int, float], None]  # role, requests, rows, seconds


class PredictError(EventOpsError):
    """The model raised on one request's inputs (alone): 422 when it refused them, else 500."""

    def __init__(self, message: str, *, rule: str, status: int) -> None:
        super().__init__(message, field="inputs", rule=rule)
        self.http_status = status


class Overloaded(BackendUnavailable):
    """The queue holds more rows than the server will keep waiting: 503, retry later."""


@dataclass(frozen=True, slots=True)
class Answer:
    outputs: Outputs
    model: LoadedModel


@dataclass(slots=True, eq=False)
class _Item:
    model: LoadedModel
    inputs: Inputs
    params: Mapping[str, Any] | None
    key: tuple[Any, ...]
    future: asyncio.Future[Answer]
    since: float


class MicroBatcher:
    """Queues checked requests and predicts them in batches in one worker thread."""

    def __init__(
        self,
        role: str = "primary",
        *,
        max_batch_rows: int = 64,
        max_wait_ms: float = 5.0,
        max_queue_rows: int | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch_rows < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_rows must be >= 1 and max_wait_ms >= 0")
        self.role = role
        self.max_rows = max_batch_rows
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue_rows = max_queue_rows or max(10_000, 100 * max_batch_rows)
        self.observer = observer
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"predict-{role}")

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        """Start the batch loop on the running event loop (idempotent)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Answer everything queued, then stop."""
        self._closing = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            await self._task
        self._executor.shutdown(wait=False)

    async def predict(
        self, model: LoadedModel, inputs: Inputs, params: Mapping[str, Any] | None = None
    ) -> Answer:
        """The model's outputs for these inputs, predicted in a batch with others."""
        if self._closing:
            raise Overloaded("the server is shutting down", field="server", rule="shutting-down")
        self.start()
        if self._queued_rows + inputs.rows > self.max_queue_rows and self._queue:
            raise Overloaded(
                f"{self._queued_rows:,} rows are waiting already; retry later",
                field="queue",
                rule="overloaded",
            )
        loop = asyncio.get_running_loop()
        key = (id(model), _params_key(params), inputs.layout)
        item = _Item(model, inputs, params, key, loop.create_future(), loop.time())
        was_empty = not self._queue
        self._queue.append(item)
        self._queued_rows += inputs.rows
        assert self._wake is not None
        if was_empty or self._queued_rows >= self.max_rows:
            self._wake.set()
        return await item.future

    # ------------------------------------------------------------------ the batch loop
    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        wake = self._wake
        while True:
            if not self._queue:
                if self._closing:
                    return
                wake.clear()
                await wake.wait()
                continue
            head = self._queue[0]
            remaining = head.since + self.max_wait - loop.time()
            while remaining > 0 and self._queued_rows < self.max_rows and not self._closing:
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), remaining)
                except TimeoutError:
                    break
                remaining = head.since + self.max_wait - loop.time()
            batch = self._take(head.key)
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._predict, batch)
            except BaseException as exc:  # the executor itself failed (shut down)
                results = [exc] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    def _take(self, key: tuple[Any, ...]) -> list[_Item]:
        """The oldest request and the ones that can share its call, in arrival order."""
        taken: list[_Item] = []
        rest: deque[_Item] = deque()
        rows = 0
        full = False
        for item in self._queue:
            if item.future.done():  # the client went away: nothing to answer
                self._queued_rows -= item.inputs.rows
                continue
            if (
                not full
                and item.key == key
                and (not taken or rows + item.inputs.rows <= self.max_rows)
            ):
                taken.append(item)
                rows += item.inputs.rows
                self._queued_rows -= item.inputs.rows
            else:
                full = full or item.key == key
                rest.append(item)
        self._queue = rest
        return taken

    # ------------------------------------------------------------------ in the worker thread
    def _predict(self, batch: list[_Item]) -> list[Answer | BaseException]:
        started = time.perf_counter()
        model = batch[0].model
        sizes = [item.inputs.rows for item in batch]
        try:
            outputs = normalise(
                model.predict(model.assemble([item.inputs for item in batch]), batch[0].params)
            )
        except Exception as exc:
            if len(batch) == 1:
                return [_predict_error(exc)]
            log.info("a batch of %d requests failed (%s); retrying each alone", len(batch), exc)
            return [self._predict([item])[0] for item in batch]
        rows = output_rows(outputs)
        if rows != sum(sizes):
            if len(batch) == 1:
                return [Answer(outputs, model)]
            log.info("the model returned %s rows for %d; retrying each alone", rows, sum(sizes))
            return [self._predict([item])[0] for item in batch]
        if self.observer is not None:
            self.observer(self.role, len(batch), sum(sizes), time.perf_counter() - started)
        if len(batch) == 1:
            return [Answer(outputs, model)]
        return [Answer(part, model) for part in split(outputs, sizes)]


def _params_key(params: Mapping[str, Any] | None) -> str:
    if not params:
        return ""
    import orjson

    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str).decode()


REFUSAL_TYPES = (ValueError, TypeError, KeyError, IndexError)
REFUSAL_CODES = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST"})


def _predict_error(exc: Exception) -> PredictError:
    text = " ".join(str(exc).split())[:500]
    refused = isinstance(exc, REFUSAL_TYPES) or getattr(exc, "error_code", None) in REFUSAL_CODES
    if refused:
        return PredictError(
            f"the model refused these inputs: {type(exc).__name__}: {text}",
            rule="model-refused",
            status=422,
        )
    log.error("predict failed: %s: %s", type(exc).__name__, text)
    return PredictError(f"the model failed: {type(exc).__name__}", rule="predict", status=500)


__all__ = ["Answer", "BatchObserver", "MicroBatcher", "Overloaded", "PredictError"]
