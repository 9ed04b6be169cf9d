"""The LINSTOR connection flags every subcommand shares, and the client built from them."""

from __future__ import annotations

import argparse

from linstor_scheduler.config import add_option, parsed

from .client import LinstorClient, parse_controllers


def add_linstor_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LINSTOR")
    add_option(group, "--controllers", env="LS_CONTROLLERS", default="linstor://localhost",
               help="LINSTOR controller URLs, comma-separated (linstor://, linstor+ssl://, http(s)://)")
    add_option(group, "--linstor-timeout", type=float, default=10.0, above=0,
               help="timeout of one LINSTOR request, seconds")
    add_option(group, "--linstor-ca-file", help="CA bundle to verify the controller's certificate")
    add_option(group, "--linstor-cert-file", help="client certificate (PEM) for HTTPS with client auth")
    add_option(group, "--linstor-key-file", help="client key (PEM) for HTTPS with client auth")


def make_linstor_client(args: argparse.Namespace) -> LinstorClient:
    """A bad ``--controllers`` is a ``ConfigError`` naming it (exit 2)."""
    return LinstorClient(
        parsed("--controllers", parse_controllers, args.controllers, env="LS_CONTROLLERS"),
        timeout=args.linstor_timeout,
        ca_file=args.linstor_ca_file, cert_file=args.linstor_cert_file, key_file=args.linstor_key_file,
    )
