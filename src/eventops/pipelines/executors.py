"""Where a step attempt runs: `LocalExecutor` (worker processes) or `InlineExecutor` (this one).

An executor runs one attempt of one step and reports its value, its captured output (stdout,
stderr and logging) and its error; retries, caching and state belong to the runner. `run` blocks
and is called from several runner threads at once, one per parallel branch.

`LocalExecutor` keeps a pool of `max_workers` long-lived worker processes ("spawn" by default,
"forkserver" for faster starts), each answering one attempt at a time over its own pipe, so a
trivial step costs a round trip rather than a process start. It is its own pool rather than a
`concurrent.futures.ProcessPoolExecutor` because that pool cannot stop one task: enforcing a
timeout there means killing a worker, which breaks the pool and every other step running in it.
Here a step that overruns its timeout has its worker killed alone, and the worker is replaced. A
step that crashes its process (a segfault, an out-of-memory kill) fails that attempt, its worker
is replaced and the runner stays alive. Before each attempt the worker takes on the caller's
current environment variables, `sys.path` and working folder.

Steps cross the process boundary by name (module and qualified name), so they must be defined at
module level of an importable module. Values cross it by pickling.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import multiprocessing
import multiprocessing.util
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.reduction import ForkingPickler
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


def _answer(call: StepCall) -> StepResult:
    """Import the step and run it, output captured (the work of one attempt in a worker)."""
    try:
        fn = resolve(call.module, call.qualname)
    except Exception as exc:
        return StepResult(error=f"cannot import step {call.step!r}: {type(exc).__name__}: {exc}")
    return _capture_and_run(fn, call.kwargs, call.context)


def _send(conn: Connection, call: StepCall, result: StepResult) -> None:
    try:
        data = bytes(ForkingPickler.dumps(result))
    except Exception as exc:  # the value does not pickle
        result = StepResult(
            log=result.log,
            error=f"the output of step {call.step!r} cannot be sent back: "
            f"{type(exc).__name__}: {exc}",
            duration=result.duration,
            metrics=result.metrics,
            reads=result.reads,
        )
        data = bytes(ForkingPickler.dumps(result))
    conn.send_bytes(data)


def _worker_main(conn: Connection) -> None:
    """Entry point of a LocalExecutor worker: answer step calls until the pipe closes.

    Each message is `(call, environ, sys_path, cwd)`: the worker takes on the caller's current
    environment, import path and working folder before each step, as a fresh process would.
    """
    last_env: dict[str, str] | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the executor closed, or its process exited
        if message is None:
            return
        call, environ, path, cwd = message
        if environ != last_env:
            os.environ.clear()
            os.environ.update(environ)
            last_env = environ
        if sys.path != path:
            sys.path[:] = path
        if cwd:
            with contextlib.suppress(OSError):
                if os.getcwd() != cwd:
                    os.chdir(cwd)
        _send(conn, call, _answer(call))


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the working folder was removed
        return ""


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


class _Worker:
    """One long-lived worker process and the parent's end of its pipe."""

    def __init__(self, context: SpawnContext | ForkServerContext, number: int, generation: int):
        self.generation = generation
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_main, args=(child,), name=f"eventops-step-worker-{number}"
        )
        self.process.start()
        child.close()  # the worker holds the other end: EOF here when it exits

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to exit (it is idle); kill it if it does not."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.conn.close()
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def _stop_all(workers: set[_Worker]) -> None:
    """Stop every worker left (the executor is closed or garbage, or the interpreter exits)."""
    for worker in list(workers):
        workers.discard(worker)
        if worker.process.is_alive():
            worker.kill()
        else:
            worker.process.join(0)
            worker.conn.close()


def check_importable(call: StepCall, executor: str, where: str) -> None:
    """Executors that run steps elsewhere import them by module and name: refuse, with what to
    do, a step that cannot be found that way."""
    if "<locals>" in call.qualname:
        raise ValidationError(
            f"step {call.step!r} ({call.module}.{call.qualname}) is defined inside a "
            f"function; {executor} runs steps {where}, which import them by name: "
            "define it at module level, or use InlineExecutor",
            field=f"step.{call.step}",
            rule="importable",
        )
    try:
        resolve(call.module, call.qualname)
    except (ImportError, AttributeError, TypeError) as exc:
        raise ValidationError(
            f"step {call.step!r} cannot be imported as {call.module}.{call.qualname} ({exc}); "
            f"{executor} needs steps defined at module level of an importable module",
            field=f"step.{call.step}",
            rule="importable",
        ) from None


class LocalExecutor:
    """Runs step attempts in a pool of `max_workers` long-lived worker processes.

    Workers start on first use and answer one attempt at a time. A step that overruns its timeout
    has its worker killed (only that one) and replaced; so does a worker that dies under a step.
    Steps share a worker's module state across attempts, as in any process pool.
    """

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
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._generation = 0
        self._started = 0
        # stops the workers before multiprocessing joins its children at exit, and when the
        # executor is garbage collected unclosed
        self._finalizer = multiprocessing.util.Finalize(
            self, _stop_all, args=(self._workers,), exitpriority=10
        )

    @staticmethod
    def check_importable(call: StepCall) -> None:
        """Refuse a step other processes cannot import, with a message saying what to do."""
        check_importable(call, "LocalExecutor", "in other processes")

    def warm_up(self) -> None:
        """Start all `max_workers` workers now rather than on first use."""
        with self._lock:
            while len(self._workers) < self.max_workers:
                self._idle.append(self._new_worker())

    def _new_worker(self) -> _Worker:  # under self._lock
        self._started += 1
        worker = _Worker(self._context, self._started, self._generation)
        self._workers.add(worker)
        return worker

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._workers.discard(worker)
                worker.kill()
            return self._new_worker()

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if worker.generation == self._generation:
                self._idle.append(worker)
                return
            self._workers.discard(worker)
        worker.stop()  # the executor was closed while this worker ran a step

    def _discard(self, worker: _Worker) -> None:
        """Kill a worker that timed out or died, and start its replacement at once."""
        worker.kill()
        with self._lock:
            self._workers.discard(worker)
            if worker.generation == self._generation:
                self._idle.append(self._new_worker())

    def run(self, call: StepCall) -> StepResult:
        self.check_importable(call)
        call = replace(call, fn=None)
        # pickled here, so a call that does not pickle fails before anything is sent
        message = bytes(ForkingPickler.dumps((call, dict(os.environ), list(sys.path), _cwd())))
        with self._slots:
            worker = self._take()
            try:
                worker.conn.send_bytes(message)
            except (BrokenPipeError, ConnectionResetError):
                self._discard(worker)  # it died while idle: one more try on its replacement
                worker = self._take()
                try:
                    worker.conn.send_bytes(message)
                except BaseException:
                    self._discard(worker)
                    raise
            except BaseException:
                self._discard(worker)
                raise
            return self._wait(call, worker)

    def _wait(self, call: StepCall, worker: _Worker) -> StepResult:
        healthy = False
        try:
            if not worker.conn.poll(call.timeout):
                return _timed_out(call)
            try:
                result: StepResult = worker.conn.recv()
            except (EOFError, ConnectionResetError):
                worker.process.join(5)
                return StepResult(
                    error=f"ProcessDied: the process running step {call.step!r} exited with "
                    f"code {worker.process.exitcode} before returning"
                )
            healthy = True
            return result
        finally:
            if healthy:
                self._give_back(worker)
            else:
                self._discard(worker)

    def close(self) -> None:
        """Stop the idle workers now and the busy ones when their step returns. The executor
        stays usable: a later `run` starts new workers."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
            for worker in idle:
                self._workers.discard(worker)
        for worker in idle:
            worker.stop()
