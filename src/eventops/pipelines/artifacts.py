"""Step outputs as files in the lake, written by a materializer chosen from the value's type.

| value                                   | kind     | file      |
|-----------------------------------------|----------|-----------|
| `pyarrow.Table`                         | arrow    | .parquet  |
| `pandas.DataFrame` (if pandas installed)| pandas   | .parquet  |
| `pathlib.Path` to a file                | file     | copied    |
| JSON that round-trips unchanged         | json     | .json     |
| anything else                           | joblib   | .joblib   |

An artifact lives at `<root>/artifacts/<pipeline>/<run_id>/<step>/<name>.<ext>` and is described
by a reference `{"uri", "kind", "sha256", "name"}` that the run's step row and the step cache keep.
`load` reads only from this storage's own artifacts folder and checks the hash: a reference is
data from the database, and unpickling (joblib) a file from anywhere else would run its code.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from eventops.errors import NotFound, ValidationError
from eventops.lake.storage import PARQUET_COMPRESSION, LakeStorage

PREFIX = "artifacts"
KINDS = ("arrow", "pandas", "file", "json", "joblib")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_dataframe(value: Any) -> bool:
    pandas = sys.modules.get("pandas")  # never import pandas just to find out
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _json_bytes(value: Any) -> bytes | None:
    """The JSON text of `value` if it reads back equal (tuples, sets, NaN do not)."""
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    if json.loads(text) != value:
        return None
    return text.encode()


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue()


def _joblib_bytes(value: Any) -> bytes:
    import joblib  # type: ignore[import-untyped]

    sink = io.BytesIO()
    joblib.dump(value, sink)
    return sink.getvalue()


def serialize(value: Any) -> tuple[str, str, bytes]:
    """(kind, extension, bytes) for `value`."""
    if isinstance(value, pa.Table):
        return "arrow", "parquet", _parquet_bytes(value)
    if _is_dataframe(value):
        return "pandas", "parquet", _parquet_bytes(pa.Table.from_pandas(value))
    if isinstance(value, Path):
        if not value.is_file():
            raise ValidationError(
                f"a Path output must name an existing file, not {str(value)!r}",
                field="artifact",
                rule="file",
            )
        return "file", value.suffix.lstrip(".") or "bin", value.read_bytes()
    data = _json_bytes(value)
    if data is not None:
        return "json", "json", data
    return "joblib", "joblib", _joblib_bytes(value)


class ArtifactStore:
    """Saves and loads step outputs under the lake's `artifacts/` folder."""

    def __init__(self, storage: LakeStorage) -> None:
        self.storage = storage
        self.base = storage.path(PREFIX)

    def location(self, pipeline: str, run_id: str, step: str, name: str, ext: str) -> str:
        parts = (pipeline, run_id, step, name)
        for part in parts:
            if not part or "/" in part or part in (".", ".."):
                raise ValidationError(
                    f"{part!r} cannot be part of an artifact path", field="artifact", rule="name"
                )
        return self.storage.path(PREFIX, pipeline, run_id, step, f"{name}.{ext}")

    def save(
        self, value: Any, *, pipeline: str, run_id: str, step: str, name: str = "output"
    ) -> dict[str, str]:
        """Write `value`; returns its reference (uri, kind, sha256, name)."""
        kind, ext, data = serialize(value)
        path = self.location(pipeline, run_id, step, name, ext)
        self.storage.write_bytes(path, data)
        return {"uri": self.storage.uri(path), "kind": kind, "sha256": _sha256(data), "name": name}

    def _checked_path(self, ref: Mapping[str, Any]) -> str:
        uri = str(ref.get("uri", ""))
        prefixes = [f"{self.storage.protocol}://"] + (["file://"] if self.storage.local else [])
        if not uri.startswith(tuple(prefixes)):
            raise ValidationError(
                f"artifact {uri!r} is not in this platform's storage ({self.storage.url})",
                field="artifact.uri",
                rule="inside-root",
            )
        path = posixpath.normpath(self.storage.path_of(uri))
        if not path.startswith(self.base.rstrip("/") + "/"):
            raise ValidationError(
                f"artifact {uri!r} is outside {self.storage.uri(self.base)}",
                field="artifact.uri",
                rule="inside-root",
            )
        return path

    def exists(self, ref: Mapping[str, Any]) -> bool:
        try:
            return self.storage.exists(self._checked_path(ref))
        except ValidationError:
            return False

    def load(self, ref: Mapping[str, Any]) -> Any:
        """The value behind a reference made by `save` (a `file` artifact comes back as a Path)."""
        path = self._checked_path(ref)
        kind = ref.get("kind")
        if kind not in KINDS:
            raise ValidationError(f"unknown artifact kind {kind!r}", field="artifact.kind")
        try:
            data = self.storage.read_bytes(path)
        except FileNotFoundError:
            raise NotFound(
                f"artifact {ref.get('uri')} is gone", field="artifact.uri", rule="exists"
            ) from None
        if ref.get("sha256") and _sha256(data) != ref["sha256"]:
            raise ValidationError(
                f"artifact {ref.get('uri')} does not match its sha256 (changed after it was "
                "written)",
                field="artifact.sha256",
                rule="integrity",
            )
        if kind in ("arrow", "pandas"):
            table = pq.read_table(io.BytesIO(data))
            return table.to_pandas() if kind == "pandas" else table
        if kind == "json":
            return json.loads(data)
        if kind == "file":
            if self.storage.local:
                return Path(path)
            target = Path(tempfile.mkdtemp(prefix="eventops-artifact-")) / posixpath.basename(path)
            target.write_bytes(data)
            return target
        import joblib

        return joblib.load(io.BytesIO(data))
