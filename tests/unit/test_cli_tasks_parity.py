"""Each option is declared once, in ``cli.build_parser()``; every invoke task mirrors its command.

tasks.py hands its options to ``python -m conveyor``. These tests walk the parser and fail when a
command's option has no task parameter (or a task has a parameter the command lacks), when the
two disagree on what kind of option it is, or when a task does not pass a value on unchanged.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest
from invoke.collection import Collection
from invoke.context import MockContext
from invoke.parser.argument import Argument

from conveyor import cli

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import tasks  # noqa: E402

# Commands with no invoke task, on purpose: tasks.py operates environments (STYLE.md), and
# these are reached another way, where the CLI's parser stays their only declaration.
NO_TASK = {
    # Prepares this machine; scripts/setup is its entry point, run before anything else.
    "setup",
    # Validation of deploy.toml, which every task already does on load.
    "config-check",
    # Prints the working tree's release version for scripts; changes nothing.
    "version",
    # Build side: `nox -s build`, `nox -s image` and `nox -s scan` hand their posargs to these
    # commands unchanged (noxfile.py verifies and builds; tasks.py operates).
    "build",
    "image",
    "scan",
    # Verify side too: `nox -s lint` runs it on the app's offline migration SQL.
    "migrations-lint",
    # Stored-artifact upkeep (verify/list/prune), run as `python -m conveyor artifacts …`.
    "artifacts",
    # The offline OSV mirror that the scan session starts for pip-audit; a scanner's helper.
    "advisories",
}

TASKS = Collection.from_module(tasks)


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


COMMANDS = _commands()
WITH_TASK = sorted(set(COMMANDS) - NO_TASK)


def _options(command: str) -> dict[str, argparse.Action]:
    """A command's options by long name without dashes, as invoke names a parameter."""
    found = {}
    for action in COMMANDS[command]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = max(action.option_strings, key=len) if action.option_strings else action.dest
        found[name.lstrip("-")] = action
    return found


def _arguments(command: str) -> dict[str, Argument]:
    return {arg.names[0]: arg for arg in TASKS[command].get_arguments()}


def _is_flag(action: argparse.Action) -> bool:
    return action.nargs == 0


def _is_repeatable(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction)


def test_every_command_has_a_task_unless_allowed_and_every_task_a_command() -> None:
    assert set(COMMANDS) >= NO_TASK, f"allow-listed but not a command: {NO_TASK - set(COMMANDS)}"
    tasks_here = set(TASKS.task_names)
    assert not tasks_here & NO_TASK, f"has a task now, drop it from NO_TASK: {tasks_here & NO_TASK}"
    assert tasks_here == set(WITH_TASK), (
        f"commands without a task: {sorted(set(WITH_TASK) - tasks_here)}; "
        f"tasks without a command: {sorted(tasks_here - set(WITH_TASK))}"
    )


@pytest.mark.parametrize("command", WITH_TASK)
def test_task_parameters_are_the_command_options(command: str) -> None:
    options, arguments = set(_options(command)), set(_arguments(command))
    assert options == arguments, (
        f"{command}: options without a task parameter: {sorted(options - arguments)}; "
        f"task parameters without an option: {sorted(arguments - options)}"
    )


@pytest.mark.parametrize("command", WITH_TASK)
def test_task_and_command_agree_on_each_option(command: str) -> None:
    arguments = _arguments(command)
    for name, action in _options(command).items():
        arg = arguments.get(name)
        if arg is None:
            continue  # reported by test_task_parameters_are_the_command_options
        where = f"{command} --{name}"
        assert action.required == arg.positional, f"{where}: required in one, optional in other"
        assert _is_flag(action) == (arg.kind is bool), f"{where}: a flag in one only"
        assert _is_repeatable(action) == (arg.kind is list), f"{where}: repeatable in one only"
        # A task default, where it declares one, may only repeat the CLI's (same value and
        # type: invoke parses by the default's type, so `0` would refuse `--lock-wait 2.5`).
        if arg.default not in (None, []) and not _is_flag(action):
            assert type(arg.default) is type(action.default), f"{where}: default's type differs"
            assert arg.default == action.default, f"{where}: default differs from the CLI's"


def _sample(name: str, action: argparse.Action) -> tuple[Any, Any]:
    """A value to give the task for this option, and what the CLI should parse it into."""
    if _is_flag(action):
        return True, True
    if _is_repeatable(action):
        return ["a.txt", "b/c.txt"], ["a.txt", "b/c.txt"]
    if action.choices:
        choice = next(iter(action.choices))
        return choice, choice
    if action.type in (int, float):
        return "7", action.type("7")
    return f"{name}-value", f"{name}-value"


@pytest.mark.parametrize("command", WITH_TASK)
def test_task_passes_every_option_on_unchanged(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setattr(cli, "main", fake_main)  # the module tasks.py calls
    options = _options(command)
    body = TASKS[command].body
    kwargs, expected = {}, {}
    for parameter in list(inspect.signature(body).parameters)[1:]:  # after the Context
        name = parameter.rstrip("_").replace("_", "-")  # invoke's name for it
        kwargs[parameter], expected[options[name].dest] = _sample(name, options[name])
    TASKS[command](MockContext(), **kwargs)
    (argv,) = seen
    parsed = cli.build_parser().parse_args(argv)
    assert parsed.command == command
    for dest, value in expected.items():
        assert getattr(parsed, dest) == value, f"{command}: {dest}"
