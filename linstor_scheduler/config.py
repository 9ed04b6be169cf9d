"""Command-line options that can also be set by environment variables.

Every flag of every subcommand has an environment variable (``LINSTOR_SCHEDULER_<FLAG>`` unless a
well-known name such as ``LS_CONTROLLERS`` exists), because in Kubernetes manifests env vars are
easier to patch than argument lists. The flag wins over the variable; ``--help`` shows both.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

ENV_PREFIX = "LINSTOR_SCHEDULER_"


class ConfigError(Exception):
    """A setting that cannot work (a missing file, a bad combination): one line, exit code 2."""


def setting(flag: str, env: str | None = None) -> str:
    """How an error line names a setting: ``--storm-share (or LINSTOR_SCHEDULER_STORM_SHARE)``.
    ``env`` where the flag's variable is not the derived one (``NODE_NAME``, ``LS_CONTROLLERS``)."""
    return f"{flag} (or {env or env_name(flag)})"


def invalid(flag: str, value: Any, expected: str, env: str | None = None) -> ConfigError:
    """A value that parsed but cannot work, checked where the service is built: ``--storm-share (or
    LINSTOR_SCHEDULER_STORM_SHARE) is 2: expected ...``. Raise it: exit code 2, one line."""
    shown = repr(value) if isinstance(value, str) else _number(value)
    return ConfigError(f"{setting(flag, env)} is {shown}: expected {expected}")


def exceeds(args: argparse.Namespace, flag: str, other: str, why: str, *, or_equal: bool = False) -> None:
    """A relation between two flags, checked where the service is built: ``flag`` must be more than
    (``or_equal``: at least) ``other``, e.g. fencing's ``--max-staleness`` above its ``--poll-interval``
    (else every pass finds its own data stale and nothing ever acts). The line names both settings."""
    value, bound = getattr(args, dest(flag)), getattr(args, dest(other))
    if value > bound or (or_equal and value == bound):
        return
    relation = "at least" if or_equal else "more than"
    raise invalid(flag, value, f"{relation} {setting(other)}, which is {_number(bound)}: {why}")


def dest(flag: str) -> str:
    """``--poll-interval`` -> ``poll_interval``, the attribute argparse sets."""
    return flag.lstrip("-").replace("-", "_")


def parsed(flag: str, parse: Callable[[str], Any], text: str, env: str | None = None) -> Any:
    """``parse(text)`` for a flag whose value has a syntax of its own (``--score-weights``,
    ``--controllers``): the parser's ``ValueError`` becomes a ``ConfigError`` naming the setting."""
    try:
        return parse(text)
    except ValueError as exc:
        raise ConfigError(f"{setting(flag, env)} is {text!r}: {exc}") from None


def _number(value: Any) -> str:
    """``0.5``, ``30``, ``1e+09``: a float as an operator typed it, not ``30.0``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def env_name(flag: str) -> str:
    """``--poll-interval`` -> ``LINSTOR_SCHEDULER_POLL_INTERVAL``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


_EXPECTS = {float: "a number", int: "a whole number", _parse_bool: "true or false"}


def expects(type: Callable[[str], Any], choices: Sequence[str] | None = None) -> str:
    """What a value must look like, in words for the error line."""
    if choices:
        return "one of " + ", ".join(choices)
    return _EXPECTS.get(type, getattr(type, "expects", "a valid value"))


@dataclass(frozen=True)
class EnvDefault:
    """A default read from an environment variable, converted only once its subcommand is chosen:
    a bad variable meant for ``sync-node`` must not break ``extender`` or ``--version``."""

    var: str
    flag: str
    raw: str
    type: Callable[[str], Any]
    choices: Sequence[str] | None = None

    def convert(self) -> Any:
        try:
            value = self.type(self.raw)
        except (TypeError, ValueError):
            value = _INVALID
        if value is _INVALID or (self.choices and value not in self.choices):
            raise ValueError(f"environment variable {self.var}={self.raw!r} (for {self.flag}): "
                             f"expected {expects(self.type, self.choices)}")
        return value


_INVALID = object()


@dataclass(frozen=True)
class Range:
    """The values a numeric option can work with, declared with the option (``add_option(...,
    above=0)``) and checked by ``Parser`` for a flag and for its variable alike: a value that cannot
    work (``--poll-interval 0``, ``--port 70000``) is refused at start, not met as a silent fault.
    ``above`` is strict (a duration of 0 never waits), ``minimum`` and ``maximum`` are inclusive."""

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None

    def __bool__(self) -> bool:
        return (self.minimum, self.maximum, self.above) != (None, None, None)

    def admits(self, value: float) -> bool:
        """Also false for ``nan`` and ``inf`` (``float`` parses both): no duration, share or rate means either."""
        return (math.isfinite(value) and (self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum) and (self.above is None or value > self.above))

    def words(self) -> str:
        """``from 1 to 65535``, ``greater than 0 and at most 1``, ``at least 0``: for ``--help``, the docs
        (docs/configuration.md's "accepted" column) and the error line."""
        if self.minimum is not None and self.maximum is not None:
            return f"from {_number(self.minimum)} to {_number(self.maximum)}"
        parts = []
        if self.above is not None:
            parts.append(f"greater than {_number(self.above)}")
        if self.minimum is not None:
            parts.append(f"at least {_number(self.minimum)}")
        if self.maximum is not None:
            parts.append(f"at most {_number(self.maximum)}")
        return " and ".join(parts)

    def expected(self, type: Callable[[str], Any]) -> str:
        words = self.words()
        return f"{expects(type)} {'of ' if words.startswith('at ') else ''}{words}"  # "a number of at least 0"


PORT = Range(1, 65535)  # a port a client is told in advance (kube-scheduler's urlPrefix, a Service)
PORT_OR_0 = Range(0, 65535)  # where the flag documents a meaning of 0 ("do not serve", "any free port")


class Parser(argparse.ArgumentParser):
    """argparse with environment-variable defaults resolved after parsing, and errors on one line
    (``linstor-scheduler extender: error: ...``, exit code 2): a configuration mistake in a pod's
    log is one line that names the flag or variable, not a usage screen or a traceback."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        ns, rest = super().parse_known_args(args, namespace)
        for key, value in vars(ns).items():
            if isinstance(value, EnvDefault):
                try:
                    setattr(ns, key, value.convert())
                except ValueError as exc:
                    self.error(str(exc))
        self._check_ranges(ns)
        return ns, rest

    def _check_ranges(self, ns: argparse.Namespace) -> None:
        """Each option's declared ``Range`` (``add_option``), on the value in force, whether it came
        from the flag, its variable or the default: the same one line as a value that does not parse."""
        for action in self._actions:
            allowed: Range | None = getattr(action, "range", None)
            value = getattr(ns, action.dest, None)
            if allowed and isinstance(value, int | float) and not allowed.admits(value):
                flag = max(action.option_strings, key=len)
                self.error(str(invalid(flag, value, allowed.expected(action.type), getattr(action, "env", None))))

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _shown(default: Any, help: str) -> str:
    """`` (default: 10)`` for --help; nothing for an empty default or one the help text words itself."""
    if default is None or default == "" or "default" in help:
        return ""
    if isinstance(default, float):
        return f" (default: {round(default, 3):g})"
    return f" (default: {default})"


def add_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    *,
    help: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    env: str | None = None,
    choices: list[str] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    range: Range | None = None,
) -> None:
    """Add ``flag`` whose default comes from its environment variable when that is set (checked
    when its subcommand runs, not when the parser is built). A numeric option declares the values
    that can work (``minimum``/``maximum`` inclusive, ``above`` strict, or a ready ``range`` such as
    ``PORT``): ``Parser`` refuses any other at start, and ``--help`` states them."""
    var = env or env_name(flag)
    raw = os.environ.get(var)
    value = default if raw is None else EnvDefault(var, flag, raw, type, choices)
    allowed = range or Range(minimum, maximum, above)
    accepts = f" [accepted: {allowed.words()}]" if allowed else ""
    action = parser.add_argument(flag, default=value, type=type, choices=choices,
                                 help=f"{help}{_shown(default, help)}{accepts} [env {var}]")
    action.range = allowed  # type: ignore[attr-defined]  # read by Parser._check_ranges and the flag-walking test
    action.env = var  # type: ignore[attr-defined]  # the variable the error line names


def add_output(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, help: str = "output format") -> None:
    """``--output table|json``, the same for every subcommand that prints a report: a table for
    people, JSON for tools."""
    add_option(parser, "--output", default="table", choices=["table", "json"], help=help)


def add_snapshot(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                 help: str = "read this snapshot file instead of the live cluster (-: standard input)") -> None:
    """``--snapshot FILE``: the subcommands that can judge a snapshot (``snapshot``'s document) rather
    than the live cluster."""
    add_option(parser, "--snapshot", help=help)


def add_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, *, help: str, env: str | None = None,
    default: bool | None = False,
) -> None:
    """A ``--x/--no-x`` switch; its environment variable (true/false) overrides ``default``."""
    var = env or env_name(flag)
    raw = os.environ.get(var)
    value = default if raw is None else EnvDefault(var, flag, raw, _parse_bool)
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=f"{help} [env {var}]")
