"""A user's project: one Python module that declares what EventOps should run.

At module level a project declares

- ``datasets``: `DatasetSpec` instances or paths (TOML / JSON, relative to the project file) of
  dataset specs;
- pipelines: every `Pipeline` object (made by ``@pipeline``) *defined in that module* and bound to
  a module-level name. They are collected from the module's globals, not from the global
  `PIPELINES` registry, so two projects loaded in one process never mix;
- ``transforms``: a list of `Transform`;
- ``gates``: a list of `Gate` (promotion gates, at most one per model);
- ``deployments``: a list of `Deployment` (model servers, unique names);
- ``monitors``: a list of `Monitor` (drift windows and performance checks, unique names);
- ``alerts``: a list of `AlertRule` (events routed to channels, unique names);
- optionally ``project_name`` (default: the file's stem, or its folder's name when the file is
  ``project.py`` / ``__init__.py``).

The module is imported under its own name with its folder first on ``sys.path`` (a package:
its parent folder), so step processes started by `LocalExecutor` import the same steps by name.

`load_project` refuses a project that cannot work, naming the file, the line where it can, the
item and the reason: a missing file, a syntax or import error, a trigger the rules refuse (an
unknown event type, a bad cooldown...) with the pipeline it belongs to, a trigger that is not a
rule, duplicate names (pipelines, datasets, transforms, trigger rules of one pipeline), a cycle
of transforms. A transform whose source, or an ``on_new_data`` trigger whose dataset, is not
declared in the project is only a *warning* (`Project.warnings`): such a dataset may be declared
by another project or created on its first ingest, which the lake allows.

`Project.definition` is the canonical JSON description of a project and `digest_of` its digest;
`eventops.apply` plans and applies it, `eventops.worker` runs it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import sys
import tomllib
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError as PydanticValidationError

from eventops.config import Settings
from eventops.errors import EventOpsError, NotFound, ValidationError
from eventops.lake.spec import DatasetSpec
from eventops.lake.transforms import Transform, check_graph
from eventops.monitoring.alerts import AlertRule
from eventops.monitoring.monitors import Monitor
from eventops.pipelines.dsl import Pipeline
from eventops.pipelines.triggers import EventRule, ManualRule, Rule, ScheduleRule
from eventops.registry.gates import Gate
from eventops.serving.deployment import Deployment

# module name -> folder this loader put on sys.path for it
_PATHS: dict[str, str] = {}


class ProjectError(ValidationError):
    """A project that cannot be loaded: the message names the file, the line, the item."""

    def __init__(
        self,
        message: str,
        *,
        path: Path,
        line: int | None = None,
        field: str | None = "project",
        rule: str | None = None,
    ) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}", field=field, rule=rule)
        self.path = path
        self.line = line


@dataclass
class Project:
    """A loaded, validated project."""

    name: str
    path: Path
    module: types.ModuleType
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    transforms: list[Transform] = field(default_factory=list)
    gates: dict[str, Gate] = field(default_factory=dict)  # by model
    deployments: dict[str, Deployment] = field(default_factory=dict)  # by name
    monitors: dict[str, Monitor] = field(default_factory=dict)  # by name
    alerts: dict[str, AlertRule] = field(default_factory=dict)  # by name
    warnings: list[str] = field(default_factory=list)

    def rules(self) -> list[tuple[str, Rule]]:
        """(pipeline, rule) for every trigger of every pipeline, for the `TriggerEngine`."""
        return [(name, rule) for name, p in self.pipelines.items() for rule in p.triggers]

    def definition(self) -> dict[str, Any]:
        """The canonical JSON description that `apply` records and diffs."""
        return {
            "project": self.name,
            "datasets": {n: s.model_dump(mode="json") for n, s in sorted(self.datasets.items())},
            "pipelines": {n: _pipeline_definition(p) for n, p in sorted(self.pipelines.items())},
            "transforms": {t.name: _transform_definition(t) for t in self.transforms},
            "gates": {m: g.model_dump(mode="json") for m, g in sorted(self.gates.items())},
            "deployments": {
                n: d.model_dump(mode="json") for n, d in sorted(self.deployments.items())
            },
            "monitors": {n: m.definition() for n, m in sorted(self.monitors.items())},
            "alerts": {n: a.definition() for n, a in sorted(self.alerts.items())},
        }

    @property
    def digest(self) -> str:
        return digest_of(self.definition())


def digest_of(definition: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()


# ---------------------------------------------------------------------- loading
def resolve_path(path: str | Path | None, settings: Settings | None = None) -> Path:
    """`--project`, else the `project` setting; a clear error when neither is given."""
    chosen = path if path is not None else getattr(settings, "project", None)
    if not chosen:
        raise ValidationError(
            "no project given: pass --project PATH or set `project` in eventops.toml",
            field="project",
            rule="required",
        )
    return Path(chosen)


def load_project(path: str | Path) -> Project:
    """Import the project module at `path` (a .py file or a package folder) and validate it."""
    given = Path(path)
    file = given / "__init__.py" if given.is_dir() else given
    if not file.is_file():
        what = "a package folder without __init__.py" if given.is_dir() else "no such file"
        raise NotFound(f"{given}: {what}", field="project", rule="exists")
    if file.suffix != ".py":
        raise ProjectError("a project is a .py file or a package folder", path=given, rule="type")
    file = file.resolve()
    module_name, folder = (
        (file.parent.name, file.parent.parent)
        if file.name == "__init__.py"
        else (file.stem, file.parent)
    )
    source = file.read_text()
    try:
        tree = ast.parse(source, filename=str(file))
    except SyntaxError as exc:
        raise ProjectError(
            f"syntax error: {exc.msg}", path=given, line=exc.lineno, rule="syntax"
        ) from None
    _check_duplicate_definitions(tree, given)
    module = _import(module_name, folder, file, given, tree)
    return _collect(module, module_name, file, given, tree)


def _import(
    module_name: str, folder: Path, file: Path, given: Path, tree: ast.Module
) -> types.ModuleType:
    for name in [m for m in sys.modules if m == module_name or m.startswith(module_name + ".")]:
        del sys.modules[name]  # a fresh import: edits and other projects of the same name
    previous = _PATHS.pop(module_name, None)
    if previous is not None and previous in sys.path:
        sys.path.remove(previous)
    sys.path.insert(0, str(folder))
    _PATHS[module_name] = str(folder)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:  # in a module the project imports
        where = f"{exc.filename}:{exc.lineno}"
        raise ProjectError(
            f"syntax error in {where}: {exc.msg}", path=given, rule="syntax"
        ) from None
    except Exception as exc:
        line = _line_in(exc, file)
        pipeline = _pipeline_at(tree, line) if line else None
        if isinstance(exc, EventOpsError):
            prefix = f"pipeline {pipeline!r}: " if pipeline else ""
            fld = exc.field if not pipeline else f"{pipeline}.{exc.field or 'definition'}"
            raise ProjectError(
                prefix + exc.message, path=given, line=line, field=fld, rule=exc.rule
            ) from None
        raise ProjectError(
            f"cannot import the project: {type(exc).__name__}: {exc}",
            path=given,
            line=line,
            rule="importable",
        ) from None
    if Path(getattr(module, "__file__", "") or "").resolve() != file:
        raise ProjectError(
            f"imported {module_name!r} from {module.__file__}, not from this file; rename it",
            path=given,
            rule="importable",
        )
    return module


def _line_in(exc: BaseException, file: Path) -> int | None:
    """The last line of `file` in the exception's traceback."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename and Path(frame.filename).resolve() == file:
            line = frame.lineno
    return line


def _decorator_name(node: ast.expr) -> str | None:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    return None


def _pipeline_defs(tree: ast.Module) -> list[tuple[str, ast.FunctionDef, ast.expr]]:
    """(pipeline name, function, decorator) for each `@pipeline` function of the module."""
    found = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if _decorator_name(deco) != "pipeline":
                continue
            name = node.name
            if isinstance(deco, ast.Call):
                for kw in deco.keywords:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        name = str(kw.value.value)
            found.append((name, node, deco))
    return found


def _pipeline_at(tree: ast.Module, line: int) -> str | None:
    for name, fn, deco in _pipeline_defs(tree):
        if deco.lineno <= line <= (fn.end_lineno or fn.lineno):
            return name
    return None


def _check_duplicate_definitions(tree: ast.Module, given: Path) -> None:
    seen: dict[str, int] = {}
    for name, _fn, deco in _pipeline_defs(tree):
        if name in seen:
            raise ProjectError(
                f"pipeline {name!r} is defined twice (lines {seen[name]} and {deco.lineno})",
                path=given,
                line=deco.lineno,
                field=f"pipelines.{name}",
                rule="unique-name",
            )
        seen[name] = deco.lineno


def _as_list(module: types.ModuleType, key: str, given: Path) -> list[Any]:
    value = getattr(module, key, None)
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    raise ProjectError(
        f"`{key}` must be a list, not {type(value).__name__}", path=given, field=key, rule="type"
    )


def _collect(
    module: types.ModuleType, module_name: str, file: Path, given: Path, tree: ast.Module
) -> Project:
    name = getattr(module, "project_name", None) or (
        file.parent.name if file.stem in ("project", "__init__") else module_name
    )
    if not isinstance(name, str):
        raise ProjectError("`project_name` must be a string", path=given, rule="type")
    project = Project(name=name, path=given, module=module)
    lines = {n: deco.lineno for n, _, deco in _pipeline_defs(tree)}

    for index, item in enumerate(_as_list(module, "datasets", given)):
        spec = _dataset(item, file.parent, given, index)
        if spec.name in project.datasets:
            raise ProjectError(
                f"dataset {spec.name!r} is declared twice",
                path=given,
                field=f"datasets[{index}]",
                rule="unique-name",
            )
        project.datasets[spec.name] = spec

    pipes: dict[str, Pipeline] = {}
    for value in module.__dict__.values():
        if isinstance(value, Pipeline) and value.module == module.__name__:
            other = pipes.get(value.name)
            if other is not None and other is not value:
                raise ProjectError(
                    f"two pipelines are named {value.name!r}",
                    path=given,
                    line=lines.get(value.name),
                    field=f"pipelines.{value.name}",
                    rule="unique-name",
                )
            pipes[value.name] = value
    for pipe_name in sorted(pipes, key=lambda n: lines.get(n, 0)):
        _check_triggers(pipes[pipe_name], given, lines.get(pipe_name))
        project.pipelines[pipe_name] = pipes[pipe_name]

    for index, item in enumerate(_as_list(module, "transforms", given)):
        if not isinstance(item, Transform):
            raise ProjectError(
                f"transforms[{index}] is a {type(item).__name__}, not a Transform",
                path=given,
                field=f"transforms[{index}]",
                rule="type",
            )
        project.transforms.append(item)
    try:
        check_graph(project.transforms)
    except ValidationError as exc:
        raise ProjectError(exc.message, path=given, field=exc.field, rule=exc.rule) from None
    produced = {t.target for t in project.transforms}
    for t in project.transforms:
        if t.source not in project.datasets and t.source not in produced:
            project.warnings.append(
                f"transform {t.name!r} reads dataset {t.source!r}, which the project does not "
                f"declare (declared: {', '.join(sorted(project.datasets)) or 'none'})"
            )
    project.gates = _named(module, "gates", Gate, "model", given)
    project.deployments = _named(module, "deployments", Deployment, "name", given)
    project.monitors = _named(module, "monitors", Monitor, "name", given)
    project.alerts = _named(module, "alerts", AlertRule, "name", given)
    _finish_warnings(project)
    return project


def _named(
    module: types.ModuleType, key: str, kind: type[Any], by: str, given: Path
) -> dict[str, Any]:
    """`key`'s items, each a `kind`, by their `by` attribute (which must be unique)."""
    found: dict[str, Any] = {}
    for index, item in enumerate(_as_list(module, key, given)):
        if not isinstance(item, kind):
            raise ProjectError(
                f"{key}[{index}] is a {type(item).__name__}, not a {kind.__name__}",
                path=given,
                field=f"{key}[{index}]",
                rule="type",
            )
        name = getattr(item, by)
        if name in found:
            raise ProjectError(
                f"{key}: {by} {name!r} appears twice",
                path=given,
                field=f"{key}[{index}].{by}",
                rule="unique",
            )
        found[name] = item
    return found


def _dataset(item: Any, base: Path, given: Path, index: int) -> DatasetSpec:
    where = f"datasets[{index}]"
    if isinstance(item, DatasetSpec):
        return item
    if isinstance(item, Mapping):
        data: Any = dict(item)
        origin = where
    elif isinstance(item, str | Path):
        spec_file = Path(item) if Path(item).is_absolute() else base / item
        origin = str(spec_file)
        if not spec_file.is_file():
            raise ProjectError(
                f"{where}: spec file {spec_file} does not exist",
                path=given,
                field=where,
                rule="exists",
            )
        text = spec_file.read_text()
        try:
            data = json.loads(text) if spec_file.suffix == ".json" else tomllib.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ProjectError(
                f"{where}: {spec_file} is not valid: {exc}", path=given, field=where, rule="format"
            ) from None
    else:
        raise ProjectError(
            f"{where} is a {type(item).__name__}; give a DatasetSpec or a path to a spec file",
            path=given,
            field=where,
            rule="type",
        )
    try:
        return DatasetSpec.model_validate(data)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ProjectError(
            f"{where} ({origin}): {loc}: {err['msg']}",
            path=given,
            field=f"{where}.{loc}",
            rule=err["type"],
        ) from None


def _check_triggers(pipe: Pipeline, given: Path, line: int | None) -> None:
    names: set[str] = set()
    for index, rule in enumerate(pipe.triggers):
        if not isinstance(rule, EventRule | ScheduleRule | ManualRule):
            raise ProjectError(
                f"pipeline {pipe.name!r}: trigger #{index + 1} is a {type(rule).__name__}, not "
                "a rule (use on, on_new_data, schedule, manual... from eventops.pipelines.triggers)",
                path=given,
                line=line,
                field=f"{pipe.name}.triggers[{index}]",
                rule="type",
            )
        if rule.name in names:
            raise ProjectError(
                f"pipeline {pipe.name!r} has two trigger rules named {rule.name!r}; "
                "give one a name=",
                path=given,
                line=line,
                field=f"{pipe.name}.triggers[{index}]",
                rule="unique-name",
            )
        names.add(rule.name)


def _finish_warnings(project: Project) -> None:
    for pipe in project.pipelines.values():
        for rule in pipe.triggers:
            dataset = rule.filters.get("dataset") if isinstance(rule, EventRule) else None
            produced = {t.target for t in project.transforms}
            if (
                isinstance(rule, EventRule)
                and rule.pattern.startswith("dataset.")
                and isinstance(dataset, str)
                and dataset not in project.datasets
                and dataset not in produced
            ):
                project.warnings.append(
                    f"pipeline {pipe.name!r}: trigger {rule.name!r} waits for dataset "
                    f"{dataset!r}, which the project does not declare"
                )


# ---------------------------------------------------------------------- definition
def _json(value: Any) -> Any:
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return json.loads(text)


def _code_digest(fn: Callable[..., Any]) -> str:
    try:
        code = inspect.getsource(fn)
    except (OSError, TypeError):
        code = fn.__code__.co_code.hex()
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def _pipeline_definition(pipe: Pipeline) -> dict[str, Any]:
    steps = []
    for node in pipe.graph:
        options = node.step.options
        steps.append(
            {
                "name": node.name,
                "function": f"{node.step.module}:{node.step.qualname}",
                "code": _code_digest(node.step.fn),
                "upstreams": node.upstreams,
                "params": node.params,
                "constants": {
                    arg: _json(b.value) for arg, b in node.inputs.items() if b.kind == "const"
                },
                "options": {
                    "retries": options.retries,
                    "backoff": options.backoff,
                    "timeout": options.timeout,
                    "cache": options.cache,
                    "resources": _json(dict(options.resources or {})),
                },
            }
        )
    return {
        "function": f"{pipe.module}:{pipe.fn.__qualname__}",
        "params": {p: _json(pipe.defaults.get(p)) for p in pipe.param_names},
        "steps": steps,
        "triggers": [_json(rule.to_dict()) for rule in pipe.triggers],
    }


def _transform_definition(t: Transform) -> dict[str, Any]:
    function = t.function
    if callable(function):
        function = f"{function.__module__}:{function.__qualname__}"
    return {
        "source": t.source,
        "target": t.target,
        "sql": t.sql,
        "function": function,
        "description": t.description,
    }


__all__ = [
    "Project",
    "ProjectError",
    "digest_of",
    "load_project",
    "resolve_path",
]
