"""docker-compose.yml as data, and the console scripts its services run, resolved as the CLI would parse them."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from integration_core.cli import app as si_app
from tests.support.config import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
VENV_BIN = Path(sys.executable).parent


def click_command(script: str) -> Any:
    """The click command behind a console script installed in the project's environment (typer carries its own
    copy of click, so commands are recognised by their interface, not their class)."""
    if script == "si":
        return typer.main.get_command(si_app)
    [entry] = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == script]
    command = entry.load()
    if not hasattr(command, "make_context"):  # dagster's scripts are `main()` wrappers around a click `cli`
        command = getattr(sys.modules[command.__module__], "cli", None)
    assert hasattr(command, "make_context"), f"{script} is not a click command"
    return command


def is_group(command: Any) -> bool:
    return hasattr(command, "get_command") and hasattr(command, "list_commands")


def resolve(script: str, args: list[str]) -> tuple[Any, list[str]]:
    """Follow subcommands; parse the final command's options exactly as the CLI would (without running it)."""
    assert (VENV_BIN / script).exists(), f"{script} is not installed in .venv/bin"
    command = click_command(script)
    names = [script]
    while is_group(command) and args and not args[0].startswith("-"):
        sub = command.get_command(command.context_class(command), args[0])
        assert sub is not None, f"`{' '.join(names)}` has no subcommand {args[0]!r}"
        names.append(args.pop(0))
        command = sub
    if is_group(command) and not args and not getattr(command, "invoke_without_command", False):
        pytest.fail(f"`{' '.join(names)}` needs a subcommand")
    # raises UsageError / NoSuchOption / BadParameter for anything the CLI would refuse
    command.make_context(" ".join(names), list(args), resilient_parsing=False)
    return command, names
