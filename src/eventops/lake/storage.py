"""Where lake files live: any fsspec URL (a folder, `file://`, `s3://bucket/prefix`, ...).

Writes are atomic from a reader's point of view in two steps: the file is complete before it
has its final name (a temporary name and a rename on filesystems that rename atomically; a single
PUT on object stores, where an object appears whole or not at all), and a batch is only *read*
through its manifest row in the catalog, which commits after the file exists. A crash between
the two leaves an orphan file that nothing reads; `orphans()` lists them for `vacuum`.
"""

from __future__ import annotations

import io
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from eventops.errors import BackendUnavailable, ConfigError

PARQUET_COMPRESSION = "zstd"


class LakeStorage:
    def __init__(self, url: str, **storage_options: Any) -> None:
        if not url:
            raise ConfigError("the lake needs a URL or a folder", field="lake.url", rule="required")
        try:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ValueError, ImportError) as exc:
            raise ConfigError(
                f"cannot open lake {url!r}: {exc}", field="lake.url", rule="fsspec"
            ) from None
        self.url = url
        self.fs: fsspec.AbstractFileSystem = fs
        self.root = root.rstrip("/")
        self.local = isinstance(fs, LocalFileSystem)
        self.protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if self.local:
            fs.makedirs(self.root, exist_ok=True)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri(self, path: str) -> str:
        """A full URL for a path, as it appears in events and the catalog (file:///..., s3://...)."""
        return f"file://{path}" if self.local else f"{self.protocol}://{path}"

    def path_of(self, uri: str) -> str:
        """Reverse of `uri`: the filesystem path of a catalogued URI."""
        for prefix in (f"{self.protocol}://", "file://"):
            if uri.startswith(prefix):
                return uri[len(prefix) :]
        return uri

    # ------------------------------------------------------------------ writing
    def write_bytes(self, path: str, data: bytes) -> None:
        try:
            if self.local:
                self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
                with self.fs.open(tmp, "wb") as handle:
                    handle.write(data)
                self.fs.mv(tmp, path)
            else:
                self.fs.pipe_file(path, data)
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot write {self.uri(path)}: {exc}", field="lake.url"
            ) from exc

    def write_parquet(self, path: str, table: pa.Table) -> int:
        """Write `table` as one zstd Parquet file, streamed (no copy in memory); returns its size.

        Local: into a temporary name, then renamed. Object stores: one streamed upload, which
        becomes visible only when complete."""
        target = f"{path}.tmp-{uuid.uuid4().hex[:8]}" if self.local else path
        try:
            if self.local:
                self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            with self.fs.open(target, "wb") as handle:
                pq.write_table(table, handle, compression=PARQUET_COMPRESSION)
            if self.local:
                self.fs.mv(target, path)
            return int(self.fs.size(path))
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot write {self.uri(path)}: {exc}", field="lake.url"
            ) from exc

    # ------------------------------------------------------------------ reading
    def read_parquet(self, path: str) -> pa.Table:
        with self.fs.open(path, "rb") as handle:
            return pq.read_table(io.BytesIO(handle.read()))

    def read_bytes(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(path)
        return data

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def files(self, under: str) -> Iterator[str]:
        base = self.path(under)
        if not self.fs.exists(base):
            return
        for found in self.fs.find(base):
            yield str(found)

    def delete(self, path: str) -> None:
        self.fs.rm_file(path)
