"""Command-line options that can also be set by environment variables.

Every flag of every subcommand has an environment variable (``LINSTOR_SCHEDULER_<FLAG>`` unless a
well-known name such as ``LS_CONTROLLERS`` exists), because in Kubernetes manifests env vars are
easier to patch than argument lists. The flag wins over the variable; ``--help`` shows both.
"""

from __future__ import annotations

import argparse
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
    shown = f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)
    return ConfigError(f"{setting(flag, env)} is {shown}: expected {expected}")


def parsed(flag: str, parse: Callable[[str], Any], text: str, env: str | None = None) -> Any:
    """``parse(text)`` for a flag whose value has a syntax of its own (``--score-weights``,
    ``--controllers``): the parser's ``ValueError`` becomes a ``ConfigError`` naming the setting."""
    try:
        return parse(text)
    except ValueError as exc:
        raise ConfigError(f"{setting(flag, env)} is {text!r}: {exc}") from None


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
        return ns, rest

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
) -> None:
    """Add ``flag`` whose default comes from its environment variable when that is set (checked
    when its subcommand runs, not when the parser is built)."""
    var = env or env_name(flag)
    raw = os.environ.get(var)
    value = default if raw is None else EnvDefault(var, flag, raw, type, choices)
    parser.add_argument(flag, default=value, type=type, choices=choices,
                        help=f"{help}{_shown(default, help)} [env {var}]")


def add_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, *, help: str, env: str | None = None,
    default: bool | None = False,
) -> None:
    """A ``--x/--no-x`` switch; its environment variable (true/false) overrides ``default``."""
    var = env or env_name(flag)
    raw = os.environ.get(var)
    value = default if raw is None else EnvDefault(var, flag, raw, _parse_bool)
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=f"{help} [env {var}]")
