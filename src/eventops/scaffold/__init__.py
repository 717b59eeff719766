"""`eventops init`: a new project's repository, ready for review, CI and delivery.

The templates are package data under ``templates/``. Each file there ends in ``.tmpl`` and a
path part spelled ``dot-x`` becomes ``.x``: the templates are then neither Python modules that
the platform's own linters and tests would pick up, nor dotfiles (``.gitignore``,
``.github/``, ``.pre-commit-config.yaml``) that git or the wheel builder would interpret in the
platform's repository. Placeholders are ``@@WORD@@`` tokens replaced verbatim, so the
templates can hold GitHub expressions (``${{ ... }}``), shell and Jinja-looking text untouched;
a token left over after rendering is a bug in a template and raises.

`render_project` never overwrites a file silently: it refuses a target folder that is not
empty unless ``force``, and then reports every file it replaced (the CLI lists them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

from eventops import __version__
from eventops.errors import ValidationError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
NAME_RULE = (
    "a lowercase letter, then up to 39 lowercase letters, digits or underscores "
    "(it names the dataset, the model, the pipeline function and Kubernetes labels)"
)
DEFAULT_PLATFORM = "../platform/deploy/k8s/overlays/aws"
TEMPLATE_SUFFIX = ".tmpl"
TOKEN = re.compile(r"@@[A-Z_]+@@")
# A kustomize resource: a relative path or a URL; nothing that would break the YAML line.
PLATFORM_PATTERN = re.compile(r"^[A-Za-z0-9._~:/?#@!$&()*+,;=%-]+$")


@dataclass
class Rendered:
    """What `render_project` wrote: the folder, the project name and each file written."""

    root: Path
    name: str
    files: list[Path] = field(default_factory=list)
    replaced: list[Path] = field(default_factory=list)


def name_from_path(path: Path) -> str:
    """The default project name: the folder's name, lowercased, `-`, `.` and spaces as `_`."""
    return re.sub(r"[-. ]+", "_", path.resolve().name.strip().lower())


def check_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValidationError(
            f"{name!r} is not a valid project name: {NAME_RULE}", field=field, rule="name-pattern"
        )
    return name


def check_platform(platform: str) -> str:
    if not platform or platform.startswith("/") or not PLATFORM_PATTERN.match(platform):
        raise ValidationError(
            f"{platform!r} is not a kustomize resource: a relative path (from deploy/) or a "
            "URL, without spaces or quotes (kustomize refuses absolute paths)",
            field="platform",
            rule="kustomize-resource",
        )
    return platform


def templates() -> Traversable:
    return resources.files(__name__).joinpath("templates")


def template_files() -> Iterator[tuple[PurePosixPath, Traversable]]:
    """(target path relative to the project, template) for every template file."""

    def walk(
        folder: Traversable, prefix: PurePosixPath
    ) -> Iterator[tuple[PurePosixPath, Traversable]]:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name == "__pycache__":
                continue
            name = "." + entry.name[4:] if entry.name.startswith("dot-") else entry.name
            if entry.is_dir():
                yield from walk(entry, prefix / name)
            elif name.endswith(TEMPLATE_SUFFIX):
                yield prefix / name[: -len(TEMPLATE_SUFFIX)], entry

    yield from walk(templates(), PurePosixPath())


def substitutions(name: str, platform: str = DEFAULT_PLATFORM) -> dict[str, str]:
    dns = name.replace("_", "-")
    return {
        "@@NAME@@": name,
        "@@NAME_DNS@@": dns,
        "@@NAMESPACE@@": f"eventops-{dns}",
        "@@VERSION@@": __version__,
        "@@PLATFORM@@": platform,
        "@@GENERATED_AT@@": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def render_text(text: str, values: dict[str, str], source: str = "template") -> str:
    for token, value in values.items():
        text = text.replace(token, value)
    left = TOKEN.search(text)
    if left:
        raise ValueError(f"{source}: unknown placeholder {left.group()}")
    return text


def render_project(
    path: str | Path,
    name: str | None = None,
    force: bool = False,
    *,
    platform: str = DEFAULT_PLATFORM,
) -> Rendered:
    """Write a new project into `path` (created if missing).

    Refuses, with the field and the rule: an invalid `name` (default: from the folder's name),
    a `path` that is a file, a folder that is not empty unless `force`. With `force`, files
    that would come out identical are left alone and files that differ are replaced and listed
    in `Rendered.replaced`, so the caller can say so; a folder where a file goes is refused.
    Nothing is written until every check has passed.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ValidationError(f"{root} is a file, not a folder", field="path", rule="folder")
    chosen = name if name is not None else name_from_path(root)
    check_name(chosen, field="--name" if name is not None else "--name (default: the folder's)")
    check_platform(platform)
    if root.is_dir() and any(root.iterdir()) and not force:
        raise ValidationError(
            f"{root} is not empty: use a new or empty folder, or --force to write the scaffold "
            "beside what is there (files that differ are replaced)",
            field="path",
            rule="empty-folder",
        )
    values = substitutions(chosen, platform)
    planned = [
        (root / relative, render_text(t.read_text(encoding="utf-8"), values, str(relative)))
        for relative, t in template_files()
    ]
    blocked = [target for target, _ in planned if target.exists() and not target.is_file()]
    if blocked:
        raise ValidationError(
            f"{blocked[0]} exists and is not a file; the scaffold writes a file there",
            field="path",
            rule="file-expected",
        )
    rendered = Rendered(root=root, name=chosen)
    for target, text in planned:
        if target.is_file():
            if target.read_text(encoding="utf-8", errors="replace") == text:
                continue
            rendered.replaced.append(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        rendered.files.append(target)
    return rendered


__all__ = [
    "DEFAULT_PLATFORM",
    "NAME_RULE",
    "Rendered",
    "check_name",
    "check_platform",
    "name_from_path",
    "render_project",
    "template_files",
]
