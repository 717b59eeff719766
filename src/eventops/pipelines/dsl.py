"""The pipeline DSL: `@step` and `@pipeline` over plain Python functions.

A pipeline function is traced once, when it is defined: its parameters are replaced by `ParamRef`
placeholders and every step it calls returns a `StepOutput` placeholder instead of running. The
placeholders passed from one step to another are the graph's edges, so steps that do not depend
on each other are parallel branches and a cycle cannot be written. Only the runner runs steps.

Called outside a pipeline definition a step is an ordinary function call (handy in tests).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from eventops.errors import NotFound, ValidationError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

OUTPUT = "output"  # the name of a step's single output


@dataclass(frozen=True)
class StepOptions:
    retries: int = 0
    backoff: float = 1.0  # seconds before the 1st retry, doubled for each further one
    timeout: float | None = None  # seconds per attempt
    cache: bool = True
    resources: Mapping[str, Any] | None = None  # for executors that place work (Ray); opaque here


class Step(Generic[P, R]):
    """A function the runner executes as one unit: retried, cached, its output an artifact."""

    def __init__(self, fn: Callable[P, R], options: StepOptions) -> None:
        self.fn = fn
        self.options = options
        self.name: str = fn.__name__
        self.module: str = fn.__module__
        self.qualname: str = fn.__qualname__
        self.signature = inspect.signature(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<step {self.module}.{self.qualname}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        tracer = _TRACER.get()
        if tracer is None:
            return self.fn(*args, **kwargs)
        # Inside a pipeline definition: record the call, hand back a placeholder.
        return cast(R, tracer.add(self, args, kwargs))

    @property
    def importable(self) -> bool:
        """True when other processes can import it by module and qualified name."""
        return "<locals>" not in self.qualname


@dataclass(frozen=True)
class StepOutput:
    """What calling a step inside a pipeline definition returns: a reference to its output."""

    step: str
    annotation: Any = None

    def __repr__(self) -> str:
        return f"<output of step {self.step!r}>"


@dataclass(frozen=True)
class ParamRef:
    """A pipeline parameter while the pipeline is traced; its value is known at run time."""

    name: str

    def __repr__(self) -> str:
        return f"<pipeline param {self.name!r}>"


@dataclass(frozen=True)
class Binding:
    """Where one argument of a step comes from: an upstream step, a pipeline param, a constant."""

    kind: str  # "step" | "param" | "const"
    source: str = ""  # upstream step name or param name
    value: Any = None  # the constant


@dataclass
class Node:
    """One step call in a pipeline graph."""

    name: str
    step: Step[..., Any]
    inputs: dict[str, Binding] = field(default_factory=dict)

    @property
    def upstreams(self) -> list[str]:
        return sorted({b.source for b in self.inputs.values() if b.kind == "step"})

    @property
    def params(self) -> dict[str, str]:
        """Step argument -> pipeline parameter it receives."""
        return {arg: b.source for arg, b in self.inputs.items() if b.kind == "param"}


class _Tracer:
    def __init__(self, pipeline: str, params: Sequence[str]) -> None:
        self.pipeline = pipeline
        self.params = set(params)
        self.nodes: dict[str, Node] = {}

    def add(
        self, step: Step[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> StepOutput:
        name = step.name
        n = 2
        while name in self.nodes:  # the same step called twice gets a numbered name
            name = f"{step.name}_{n}"
            n += 1
        try:
            bound = step.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ValidationError(
                f"pipeline {self.pipeline!r}, step {name!r}: {exc}",
                field=f"{self.pipeline}.{name}",
                rule="signature",
            ) from None
        bound.apply_defaults()
        hints = _hints(step.fn)
        node = Node(name, step)
        for arg, value in bound.arguments.items():
            node.inputs[arg] = self._binding(name, arg, value, hints.get(arg))
        self.nodes[name] = node
        return StepOutput(name, hints.get("return"))

    def _binding(self, step: str, arg: str, value: Any, expected: Any) -> Binding:
        where = f"pipeline {self.pipeline!r}, step {step!r}, parameter {arg!r}"
        if isinstance(value, StepOutput):
            if not _compatible(value.annotation, expected):
                raise ValidationError(
                    f"{where}: expects {_type_name(expected)} but step {value.step!r} "
                    f"returns {_type_name(value.annotation)}",
                    field=f"{self.pipeline}.{step}.{arg}",
                    rule="type",
                )
            return Binding("step", value.step)
        if isinstance(value, ParamRef):
            if value.name not in self.params:
                raise ValidationError(
                    f"{where}: unknown pipeline parameter {value.name!r}",
                    field=f"{self.pipeline}.{step}.{arg}",
                    rule="unknown-param",
                )
            return Binding("param", value.name)
        if isinstance(value, list | tuple | dict) and _holds_placeholder(value):
            raise ValidationError(
                f"{where}: step outputs and params must be passed directly, not inside a "
                "list, tuple or dict",
                field=f"{self.pipeline}.{step}.{arg}",
                rule="placeholder",
            )
        return Binding("const", value=value)


_TRACER: contextvars.ContextVar[_Tracer | None] = contextvars.ContextVar("tracer", default=None)


def _holds_placeholder(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return any(isinstance(v, StepOutput | ParamRef) for v in items)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: no type checks, not an error
        return {}


def _concrete(annotation: Any) -> list[type] | None:
    """The classes an annotation allows, or None when it is too loose to check."""
    if annotation is None or annotation is Any or isinstance(annotation, TypeVar):
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members = [_concrete(a) for a in typing.get_args(annotation)]
        if any(m is None for m in members):
            return None
        return [c for m in members if m for c in m]
    if origin is typing.Annotated:
        return _concrete(typing.get_args(annotation)[0])
    if origin is not None:
        return [origin] if isinstance(origin, type) else None
    if annotation is type(None):
        return [type(None)]
    return [annotation] if isinstance(annotation, type) else None


def _compatible(produced: Any, expected: Any) -> bool:
    """False only when the two annotations clearly cannot match (no subclass relation)."""
    out, want = _concrete(produced), _concrete(expected)
    if out is None or want is None:
        return True
    if any(getattr(w, "_is_protocol", False) for w in want):
        return True
    return all(any(issubclass(o, w) or issubclass(w, o) for w in want) for o in out)


def _type_name(annotation: Any) -> str:
    if annotation is None:
        return "an unannotated value"
    return getattr(annotation, "__qualname__", None) or repr(annotation)


class Pipeline:
    """A traced pipeline: its steps in topological order, parameters and triggers."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        triggers: Sequence[Any] = (),
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.triggers = tuple(triggers)
        self.module: str = fn.__module__
        self.__doc__ = fn.__doc__
        signature = inspect.signature(fn)
        self.defaults: dict[str, Any] = {
            p.name: p.default
            for p in signature.parameters.values()
            if p.default is not inspect.Parameter.empty
        }
        self.param_names = list(signature.parameters)
        for key in params or {}:
            if key not in self.param_names:
                raise ValidationError(
                    f"pipeline {self.name!r}: params names {key!r}, which the pipeline function "
                    f"does not take (it takes {', '.join(self.param_names) or 'nothing'})",
                    field=f"{self.name}.params.{key}",
                    rule="unknown-param",
                )
        self.defaults.update(params or {})
        self.nodes = self._trace()

    def _trace(self) -> dict[str, Node]:
        tracer = _Tracer(self.name, self.param_names)
        token = _TRACER.set(tracer)
        try:
            self.fn(**{p: ParamRef(p) for p in self.param_names})
        finally:
            _TRACER.reset(token)
        if not tracer.nodes:
            raise ValidationError(
                f"pipeline {self.name!r} calls no step", field=self.name, rule="steps"
            )
        return tracer.nodes

    def __repr__(self) -> str:
        return f"<pipeline {self.name!r}: {' -> '.join(self.nodes)}>"

    @property
    def graph(self) -> list[Node]:
        """Steps in topological order (the order of the definition); each lists its upstreams."""
        return list(self.nodes.values())

    def resolve_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """The defaults overlaid with `params`; refuses unknown and missing names."""
        given = dict(params or {})
        unknown = sorted(set(given) - set(self.param_names))
        if unknown:
            raise ValidationError(
                f"pipeline {self.name!r} has no parameter {unknown[0]!r} "
                f"(it takes {', '.join(self.param_names) or 'none'})",
                field=f"params.{unknown[0]}",
                rule="unknown-param",
            )
        resolved = {**self.defaults, **given}
        missing = [p for p in self.param_names if p not in resolved]
        if missing:
            raise ValidationError(
                f"pipeline {self.name!r} needs a value for parameter {missing[0]!r}",
                field=f"params.{missing[0]}",
                rule="required",
            )
        return resolved


PIPELINES: dict[str, Pipeline] = {}


def get_pipeline(name: str) -> Pipeline:
    try:
        return PIPELINES[name]
    except KeyError:
        known = ", ".join(sorted(PIPELINES)) or "none"
        raise NotFound(
            f"no pipeline named {name!r} is loaded (loaded: {known}); import the module that "
            "defines it",
            field="pipeline",
            rule="exists",
        ) from None


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...


@overload
def step(
    *,
    retries: int = 0,
    backoff: float = 1.0,
    timeout: float | None = None,
    cache: bool = True,
    resources: Mapping[str, Any] | None = None,
) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(
    fn: Callable[P, R] | None = None,
    /,
    *,
    retries: int = 0,
    backoff: float = 1.0,
    timeout: float | None = None,
    cache: bool = True,
    resources: Mapping[str, Any] | None = None,
) -> Step[P, R] | Callable[[Callable[P, R]], Step[P, R]]:
    """Declare a step: `@step` or `@step(retries=2, backoff=1.0, timeout=60, cache=True)`."""
    if retries < 0 or backoff < 0 or (timeout is not None and timeout <= 0):
        raise ValidationError(
            "retries and backoff must be >= 0 and timeout > 0", field="step", rule="options"
        )
    options = StepOptions(retries, backoff, timeout, cache, resources)

    def wrap(f: Callable[P, R]) -> Step[P, R]:
        return Step(f, options)

    return wrap(fn) if fn is not None else wrap


@overload
def pipeline(fn: Callable[..., Any], /) -> Pipeline: ...


@overload
def pipeline(
    *,
    name: str | None = None,
    triggers: Sequence[Any] = (),
    params: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Pipeline]: ...


def pipeline(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    triggers: Sequence[Any] = (),
    params: Mapping[str, Any] | None = None,
) -> Pipeline | Callable[[Callable[..., Any]], Pipeline]:
    """Declare a pipeline, trace it and register it in `PIPELINES` under its name."""

    def wrap(f: Callable[..., Any]) -> Pipeline:
        built = Pipeline(f, name=name, triggers=triggers, params=params)
        previous = PIPELINES.get(built.name)
        if previous is not None and (previous.module, previous.fn.__qualname__) != (
            built.module,
            f.__qualname__,
        ):
            log.warning("pipeline %r redefined by %s", built.name, built.module)
        PIPELINES[built.name] = built
        return built

    return wrap(fn) if fn is not None else wrap
