"""Running the real `exporter` commands as subprocesses, and always stopping them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.config import Settings

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings, **overrides: object) -> dict[str, str]:
    """The environment a subprocess needs to run with these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTER_")}
    values = {**settings.model_dump(), **overrides}
    for name, value in values.items():
        env["EXPORTER_" + name.upper()] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return int(self.popen.returncode)


def start(
    command: list[str], env: dict[str, str], ready_url: str, log_path: Path, timeout: float = 30
) -> Proc:
    """Start `exporter COMMAND…` and wait until `ready_url` answers 200."""
    log = log_path.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *command],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc = Proc(popen, ready_url.rsplit("/", 1)[0], log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{command} exited with {popen.returncode}:\n{proc.log()}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.stop(signal.SIGKILL)
    raise RuntimeError(f"{command} not ready after {timeout}s:\n{proc.log()}")


@contextmanager
def running(
    settings: Settings, tmp_path: Path, *, workers: int = 1, api: bool = True, **overrides: object
) -> Iterator[tuple[Proc | None, list[Proc]]]:
    """An API and N workers against these settings, stopped (and killed if need be) on exit."""
    procs: list[Proc] = []
    try:
        api_proc = None
        if api:
            port = free_port()
            env = settings_env(settings, http_port=port, **overrides)
            api_proc = start(["api"], env, f"http://127.0.0.1:{port}/readyz", tmp_path / "api.log")
            procs.append(api_proc)
        worker_procs = []
        for i in range(workers):
            port = free_port()
            env = settings_env(settings, metrics_port=port, **overrides)
            proc = start(["worker"], env, f"http://127.0.0.1:{port}/readyz", tmp_path / f"worker{i}.log")
            procs.append(proc)
            worker_procs.append(proc)
        yield api_proc, worker_procs
    finally:
        for proc in procs:
            proc.stop()
