"""What every request handler shares: settings, the store, and lazily opened capabilities.

The lake, the registry and the pipeline runner are opened on first use, so an API that only
serves events never imports MLflow, and a missing tracking server fails only the model routes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from eventops.config import Settings
from eventops.lake.catalog import Lake
from eventops.lake.storage import LakeStorage
from eventops.store import Store

if TYPE_CHECKING:
    from eventops.api.oidc import OidcVerifier
    from eventops.pipelines.runner import Runner
    from eventops.registry import Registry


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    auth: bool = True
    project: Path | None = None
    stream_poll: float = 0.2  # seconds one SSE poll of the bus waits for new events
    oidc_refresh_cooldown: float = 30.0  # seconds between key-set refetches for unknown keys
    streams_ready: int = 0  # SSE streams whose bus position is fixed (tests wait on it)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _lake: Lake | None = None
    _registry: Registry | None = None
    _runner: Runner | None = None
    _project_loaded: bool = False
    _oidc: OidcVerifier | None = None

    def oidc(self) -> OidcVerifier | None:
        """The OIDC verifier when an issuer is configured (built once: it caches the keys)."""
        if not self.settings.auth.oidc_issuer:
            return None
        from eventops.api.oidc import OidcVerifier

        with self._lock:
            if self._oidc is None:
                self._oidc = OidcVerifier(
                    self.settings.auth, refresh_cooldown=self.oidc_refresh_cooldown
                )
            return self._oidc

    def lake(self) -> Lake:
        with self._lock:
            if self._lake is None:
                self._lake = Lake(self.store, LakeStorage(self.settings.lake_url))
            return self._lake

    def registry(self) -> Registry:
        from eventops.registry import Registry

        with self._lock:
            if self._registry is None:
                self._registry = Registry(
                    self.settings.tracking_uri, self.store, lake_url=self.settings.lake_url
                )
            return self._registry

    def runner(self) -> Runner:
        """A runner that only *requests* runs here; workers execute them (`eventops worker`)."""
        from eventops.pipelines.runner import Runner

        with self._lock:
            if self.project is not None and not self._project_loaded:
                from eventops.project import load_project

                load_project(self.project)  # registers the project's pipelines by name
                self._project_loaded = True
            if self._runner is None:
                self._runner = Runner(self.store, LakeStorage(self.settings.lake_url))
            return self._runner

    def mark_stream_ready(self) -> None:
        with self._lock:
            self.streams_ready += 1
