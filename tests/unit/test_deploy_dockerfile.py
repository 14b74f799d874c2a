"""The Dockerfile, checked without a Docker engine: it parses (dockerfile-parse), is multi-stage,
ends as a non-root user with a HEALTHCHECK and no compilers, runs `exporter` (default `api`), and
its shell snippets do what they claim when run here: the requirements come from pyproject.toml,
the `exporter` launcher starts the CLI, the /app layout lets service/migrations.py find the SQL
files, and the health check calls the port of whichever server the container runs."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPILERS = re.compile(
    r"\b(gcc|g\+\+|clang|cc|c\+\+|build-essential|make|cmake|libc6?-dev|python3?-dev|musl-dev|rustc|cargo)\b"
)


def instructions() -> list[dict[str, Any]]:
    parser = DockerfileParser(fileobj=DOCKERFILE.open("rb"))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def stages() -> list[list[dict[str, Any]]]:
    found: list[list[dict[str, Any]]] = []
    for instruction in instructions():
        if instruction["instruction"] == "FROM":
            found.append([])
        assert found, "an instruction before the first FROM"
        found[-1].append(instruction)
    return found


def final_stage() -> list[dict[str, Any]]:
    return stages()[-1]


def values(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def env_of(stage: list[dict[str, Any]]) -> dict[str, str]:
    env = {}
    for value in values(stage, "ENV"):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    return env


def copies(stage: list[dict[str, Any]]) -> list[tuple[str | None, str, str]]:
    """(--from stage or None, source, destination) of each COPY."""
    found = []
    for value in values(stage, "COPY"):
        words = value.split()
        origin = next((w.removeprefix("--from=") for w in words if w.startswith("--from=")), None)
        paths = [w for w in words if not w.startswith("--")]
        found.append((origin, paths[0], paths[-1]))
    return found


def healthcheck() -> tuple[str, list[str]]:
    (value,) = values(final_stage(), "HEALTHCHECK")
    options, _, command = value.partition("CMD")
    parsed: list[str] = json.loads(command)  # exec form: JSON, else Docker runs it through a shell
    return options, parsed


# -------------------------------------------------------------------------------- static


def test_multi_stage_on_a_slim_python() -> None:
    found = stages()
    assert len(found) >= 2
    builder = found[0][0]["value"].split()
    assert builder[-2].upper() == "AS"
    final = found[-1][0]["value"].split()
    assert re.fullmatch(r"python:3\.1[12]-slim(-bookworm)?", final[0]), final
    assert builder[0] == final[0], "the venv's interpreter path must be the same in both stages"
    origins = {origin for origin, _, _ in copies(final_stage()) if origin}
    assert origins == {builder[-1]}


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = values(final_stage(), "USER")
    assert users, "the final stage has no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    last_user = max(i["startline"] for i in final_stage() if i["instruction"] == "USER")
    assert not [i for i in final_stage() if i["instruction"] == "RUN" and i["startline"] > last_user], (
        "RUN after USER"
    )


def test_no_compilers_in_the_final_stage() -> None:
    for command in values(final_stage(), "RUN"):
        if re.search(r"\b(apt-get|apt|apk|yum|dnf)\b.*\binstall\b", command):
            assert not COMPILERS.search(command), command
    assert COMPILERS.search("apt-get install -y --no-install-recommends build-essential libpq-dev")
    assert COMPILERS.search("apk add gcc musl-dev")
    assert not COMPILERS.search("apt-get install -y --no-install-recommends tini ca-certificates")


def test_one_image_for_every_command() -> None:
    stage = final_stage()
    assert [json.loads(v) for v in values(stage, "ENTRYPOINT")] == [["exporter"]]
    assert [json.loads(v) for v in values(stage, "CMD")] == [["api"]]
    env = env_of(stage)
    assert env["EXPORTER_HTTP_HOST"] == "0.0.0.0"  # noqa: S104 (a container listens on every interface)
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    fields = set(Settings.model_fields)
    for key in env:
        if key.startswith("EXPORTER_"):
            assert key.removeprefix("EXPORTER_").lower() in fields, key
    exposed = {int(p) for v in values(stage, "EXPOSE") for p in v.split()}
    defaults = Settings.model_validate({})
    assert exposed == {defaults.http_port, defaults.metrics_port}


def test_health_check_options_and_exec_form() -> None:
    options, command = healthcheck()
    assert command[:2] == ["python", "-c"]
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in options
    assert "curl" not in command[2] and "wget" not in command[2]


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "an allowlist: everything else stays out of the build context"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    sources = {
        source.rstrip("/") for stage in stages() for origin, source, _ in copies(stage) if origin is None
    }
    assert sources == allowed
    for source in sources:
        assert (ROOT / source).exists(), source
    assert "**/__pycache__" in patterns


# ------------------------------------------------------------------------------ behaviour


def builder_run(fragment: str) -> str:
    """The builder stage's RUN command that contains `fragment`."""
    (command,) = [v for v in values(stages()[0], "RUN") if fragment in v]
    return command


def test_requirements_are_the_runtime_dependencies_of_pyproject(tmp_path: Path) -> None:
    command = builder_run("tomllib")
    assert ("COPY", "pyproject.toml /build/pyproject.toml") in [
        (i["instruction"], i["value"]) for i in stages()[0]
    ]
    extract = command.split(" > /build/requirements.txt")[0]
    extract = extract.replace("/build/pyproject.toml", str(ROOT / "pyproject.toml"))
    assert extract.startswith("python ")
    result = subprocess.run(
        ["sh", "-c", extract.replace("python ", shlex.quote(sys.executable) + " ", 1)],
        capture_output=True,
        text=True,
        check=True,
    )
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    assert result.stdout.splitlines() == project["dependencies"]
    assert "--requirement /build/requirements.txt" in command


def test_the_exporter_launcher_starts_the_cli(tmp_path: Path) -> None:
    command = builder_run("/opt/venv/bin/exporter")
    write = command.split(" && ")[0].replace("/opt/venv/bin/exporter", str(tmp_path / "exporter"))
    subprocess.run(["sh", "-c", write], check=True)
    script = (tmp_path / "exporter").read_text()
    shebang, *body = script.splitlines()
    assert shebang == "#!/opt/venv/bin/python"
    with (ROOT / "pyproject.toml").open("rb") as f:
        entry = tomllib.load(f)["project"]["scripts"]["exporter"]
    module, function = entry.split(":")
    assert f"from {module} import {function}" in body
    result = subprocess.run(
        [sys.executable, str(tmp_path / "exporter"), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: exporter" in result.stdout


def test_the_app_layout_finds_the_migrations(tmp_path: Path) -> None:
    """Lay out the final stage's COPY instructions under tmp_path and import from there."""
    stage = final_stage()
    env = env_of(stage)
    image_root = tmp_path / "image"
    for origin, source, destination in copies(stage):
        if origin is None:
            shutil.copytree(
                ROOT / source,
                image_root / destination.lstrip("/"),
                ignore=shutil.ignore_patterns("__pycache__"),
            )
    app = PurePosixPath(env["PYTHONPATH"])
    probe = (
        "import json, service; from service import migrations; "
        "print(json.dumps([service.__file__, str(migrations.MIGRATIONS_DIR), len(migrations.discover())]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(image_root / app.relative_to("/"))},
        cwd=tmp_path,
        check=True,
    )
    module_file, migrations_dir, count = json.loads(result.stdout)
    assert Path(module_file).is_relative_to(image_root), "the copied package, not the repository's"
    assert Path(migrations_dir) == image_root / app.relative_to("/") / "migrations"
    assert count == len(list((ROOT / "migrations").glob("*.up.sql"))) > 0


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def healthz_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "argv,serving,healthy",
    [
        (["worker"], "EXPORTER_METRICS_PORT", True),
        (["worker"], "EXPORTER_HTTP_PORT", False),
        (["api"], "EXPORTER_HTTP_PORT", True),
        (["api"], "EXPORTER_METRICS_PORT", False),
        (["run", "--workers", "2"], "EXPORTER_HTTP_PORT", True),
        (["migrate", "up"], None, True),
        (["cleanup"], None, True),
    ],
)
def test_the_health_check_calls_the_server_the_container_runs(
    tmp_path: Path, healthz_port: int, closed_port: int, argv: list[str], serving: str | None, healthy: bool
) -> None:
    _, command = healthcheck()
    code = command[2]
    assert "'/proc/1/cmdline'" in code
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(
        b"\0".join([b"/opt/venv/bin/python", b"/opt/venv/bin/exporter", *map(str.encode, argv)]) + b"\0"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTER_")}
    env["EXPORTER_HTTP_PORT"] = env["EXPORTER_METRICS_PORT"] = str(closed_port)
    if serving:
        env[serving] = str(healthz_port)
    result = subprocess.run(
        [sys.executable, "-c", code.replace("'/proc/1/cmdline'", repr(str(cmdline)))],
        capture_output=True,
        env=env,
        timeout=20,
    )
    assert (result.returncode == 0) is healthy, result.stderr.decode()
