"""The README documents every command and option the CLI offers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main

from meterline.cli import app

README = (Path(__file__).parents[2] / "README.md").read_text()


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += _commands(command, f"{prefix}{name} ")
        else:
            found.append((f"{prefix}{name}", command))
    return found


def test_every_command_and_option_is_in_the_readme() -> None:
    """Each `meterline` command and each of its long options appears in README.md."""
    group = typer.main.get_command(app)
    commands = _commands(group)
    assert len(commands) >= 8
    for name, command in commands:
        assert f"meterline {name}" in README, name
        for parameter in command.params:
            for option in getattr(parameter, "opts", []):
                if option.startswith("--") and option != "--help":
                    assert option in README, f"{name} {option}"


def test_readme_opens_with_the_two_commands() -> None:
    """README's first two code blocks are the demo command and the test command."""
    blocks = README.split("```bash\n")[1:3]
    assert blocks[0].startswith("python3 -m pip install -e '.[server]' && meterline demo")
    assert blocks[1].startswith("bash scripts/test")


def test_ci_runs_the_readmes_test_command() -> None:
    """CI runs the script the README names, which installs the extras and runs pytest."""
    root = Path(__file__).parents[2]
    ci = [line for line in (root / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == "bash scripts/test"  # the README's second block, and CI's one step
    script = (root / "scripts" / "test").read_text()
    assert "pip install" in script and ".[test]" in script
    # it ends by running pytest with the arguments given, on two processes by file
    assert script.rstrip().endswith('exec python3 -m pytest -n "$processes" --dist loadfile "$@"')
    assert 'exec python3 -m pytest "$@"' in script  # METERLINE_TEST_PROCESSES=0: one process
