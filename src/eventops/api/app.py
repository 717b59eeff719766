"""The control-plane REST API: one FastAPI app over the capabilities' own functions.

`create_api` wires the pieces that every route shares: the error body (`api.errors`), bearer
tokens and roles (`api.auth`), the body-size and rate limits (`api.limits`). Routes live in
`routes_*.py`, one concern each, and call the library (Lake, Registry, runs, monitors), never
their own queries where a capability offers one. OpenAPI is at ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from eventops import __version__
from eventops.api import (
    routes_aws,
    routes_datasets,
    routes_events,
    routes_models,
    routes_monitoring,
    routes_platform,
    routes_runs,
    routes_tokens,
)
from eventops.api.context import ApiContext
from eventops.api.errors import ERROR_RESPONSES, install_error_handlers
from eventops.api.limits import BodySizeLimit, RateLimiter
from eventops.config import Settings
from eventops.store import Store

MAX_BODY = 1024 * 1024
RATE_PER_SECOND = 20.0
RATE_BURST = 100


def create_api(
    settings: Settings,
    *,
    store: Store | None = None,
    auth: bool = True,
    project: Path | None = None,
    max_body: int = MAX_BODY,
    rate_per_second: float = RATE_PER_SECOND,
    rate_burst: int = RATE_BURST,
    ui: bool = True,
) -> FastAPI:
    """The API over `store` (default: the configured store, migrated here and closed with the
    app). `auth=False` lets every request act as a local admin: only for loopback (the CLI
    refuses it elsewhere). `project` is loaded on the first run request, to know pipelines."""
    owned = store is None
    if store is None:
        store = Store(settings.store_url)
        store.upgrade()
    closing = store if owned else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if closing is not None:
            closing.close()

    app = FastAPI(
        lifespan=lifespan,
        title="EventOps API",
        version=__version__,
        description="The EventOps control plane. Send `Authorization: Bearer <token>`.",
        responses=ERROR_RESPONSES,
    )
    app.state.context = ApiContext(settings, store, auth=auth, project=project)
    app.state.limiter = RateLimiter(rate_per_second, rate_burst)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=max_body)

    @app.get("/health", tags=["health"], summary="Liveness: answers without a token")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    for module in (
        routes_events, routes_datasets, routes_runs, routes_models, routes_platform,
        routes_monitoring, routes_tokens, routes_aws,
    ):  # fmt: skip
        app.include_router(module.router)
    if ui:
        from eventops.api.ui.pages import install

        install(app)

    return app
