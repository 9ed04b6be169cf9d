"""The built image, the rendered manifests and a way to run one of their containers (``make image-test``).

These tests need podman and the image (``make image`` builds it; ``make image-test`` builds then runs
them): a missing one fails them, it never skips them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from admission.tls import generate_bundle
from devkit.kube_standin import KubeStandin
from linstor_scheduler.httpserver import ServerThread
from tests.waiting import wait_for

from .pod import InCluster, Workload, podman_args

ROOT = Path(__file__).resolve().parents[2]
PODMAN = ROOT / "image" / "podman"
NAMESPACE = "linstor-scheduler"
CONNECTION = "linstor-scheduler-linstor"  # the one ConfigMap that says where LINSTOR answers


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections there: a server's probe port can answer before its main
    port listens (the side port is started first)."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(PODMAN), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def image() -> str:
    name = os.environ.get("LINSTOR_SCHEDULER_IMAGE", "ghcr.io/linstor-scheduler/linstor-scheduler:0.1.0")
    assert shutil.which("podman"), "podman is not installed (apt-get install podman runc)"
    assert podman("image", "exists", name, check=False).returncode == 0, f"no image {name}: run `make image`"
    return name


@pytest.fixture(scope="session")
def manifests() -> tuple[dict[str, Any], ...]:
    """What ``kubectl apply -k deploy/`` applies."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render deploy/ (kubectl kustomize)"
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy")], capture_output=True, text=True, check=True)
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def with_linstor_at(manifests: tuple[dict[str, Any], ...], url: str) -> tuple[dict[str, Any], ...]:
    """The manifests after the operator's one edit for LINSTOR: ``LS_CONTROLLERS`` in its ConfigMap."""
    objs = copy.deepcopy(manifests)
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == CONNECTION]
    cm["data"]["LS_CONTROLLERS"] = url
    return objs


@contextlib.contextmanager
def https_api(ks: KubeStandin, workdir: Path) -> Iterator[InCluster]:
    """The Kubernetes API stand-in over HTTPS, as a pod reaches the API server: a CA in the service
    account's ca.crt and a certificate for the address in KUBERNETES_SERVICE_HOST."""
    bundle = generate_bundle(["127.0.0.1"])
    _, cert, key = bundle.write(workdir / "api-tls")
    with ServerThread(ks.app, on_stop=ks.close_streams, ssl_certfile=str(cert), ssl_keyfile=str(key)) as srv:
        yield InCluster("127.0.0.1", srv.port, bundle.ca_pem)


def run_once(workload: Workload, container: str, image: str, workdir: Path, *, timeout: float = 120,
             **kw: Any) -> subprocess.CompletedProcess[str]:
    """The container run to its end (``--once``, ``--help``): its exit code and output."""
    return podman("run", *podman_args(workload, container, image=image, workdir=workdir, **kw),
                  timeout=timeout, check=False)


class Running:
    """A long-running container (a server), its output in a file; stopped as the kubelet stops it."""

    def __init__(self, workload: Workload, container: str, image: str, workdir: Path, **kw: Any) -> None:
        argv = podman_args(workload, container, image=image, workdir=workdir, **kw)
        self.name = argv[argv.index("--name") + 1]
        self.log = workdir / f"{self.name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([str(PODMAN), "run", *argv], stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_until(self, predicate: Any, what: str, timeout: float = 60) -> None:
        def done() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} ended ({self.process.returncode}) before {what}:\n{self.output()}")
            return bool(predicate())

        wait_for(done, timeout=timeout, what=what)

    def stop(self) -> int:
        """SIGTERM with a grace period, as the kubelet stops a pod (podman stop)."""
        if self.alive():
            podman("stop", "--time", "15", self.name, check=False, timeout=60)
        return self.process.wait(60)


@contextlib.contextmanager
def running(workload: Workload, container: str, image: str, workdir: Path, **kw: Any) -> Iterator[Running]:
    started = Running(workload, container, image, workdir, **kw)
    try:
        yield started
    finally:
        started.stop()
