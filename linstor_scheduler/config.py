"""Command-line options that can also be set by environment variables.

Every flag of every subcommand has an environment variable (``LINSTOR_SCHEDULER_<FLAG>`` unless a
well-known name such as ``LS_CONTROLLERS`` exists), because in Kubernetes manifests env vars are
easier to patch than argument lists. The flag wins over the variable; ``--help`` shows both.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

ENV_PREFIX = "LINSTOR_SCHEDULER_"


def env_name(flag: str) -> str:
    """``--poll-interval`` -> ``LINSTOR_SCHEDULER_POLL_INTERVAL``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true/false)")


def add_option(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    help: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    env: str | None = None,
    choices: list[str] | None = None,
) -> None:
    """Add ``flag`` whose default comes from its environment variable when that is set."""
    var = env or env_name(flag)
    raw = os.environ.get(var)
    value = default
    if raw is not None:
        try:
            value = type(raw)
        except (TypeError, ValueError) as exc:
            parser.error(f"environment variable {var}={raw!r} is invalid for {flag}: {exc}")
    shown = "" if default is None else f" (default: {default})"
    parser.add_argument(
        flag, default=value, type=type, choices=choices, help=f"{help}{shown} [env {var}]"
    )


def add_flag(
    parser: argparse.ArgumentParser, flag: str, *, help: str, env: str | None = None, default: bool | None = False
) -> None:
    """A ``--x/--no-x`` switch; its environment variable (true/false) overrides ``default``."""
    var = env or env_name(flag)
    raw = os.environ.get(var)
    try:
        value = _parse_bool(raw) if raw is not None else default
    except ValueError as exc:
        parser.error(f"environment variable {var}: {exc}")
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=f"{help} [env {var}]")
