"""Subcommands of this component (filled in by its issue)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Nothing yet."""
