"""Schemathesis against the API's own OpenAPI document, in process, over a real store with an
applied project, events, a dataset and a registered model:

- with an admin token, generated requests for every operation get no 5xx and no response that
  breaks the documented schema (bodies, content types, error bodies included);
- without a token, every non-public operation answers 401;
- with a viewer token, every mutating operation answers 403.

The SSE stream is left out of the fuzzing (a generated `timeout` would hold a request for up to
an hour); test_api.py covers it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from eventops.api import create_api
from eventops.api.tokens import create_token
from eventops.config import load_settings
from eventops.events.envelope import Event
from eventops.lake import Lake, LakeStorage
from eventops.store import Store, add_event
from eventops.store.projects import ProjectRow

PUBLIC = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
TOKENS: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    home = tmp_path_factory.mktemp("schema-home")
    saved = {k: v for k, v in os.environ.items() if k.startswith("EVENTOPS_")}
    for key in saved:
        del os.environ[key]
    os.environ["EVENTOPS_HOME"] = str(home)
    try:
        config = load_settings()
        store = Store(config.store_url)
        store.upgrade()
        lake = Lake(store, LakeStorage(config.lake_url))
        table = pa.table({"id": [1, 2, 3], "amount": [9.5, 3.0, 7.25]})
        lake.commit_batch("orders", table, source="test")
        with store.session() as session:
            definition = {"project": "shop", "pipelines": {}, "deployments": {}, "monitors": {}}
            session.add(ProjectRow(name="shop", digest="0" * 64, definition=definition,
                                   applied_by="test"))  # fmt: skip
            add_event(session, Event(type="dataset.batch.ingested", source="t", subject="orders",
                                     data={"dataset": "orders"}))  # fmt: skip
        for role in ("viewer", "admin"):
            TOKENS[role] = create_token(store, f"schema-{role}", role, actor="test").secret
        yield create_api(config, store=store, rate_burst=1_000_000, rate_per_second=1_000_000)
        store.close()
    finally:
        os.environ.pop("EVENTOPS_HOME", None)
        os.environ.update(saved)


@pytest.fixture(scope="module")
def api_schema(api_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", api_app).exclude(
        path="/api/events/stream"
    )


def operations(api_schema: Any) -> list[Any]:
    found = [result.ok() for result in api_schema.get_all_operations()]
    assert len(found) >= 20
    return found


def for_every_case(api_schema: Any, examples: int, check: Callable[[Any], None]) -> None:
    """Run `check` on generated cases of every operation; one report of every failure.

    (Hypothesis drives the generation per operation: schemathesis' pytest plugin does not
    support this pytest, its Python API does.)"""
    failures: list[str] = []
    for operation in operations(api_schema):

        @given(operation.as_strategy())
        @settings(
            max_examples=examples, deadline=None, database=None,
            suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
        )  # fmt: skip
        def run(case: Any) -> None:
            check(case)

        try:
            run()
        except Exception as exc:  # collected: one operation's failure must not hide another's
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)


def test_no_server_error_and_every_response_matches_the_schema(api_schema: Any) -> None:
    def check(case: Any) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {TOKENS['admin']}"},
            checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
        )

    for_every_case(api_schema, 15, check)


def test_without_a_token_every_operation_is_401(api_schema: Any) -> None:
    def check(case: Any) -> None:
        if case.path in PUBLIC:
            return
        # generated cases may carry a made-up bearer value (the scheme is documented): 401 too
        response = case.call()
        assert response.status_code == 401, (case.method, case.formatted_path, response.text)
        assert response.json()["error"]["rule"] in ("authenticated", "valid-token")
        bare = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = bare
        response = case.call()
        assert response.status_code == 401, (case.method, case.formatted_path, response.text)
        assert response.json()["error"]["rule"] == "authenticated"

    for_every_case(api_schema, 3, check)


def test_a_viewer_gets_403_on_every_mutation(api_schema: Any) -> None:
    def check(case: Any) -> None:
        if case.method.upper() not in MUTATING:
            return
        response = case.call(headers={"Authorization": f"Bearer {TOKENS['viewer']}"})
        assert response.status_code == 403, (case.method, case.formatted_path, response.text)
        assert response.json()["error"]["rule"] == "role"

    for_every_case(api_schema, 3, check)


def test_the_document_names_the_error_body(api_app: FastAPI) -> None:
    document = api_app.openapi()
    listed = document["paths"]["/api/models/{name}/promote"]["post"]["responses"]
    for status in ("401", "403", "404", "422"):
        assert listed[status]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/ErrorBody"
        )
    assert "/ui/" not in document["paths"]  # pages are not API operations
