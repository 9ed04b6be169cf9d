"""``linstor-scheduler``: one CLI, a subcommand per job. Every flag can also be set by env var.

The core names no component: each one declares a ``register(sub, parent)`` under the entry-point
group ``linstor_scheduler.commands`` (pyproject.toml) and adds its own subcommands. A registration
whose package is not installed is skipped: the container image carries no ``devkit``, so no
``demo``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from . import __version__, httpserver
from .config import ConfigError, Parser, add_option
from .httpserver import KEEP_ALIVE_SECONDS
from .logs import setup_logging

COMMANDS_GROUP = "linstor_scheduler.commands"
log = logging.getLogger("linstor_scheduler")


def registrations() -> list[Callable[..., None]]:
    """Every installed component's ``register``, by entry-point name (the order of --help)."""
    declared = entry_points(group=COMMANDS_GROUP)
    if not declared:  # metadata of an install older than the entry points: say so, not "invalid choice"
        raise RuntimeError(f"no subcommands registered (entry points {COMMANDS_GROUP!r}): reinstall the "
                           "package, e.g. `make .venv/.installed` or `pip install -e .`")
    found = []
    for ep in declared:
        try:
            found.append(ep.load())
        except ModuleNotFoundError as exc:  # only a package left out of this install (devkit in the image)
            if exc.name != ep.value.split(".")[0]:
                raise
            log.debug("subcommands of %s not installed: %s", ep.value, exc)
    return found


def deferred(target: str) -> Callable[[argparse.Namespace], int]:
    """``"package.wiring:run"`` as a subcommand's func, imported when the subcommand runs: ``--help``
    does not pay for FastAPI, uvicorn and the kubernetes client."""
    module, _, name = target.partition(":")

    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), name)(args) or 0)

    run.__qualname__ = run.__name__ = name
    return run


VERSION = f"linstor-scheduler {__version__}"


def common_options() -> argparse.ArgumentParser:
    parent = Parser(add_help=False)
    # Also after a subcommand: `kubectl exec ... -- linstor-scheduler fencing --version` is what an
    # operator types next to a manifest's args.
    parent.add_argument("--version", action="version", version=VERSION)
    group = parent.add_argument_group("logging")
    add_option(group, "--log-level", help="log level", default="info",
               choices=["debug", "info", "warning", "error"])
    add_option(group, "--log-format", help="log line format", default="text", choices=["text", "json"])
    http = parent.add_argument_group("HTTP servers")
    add_option(http, "--keep-alive-timeout", type=float, default=KEEP_ALIVE_SECONDS, above=0,
               help="seconds an idle client connection stays open (above kube-scheduler's 90 s)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="linstor-scheduler",
        description="Place pods next to their LINSTOR/DRBD replicas, keep storage pools in step with LVM, "
        "and move pods off nodes that lost their storage.",
    )
    parser.add_argument("--version", action="version", version=VERSION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parent = common_options()
    for register in registrations():  # each component adds its own subcommands
        register(sub, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    httpserver.configure(keep_alive=args.keep_alive_timeout)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:  # a setting to fix: the same exit code as a bad flag
        return fatal(args, exc, 2)
    except Exception as exc:  # a clear one-line error for the operator; --log-level debug for more
        log.debug("fatal error", exc_info=True)
        return fatal(args, exc, 1)


def fatal(args: argparse.Namespace, exc: Exception, code: int) -> int:
    """The one line saying why the process ends: plain text, or a JSON object like every other line
    under ``--log-format json`` (a log collector parses it with the rest)."""
    hint = ""
    if "urllib3" in sys.modules:  # the Kubernetes client's transport was used: say which setting chose its server
        from .kube.client import where_to_look

        hint = where_to_look(exc)
    line = f"linstor-scheduler {args.command}: error: {exc}{hint}"
    if args.log_format == "json":
        log.error("%s", line)
    else:
        print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
