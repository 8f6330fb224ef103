"""Python interpreters with a client library that is not installed beside the tests.

Some clients meterline is tested against would move packages the rest of the tests share:
LiteLLM brings some thirty packages (docs/litellm.md), OpenMeter's client pins
``cloudevents<2`` while meterline's tests use the 2.x API. Each is one extra of
pyproject.toml (read from there, so the test and the extra cannot drift), named by a
``ClientVenv``. ``client_python(venv)`` answers the interpreter of a venv made with
``--system-site-packages`` (so it sees meterline and the shared packages, the venv's own
packages first) in a cache directory outside the repository, with the extra installed
into it. The venv is keyed by the extra's requirements and this interpreter, marked ready
once the client imports there, and reused; the script run on it checks that import again
and the venv is rebuilt once if it fails. It is built in a temporary directory beside its
place and renamed into place, under a file lock: two test processes build it once, and an
interrupted build never leaves a half-built venv where a later run would take it. A venv
that cannot be built fails the test with pip's output; it is never a skip.

A script run with ``start_on(venv, script)`` prints ``ready`` as its first line once its
imports worked, and exits ``IMPORT_FAILED_EXIT`` if they failed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 900
"""The longest one build step (making the venv, the pip install) may take."""
IMPORT_TIMEOUT_S = 120
READY_MARKER = "meterline-ready"
"""A file a venv gets once its client imports there, naming the requirements it was built for."""
IMPORT_FAILED_EXIT = 3
"""The exit status of a script on a venv whose import of the client failed."""


@dataclass(frozen=True)
class ClientVenv:
    """A client library tested in a venv of its own: the pyproject.toml extra installing it,
    the module a script imports, and variables its processes need."""

    extra: str
    module: str
    variables: tuple[tuple[str, str], ...] = ()

    def requirements(self, pyproject: Path = REPOSITORY / "pyproject.toml") -> list[str]:
        """The extra's requirements, e.g. ``["litellm>=1.83.0,<1.111"]``."""
        extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
        return [str(requirement) for requirement in extras[self.extra]]

    def directory(self) -> Path:
        """The venv for the extra's requirements on this interpreter."""
        key = f"{self.built_for()}\n{sys.executable}\n{sys.version}"
        return cache_directory() / f"{self.extra}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def built_for(self) -> str:
        """What the ready marker of a venv built for the extra as it is now holds."""
        return "\n".join(self.requirements())

    def environment(self) -> dict[str, str]:
        """The environment of a process on the venv: this worktree's ``src`` and the
        repository first on the path, and the client's variables."""
        path = [str(REPOSITORY / "src"), str(REPOSITORY)]
        if os.environ.get("PYTHONPATH"):
            path.append(os.environ["PYTHONPATH"])
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(path),
            "PYTHONUNBUFFERED": "1",
            **dict(self.variables),
        }


LITELLM = ClientVenv(
    "litellm",
    "litellm",
    # LiteLLM's bundled price list: its import fetches none
    variables=(("LITELLM_LOCAL_MODEL_COST_MAP", "True"),),
)
OPENMETER = ClientVenv("openmeter-client", "openmeter")


def cache_directory() -> Path:
    """Where the test venvs live: ``$XDG_CACHE_HOME/meterline-tests``, else ``~/.cache``'s."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meterline-tests"


def _imports(venv: ClientVenv, python: Path) -> bool:
    if not python.exists():
        return False
    check = subprocess.run(
        [str(python), "-c", f"import {venv.module}"],
        env=venv.environment(),
        capture_output=True,
        timeout=IMPORT_TIMEOUT_S,
    )
    return check.returncode == 0


def _is_built(target: Path, built_for: str) -> bool:
    marker = target / READY_MARKER
    return marker.exists() and marker.read_text() == built_for


def _run(command: list[str]) -> str:
    """Run a build step; its output, or a test failure showing it."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=os.environ
        )
    except subprocess.TimeoutExpired as timeout:
        message = f"{' '.join(command)}: no answer in {BUILD_TIMEOUT_S} s\n{timeout.output!s}"
        pytest.fail(message, pytrace=False)
    output = f"{done.stdout}\n{done.stderr}"
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {done.returncode}:\n{output}", pytrace=False)
    return output


def _build(venv: ClientVenv, directory: Path) -> None:
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(directory)])
    python = directory / "bin" / "python"
    requirements = venv.requirements()
    install = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    output = _run([*install, *requirements])
    if not _imports(venv, python):
        message = f"{requirements} installed, yet `import {venv.module}` fails:\n{output}"
        pytest.fail(message, pytrace=False)
    (directory / READY_MARKER).write_text(venv.built_for())


def client_python(venv: ClientVenv, *, rebuild: bool = False) -> Path:
    """The interpreter of a venv with the client's extra installed, built if need be.

    A venv built before is taken as it is (the import is checked by the script run on it,
    which exits ``IMPORT_FAILED_EXIT`` if it fails): ``rebuild`` replaces it unless it
    imports the client by now (another process rebuilt it)."""
    built_for, target = venv.built_for(), venv.directory()
    python = target / "bin" / "python"
    if not rebuild and _is_built(target, built_for):
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _is_built(target, built_for) and (not rebuild or _imports(venv, python)):
            return python  # another process built it meanwhile
        for stale in target.parent.glob(f"{target.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted build
        building = Path(tempfile.mkdtemp(prefix=f"{target.name}.building-", dir=target.parent))
        try:
            _build(venv, building)
            if target.exists():  # built before, but no longer importing the client
                shutil.rmtree(target)
            building.rename(target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return python


def start_on(venv: ClientVenv, script: Path) -> subprocess.Popen[str]:
    """``script`` started on the venv once its imports worked (it prints ``ready``), its
    standard input and output pipes; the venv is rebuilt once if the import fails there."""
    for rebuild in (False, True):
        process = subprocess.Popen(
            [str(client_python(venv, rebuild=rebuild)), str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=venv.environment(),
        )
        assert process.stdout is not None
        if process.stdout.readline() == "ready\n":
            return process
        _, errors = process.communicate(timeout=IMPORT_TIMEOUT_S)
        if process.returncode != IMPORT_FAILED_EXIT:
            pytest.fail(f"{script} exited {process.returncode}:\n{errors}", pytrace=False)
    message = f"{script}: `import {venv.module}` fails on a rebuilt venv:\n{errors}"
    pytest.fail(message, pytrace=False)


@contextmanager
def running_on(venv: ClientVenv, script: Path) -> Iterator[subprocess.Popen[str]]:
    """``script`` started on the venv (``start_on``) for the block, killed after it if it
    is still running."""
    process = start_on(venv, script)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def exchange(
    process: subprocess.Popen[str], question: dict[str, Any], timeout_s: float = IMPORT_TIMEOUT_S
) -> dict[str, Any]:
    """Send the script its one JSON line; its one JSON object on standard output, or a test
    failure showing what it wrote if it exits otherwise than 0."""
    output, errors = process.communicate(json.dumps(question) + "\n", timeout=timeout_s)
    if process.returncode != 0:
        pytest.fail(f"the script exited {process.returncode}:\n{output}\n{errors}", pytrace=False)
    answer: dict[str, Any] = json.loads(output)
    return answer
