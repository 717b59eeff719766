"""The web UI over a real store: signing in keeps the token in an HttpOnly cookie that opens
pages but never changes anything; pages redirect to the sign-in without one; what users wrote
(event subjects, data) is escaped; errors are pages; the applied project's pipelines,
deployments and monitors appear."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from eventops.api import create_api
from eventops.api.platform import histogram_quantile, parse_serving_metrics
from eventops.api.tokens import create_token
from eventops.api.ui.svg import Point, layers, line_chart, step_graph
from eventops.config import load_settings
from eventops.events.envelope import Event
from eventops.store import Store, add_event
from eventops.store.projects import ProjectRow

DEFINITION = {
    "project": "shop",
    "pipelines": {
        "train": {
            "steps": [
                {"name": "load", "upstreams": []},
                {"name": "features", "upstreams": ["load"]},
                {"name": "labels", "upstreams": ["load"]},
                {"name": "fit", "upstreams": ["features", "labels"]},
            ],
            "triggers": [{"type": "on_new_data", "dataset": "orders"}],
        }
    },
    "deployments": {
        "shop-api": {"model": "shop", "alias": "champion", "mode": "canary", "canary_percent": 10,
                     "challenger_alias": "challenger", "host": "127.0.0.1", "port": 9}
    },
    "monitors": {"shop-drift": {"deployment": "shop-api", "window_rows": 100}},
    "alerts": {"shop-health": {"on": ["monitor.drift.detected"]}},
}  # fmt: skip


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    store = Store(load_settings().store_url)
    store.upgrade()
    with store.session() as session:
        session.add(ProjectRow(name="shop", digest="d" * 64, definition=DEFINITION, applied_by="t"))
        add_event(session, Event(type="dataset.batch.ingested", source="test",
                                 subject="<script>alert(1)</script>", data={"note": "<b>x</b>"}))  # fmt: skip
        add_event(session, Event(type="deployment.updated", source="test", subject="shop-api",
                                 data={"deployment": "shop-api", "model": "shop", "version": "7",
                                       "alias": "champion"}))  # fmt: skip
    yield store
    store.close()


@pytest.fixture
def client(store: Store) -> TestClient:
    return TestClient(create_api(load_settings(), store=store), follow_redirects=False)


@pytest.fixture
def viewer(store: Store) -> str:
    return create_token(store, "ui-viewer", "viewer", actor="test").secret


def sign_in(client: TestClient, token: str, target: str = "/ui/") -> None:
    response = client.post("/ui/login", data={"token": token, "next": target})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == target
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie


def test_pages_redirect_to_sign_in_and_back(client: TestClient, viewer: str) -> None:
    response = client.get("/ui/deployments")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=/ui/deployments"
    assert client.get("/").headers["location"] == "/ui/"
    sign_in(client, viewer, "/ui/deployments")
    page = client.get("/ui/deployments")
    assert page.status_code == 200
    assert "shop-api" in page.text and "v7" in page.text and "unreachable" in page.text
    assert "primary 90%" in page.text and "challenger 10%" in page.text


def test_a_wrong_token_is_refused_on_the_form(client: TestClient) -> None:
    for token in ("", "eo_not-a-token"):
        response = client.post("/ui/login", data={"token": token})
        assert response.status_code == 401
        assert "set-cookie" not in response.headers
        assert 'role="alert"' in response.text


def test_no_open_redirect_after_sign_in(client: TestClient, viewer: str) -> None:
    for target in ("https://evil.example/", "//evil.example/ui", "/api/tokens", "/ui\\@evil"):
        response = client.post("/ui/login", data={"token": viewer, "next": target})
        assert response.headers["location"] == "/ui/", target


def test_the_cookie_reads_but_never_writes(client: TestClient, store: Store) -> None:
    admin = create_token(store, "ui-admin", "admin", actor="test").secret
    sign_in(client, admin)
    assert client.get("/api/tokens").status_code == 200  # reads through the cookie
    created = client.post("/api/tokens", json={"name": "x", "role": "viewer"})
    assert created.status_code == 401  # a cross-site form could do this: refused
    assert client.delete("/api/tokens/whatever").status_code == 401
    out = client.post("/ui/logout")
    assert out.status_code == 303
    assert client.get("/ui/").status_code == 303


def test_user_text_is_escaped(client: TestClient, viewer: str) -> None:
    sign_in(client, viewer)
    for path in ("/ui/", "/ui/events"):
        text = client.get(path).text
        assert "<script>alert(1)</script>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "<b>x</b>" not in text


def test_pipeline_graph_and_monitor_pages(client: TestClient, viewer: str, store: Store) -> None:
    sign_in(client, viewer)
    page = client.get("/ui/pipelines/train").text
    assert page.count('class="node') == 4 and page.count('class="edge"') == 4
    assert "on_new_data" in page
    assert "shop-drift" in client.get("/ui/monitors").text  # declared, not yet checked
    assert "shop-health" in client.get("/ui/alerts").text
    for path in ("/ui/pipelines", "/ui/datasets", "/ui/models", "/ui/monitors/shop-drift",
                 "/ui/deployments/shop-api", "/ui/events?type=deployment."):  # fmt: skip
        assert client.get(path).status_code == 200, path


def test_errors_are_pages(client: TestClient, viewer: str) -> None:
    sign_in(client, viewer)
    for path in ("/ui/runs/nope", "/ui/pipelines/nope", "/ui/datasets/nope", "/ui/nope"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
    # the API keeps answering JSON for the same error
    assert client.get("/api/runs/nope").json()["error"]["rule"] == "exists"


def test_api_endpoints_behind_the_pages(client: TestClient, viewer: str) -> None:
    headers = {"Authorization": f"Bearer {viewer}"}
    deployments = client.get("/api/deployments", headers=headers).json()["items"]
    assert deployments[0]["traffic"] == {"primary": 90, "challenger": 10}
    assert deployments[0]["serving_version"] == "7"
    assert deployments[0]["live"]["reachable"] is False
    pipelines = client.get("/api/pipelines", headers=headers).json()["items"]
    assert pipelines[0]["steps"] == ["load", "features", "labels", "fit"]
    assert client.get("/api/pipelines/nope", headers=headers).status_code == 404
    assert client.get("/api/monitors/shop-drift", headers=headers).json()["series"] == []
    assert client.get("/api/projects", headers=headers).json()["items"][0]["name"] == "shop"


def test_svg_helpers() -> None:
    steps = DEFINITION["pipelines"]["train"]["steps"]  # type: ignore[index]
    assert layers(steps) == {"load": 0, "features": 1, "labels": 1, "fit": 2}
    svg = str(step_graph(steps, {"fit": "failed", "<x>": "ok"}))
    assert 'class="node bad" data-step="fit"' in svg
    assert str(step_graph([])) == ""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    points = [Point((start + timedelta(minutes=i)).isoformat(), v, v > 0.5)
              for i, v in enumerate([0.0, 0.2, 0.9, float("nan")])]  # fmt: skip
    chart = str(line_chart(points, threshold=0.5, y_label="<drift>"))
    assert chart.count("<circle") == 3 and chart.count("flagged") == 1
    assert "&lt;drift&gt;" in chart
    assert "no values yet" in str(line_chart([]))


def test_latency_quantiles_from_prometheus_buckets() -> None:
    buckets = [(0.01, 50.0), (0.05, 90.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.075)
    assert histogram_quantile(0.5, []) is None
    text = (
        'eventops_serving_requests_total{route="/invocations",status="200"} 40.0\n'
        'eventops_serving_requests_total{route="/invocations",status="422"} 2.0\n'
        'eventops_serving_errors_total{route="/invocations",rule="required"} 2.0\n'
        'eventops_serving_request_seconds_bucket{route="/invocations",le="0.005"} 20.0\n'
        'eventops_serving_request_seconds_bucket{route="/invocations",le="0.01"} 42.0\n'
        'eventops_serving_request_seconds_bucket{route="/invocations",le="+Inf"} 42.0\n'
    )
    stats = parse_serving_metrics(text)
    assert (stats.requests, stats.errors) == (42.0, 2.0)
    assert stats.p50_ms == pytest.approx(5.0, abs=0.3)
