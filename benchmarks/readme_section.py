"""Each benchmark owns one marked section of benchmarks/README.md and rewrites only that."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

README = Path(__file__).parent / "README.md"


def machine_stamp(extra: str = "") -> str:
    """`_Run on x86_64, 2 cores, Python 3.11.7[, extra], 2026-11-23._`"""
    parts = [
        f"Run on {platform.machine()}",
        f"{os.cpu_count()} cores",
        f"Python {platform.python_version()}",
    ]
    if extra:
        parts.append(extra)
    parts.append(time.strftime("%Y-%m-%d"))
    return "_" + ", ".join(parts) + "._"


def replace_section(marker: str, heading: str, body: str, path: Path = README) -> None:
    """Put `body` between `<!-- marker:begin -->` and `<!-- marker:end -->`; if the markers are
    missing, append them under `## heading`. Nothing else in the file changes."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    content = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{begin}\n{body}\n{end}"
    if begin in content and end in content.split(begin, 1)[1]:
        head, _, rest = content.partition(begin)
        _, _, tail = rest.partition(end)
        path.write_text(f"{head}{section}{tail}")
    else:
        path.write_text(f"{content.rstrip()}\n\n## {heading}\n\n{section}\n")
