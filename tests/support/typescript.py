"""The Node.js side of package tests: install what a generated package.json needs once into
a cache (.cache/tsc-deps/<hash of the deps>), link it into an extracted package, run tsc
and the package's own scripts."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "tsc-deps"
INSTALL_TIMEOUT = 600


def _deps(project: Path) -> dict[str, str]:
    manifest = json.loads((project / "package.json").read_text("utf-8"))
    return {**manifest.get("dependencies", {}), **manifest.get("devDependencies", {})}


def node_modules(project: Path) -> Path:
    """node_modules holding every dependency of `project`'s package.json, installed once."""
    deps = _deps(project)
    key = hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()[:16]
    target = CACHE / key
    done = target / "node_modules" / ".bin" / "tsc"
    if done.exists():
        return target / "node_modules"
    CACHE.mkdir(parents=True, exist_ok=True)
    # Several test processes (and people) share the cache: one installs, the others wait.
    with (CACHE / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            staging = CACHE / f"{key}.staging-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            (staging / "package.json").write_text(
                json.dumps({"name": "tsc-deps", "private": True, "dependencies": deps}), "utf-8"
            )
            result = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=staging,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"npm install of the generated package's dependencies failed (needs the npm registry):\n{result.stderr}"
                )
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    return target / "node_modules"


def link_dependencies(project: Path) -> None:
    (project / "node_modules").symlink_to(node_modules(project), target_is_directory=True)


def tsc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the package's own TypeScript compiler on its tsconfig.json."""
    return subprocess.run(
        ["node", str(project / "node_modules" / "typescript" / "bin" / "tsc"), "-p", str(project), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )


def node(
    project: Path, script: str, env: dict[str, str], timeout: float = 120, args: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", script, *args],
        cwd=project,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def build(project: Path) -> None:
    """Link the cached dependencies, typecheck (tsc --noEmit), then compile to dist/."""
    link_dependencies(project)
    checked = tsc(project, "--noEmit")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    built = tsc(project)
    assert built.returncode == 0, built.stdout + built.stderr


@contextlib.contextmanager
def server(project: Path, env: dict[str, str]) -> Iterator[str]:
    """Run the package's compiled server on a free port; yields its base URL."""
    proc = subprocess.Popen(
        ["node", "dist/server.js"],
        cwd=project,
        env={**os.environ, **env, "PORT": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on port"), line + proc.stderr.read()
        yield f"http://127.0.0.1:{int(line.split()[-1])}"
    finally:
        proc.terminate()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
