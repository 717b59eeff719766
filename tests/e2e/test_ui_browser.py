"""The web UI in headless Chromium (Debian's package, driven by Playwright with
`executable_path`), over the store, bus, lake and registry a whole `eventops demo` run leaves:
sign in, then click through the main pages and watch an event arrive in the live feed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import wait_for
from eventops.cli.demo_data import free_port
from eventops.events.bus import open_bus
from eventops.events.envelope import Event

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What this machine's closed network needs (no background fetches, no sandbox as root).
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
pytestmark = pytest.mark.slow


@dataclass
class Server:
    url: str
    token: str
    home: Path


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("ui-demo") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
    env["COLUMNS"] = "200"
    demo = subprocess.run(
        [sys.executable, "-m", "eventops", "demo", "--home", str(home)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    port = free_port()
    env["EVENTOPS_HOME"] = str(home)
    api = subprocess.Popen(
        [sys.executable, "-m", "eventops", "api", "serve", "--port", str(port)],
        cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(api.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: any("Uvicorn running" in line for line in lines), timeout=60)
        token = next(line.strip() for line in lines if line.startswith("eo_"))
        yield Server(f"http://127.0.0.1:{port}", token, home)
    finally:
        api.terminate()
        api.wait(30)
        reader.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make services` installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object, demo_server: Server, tmp_path: Path) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1366, "height": 768})  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    page.screenshot(path=str(tmp_path / "last.png"), full_page=True)  # kept for a failing run
    context.close()


def sign_in(page: object, server: Server) -> None:
    page.goto(f"{server.url}/ui/pipelines")  # type: ignore[attr-defined]
    assert "/ui/login" in page.url  # type: ignore[attr-defined]
    page.fill("#token", "eo_wrong")  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    assert "unknown, expired or revoked" in page.inner_text("[role=alert]")  # type: ignore[attr-defined]
    page.fill("#token", server.token)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(f"{server.url}/ui/pipelines")  # type: ignore[attr-defined]


def test_click_through_the_loop(page: object, demo_server: Server) -> None:
    p = page
    sign_in(p, demo_server)
    # pipelines -> the training pipeline -> its newest run: graph, steps, logs
    p.click("text=train_churn")  # type: ignore[attr-defined]
    assert p.locator("svg.graph g.node").count() == 5  # type: ignore[attr-defined]
    p.click("table a >> nth=0")  # type: ignore[attr-defined]
    assert "/ui/runs/" in p.url  # type: ignore[attr-defined]
    assert p.locator("svg.graph g.node.ok").count() == 5  # type: ignore[attr-defined]
    assert "loaded" in p.inner_text("pre.log >> nth=0")  # type: ignore[attr-defined]
    # datasets -> churn: schema versions, statistics, batches
    p.click("nav >> text=Datasets")  # type: ignore[attr-defined]
    p.click("table >> text=churn >> nth=0")  # type: ignore[attr-defined]
    assert "Schema versions" in p.inner_text("main")  # type: ignore[attr-defined]
    assert p.locator("text=tenure_months").count() >= 1  # type: ignore[attr-defined]
    # models -> churn: versions with metrics, the champion alias, decisions
    p.click("nav >> text=Models")  # type: ignore[attr-defined]
    p.click("table >> text=churn")  # type: ignore[attr-defined]
    body = p.inner_text("main")  # type: ignore[attr-defined]
    assert "champion" in body and "auc" in body and "promoted" in body
    # deployments: churn-api with its traffic split and the version it announced
    p.click("nav >> text=Deployments")  # type: ignore[attr-defined]
    row = p.inner_text("table tbody tr >> nth=0")  # type: ignore[attr-defined]
    assert "churn-api" in row and "primary 100%" in row
    # monitors -> churn-drift: the drift chart over time, with drifted checks in red
    p.click("nav >> text=Monitors")  # type: ignore[attr-defined]
    p.click("table >> text=churn-drift >> nth=0")  # type: ignore[attr-defined]
    assert p.locator("svg.chart circle").count() >= 3  # type: ignore[attr-defined]
    assert p.locator("svg.chart circle.flagged").count() >= 1  # type: ignore[attr-defined]
    # alerts: the health rule fired on the drift
    p.click("nav >> text=Alerts")  # type: ignore[attr-defined]
    assert "churn-model-health" in p.inner_text("main")  # type: ignore[attr-defined]


def test_the_live_feed_shows_a_new_event(page: object, demo_server: Server) -> None:
    p = page
    sign_in(p, demo_server)
    p.click("nav >> text=Overview")  # type: ignore[attr-defined]
    # "(live)": the stream answered, which it does once its bus position is fixed
    p.wait_for_function("document.getElementById('feed-state').textContent === '(live)'")  # type: ignore[attr-defined]
    bus = open_bus(f"sqlite:///{demo_server.home}/events.db")
    try:
        bus.publish([Event(type="uitest.ping.sent", source="e2e", subject="<b>ping</b>", data={})])
    finally:
        bus.close()
    row = p.locator("#feed tbody tr[data-type='uitest.ping.sent']")  # type: ignore[attr-defined]
    row.wait_for()
    assert "<b>ping</b>" in row.inner_text()  # shown as text, not markup
    assert p.locator("#feed b").count() == 0  # type: ignore[attr-defined]


def test_sign_out_closes_the_pages(page: object, demo_server: Server) -> None:
    p = page
    sign_in(p, demo_server)
    p.click("text=Sign out")  # type: ignore[attr-defined]
    p.goto(f"{demo_server.url}/ui/models")  # type: ignore[attr-defined]
    assert "/ui/login" in p.url  # type: ignore[attr-defined]
