"""A Python interpreter with LiteLLM, for the test that goes through ``litellm`` itself.

LiteLLM is an optional extra and is not installed beside the test dependencies: it brings
some thirty packages and would move shared ones (docs/litellm.md). ``litellm_python()``
answers the interpreter of a venv made with ``--system-site-packages`` (so it sees meterline
and the shared packages) in a cache directory outside the repository, with the range of
pyproject.toml's ``litellm`` extra installed into it (read from there, so the two cannot
drift). The venv is keyed by that range and this interpreter, marked ready once
``litellm`` imports there, and reused; the script run on it checks that import again (one
import of LiteLLM, five seconds of CPU, per run) and the venv is rebuilt once if it fails.
It is built in a temporary directory beside its place and renamed into place, under a file
lock: two test processes build it once, and an interrupted build never leaves a half-built
venv where a later run would take it. A venv that cannot be built
fails the test with pip's output; it is never a skip.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 900
"""The longest one build step (making the venv, the pip install) may take."""
IMPORT_TIMEOUT_S = 120
READY_MARKER = "meterline-ready"
"""A file a venv gets once LiteLLM imports there, naming the requirement it was built for."""
IMPORT_FAILED_EXIT = 3
"""The exit status of a script on the venv whose ``import litellm`` failed."""


def litellm_requirement(pyproject: Path = REPOSITORY / "pyproject.toml") -> str:
    """The requirement of the ``litellm`` extra, e.g. ``litellm>=1.83.0,<1.111``."""
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    [requirement] = [entry for entry in extras["litellm"] if entry.startswith("litellm")]
    return str(requirement)


def cache_directory() -> Path:
    """Where the test venvs live: ``$XDG_CACHE_HOME/meterline-tests``, else ``~/.cache``'s."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meterline-tests"


def venv_directory(requirement: str) -> Path:
    """The venv for ``requirement`` on this interpreter."""
    key = f"{requirement}\n{sys.executable}\n{sys.version}"
    return cache_directory() / f"litellm-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def litellm_environment() -> dict[str, str]:
    """The environment of a process on the venv: this worktree's ``src`` and the repository
    first on the path, and LiteLLM's bundled price list (its import fetches none)."""
    path = [str(REPOSITORY / "src"), str(REPOSITORY)]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(path),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONUNBUFFERED": "1",
    }


def _imports_litellm(python: Path) -> bool:
    if not python.exists():
        return False
    check = subprocess.run(
        [str(python), "-c", "import litellm"],
        env=litellm_environment(),
        capture_output=True,
        timeout=IMPORT_TIMEOUT_S,
    )
    return check.returncode == 0


def _is_built(target: Path, requirement: str) -> bool:
    marker = target / READY_MARKER
    return marker.exists() and marker.read_text() == requirement


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


def _build(directory: Path, requirement: str) -> None:
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(directory)])
    python = directory / "bin" / "python"
    output = _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", requirement])
    if not _imports_litellm(python):
        message = f"{requirement} installed, yet `import litellm` fails:\n{output}"
        pytest.fail(message, pytrace=False)
    (directory / READY_MARKER).write_text(requirement)


def litellm_python(*, rebuild: bool = False) -> Path:
    """The interpreter of a venv with LiteLLM in the extra's range, built if need be.

    A venv built before is taken as it is (its ``import litellm`` is checked by the script
    run on it, which exits ``IMPORT_FAILED_EXIT`` if it fails): ``rebuild`` replaces it
    unless it imports LiteLLM by now (another process rebuilt it)."""
    requirement = litellm_requirement()
    target = venv_directory(requirement)
    python = target / "bin" / "python"
    if not rebuild and _is_built(target, requirement):
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _is_built(target, requirement) and (not rebuild or _imports_litellm(python)):
            return python  # another process built it meanwhile
        for stale in target.parent.glob(f"{target.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted build
        building = Path(tempfile.mkdtemp(prefix=f"{target.name}.building-", dir=target.parent))
        try:
            _build(building, requirement)
            if target.exists():  # built before, but no longer importing litellm
                shutil.rmtree(target)
            building.rename(target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return python


def start_on_litellm(script: Path) -> subprocess.Popen[str]:
    """``script`` started on the LiteLLM venv once its ``import litellm`` worked (it prints
    ``ready``), its standard input and output pipes; the venv is rebuilt once if the import
    fails there. The script's first line on standard output must be ``ready``."""
    for rebuild in (False, True):
        process = subprocess.Popen(
            [str(litellm_python(rebuild=rebuild)), str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=litellm_environment(),
        )
        assert process.stdout is not None
        if process.stdout.readline() == "ready\n":
            return process
        _, errors = process.communicate(timeout=IMPORT_TIMEOUT_S)
        if process.returncode != IMPORT_FAILED_EXIT:
            pytest.fail(f"{script} exited {process.returncode}:\n{errors}", pytrace=False)
    pytest.fail(f"{script}: `import litellm` fails on a rebuilt venv:\n{errors}", pytrace=False)


ACOMPLETION_SCRIPT = REPOSITORY / "tests" / "support" / "litellm_acompletion.py"


@pytest.fixture(scope="module")
def litellm_acompletion() -> Iterator[subprocess.Popen[str]]:
    """``litellm_acompletion.py`` started on the LiteLLM venv, LiteLLM imported, waiting
    for its one JSON line on standard input (see that script)."""
    process = start_on_litellm(ACOMPLETION_SCRIPT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
