"""The ``demo`` subcommand: registered by devkit itself, so the product's image (which does not carry
devkit) simply has no ``demo``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from linstor_scheduler.config import PORT_OR_0, ConfigError, add_flag, add_option, setting


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    d = sub.add_parser("demo", parents=[parent], help="the whole system on a built-in cluster (no Kubernetes)",
                       description="Run the LINSTOR emulator and the Kubernetes API stand-in with three nodes, and "
                       "every component against them, and tell what happens: tagged LVM becomes pools and "
                       "StorageClasses, a pod is placed next to its replica, its node loses storage, fencing "
                       "moves it, it is placed next to the surviving replica. --extender-only: the extender on a "
                       "static demo cluster, with per-node verdicts for sample pods.")
    add_option(d, "--port", type=int, default=8099, range=PORT_OR_0,
               help="port of the demo extender (0: any free port)")
    add_option(d, "--metrics-port", type=int, default=8098, range=PORT_OR_0,
               help="port of the demo extender's /healthz, /readyz, /metrics, apart from the verbs as in the "
               "deployed extender (0: any free port)")
    add_flag(d, "--serve", default=None,
             help="keep serving after printing, until Ctrl-C (default: when run on a terminal)")
    add_flag(d, "--extender-only", help="only the extender on the static demo cluster (sample pods' verdicts)")
    d.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.port == args.metrics_port != 0:
        raise ConfigError(f"{setting('--port')} and {setting('--metrics-port')} must differ (both {args.port}): "
                          "the verbs and the metrics are served apart, as by the deployed extender")
    serve = sys.stdout.isatty() if args.serve is None else args.serve
    if args.extender_only:
        from .extender_demo import run

        return run(port=args.port, serve=serve, metrics_port=args.metrics_port)
    from .story import run as story

    if args.log_level == "info":  # the story narrates what the components do: their INFO lines would repeat it
        logging.getLogger().setLevel(logging.WARNING)
    result = story(port=args.port, serve=serve, metrics_port=args.metrics_port)
    return 0 if result.second_node and result.second_node != result.first_node else 1
