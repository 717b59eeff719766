"""Where a step attempt runs: `LocalExecutor` (child processes) or `InlineExecutor` (this one).

An executor runs one attempt of one step and reports its value, its captured output (stdout,
stderr and logging) and its error; retries, caching and state belong to the runner. `run` blocks
and is called from several runner threads at once, one per parallel branch.

`LocalExecutor` starts a fresh process per attempt ("spawn" by default, "forkserver" for faster
starts), at most `max_workers` at a time. It is a pool of processes rather than a
`concurrent.futures.ProcessPoolExecutor` because a pool cannot stop one task: enforcing a timeout
there means killing a worker, which breaks the pool and every other step running in it. Here a
step that overruns its timeout is killed alone. A step that crashes its process (a segfault, an
out-of-memory kill) fails that attempt and leaves the runner alive.

Steps cross the process boundary by name (module and qualified name), so they must be defined at
module level of an importable module. Values cross it by pickling.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from typing import Any, Protocol

from eventops.errors import ValidationError
from eventops.pipelines.context import Metric, step_context

MAX_LOG_CHARS = 200_000


@dataclass(frozen=True)
class StepCall:
    """One attempt of one step: which function, with which arguments, for how long."""

    step: str
    module: str
    qualname: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    fn: Callable[..., Any] | None = None  # set for in-process executors; never pickled
    # For the step-side helpers (`eventops.pipelines.context`): run_id, step, store_url, lake_url.
    context: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class StepResult:
    value: Any = None
    log: str = ""
    error: str | None = None  # "ExceptionType: message"; the traceback is at the end of `log`
    duration: float = 0.0
    metrics: list[Metric] = field(default_factory=list)  # what the step logged (log_metric)
    reads: list[dict[str, Any]] = field(default_factory=list)  # batches read (read_dataset)

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(Protocol):
    """Runs step attempts. `max_workers`: how many `run` calls may usefully overlap."""

    max_workers: int

    def run(self, call: StepCall) -> StepResult: ...

    def close(self) -> None: ...


def resolve(module: str, qualname: str) -> Callable[..., Any]:
    """The function behind a step, imported by name (a `Step`'s `.fn`, or a plain function)."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    fn = getattr(obj, "fn", obj)
    if not callable(fn):
        raise TypeError(f"{module}.{qualname} is not callable")
    return fn  # type: ignore[no-any-return]


def _capture_and_run(
    fn: Callable[..., Any], kwargs: Mapping[str, Any], context: Mapping[str, Any] | None = None
) -> StepResult:
    """Run `fn(**kwargs)` with stdout, stderr and logging captured; exceptions become `error`.
    What the step logs and reads through `eventops.pipelines.context` comes back on the result."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    started = time.monotonic()
    result = StepResult()
    try:
        with (
            step_context(context) as ctx,
            contextlib.redirect_stdout(buffer),
            contextlib.redirect_stderr(buffer),
        ):
            result.value = fn(**kwargs)
    except BaseException as exc:
        buffer.write(traceback.format_exc())
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
    result.duration = time.monotonic() - started
    result.metrics, result.reads = list(ctx.metrics), list(ctx.reads)
    result.log = buffer.getvalue()[-MAX_LOG_CHARS:]
    return result


def _child(call: StepCall, conn: Connection) -> None:
    """Entry point of a LocalExecutor process: import the step, run it, send the result back."""
    try:
        fn = resolve(call.module, call.qualname)
    except Exception as exc:
        result = StepResult(error=f"cannot import step {call.step!r}: {type(exc).__name__}: {exc}")
    else:
        result = _capture_and_run(fn, call.kwargs, call.context)
    try:
        conn.send(result)
    except Exception as exc:  # the value does not pickle
        conn.send(
            StepResult(
                log=result.log,
                error=f"the output of step {call.step!r} cannot be sent back: "
                f"{type(exc).__name__}: {exc}",
                duration=result.duration,
                metrics=result.metrics,
                reads=result.reads,
            )
        )
    finally:
        conn.close()


def _timed_out(call: StepCall) -> StepResult:
    return StepResult(
        error=f"TimeoutError: step {call.step!r} timed out after {call.timeout:g}s",
        duration=call.timeout or 0.0,
    )


class InlineExecutor:
    """Runs steps in this process, one at a time: for tests and debugging.

    A timeout is enforced by running the step in a daemon thread and abandoning it when time is
    up (a thread cannot be killed, so it may keep running in the background).
    """

    max_workers = 1

    def run(self, call: StepCall) -> StepResult:
        fn = call.fn or resolve(call.module, call.qualname)
        if call.timeout is None:
            return _capture_and_run(fn, call.kwargs, call.context)
        box: list[StepResult] = []
        thread = threading.Thread(
            target=lambda: box.append(_capture_and_run(fn, call.kwargs, call.context)),
            name=f"step-{call.step}",
            daemon=True,
        )
        thread.start()
        thread.join(call.timeout)
        return box[0] if box else _timed_out(call)

    def close(self) -> None:
        pass


class LocalExecutor:
    """Runs each step attempt in its own child process, at most `max_workers` at once."""

    def __init__(self, max_workers: int = 2, *, context: str = "spawn") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if context not in ("spawn", "forkserver"):
            raise ValueError(
                "context must be 'spawn' or 'forkserver' (fork is unsafe with threads)"
            )
        self.max_workers = max_workers
        self._context: SpawnContext | ForkServerContext = (
            multiprocessing.get_context("spawn")
            if context == "spawn"
            else multiprocessing.get_context("forkserver")
        )
        self._slots = threading.BoundedSemaphore(max_workers)

    @staticmethod
    def check_importable(call: StepCall) -> None:
        """Refuse a step other processes cannot import, with a message saying what to do."""
        if "<locals>" in call.qualname:
            raise ValidationError(
                f"step {call.step!r} ({call.module}.{call.qualname}) is defined inside a "
                "function; LocalExecutor runs steps in other processes, which import them by "
                "name: define it at module level, or use InlineExecutor",
                field=f"step.{call.step}",
                rule="importable",
            )
        try:
            resolve(call.module, call.qualname)
        except (ImportError, AttributeError, TypeError) as exc:
            raise ValidationError(
                f"step {call.step!r} cannot be imported as {call.module}.{call.qualname} ({exc}); "
                "LocalExecutor needs steps defined at module level of an importable module",
                field=f"step.{call.step}",
                rule="importable",
            ) from None

    def run(self, call: StepCall) -> StepResult:
        self.check_importable(call)
        call = replace(call, fn=None)
        with self._slots:
            receiver, sender = self._context.Pipe(duplex=False)
            process = self._context.Process(
                target=_child, args=(call, sender), name=f"eventops-step-{call.step}"
            )
            process.start()
            sender.close()  # ours; the child keeps its copy, EOF when it exits
            try:
                return self._wait(call, process, receiver)
            finally:
                receiver.close()
                if process.is_alive():
                    process.kill()
                process.join(5)

    @staticmethod
    def _wait(call: StepCall, process: Any, receiver: Connection) -> StepResult:
        if not receiver.poll(call.timeout):
            return _timed_out(call)
        try:
            result: StepResult = receiver.recv()
        except EOFError:
            process.join(5)
            return StepResult(
                error=f"ProcessDied: the process running step {call.step!r} exited with code "
                f"{process.exitcode} before returning"
            )
        return result

    def close(self) -> None:
        pass
