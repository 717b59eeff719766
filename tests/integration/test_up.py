"""`eventops up` as a user runs it: one command starts API, UI, workers and the deployment's
server; data ingested afterwards is trained on, gated, promoted and served without another
command; SIGTERM stops every part cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from conftest import wait_for
from eventops.cli.demo_data import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "churn"
ROW = {"tenure_months": 3, "monthly_charges": 91.5, "basic": 0, "premium": 1, "support_calls": 4}


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_up_runs_the_loop_and_stops_cleanly(home: Path, tmp_path: Path) -> None:
    api_port, serve_port = free_port(), free_port()
    env = {**os.environ, "CHURN_API_PORT": str(serve_port), "COLUMNS": "200"}
    command = [sys.executable, "-m", "eventops", "up", "--project", str(EXAMPLE / "project.py"),
               "--port", str(api_port), "--grace", "20"]  # fmt: skip
    up = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    base = f"http://127.0.0.1:{api_port}"
    try:
        wait_for(lambda: any(line.startswith("eo_") for line in lines), timeout=60)
        token = next(line.strip() for line in lines if line.startswith("eo_"))
        headers = {"Authorization": f"Bearer {token}"}

        def api_up() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(api_up, timeout=60, interval=0.2)
        pipelines = httpx.get(f"{base}/api/pipelines", headers=headers).json()["items"]
        assert [p["name"] for p in pipelines] == ["train_churn"]  # applied by `up`

        ingest = subprocess.run(
            [sys.executable, "-m", "eventops", "ingest", "files", "churn",
             str(EXAMPLE / "data" / "customers.csv")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr

        def served() -> bool:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{serve_port}/invocations",
                    json={"dataframe_records": [ROW]},
                    timeout=2,
                )
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        wait_for(served, timeout=240, interval=0.5)
        deployments = httpx.get(f"{base}/api/deployments", headers=headers).json()["items"]
        assert deployments[0]["name"] == "churn-api"
        assert deployments[0]["live"]["reachable"] is True
        assert deployments[0]["live"]["requests"] >= 1
        wait_for(lambda: any("model.version.promoted churn" in line for line in lines), timeout=30)
        assert any("worker |" in line for line in lines)
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
        reader.join(10)
    tail = "".join(lines[-30:])
    assert code == 0, tail
    assert "eventops up stopped" in tail
    assert "worker stopped" in tail
    assert _closed(api_port) and _closed(serve_port)
