"""The loop of `make demo` on the production profile: Kafka (tansu), PostgreSQL, S3 (moto),
an MLflow tracking server on PostgreSQL + S3, Ray as the executor, two workers and two serving
replicas as separate processes.

What it shows: work is shared through consumer groups (two workers, one run per trigger), each
replica hot-swaps to the promoted version by itself, nothing is handled twice in effect and
nothing is lost; then the faults — a worker killed with SIGKILL in the middle of a run, a broker
restart, the store unreachable for a while — and the loop still ends where it should.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from sqlalchemy import func, select

from conftest import wait_for
from eventops.cli.demo_data import free_port
from eventops.store import OutboxEntry, PipelineRunRow, Store
from eventops.store.registry import ModelDecisionRow
from kafka_broker import start_tansu
from moto_server import CREDENTIALS
from production_stack import (
    BUCKET,
    Proc,
    Stack,
    TcpProxy,
    production_stack,
    served_version,
)

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]
PROJECT = str(ROOT / "examples" / "churn" / "project.py")
DATA = ROOT / "examples" / "churn" / "data"


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
    for proc in [*workers, *replicas]:  # SIGTERM: in-flight work finished, offsets committed
        code = proc.stop()
        # A worker that started a local Ray from its runner thread may die by SIGABRT while Ray
        # shuts down (Ray's native signal handling; see docs/production.md). Its work is done
        # by then: the run, the decision and the swaps were checked above.
        ray_driver = "Ray cluster" in proc.text()
        assert code in (0, -15) or (code == -6 and ray_driver), proc.tail()


# ---------------------------------------------------------------------- faults
FAULTS = str(ROOT / "tests" / "production_faults_project.py")


@pytest.fixture(scope="module")
def faults(stack: Stack) -> dict[str, str]:
    """The fault project applied; its workers run steps in their own process (`--inline`), so
    killing a worker kills its step too."""
    applied = stack.eventops("apply", "--project", FAULTS)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    return {"FAULT_MARKER": str(stack.folder / "fault.marker")}


def request_run(store: Store, label: str) -> str:
    from eventops.lake import LakeStorage
    from eventops.pipelines.runner import Runner
    from eventops.project import load_project

    load_project(FAULTS)  # registers fault_job by name
    runner = Runner(store, LakeStorage("unused-lake"))
    return runner.request("fault_job", {"label": label}, trigger="test")


def run_status(store: Store, run_id: str) -> str:
    with store.session() as session:
        row = session.get(PipelineRunRow, run_id)
        return row.status if row is not None else "missing"


def succeeded_events(store: Store, run_id: str) -> int:
    with store.session() as session:
        rows = session.scalars(
            select(OutboxEntry).where(OutboxEntry.type == "pipeline.run.succeeded")
        )
        return sum(1 for row in rows if f'"{run_id}"' in row.payload)


def fault_worker(stack: Stack, name: str, env: dict[str, str]) -> Proc:
    worker = stack.spawn(
        name,
        ["worker", "--project", FAULTS, "--role", "runner", "--role", "relay", "--inline"],
        env=env,
    )
    wait_for(lambda: "worker for project faults" in worker.text(), timeout=120)
    return worker


def test_a_worker_killed_mid_run_is_taken_over(
    stack: Stack, store: Store, faults: dict[str, str]
) -> None:
    marker = Path(faults["FAULT_MARKER"])
    marker.unlink(missing_ok=True)
    attempts = marker.with_suffix(".killed.attempts")
    workers = [fault_worker(stack, f"fault-worker-{i}", faults) for i in (1, 2)]
    run_id = request_run(store, "killed")
    wait_for(lambda: attempts.exists() and attempts.read_text().strip(), timeout=120)
    first_pid = int(attempts.read_text().split()[0])
    victim = next(w for w in workers if w.process.pid == first_pid)
    survivor = next(w for w in workers if w is not victim)
    victim.kill()  # SIGKILL, in the middle of the step
    assert run_status(store, run_id) == "running"
    marker.touch()
    # the survivor sees the run's heartbeat go stale and takes it over from its last step
    wait_for(lambda: run_status(store, run_id) == "succeeded", timeout=120, interval=0.5)
    pids = [int(p) for p in attempts.read_text().split()]
    assert pids == [first_pid, survivor.process.pid]  # run again once, by the survivor
    wait_for(lambda: succeeded_events(store, run_id) == 1, timeout=30)
    assert survivor.alive, survivor.tail()
    survivor.stop()


def test_a_broker_restart_loses_no_run(stack: Stack, store: Store, faults: dict[str, str]) -> None:
    Path(faults["FAULT_MARKER"]).touch()
    worker = fault_worker(stack, "fault-worker-broker", faults)
    port = stack.broker.port
    stack.broker.stop()
    run_id = request_run(store, "broker")  # its event waits in the outbox: no broker
    time.sleep(3.0)  # the outage itself (a fault of fixed length, not a wait for a condition)
    assert run_status(store, run_id) == "requested"
    stack.broker = start_tansu(port=port)  # empty: no topic, no offset, as after a lost log
    wait_for(lambda: run_status(store, run_id) == "succeeded", timeout=180, interval=0.5)
    assert succeeded_events(store, run_id) == 1
    assert worker.alive, worker.tail()
    worker.stop()


def test_the_store_unreachable_for_a_while_loses_no_run(
    stack: Stack, store: Store, faults: dict[str, str]
) -> None:
    Path(faults["FAULT_MARKER"]).touch()
    proxy = TcpProxy(5432)
    through_proxy = stack.store_url.replace(":5432/", f":{proxy.port}/")
    assert through_proxy != stack.store_url
    worker = fault_worker(
        stack, "fault-worker-store", {**faults, "EVENTOPS_STORE_URL": through_proxy}
    )
    proxy.cut()  # every connection of the worker to PostgreSQL dropped, new ones refused
    run_id = request_run(store, "store")  # recorded by someone who still reaches the store
    time.sleep(5.0)  # the outage itself (a fault of fixed length, not a wait for a condition)
    proxy.restore()
    wait_for(lambda: run_status(store, run_id) == "succeeded", timeout=180, interval=0.5)
    assert succeeded_events(store, run_id) == 1
    assert worker.alive, worker.tail()
    worker.stop()
    proxy.cut()
