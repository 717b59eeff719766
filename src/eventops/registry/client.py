"""The model registry: MLflow's registry for versions and aliases, the store for decisions.

Serving loads `models:/<name>@champion`, so the alias is what goes live. Every decision first
moves the alias in MLflow, then writes its row in `model_decisions` and its event in the outbox
in one store transaction: when a consumer sees `model.version.promoted`, the alias already points
at the new version. If the store transaction fails after the alias moved, the caller gets the
error and retries; moving an alias to where it already points changes nothing.

Rollback needs the champion before the current one, which MLflow does not remember; the
decisions history does (see `eventops.registry.history`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from eventops.config import Settings
from eventops.errors import BackendUnavailable, ConfigError, NotFound, ValidationError
from eventops.events.envelope import Event
from eventops.registry import history
from eventops.registry.names import (
    CHALLENGER,
    CHAMPION,
    check_alias,
    check_model_name,
    check_version,
)
from eventops.registry.views import (
    DecisionView,
    ModelSummary,
    ModelView,
    VersionView,
    from_millis,
)
from eventops.store import Store

log = logging.getLogger(__name__)

PAGE = 1000


def mlflow_client(tracking_uri: str) -> Any:
    """An `MlflowClient` whose registry is its tracking store (MLflow imported on first use)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:  # pragma: no cover - mlflow-skinny is a dependency
        raise ConfigError(
            f"the registry needs MLflow ({exc})", field="tracking.uri", rule="installed"
        ) from None
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite" and parts.path.startswith("/"):
        Path(parts.path[1:]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def missing(exc: Exception) -> bool:
    """True when MLflow says the model, version or alias does not exist."""
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


class Registry:
    """Models in MLflow at `tracking_uri` (registry URI = tracking URI), decisions in `store`.

    `lake_url` lets gates read a holdout named as a lake dataset.
    """

    def __init__(self, tracking_uri: str, store: Store, *, lake_url: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.store = store
        self.lake_url = lake_url
        self._client: Any = None
        self._lock = threading.Lock()
        self._owns_store = False

    @classmethod
    def from_settings(cls, settings: Settings, *, upgrade: bool = True) -> Registry:
        """The configured registry; its store is migrated unless `upgrade=False`, and closed by
        `close()`."""
        store = Store(settings.store_url)
        if upgrade:
            store.upgrade()
        registry = cls(settings.tracking_uri, store, lake_url=settings.lake_url)
        registry._owns_store = True
        return registry

    def __repr__(self) -> str:
        return f"Registry({self.tracking_uri!r}, {self.store!r})"

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = mlflow_client(self.tracking_uri)
            return self._client

    # ------------------------------------------------------------------ reading
    def models(self) -> list[ModelSummary]:
        """Every registered model, by name."""
        out: list[ModelSummary] = []
        token = None
        while True:
            page = self.client.search_registered_models(max_results=PAGE, page_token=token)
            for rm in page:
                latest = max((int(v.version) for v in rm.latest_versions or []), default=None)
                out.append(
                    ModelSummary(
                        name=rm.name,
                        description=rm.description or None,
                        aliases={str(k): str(v) for k, v in (rm.aliases or {}).items()},
                        latest_version=str(latest) if latest is not None else None,
                        updated_at=from_millis(rm.last_updated_timestamp),
                    )
                )
            token = page.token
            if not token:
                return sorted(out, key=lambda m: m.name)

    def _registered(self, name: str) -> Any:
        check_model_name(name)
        try:
            return self.client.get_registered_model(name)
        except Exception as exc:
            if missing(exc):
                raise NotFound(f"no registered model {name!r}", field="model") from None
            raise

    def model(self, name: str) -> ModelView:
        """A model with its versions (newest first), their aliases, tags, metrics and status."""
        rm = self._registered(name)
        versions: list[VersionView] = []
        token = None
        while True:
            page = self.client.search_model_versions(
                f"name='{name}'", max_results=PAGE, page_token=token
            )
            versions += [VersionView.from_mlflow(v) for v in page]
            token = page.token
            if not token:
                break
        aliases = {str(k): str(v) for k, v in (rm.aliases or {}).items()}
        # MLflow's search leaves versions' aliases empty; the registered model has them all.
        held: dict[str, list[str]] = {}
        for alias, number in sorted(aliases.items()):
            held.setdefault(number, []).append(alias)
        versions = [replace(v, aliases=held.get(v.version, [])) for v in versions]
        versions.sort(key=lambda v: int(v.version), reverse=True)
        return ModelView(rm.name, rm.description or None, aliases, versions)

    def version(self, name: str, version: str | int) -> VersionView:
        check_model_name(name)
        number = check_version(version)
        try:
            return VersionView.from_mlflow(self.client.get_model_version(name, number))
        except Exception as exc:
            if missing(exc):
                raise NotFound(f"model {name!r} has no version {number}", field="version") from None
            raise

    def alias(self, name: str, alias: str = CHAMPION) -> str | None:
        """The version `alias` points at; None when it points nowhere."""
        aliases = self._registered(name).aliases or {}
        found = aliases.get(check_alias(alias))
        return str(found) if found is not None else None

    def recorded(
        self, name: str, alias: str = CHAMPION, *, session: Session | None = None
    ) -> str | None:
        """The version the decisions history says holds `alias` (the top of its stack).

        It differs from `alias()` when a decision moved the alias in MLflow but its row was never
        written (the store failed in between): the retried decision reads what was before from
        here, not from MLflow, which already shows the new state."""
        with self._session(session) as s:
            stack = history.champion_history(s, name, check_alias(alias))
        return stack[-1] if stack else None

    def decisions(self, name: str, *, limit: int | None = None) -> list[DecisionView]:
        """The decisions taken about `name`, newest first."""
        with self.store.session() as session:
            return history.decisions(session, name, limit)

    def load_pyfunc(self, name: str, version: str | int, dst: str) -> Any:
        """The version as an `mlflow.pyfunc` model, its files downloaded under `dst`.

        The source is resolved through this registry's client and downloaded from its artifact
        URI: `mlflow.pyfunc.load_model("models:/...")` would ask the process-wide registry URI
        (MLflow's global default), not this one.
        """
        import mlflow.artifacts
        import mlflow.pyfunc

        number = check_version(version)
        source = self.client.get_model_version_download_uri(name, number)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=dst, tracking_uri=self.tracking_uri
        )
        return mlflow.pyfunc.load_model(local)

    # ------------------------------------------------------------------ decisions
    def promote(
        self,
        name: str,
        version: str | int,
        *,
        actor: str,
        evidence: Mapping[str, Any] | None = None,
        alias: str = CHAMPION,
        cause: Event | None = None,
        session: Session | None = None,
    ) -> DecisionView:
        """Point `alias` at `version` (a promoted challenger loses its `challenger` alias)."""
        view = self._ready(name, version)
        previous = self.alias(name, alias)
        if previous == view.version:  # a retry after the store failed: what was before?
            previous = self.recorded(name, alias, session=session) or previous
        self.client.set_registered_model_alias(name, alias, view.version)
        if alias == CHAMPION and CHALLENGER in view.aliases:
            self.client.delete_registered_model_alias(name, CHALLENGER)
        return self._record(
            name, view.version, "promoted", alias, previous, actor, evidence, cause, session
        )

    def request_approval(
        self,
        name: str,
        version: str | int,
        *,
        actor: str,
        evidence: Mapping[str, Any] | None = None,
        alias: str = CHALLENGER,
        cause: Event | None = None,
        session: Session | None = None,
    ) -> DecisionView:
        """Point `alias` (challenger) at a version that passed its gate and awaits a person."""
        view = self._ready(name, version)
        previous = self.alias(name, alias)
        self.client.set_registered_model_alias(name, alias, view.version)
        return self._record(
            name, view.version, "approval_requested", alias, previous, actor, evidence, cause,
            session,
        )  # fmt: skip

    def reject(
        self,
        name: str,
        version: str | int,
        *,
        actor: str,
        evidence: Mapping[str, Any] | None = None,
        alias: str = CHAMPION,
        cause: Event | None = None,
        session: Session | None = None,
    ) -> DecisionView:
        """Refuse `version` for `alias`; a rejected challenger loses its alias. The champion
        cannot be rejected: roll it back instead."""
        view = self.version(name, version)
        current = self.alias(name, alias)
        if current == view.version:
            raise ValidationError(
                f"version {view.version} of {name!r} is the {alias}; roll it back instead",
                field="version",
                rule="not-current",
            )
        if CHALLENGER in view.aliases and alias != CHALLENGER:
            self.client.delete_registered_model_alias(name, CHALLENGER)
        return self._record(
            name, view.version, "rejected", alias, current, actor, evidence, cause, session
        )

    def rollback(
        self,
        name: str,
        *,
        actor: str,
        evidence: Mapping[str, Any] | None = None,
        alias: str = CHAMPION,
        cause: Event | None = None,
        session: Session | None = None,
    ) -> DecisionView:
        """Point `alias` back at the version that held it before the current one (skipping
        versions rolled back earlier, and versions deleted from MLflow since)."""
        current = self.alias(name, alias)
        if current is None:
            raise ValidationError(
                f"model {name!r} has no {alias} to roll back", field="model", rule="has-champion"
            )
        with self._session(session) as s:
            stack = history.champion_history(s, name, alias)
            if (
                stack
                and stack[-1] != current
                and self._previous(name, stack[:], stack[-1]) == current
            ):
                # An earlier rollback moved the alias but its row was never written (the store
                # failed): finish that rollback instead of undoing it.
                log.warning("model %s: completing an unrecorded rollback to %s", name, current)
                facts = {"rolled_back_version": stack[-1], **(evidence or {})}
                return self._record(
                    name, current, "rolled_back", alias, stack[-1], actor, facts, cause, s
                )
            target = self._previous(name, stack, current)
            if target is None:
                raise ValidationError(
                    f"model {name!r} has no {alias} before version {current} to roll back to",
                    field="model",
                    rule="has-previous",
                )
            self.client.set_registered_model_alias(name, alias, target)
            facts = {"rolled_back_version": current, **(evidence or {})}
            return self._record(name, target, "rolled_back", alias, current, actor, facts, cause, s)

    def _previous(self, name: str, stack: list[str], current: str) -> str | None:
        if stack and stack[-1] == current:
            stack.pop()
        for version in reversed(stack):
            if version == current:
                continue
            try:
                self.version(name, version)
            except NotFound:
                log.warning("model %s: version %s is gone; not rolling back to it", name, version)
                continue
            return version
        return None

    def _ready(self, name: str, version: str | int) -> VersionView:
        view = self.version(name, version)
        if view.status != "READY":
            raise ValidationError(
                f"version {view.version} of {name!r} is {view.status}, not READY",
                field="version",
                rule="ready",
            )
        return view

    @contextmanager
    def _session(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
            return
        with self.store.session() as own:
            yield own

    def _record(
        self,
        name: str,
        version: str,
        decision: str,
        alias: str,
        previous: str | None,
        actor: str,
        evidence: Mapping[str, Any] | None,
        cause: Event | None,
        session: Session | None,
    ) -> DecisionView:
        try:
            with self._session(session) as s:
                return history.record(
                    s, model=name, version=version, decision=decision, alias=alias,
                    previous=previous, actor=actor, evidence=evidence, cause=cause,
                )  # fmt: skip
        except BackendUnavailable:
            log.error("model %s: %s moved to version %s but not recorded", name, alias, version)
            raise
