"""Every subcommand of the image answers --help and --version, as each manifest's container runs it
(its user, read-only root filesystem, dropped capabilities); the image's user has a home."""

from __future__ import annotations

import argparse
import re

import pytest

from linstor_scheduler import __version__
from linstor_scheduler.cli import build_parser

from .conftest import run_once
from .pod import Workload

DEVELOPMENT_ONLY = {"demo"}  # devkit: not in the image (.dockerignore, Dockerfile)


def subcommands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(set(sub.choices) - DEVELOPMENT_ONLY)


def our_containers(manifests) -> list[tuple[Workload, str]]:
    found = []
    for o in manifests:
        if o["kind"] in ("Deployment", "DaemonSet"):
            for c in o["spec"]["template"]["spec"]["containers"]:
                if c["image"].startswith("ghcr.io/linstor-scheduler/"):
                    found.append((Workload(manifests, o["kind"], o["metadata"]["name"]), c["name"]))
    return found


def test_the_image_offers_every_subcommand_but_the_development_ones(image, manifests, tmp_path):
    workload, container = our_containers(manifests)[0]
    done = run_once(workload, container, image, tmp_path, args=["--help"])
    listed = set(re.findall(r"^    (\S+)", done.stdout, re.M))
    assert done.returncode == 0 and listed == set(subcommands()), done.stdout + done.stderr
    assert not listed & DEVELOPMENT_ONLY


@pytest.mark.parametrize("command", subcommands())
def test_help_and_version_of_each_subcommand(image, manifests, tmp_path, command):
    """Under the first manifest's container that runs this subcommand, else the scheduler's extender."""
    containers = our_containers(manifests)
    workload, container = next(((w, c) for w, c in containers if w.container(c)["args"][0] == command),
                               containers[0])
    helped = run_once(workload, container, image, tmp_path, args=[command, "--help"])
    version = run_once(workload, container, image, tmp_path, args=[command, "--version"])
    assert helped.returncode == 0 and helped.stdout.startswith(f"usage: linstor-scheduler {command}"), helped.stderr
    assert version.returncode == 0 and version.stdout == f"linstor-scheduler {__version__}\n", version.stderr


def test_every_container_has_a_home_and_runs_as_its_manifest_says(image, manifests, tmp_path):
    """HOME comes from the image's passwd: / without an entry for the user (65532 had none)."""
    seen = {}
    for workload, container in our_containers(manifests):
        done = run_once(workload, container, image, tmp_path, args=[], command=[
            "sh", "-c", 'echo "$(id -u) $HOME"; touch /x 2>/dev/null && echo writable || true'])
        assert done.returncode == 0, done.stderr
        seen[f"{workload.name}/{container}"] = done.stdout.split("\n")[0]
        assert "writable" not in done.stdout, f"{workload.name}: the root filesystem must be read-only"
    assert seen.pop("linstor-scheduler-sync-node/sync-node") == "0 /root"
    assert set(seen.values()) == {"65532 /home/nonroot"} and len(seen) >= 5, seen
