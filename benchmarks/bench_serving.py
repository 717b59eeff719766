"""Serving benchmark: `eventops serve` against `mlflow models serve`, same model, one run.

* The model: scikit-learn RandomForestClassifier (100 trees, 20 features), saved with
  `mlflow.sklearn.save_model(serialization_format="cloudpickle")` (FIELD-NOTES: its `predict`
  costs about the same for 1 row or 100, so batching concurrent requests is nearly free).
* The servers, one at a time on loopback, one worker process each: `eventops serve --model-uri
  PATH` (micro-batching on, capture off: the same work as MLflow's server) and `mlflow models
  serve -m PATH --env-manager local` (the venv's bin on PATH: it starts uvicorn by name).
* The load: `wrk -t1 -cC --latency` with a Lua script posting the same JSON body
  (``dataframe_split``), 1-row and 100-row requests, `--repeats` runs of `--seconds` each; the
  run with the median requests/s is reported with its p50 and p99. Without wrk, a bare
  asyncio HTTP/1.1 client in a separate process (the same fixed concurrency) does it.
* Hot swap: the model registered twice in a SQLite MLflow registry, `eventops serve --model-uri
  models:/bench@champion` under 30 s of steady 1-row load (the asyncio client, which records
  every answer's version); after 10 s the alias moves to version 2 and
  `model.version.promoted` is published on the embedded bus. Reported: failed requests, p99
  over the whole run and in the 2 s after the promotion, and the time until answers came from
  version 2.

The ratios are the claim (goal: >= 3x the requests/s of `mlflow models serve` at equal or
lower p99); absolute numbers move with the machine. `--write-readme` rewrites the serving
section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from readme_section import machine_stamp, replace_section

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
FEATURES = [f"f{i}" for i in range(20)]


@dataclass
class Load:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


# ---------------------------------------------------------------------- the model
def train(seed: int = 0) -> tuple[object, object]:
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(2000, 20)), columns=FEATURES)
    labels = (frame["f0"] + frame["f1"] * rng.uniform(0.5, 1.5) > 0).astype(int)
    return RandomForestClassifier(100, random_state=seed).fit(frame, labels), frame


def save(path: Path, seed: int = 0) -> None:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    model, frame = train(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(
            model, str(path), serialization_format="cloudpickle",
            signature=infer_signature(frame, model.predict(frame)),  # type: ignore[attr-defined]
            input_example=frame.head(3), pip_requirements=["scikit-learn"],  # type: ignore[attr-defined]
        )  # fmt: skip


def body(rows: int, seed: int = 1) -> bytes:
    data = np.random.default_rng(seed).normal(size=(rows, 20)).round(6).tolist()
    return json.dumps({"dataframe_split": {"columns": FEATURES, "data": data}}).encode()


# ---------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(command: list[str], port: int, env: dict[str, str], cwd: Path) -> Iterator[str]:
    log = open(cwd / f"server-{port}.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise SystemExit(f"server did not start: {(cwd / log.name).read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def environment(home: Path, tracking_uri: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["EVENTOPS_HOME"] = str(home)
    env["PYTHONWARNINGS"] = "ignore"
    if tracking_uri:
        env["EVENTOPS_TRACKING_URI"] = tracking_uri
    return env


def eventops_command(model: str, port: int, batch: int, wait_ms: float) -> list[str]:
    return [str(BIN / "eventops"), "serve", "--model-uri", model, "--port", str(port),
            "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms)]  # fmt: skip


def mlflow_command(model: str, port: int) -> list[str]:
    return [str(BIN / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip


# ---------------------------------------------------------------------- load
def wrk(url: str, payload: Path, connections: int, seconds: float) -> Load:
    script = payload.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{payload}", "rb"); wrk.body = f:read("*all"); f:close()\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script),
         f"{url}/invocations"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return Load(rps, _wrk_ms(out, "50%"), _wrk_ms(out, "99%"), errors, done)


def _wrk_ms(out: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def python_load(url: str, payload: Path, connections: int, seconds: float, out: Path) -> None:
    """Run the asyncio client in its own process; it writes one line per answer to `out`."""
    subprocess.run(
        [sys.executable, __file__, "--load", url, "--payload", str(payload), "--connections",
         str(connections), "--seconds", str(seconds), "--out", str(out)], check=True,
    )  # fmt: skip


async def _client(url: str, data: bytes, connections: int, seconds: float, out: Path) -> None:
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    answers: list[tuple[float, float, int, str]] = []  # sent at (epoch s), ms, status, version

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = (f"POST /invocations HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()  # fmt: skip
        while time.monotonic() - started < seconds:
            sent, wall = time.monotonic(), time.time()
            try:
                writer.write(head + data)
                status = int((await reader.readline()).split()[1])
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
            except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
                answers.append((wall, (time.monotonic() - sent) * 1000, 0, "?"))
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
                continue
            version = headers.get("x-model-version", "?")
            answers.append((wall, (time.monotonic() - sent) * 1000, status, version))
        writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    out.write_text("\n".join(json.dumps(a) for a in answers))


def read_answers(out: Path) -> list[tuple[float, float, int, str]]:
    return [tuple(json.loads(line)) for line in out.read_text().splitlines()]


def load_of(answers: list[tuple[float, float, int, str]], seconds: float) -> Load:
    latencies = sorted(a[1] for a in answers)
    errors = sum(1 for a in answers if a[2] != 200)
    return Load(len(answers) / seconds, _pct(latencies, 0.5), _pct(latencies, 0.99), errors,
                len(answers))  # fmt: skip


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def measure(url: str, payload: Path, connections: int, seconds: float, repeats: int) -> Load:
    """The median-throughput run of `repeats`, after a short warm-up."""
    runs = []
    use_wrk = shutil.which("wrk") is not None
    for index in range(repeats + 1):
        span = 2.0 if index == 0 else seconds
        if use_wrk:
            result = wrk(url, payload, connections, span)
        else:
            out = payload.with_suffix(".answers")
            python_load(url, payload, connections, span, out)
            result = load_of(read_answers(out), span)
        if index:
            runs.append(result)
    runs.sort(key=lambda r: r.requests_per_s)
    return runs[len(runs) // 2]


# ---------------------------------------------------------------------- the hot swap
def hot_swap(tmp: Path, connections: int, seconds: float, swap_at: float) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    from eventops.events.bus import open_bus
    from eventops.events.envelope import Event

    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("bench")
    for version in (1, 2):
        save(tmp / f"bench-v{version}", seed=version)
        client.create_model_version("bench", source=str(tmp / f"bench-v{version}"))
    client.set_registered_model_alias("bench", "champion", "1")
    home = tmp / "home-swap"
    port = free_port()
    payload = tmp / "swap-1.json"
    payload.write_bytes(body(1))
    out = tmp / "swap.answers"
    command = eventops_command("models:/bench@champion", port, 2048, 5)
    with server(command, port, environment(home, uri), tmp) as url:
        loader = subprocess.Popen(
            [sys.executable, __file__, "--load", url, "--payload", str(payload), "--connections",
             str(connections), "--seconds", str(seconds), "--out", str(out)],
        )  # fmt: skip
        time.sleep(swap_at)
        promoted = time.time()
        client.set_registered_model_alias("bench", "champion", "2")
        bus = open_bus(f"sqlite:///{home}/events.db")
        data = {"model": "bench", "version": "2", "alias": "champion", "previous_version": "1"}
        bus.publish([Event(type="model.version.promoted", subject="bench", data=data)])
        bus.close()
        loader.wait(seconds + 60)
    answers = read_answers(out)
    first_v2 = min((a[0] for a in answers if a[3] == "2"), default=float("nan"))
    window = sorted(a[1] for a in answers if promoted <= a[0] <= promoted + 2.0)
    overall = load_of(answers, seconds)
    return {
        "requests": overall.requests, "failed": overall.errors, "rps": overall.requests_per_s,
        "p99": overall.p99_ms, "p99_swap": _pct(window, 0.99), "to_v2_s": first_v2 - promoted,
        "v2_share_end": sum(1 for a in answers[-200:] if a[3] == "2") / max(1, len(answers[-200:])),
    }  # fmt: skip


# ---------------------------------------------------------------------- report
def table(
    results: dict[tuple[str, int], Load], swap: dict[str, float] | None, args: argparse.Namespace
) -> str:
    lines = [
        "Model: scikit-learn RandomForestClassifier (100 trees, 20 features) saved with "
        '`mlflow.sklearn.save_model(serialization_format="cloudpickle")`; requests are '
        "`dataframe_split` JSON. "
        f"Requests/s and latency at {args.connections} concurrent connections "
        f"({'wrk -t1' if shutil.which('wrk') else 'asyncio client'}, median of {args.repeats} "
        f"runs of {args.seconds:g} s; EventOps with `--max-batch-size {args.batch} --max-wait-ms "
        f"{args.wait_ms:g}`, capture off; one worker process each):",
        "",
        "| rows per request | server | requests/s | p50 ms | p99 ms | errors | ratio (req/s) | p99 vs MLflow |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    met = True
    for rows in (1, 100):
        base = results[("mlflow", rows)]
        for name, label in (("mlflow", "`mlflow models serve`"), ("eventops", "`eventops serve`")):
            r = results[(name, rows)]
            ratio = r.requests_per_s / base.requests_per_s
            lines.append(
                f"| {rows} | {label} | {r.requests_per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
                f"{r.errors} | {ratio:.1f}x | {r.p99_ms / base.p99_ms:.2f} |"
            )
            if name == "eventops":
                met = met and ratio >= 3 and r.p99_ms <= base.p99_ms
    lines += ["", f"Goal (>= 3x the requests/s of `mlflow models serve` at equal or lower p99): "
              f"{'met' if met else 'not met'}."]  # fmt: skip
    if swap is not None:
        lines += [
            "",
            f"Hot swap under steady 1-row load ({args.connections} connections, "
            f"{args.swap_seconds:g} s, promotion of version 2 at {args.swap_at:g} s): "
            f"{swap['requests']:,.0f} requests, **{swap['failed']:.0f} failed**; "
            f"{swap['rps']:,.0f} requests/s; p99 {swap['p99']:.1f} ms over the run, "
            f"{swap['p99_swap']:.1f} ms in the 2 s after the promotion; answers came from "
            f"version 2 after {swap['to_v2_s']:.2f} s (load, warm-up and swap), "
            f"{swap['v2_share_end']:.0%} of the last 200 answers.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2048, help="eventops --max-batch-size")
    parser.add_argument("--wait-ms", type=float, default=5.0, help="eventops --max-wait-ms")
    parser.add_argument("--swap-seconds", type=float, default=30.0)
    parser.add_argument("--swap-at", type=float, default=10.0)
    parser.add_argument("--no-swap", action="store_true")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--payload", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        data = args.payload.read_bytes()
        asyncio.run(_client(args.load, data, args.connections, args.seconds, args.out))
        return
    results: dict[tuple[str, int], Load] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as name:
        tmp = Path(name)
        model = tmp / "model"
        save(model)
        payloads = {}
        for rows in (1, 100):
            payloads[rows] = tmp / f"body-{rows}.json"
            payloads[rows].write_bytes(body(rows))
        for server_name in ("mlflow", "eventops"):
            port = free_port()
            command = (mlflow_command(str(model), port) if server_name == "mlflow"
                       else eventops_command(str(model), port, args.batch, args.wait_ms))  # fmt: skip
            with server(command, port, environment(tmp / "home"), tmp) as url:
                for rows in (1, 100):
                    results[(server_name, rows)] = measure(
                        url, payloads[rows], args.connections, args.seconds, args.repeats
                    )
                    r = results[(server_name, rows)]
                    print(f"{server_name} {rows} row(s): {r.requests_per_s:,.0f} req/s, "
                          f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, errors {r.errors}", flush=True)  # fmt: skip
        swap = None
        if not args.no_swap:
            swap = hot_swap(tmp, args.connections, args.swap_seconds, args.swap_at)
            print(f"hot swap: {swap}", flush=True)
    text = table(results, swap, args)
    print(text)
    if args.write_readme:
        replace_section("serving", "Serving (`bench_serving.py`)", f"{machine_stamp()}\n\n{text}")


if __name__ == "__main__":
    main()
