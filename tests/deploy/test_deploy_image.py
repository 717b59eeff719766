"""deploy/docker: the platform image, checked without a Docker engine.

The Dockerfile is parsed (continuations joined, comments dropped) and held to the rules the
image promises: a base pinned to a patch release, a non-root user, port 8080 and a health
check (the SageMaker contract), an entry point that exists and is executable. The entry point
script runs here with a fake `eventops` on PATH that prints its arguments, so the mapping from
container commands to `eventops` commands is tested as the container would run it.
"""

from __future__ import annotations

import http.server
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from manifest_checks import ROOT

from eventops.cli import app

DOCKER = ROOT / "deploy" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
ENTRYPOINT = DOCKER / "entrypoint.sh"
PINNED = re.compile(r"^[a-z0-9./-]+:\d+\.\d+\.\d+[a-z0-9.-]*(@sha256:[0-9a-f]{64})?$")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, rest = whole.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def arg_defaults(steps: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, rest in steps:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    parsed = instructions("# c\nFROM a:1.2.3\nRUN x \\\n    # inner\n    && y\nUSER 1\n")
    assert parsed == [("FROM", "a:1.2.3"), ("RUN", "x && y"), ("USER", "1")]


def test_every_base_image_is_pinned_to_a_patch_release(steps: list[tuple[str, str]]) -> None:
    defaults = arg_defaults(steps)
    images = [rest.split()[0] for keyword, rest in steps if keyword == "FROM"]
    assert len(images) == 2, "a build stage and a runtime stage"
    for image in images:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        assert PINNED.match(resolved), f"{resolved} is not pinned (name:X.Y.Z[-variant])"
        assert "latest" not in resolved


def test_the_runtime_stage_runs_as_a_non_root_user(steps: list[tuple[str, str]]) -> None:
    users = [rest for keyword, rest in final_stage(steps) if keyword == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    assert user.isdigit() and int(user) >= 10000, "a numeric uid lets runAsNonRoot verify it"


def test_the_sagemaker_contract_port_health_and_serve(steps: list[tuple[str, str]]) -> None:
    runtime = final_stage(steps)
    exposed = {p for keyword, rest in runtime if keyword == "EXPOSE" for p in rest.split()}
    assert "8080" in exposed
    checks = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert checks and not checks[-1].upper().startswith("NONE")
    assert ("ENTRYPOINT", '["eventops-entrypoint"]') in runtime
    assert ("CMD", '["serve"]') in runtime


def test_the_entry_point_is_copied_executable_and_exists(steps: list[tuple[str, str]]) -> None:
    copies = [rest for keyword, rest in steps if keyword == "COPY"]
    line = next(c for c in copies if "entrypoint.sh" in c)
    assert "--chmod=0755" in line and line.endswith("/usr/local/bin/eventops-entrypoint")
    assert ENTRYPOINT.is_file()
    assert ENTRYPOINT.stat().st_mode & 0o111 == 0o111, "entrypoint.sh must be executable"
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True, timeout=10)


def test_what_the_build_copies_exists_and_passes_dockerignore(
    steps: list[tuple[str, str]],
) -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "**", "the context starts empty and names what the build needs"
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for rest in (rest for keyword, rest in steps if keyword == "COPY"):
        words = [w for w in rest.split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in rest.split()):
            continue
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert source.rstrip("/") in kept, f"COPY {source}: excluded by .dockerignore"


# ---- the entry point's argument mapping, with fake commands ----------------------------------


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """eventops and mlflow that print `<name> <args...>` (shell-quoted) and exit 0."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("eventops", "mlflow"):
        script = folder / name
        script.write_text(
            f"#!/bin/sh\nprintf '%s' {name}\nfor a in \"$@\"; do printf ' [%s]' \"$a\"; done\necho\n"
        )
        script.chmod(0o755)
    return folder


def run_entry(
    fake_bin: Path, *args: str, env: dict[str, str] | None = None, model_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": f"{fake_bin}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "SAGEMAKER_MODEL_DIR": str(model_dir or fake_bin / "no-model"),
        **(env or {}),
    }
    return subprocess.run(
        [str(ENTRYPOINT), *args], env=environ, capture_output=True, text=True, timeout=30
    )


def called(*words: str) -> str:
    return words[0] + "".join(f" [{w}]" for w in words[1:]) + "\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["serve", "--deployment", "churn-api"],
            ["eventops", "serve", "--host", "0.0.0.0", "--port", "8080", "--deployment", "churn-api"],
        ),
        (["serve", "-m", "models:/churn@champion"],
         ["eventops", "serve", "--host", "0.0.0.0", "--port", "8080", "-m", "models:/churn@champion"]),
        (["worker", "--role", "runner"], ["eventops", "worker", "--role", "runner"]),
        (["api", "serve", "--host=0.0.0.0"], ["eventops", "api", "serve", "--host=0.0.0.0"]),
        (["db", "upgrade"], ["eventops", "db", "upgrade"]),
        (["eventops", "version"], ["eventops", "version"]),
        (["--help"], ["eventops", "--help"]),
        (["run", "my pipeline", "--param", "a b"], ["eventops", "run", "my pipeline", "--param", "a b"]),
        (["mlflow", "server", "--port=5000"], ["mlflow", "server", "--port=5000"]),
    ],
)  # fmt: skip
def test_commands_map_to_eventops_or_run_as_given(
    fake_bin: Path, args: list[str], expected: list[str]
) -> None:
    done = run_entry(fake_bin, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout == called(*expected)


def test_sagemaker_serve_alone_serves_the_model_sagemaker_unpacked(
    fake_bin: Path, tmp_path: Path
) -> None:
    model = tmp_path / "ml" / "model"
    model.mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    for args in ([], ["serve"]):
        done = run_entry(fake_bin, *args, model_dir=model)
        assert done.returncode == 0, done.stderr
        assert done.stdout == called(
            "eventops", "serve", "--host", "0.0.0.0", "--port", "8080", "--model-uri", str(model)
        )
    bound = run_entry(fake_bin, "serve", model_dir=model, env={"SAGEMAKER_BIND_TO_PORT": "9001"})
    assert "[--port] [9001]" in bound.stdout


def test_serve_with_no_model_anywhere_fails_and_says_what_it_needs(fake_bin: Path) -> None:
    done = run_entry(fake_bin, "serve")
    assert done.returncode == 64
    assert done.stdout == ""
    assert "--deployment NAME, --model-uri URI or an MLflow model in" in done.stderr


def test_the_entry_point_knows_every_eventops_command() -> None:
    text = ENTRYPOINT.read_text()
    listed = re.search(r'EVENTOPS_COMMANDS="([^"]*)"', text)
    assert listed is not None
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert set(listed.group(1).split()) == commands, (
        "deploy/docker/entrypoint.sh EVENTOPS_COMMANDS differs from `eventops --help`"
    )


@pytest.fixture
def answering_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ping" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_passes_on_2xx_fails_otherwise_and_can_be_off(
    fake_bin: Path, answering_server: str
) -> None:
    ok = run_entry(fake_bin, "healthcheck", env={"HEALTHCHECK_URL": f"{answering_server}/ping"})
    assert ok.returncode == 0, ok.stderr
    down = run_entry(fake_bin, "healthcheck", env={"HEALTHCHECK_URL": f"{answering_server}/x"})
    assert down.returncode != 0
    assert run_entry(fake_bin, "healthcheck", env={"HEALTHCHECK_URL": "none"}).returncode == 0
    # the default is the model server's /ping on 8080; nothing listens there in this test
    unset = run_entry(fake_bin, "healthcheck", env={"SAGEMAKER_BIND_TO_PORT": "1"})
    assert unset.returncode != 0, shlex.join(["healthcheck", unset.stderr[-200:]])
