"""Every numeric flag of every subcommand declares the values that can work, and the parser refuses
the others: one line naming the flag and its variable, exit code 2.

The walk goes over the real parser (``build_parser``), so a new ``int``/``float`` option without a
range (``add_option(..., above=0)``, ``minimum=``, ``maximum=``, ``range=PORT``) fails here, as does a
range that refuses its own default or a value at its edge. In-process for speed; the subprocess
cases an operator meets are in test_cli_config_errors.py.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from linstor_scheduler.cli import build_parser
from linstor_scheduler.config import Range

DOC = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()

# (subcommand, flag) -> why any number is meaningful. Keep it short: an entry here is a flag whose
# every value works. Empty today: every numeric flag has values that cannot work.
EXEMPT: dict[tuple[str, str], str] = {}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def numeric_options() -> Iterator[tuple[str, argparse.Action]]:
    for name, sub in subparsers().items():
        for action in sub._actions:
            if action.type in (int, float):
                yield name, action


def flag_of(action: argparse.Action) -> str:
    return max(action.option_strings, key=len)


OPTIONS = [pytest.param(name, flag_of(action), id=f"{name} {flag_of(action)}") for name, action in numeric_options()]


def declared(command: str, flag: str) -> tuple[argparse.Action, Range]:
    action = next(a for name, a in numeric_options() if name == command and flag_of(a) == flag)
    return action, getattr(action, "range", Range())


def outside(allowed: Range, type: type) -> list[str]:
    """A value just past each edge of the range: the edge itself for a strict bound."""
    step = 1 if type is int else 0.5
    values: list[float] = []
    if allowed.above is not None:
        values.append(allowed.above)
    if allowed.minimum is not None:
        values.append(allowed.minimum - step)
    if allowed.maximum is not None:
        values.append(allowed.maximum + step)
    return [str(type(v)) for v in values]


def inside(allowed: Range, type: type) -> list[str]:
    """The edges a range admits: a refusal there would refuse a value that works."""
    values: list[float] = []
    if allowed.above is not None:
        values.append(allowed.above + (1 if type is int else 0.001))
    values += [v for v in (allowed.minimum, allowed.maximum) if v is not None]
    return [str(type(v)) for v in values]


def refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_the_walk_finds_every_subcommand_s_numeric_flags():
    found = {(name, flag_of(a)) for name, a in numeric_options()}
    assert {("extender", "--port"), ("fencing", "--max-staleness"), ("sync-node", "--port"),
            ("webhook", "--metrics-port"), ("demo", "--port"), ("drill", "--storm-share"),
            ("locality-exporter", "--lease-duration"), ("snapshot", "--keep-alive-timeout")} <= found


@pytest.mark.parametrize("command,flag", OPTIONS)
def test_every_numeric_flag_declares_its_range(command, flag):
    action, allowed = declared(command, flag)
    if (command, flag) in EXEMPT:
        return
    assert allowed, f"{command} {flag} accepts any number: declare its range (add_option minimum/maximum/above)"
    assert allowed.admits(action.default), f"{command} {flag}: the default {action.default} is out of its range"
    assert f"[accepted: {allowed.words()}]" in (action.help or ""), "--help states the range"


@pytest.mark.parametrize("command,flag", OPTIONS)
def test_a_value_outside_the_range_is_refused_naming_the_flag(command, flag, capsys):
    action, allowed = declared(command, flag)
    if (command, flag) in EXEMPT:
        return
    var = action.env  # type: ignore[attr-defined]
    for value in outside(allowed, action.type):  # type: ignore[arg-type]
        line = refusal([command, f"{flag}={value}"], capsys)
        assert line.startswith(f"linstor-scheduler {command}: error: {flag} (or {var}) is "), line
        assert f"expected {allowed.expected(action.type)}" in line and allowed.words() in line
    for value in inside(allowed, action.type):  # type: ignore[arg-type]
        assert getattr(build_parser().parse_args([command, f"{flag}={value}"]), action.dest) == action.type(value)


@pytest.mark.parametrize("command,flag", OPTIONS)
def test_the_variable_is_held_to_the_same_range(command, flag, capsys, monkeypatch):
    action, allowed = declared(command, flag)
    if (command, flag) in EXEMPT:
        return
    var = action.env  # type: ignore[attr-defined]
    monkeypatch.setenv(var, outside(allowed, action.type)[0])  # type: ignore[arg-type]
    line = refusal([command], capsys)
    assert f"{flag} (or {var}) is " in line and allowed.words() in line


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_not_a_number_and_infinity_are_refused(value, capsys):
    line = refusal(["fencing", f"--poll-interval={value}"], capsys)
    assert "--poll-interval (or LINSTOR_SCHEDULER_POLL_INTERVAL) is " in line


def test_0_stays_valid_where_it_means_something():
    """``--port 0``: no health port (workers), any free port (demo); ``--poll-min-factor 0``: off;
    ``--grace-period 0``: act at the first sight of a fault; ``--taint-stable-seconds 0``."""
    for argv in (["sync-node", "--port", "0"], ["fencing", "--port", "0", "--grace-period", "0",
                                                 "--taint-stable-seconds", "0"],
                 ["demo", "--port", "0"], ["extender", "--poll-min-factor", "0"]):
        build_parser().parse_args(argv)


def documented_ranges() -> dict[tuple[str, str], str]:
    """docs/configuration.md's "accepted" cells, by (subcommand, flag). A section is one subcommand's
    (``## `fencing```), several listed in parentheses (``## LINSTOR (extender, explain, ...)``), or
    every subcommand's (``## Common``)."""
    commands = set(subparsers())
    found: dict[tuple[str, str], str] = {}
    applies: set[str] = set()
    for line in DOC.splitlines():
        if line.startswith("## "):
            own = re.match(r"## `([a-z-]+)`", line)
            listed = re.search(r"\(([^)]*)\)", line)
            applies = ({own.group(1)} if own else commands if line.startswith("## Common")
                       else {c.strip() for c in listed.group(1).split(",")} if listed else set())
        elif line.startswith("| `--"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            for flag in re.findall(r"`(--[a-z-]+)`", cells[0]):
                found.update({(command, flag): cells[3] for command in applies})
    return found


@pytest.mark.parametrize("command,flag", OPTIONS)
def test_the_docs_state_each_range(command, flag):
    _, allowed = declared(command, flag)
    assert documented_ranges().get((command, flag)) == allowed.words(), (
        f"docs/configuration.md: the 'accepted' cell of {command} {flag} should read {allowed.words()!r}")
