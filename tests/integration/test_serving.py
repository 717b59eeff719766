"""The model server for real: scikit-learn models saved with MLflow and registered in a SQLite
registry, served by uvicorn on a loopback port, hot-swapped under steady load by a promotion
on the embedded bus; `eventops predict` end to end; `eventops serve` as a process."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import wait_for
from eventops.cli import app as cli_app
from eventops.config import Settings
from eventops.events.bus import open_bus
from eventops.events.envelope import Event
from eventops.lake import Lake
from eventops.serving.deployment import Deployment
from eventops.serving.server import build_server
from eventops.store import OutboxEntry
from serving_models import (
    FEATURES,
    free_socket,
    read_reply,
    register_versions,
    running,
    save_sklearn,
    training_data,
)

ROWS, LABELS = training_data()


def reset_mlflow_uris() -> None:
    """`build_server` points MLflow (process-wide) at the test registry; undo that."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    tracking_utils._tracking_uri = None
    registry_utils._registry_uri = None


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, list[Any]]]:
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root}/mlflow.db"
    models = register_versions(uri, root)
    settings = Settings.model_validate({"home": str(root / "home"), "tracking": {"uri": uri}})
    yield settings, models
    reset_mlflow_uris()


def rows_body(start: int, count: int = 1) -> bytes:
    data = ROWS.iloc[start : start + count]
    return orjson.dumps(
        {"dataframe_split": {"columns": FEATURES, "data": data.to_numpy().tolist()}}
    )


def promote(settings: Settings, version: str) -> None:
    """What the registry's gate does: move the alias, then announce it on the bus."""
    from mlflow.tracking import MlflowClient

    uri = settings.tracking_uri
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        "churn", "champion", version
    )
    bus = open_bus(settings.bus_url)
    try:
        data = {"model": "churn", "version": version, "alias": "champion", "previous_version": "1"}
        bus.publish([Event(type="model.version.promoted", subject="churn", data=data)])
    finally:
        bus.close()


@pytest.mark.slow
def test_hot_swap_under_steady_load_fails_no_request(registry: tuple[Settings, list[Any]]) -> None:
    settings, models = registry
    deployment = Deployment(name="churn-api", model="churn", max_wait_ms=2, poll_seconds=3600)
    parts = build_server(deployment, settings)
    seen: list[tuple[int, str, int, int]] = []  # status, version, row, prediction
    stop = asyncio.Event()

    async def client(url: str, worker: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        i = worker
        try:
            while not stop.is_set() and len(seen) < 50_000:  # bounded either way
                body = rows_body(i % len(ROWS))
                head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                writer.write(head.encode() + body)
                reply = await read_reply(reader)
                version = reply.headers.get("x-model-version", "?")
                prediction = reply.json()["predictions"][0] if reply.status == 200 else -1
                seen.append((reply.status, version, i % len(ROWS), prediction))
                i += 8
        finally:
            writer.close()

    async def load(url: str) -> None:
        clients = [asyncio.create_task(client(url, w)) for w in range(8)]
        deadline = time.monotonic() + 20
        while sum(1 for s in seen if s[0] == 200) < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(promote, settings, "2")
        while not any(s[1] == "2" for s in seen[-50:]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        after = len(seen)
        while len(seen) < after + 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*clients)

    try:
        with running(parts.app) as url:
            asyncio.run(load(url))
            info = httpx.get(f"{url}/").json()
            metrics = httpx.get(f"{url}/metrics").text
    finally:
        parts.close()
    failed = [s for s in seen if s[0] != 200]
    assert not failed, f"{len(failed)} of {len(seen)} requests failed: {failed[:3]}"
    versions = [s[1] for s in seen]
    first_v2 = versions.index("2")
    assert set(versions[:first_v2]) == {"1"} and versions[-100:] == ["2"] * 100
    expected = {"1": models[0].predict(ROWS), "2": models[1].predict(ROWS)}
    assert all(pred == expected[v][row] for _, v, row, pred in seen)  # each answer from its model
    assert info["primary"]["version"] == "2" and info["primary"]["swaps"] == 1
    assert 'eventops_serving_model_info{model="churn",role="primary",version="2"} 1.0' in metrics
    lake = Lake.from_settings(settings)
    with lake.store.session() as session:
        updates = [orjson.loads(r.payload) for r in session.scalars(
            select(OutboxEntry).where(OutboxEntry.type == "deployment.updated"))]  # fmt: skip
    assert [(u["data"]["version"], u["data"]["previous_version"]) for u in updates] == [("2", "1")]
    captured = lake.read("predictions_churn_api")
    assert captured.num_rows == len(seen)
    assert set(captured["model_version"].to_pylist()) == {"1", "2"}
    lake.store.close()


def test_eventops_predict_scores_files_and_lake_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("EVENTOPS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("EVENTOPS_HOME", str(tmp_path / "home"))
    model = save_sklearn(tmp_path / "model", forest=True)
    inputs = ROWS.assign(customer=[f"c{i}" for i in range(len(ROWS))])
    pq.write_table(pa.Table.from_pandas(inputs, preserve_index=False), tmp_path / "in.parquet")
    inputs.to_csv(tmp_path / "in.csv", index=False)
    inputs.to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    runner = CliRunner()
    expected = model.predict(ROWS).tolist()
    for source in ("in.parquet", "in.csv", "in.jsonl"):
        out = tmp_path / f"out-{source}.parquet"
        result = runner.invoke(cli_app, ["predict", "--model-uri", str(tmp_path / "model"),
                                         "--input", str(tmp_path / source), "--output", str(out),
                                         "--chunk-rows", "64"])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "wrote 300 rows" in result.output and "5 chunks" in result.output
        table = pq.read_table(out)
        assert table.column_names == [*FEATURES, "customer", "prediction"]
        assert table["prediction"].to_pylist() == expected
        assert table["customer"].to_pylist()[:2] == ["c0", "c1"]
        assert table.schema.metadata[b"eventops.model_uri"] == str(tmp_path / "model").encode()
    lake = Lake.from_settings(Settings.model_validate({"home": str(tmp_path / "home")}))
    lake.commit_batch(
        "customers", pa.Table.from_pandas(ROWS.head(100), preserve_index=False), source="test"
    )
    lake.store.close()
    out = tmp_path / "from-lake.parquet"
    result = runner.invoke(
        cli_app, ["predict", "-m", str(tmp_path / "model"), "-i", "customers", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(out)["prediction"].to_pylist() == expected[:100]
    missing = tmp_path / "missing.csv"
    ROWS.drop(columns=["b"]).to_csv(missing, index=False)
    refused = runner.invoke(cli_app, ["predict", "-m", str(tmp_path / "model"), "-i", str(missing),
                                      "-o", str(tmp_path / "never.parquet")])  # fmt: skip
    assert refused.exit_code == 2 and "b: the input has no column 'b'" in refused.output
    assert not (tmp_path / "never.parquet").exists()
    unknown = runner.invoke(
        cli_app, ["predict", "-m", str(tmp_path / "model"), "-i", "nope", "-o", str(out)]
    )
    assert unknown.exit_code == 3 and "nope is not a file or a dataset" in unknown.output


@pytest.mark.slow
def test_eventops_serve_runs_as_a_process_with_two_workers(tmp_path: Path) -> None:
    save_sklearn(tmp_path / "model")
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
    env |= {"EVENTOPS_HOME": str(tmp_path / "home"), "EVENTOPS_TOKEN": "t0ken"}
    command = [sys.executable, "-m", "eventops", "serve", "--model-uri", str(tmp_path / "model"),
               "--port", str(port), "--capture-sample", "1", "--workers", "2"]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                return httpx.get(f"{url}/ping", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=60, interval=0.1)
        json_type = {"content-type": "application/json"}
        # a new connection per request, so that both workers answer some
        answers = [
            httpx.post(f"{url}/invocations", content=rows_body(0, 3), headers=json_type)
            for _ in range(10)
        ]
        metrics = httpx.get(f"{url}/metrics").text
        answer = answers[0]
        assert all(a.status_code == 200 and len(a.json()["predictions"]) == 3 for a in answers)
        route = 'eventops_serving_requests_total{route="/invocations",status="200"}'
        assert f"{route} 10.0" in metrics  # summed over the workers (multiprocess mode)
        assert len(re.findall(r"eventops_serving_model_info\{.*pid=", metrics)) == 2
        assert answer.headers["x-model-version"].startswith("local-")
        pid = answer.json()["prediction_ids"][0]
        feedback = {"prediction_id": pid, "label": 1}
        assert httpx.post(f"{url}/feedback", json=feedback).status_code == 401
        ok = httpx.post(f"{url}/feedback", json=feedback, headers={"authorization": "Bearer t0ken"})
        assert ok.status_code == 202
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode in (0, -15)  # uvicorn re-raises SIGTERM after its shutdown
    lake = Lake.from_settings(Settings.model_validate({"home": str(tmp_path / "home")}))
    captured = lake.read("predictions_model")  # each worker flushed on shutdown
    assert captured.num_rows == 30 and pid in captured["prediction_id"].to_pylist()
    assert np.array_equal(np.unique(captured["a"].to_numpy()), np.sort(ROWS["a"].to_numpy()[:3]))
    lake.store.close()


@pytest.mark.slow  # the registry fixture takes seconds to build
def test_a_deployment_whose_alias_does_not_exist_yet_waits_for_it(
    registry: tuple[Settings, list[Any]],
) -> None:
    settings, _ = registry
    deployment = Deployment(name="later-api", model="churn", alias="later", poll_seconds=0.1)
    parts = build_server(deployment, settings)
    assert parts.primary.model is None and "waiting for models:/churn@later" in parts.notes[0]
    try:
        with running(parts.app) as url:
            waiting = httpx.post(
                f"{url}/invocations",
                content=rows_body(0),
                headers={"content-type": "application/json"},
            )
            assert (waiting.status_code, waiting.json()["error"]["rule"]) == (503, "ready")
            assert httpx.get(f"{url}/v2/health/ready").status_code == 503
            from mlflow.tracking import MlflowClient

            uri = settings.tracking_uri
            MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
                "churn", "later", "2"
            )
            wait_for(lambda: httpx.get(f"{url}/ping").status_code == 200, timeout=20)
            answer = httpx.post(
                f"{url}/invocations",
                content=rows_body(0),
                headers={"content-type": "application/json"},
            )
            assert answer.status_code == 200 and answer.headers["x-model-version"] == "2"
    finally:
        parts.close()
