"""`RayExecutor`: step attempts as Ray tasks, on a local Ray or an existing cluster.

Each attempt is one Ray task (no Ray-side retries: retries belong to the runner) that imports the
step by module and qualified name, runs it with stdout, stderr and logging captured exactly as
`LocalExecutor` does, and returns a `StepResult`. A step's `resources` become the task's
`num_cpus`, `num_gpus`, `memory` and custom resources (see `task_options`); a request no alive
node can satisfy is refused before submission, since Ray would otherwise queue it forever.

The timeout is enforced with `ray.wait` and then `ray.cancel(force=True)`, which kills the worker
process running the step. It is counted from submission, so time spent queued for resources or
starting a worker counts: keep `max_workers` at or below what the cluster can run at once.

`executor_from_url` picks an executor from the `pipelines.executor` setting.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from eventops.errors import ConfigError, ValidationError
from eventops.pipelines.executors import (
    Executor,
    InlineExecutor,
    LocalExecutor,
    StepCall,
    StepResult,
    _capture_and_run,
    _timed_out,
    check_importable,
    resolve,
)
from eventops.quantities import parse_size

SETTING = "pipelines.executor"
INSTALL_HINT = "pip install 'eventops[ray]'"

_CPU_KEYS = ("cpus", "cpu", "num_cpus")
_GPU_KEYS = ("gpus", "gpu", "num_gpus")
_MEMORY_KEYS = ("memory",)

# Ray runtimes started by a RayExecutor, counted by the executors using them: the last to close
# shuts it down. A Ray started by someone else is never shut down here.
_OWNED_LOCK = threading.Lock()
_owned_users = 0
_keeper_stop: threading.Event | None = None


def _init_in_keeper_thread(ray: Any, kwargs: Mapping[str, Any]) -> None:
    """`ray.init` in a thread that lives until Ray is shut down.

    Ray ties the processes it starts (GCS, raylet) to the *thread* that started them
    (`prctl(PR_SET_PDEATHSIG)`): started from a runner's step thread, they would be killed when
    that thread ends. The keeper is a daemon thread, so it never holds up the interpreter's exit.
    """
    global _keeper_stop
    started = threading.Event()
    stop = threading.Event()
    failure: list[BaseException] = []

    def keep() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:
            failure.append(exc)
            return
        finally:
            started.set()
        stop.wait()

    threading.Thread(target=keep, name="eventops-ray-keeper", daemon=True).start()
    started.wait()
    if failure:
        raise failure[0]
    _keeper_stop = stop


def _shutdown(ray: Any) -> None:
    global _keeper_stop
    if ray.is_initialized():
        ray.shutdown()
    if _keeper_stop is not None:
        _keeper_stop.set()
        _keeper_stop = None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"the Ray executor needs Ray, which is not installed ({exc}); {INSTALL_HINT}",
            field=SETTING,
            rule="installed",
        ) from None
    return ray


def _ray_task(
    step: str,
    module: str,
    qualname: str,
    kwargs: Mapping[str, Any],
    context: Mapping[str, Any],
    sys_path: list[str],
) -> StepResult:
    """What runs in the Ray worker: make the driver's import path visible, import, run, capture."""
    for entry in reversed(sys_path):
        if entry not in sys.path and os.path.isdir(entry):
            sys.path.insert(0, entry)
    importlib.invalidate_caches()
    try:
        fn = resolve(module, qualname)
    except Exception as exc:
        return StepResult(error=f"cannot import step {step!r}: {type(exc).__name__}: {exc}")
    return _capture_and_run(fn, kwargs, context)


def _number(step: str, key: str, value: Any) -> float:
    field = f"step.{step}.resources.{key}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(
            f"step {step!r}: resources[{key!r}] must be a number, not {value!r}",
            field=field,
            rule="resources",
        )
    if value < 0 or not math.isfinite(value):
        raise ValidationError(
            f"step {step!r}: resources[{key!r}] must be a finite number >= 0",
            field=field,
            rule="resources",
        )
    return float(value)


def task_options(step: str, resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """Ray task options for a step's `resources` mapping.

    `cpus` (or `cpu`, `num_cpus`; default 1) -> `num_cpus`; `gpus` (`gpu`, `num_gpus`) ->
    `num_gpus`; `memory` (bytes, or a size such as "4GB" / "512MiB") -> `memory`; any other key
    is a Ray custom resource (`{"trainer": 1}`, `{"accelerator_type:A100": 0.01}`). Bad values
    raise `ValidationError`, which fails the step without retries.
    """
    options: dict[str, Any] = {"num_cpus": 1.0}
    custom: dict[str, float] = {}
    for key, value in (resources or {}).items():
        name = str(key).lower()
        if name in _CPU_KEYS:
            options["num_cpus"] = _number(step, key, value)
        elif name in _GPU_KEYS:
            options["num_gpus"] = _number(step, key, value)
        elif name in _MEMORY_KEYS:
            if isinstance(value, str):
                try:
                    options["memory"] = parse_size(value, field=f"step.{step}.resources.memory")
                except ConfigError as exc:
                    raise ValidationError(
                        f"step {step!r}: {exc.message}", field=exc.field, rule="resources"
                    ) from None
            else:
                options["memory"] = int(_number(step, key, value))
        else:
            custom[str(key)] = _number(step, key, value)
    if custom:
        options["resources"] = custom
    return options


def _wanted(options: Mapping[str, Any]) -> dict[str, float]:
    """Task options as Ray resource names (CPU, GPU, memory, custom) -> amount."""
    wanted = {
        "CPU": float(options.get("num_cpus", 0.0)),
        "GPU": float(options.get("num_gpus", 0.0)),
        "memory": float(options.get("memory", 0)),
        **options.get("resources", {}),
    }
    return {k: v for k, v in wanted.items() if v > 0}


def step_resources(call: StepCall) -> Mapping[str, Any] | None:
    """A step's declared `resources`: `call.resources` when the runner passes it, else looked up
    on the `Step` object found by module and qualified name."""
    given = getattr(call, "resources", None)
    if given is not None:
        return given  # type: ignore[no-any-return]
    obj: Any = sys.modules.get(call.module)
    if obj is None:
        return None
    for part in call.qualname.split("."):
        obj = getattr(obj, part, None)
    options = getattr(obj, "options", None)
    resources = getattr(options, "resources", None)
    return resources if isinstance(resources, Mapping) else None


class RayExecutor:
    """Runs each step attempt as a Ray task.

    `address`: None starts a local Ray (`ray.init(num_cpus=max_workers or all cores)`), or reuses
    the one already initialised in this process; "ray://host:10001" connects a Ray client;
    "auto" joins the cluster running on this machine. `init_kwargs` are passed to `ray.init` (e.g.
    `runtime_env`, `_temp_dir`, `namespace`). Ray is started on first use, not here.

    `max_workers` (how many steps the runner runs at once) defaults to the cluster's CPUs.
    `ship_sys_path` (default: True for a local Ray) adds this process's `sys.path` entries that
    exist on the worker to the worker's, so steps import there as they do here; on a real
    cluster ship code with `runtime_env` instead. `check_resources` refuses a step no alive node
    can hold; turn it off on an autoscaling cluster, where nodes appear on demand.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        max_workers: int | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
        ship_sys_path: bool | None = None,
        check_resources: bool = True,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._ray = _import_ray()
        self.address = address
        self._max_workers = max_workers
        self._init_kwargs = dict(init_kwargs or {})
        self.ship_sys_path = address is None if ship_sys_path is None else ship_sys_path
        self.check_resources = check_resources
        self._lock = threading.Lock()
        self._connected = False
        self._owner = False  # counted in _owned_users
        self._remote: Any = None

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        global _owned_users
        with self._lock:
            if self._connected:
                return
            ray = self._ray
            with _OWNED_LOCK:
                if ray.is_initialized():
                    self._owner = _owned_users > 0  # share a Ray another RayExecutor started
                else:
                    self._init(ray)
                    self._owner = True
                if self._owner:
                    _owned_users += 1
            self._remote = ray.remote(max_retries=0, retry_exceptions=False)(_ray_task)
            self._connected = True

    def _init(self, ray: Any) -> None:
        kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if self.address is None:
            kwargs.update(include_dashboard=False, num_cpus=self._max_workers)
        else:
            kwargs["address"] = self.address
        kwargs.update(self._init_kwargs)
        try:
            _init_in_keeper_thread(ray, kwargs)
        except ImportError as exc:  # e.g. ray:// without the client's grpcio
            raise ConfigError(
                f"cannot connect to Ray at {self.address!r}: {exc}; for ray:// install "
                "'ray[client]'",
                field=SETTING,
                rule="installed",
            ) from None
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = (
                "start a local Ray" if self.address is None else f"reach Ray at {self.address!r}"
            )
            raise ConfigError(
                f"cannot {where}: {type(exc).__name__}: {exc}", field=SETTING, rule="reachable"
            ) from None

    @property
    def max_workers(self) -> int:
        if self._max_workers is None:
            self._connect()
            cpus = self._ray.cluster_resources().get("CPU", 1)
            self._max_workers = max(1, int(cpus))
        return self._max_workers

    @max_workers.setter
    def max_workers(self, value: int) -> None:
        if value < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = value

    # ------------------------------------------------------------------ running
    @staticmethod
    def check_importable(call: StepCall) -> None:
        """Refuse a step Ray workers cannot import, with a message saying what to do."""
        check_importable(call, "RayExecutor", "in Ray workers")

    def _check_feasible(self, call: StepCall, options: Mapping[str, Any]) -> None:
        wanted = _wanted(options)
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        if any(all(node.get(k, 0.0) >= v for k, v in wanted.items()) for node in nodes):
            return
        largest = {k: max((node.get(k, 0.0) for node in nodes), default=0.0) for k in wanted}
        asked = ", ".join(f"{k}={v:g}" for k, v in wanted.items())
        has = ", ".join(f"{k}={v:g}" for k, v in largest.items())
        raise ValidationError(
            f"step {call.step!r} asks Ray for {asked} but no node of the cluster has that much "
            f"(largest per resource: {has}); lower the step's resources, add nodes, or create "
            "RayExecutor(check_resources=False) on an autoscaling cluster",
            field=f"step.{call.step}.resources",
            rule="feasible",
        )

    def run(self, call: StepCall) -> StepResult:
        self.check_importable(call)
        resources = step_resources(call)
        options = task_options(call.step, resources)
        self._connect()
        if self.check_resources and resources:
            self._check_feasible(call, options)
        ray = self._ray
        sys_path = [p for p in sys.path if p] if self.ship_sys_path else []
        ref = self._remote.options(name=f"eventops-step-{call.step}", **options).remote(
            call.step, call.module, call.qualname, dict(call.kwargs), dict(call.context), sys_path
        )
        ready, _ = ray.wait([ref], timeout=call.timeout)
        if not ready:
            ray.cancel(ref, force=True)
            return _timed_out(call)
        try:
            result: StepResult = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # failed outside the step: e.g. serialising
            cause = exc.cause if exc.cause is not None else exc
            return StepResult(
                log=str(exc),
                error=f"the result of step {call.step!r} cannot be returned by Ray: "
                f"{type(cause).__name__}: {cause}",
            )
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError) as exc:
            return StepResult(
                log=str(exc),
                error=f"ProcessDied: the Ray worker running step {call.step!r} died before "
                f"returning ({type(exc).__name__})",
            )
        except ray.exceptions.RayError as exc:
            return StepResult(log=str(exc), error=f"{type(exc).__name__}: {exc}")
        return result

    def close(self) -> None:
        """Shut down (or, for a cluster, disconnect from) the Ray this executor started, once no
        other RayExecutor uses it; a Ray initialised by someone else is left alone."""
        global _owned_users
        with self._lock:
            if not self._connected:
                return
            self._connected = False
            with _OWNED_LOCK:
                if not self._owner:
                    return
                self._owner = False
                _owned_users -= 1
                if _owned_users == 0:
                    _shutdown(self._ray)


def executor_from_url(url: str | None) -> Executor:
    """The executor a `pipelines.executor` setting names.

    None or "local" -> `LocalExecutor()`; "inline" -> `InlineExecutor()`; "ray" -> a local Ray
    started on first use; "ray://host:port" -> a Ray client; "ray+auto" -> the cluster running
    on this machine (`ray.init(address="auto")`).
    """
    value = (url or "local").strip()
    if value == "local":
        return LocalExecutor()
    if value == "inline":
        return InlineExecutor()
    if value == "ray":
        return RayExecutor(None)
    if value == "ray+auto":
        return RayExecutor("auto")
    if value.startswith("ray://") and len(value) > len("ray://"):
        return RayExecutor(value)
    raise ConfigError(
        f"unknown executor {url!r}; use local, inline, ray, ray+auto or ray://host:port",
        field=SETTING,
        rule="executor",
    )
