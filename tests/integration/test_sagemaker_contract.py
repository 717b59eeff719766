"""The SageMaker container contract, without Docker: the image's entry point started the way
SageMaker starts it (`serve`, SAGEMAKER_BIND_TO_PORT) on the model archive that `eventops
deploy --target sagemaker` uploads, unpacked where SageMaker unpacks it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from conftest import wait_for
from eventops.serving.sagemaker import package_model
from serving_models import FEATURES, free_socket, save_sklearn, training_data

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"


def test_the_entry_point_serves_the_unpacked_archive(tmp_path: Path) -> None:
    model = tmp_path / "model"
    save_sklearn(model)
    archive = tmp_path / "model.tar.gz"
    package_model(model, archive)
    opt_ml_model = tmp_path / "opt" / "ml" / "model"
    opt_ml_model.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(opt_ml_model, filter="data")
    assert (opt_ml_model / "MLmodel").is_file()

    with free_socket() as sock:
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_DIR": str(opt_ml_model),
        "EVENTOPS_HOME": str(tmp_path / "home"),
    }
    process = subprocess.Popen(
        ["sh", str(ENTRYPOINT), "serve"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def pinged() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {process.stdout.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                return httpx.get(f"{base}/ping", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(pinged, timeout=60, interval=0.2)
        rows, _ = training_data(rows=3)
        csv = rows[FEATURES].to_csv(index=False, header=False)
        answer = httpx.post(f"{base}/invocations", content=csv,
                            headers={"Content-Type": "text/csv"}, timeout=10)  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 3
        body = {
            "dataframe_split": {"columns": FEATURES, "data": rows[FEATURES].to_numpy().tolist()}
        }
        answer = httpx.post(f"{base}/invocations", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 3
        wrong = httpx.post(f"{base}/invocations", content=b"1,2",
                           headers={"Content-Type": "text/csv"}, timeout=10)  # fmt: skip
        assert 400 <= wrong.status_code < 500
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
