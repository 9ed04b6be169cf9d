"""``linstor-scheduler extender`` as deploy/ runs it, over real sockets: the verbs on loopback only,
health and metrics on their own port, reachable from the pod network, and nothing else there.

The child process is the real CLI with its defaults (no --listen-address): what must NOT be reachable
is checked on this machine's own non-loopback address, where a pod on the same network would knock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import yaml

from devkit import kube_objects as k
from devkit.demo_cluster import demo_snapshot
from scheduler_extender.scoring import all_node_names
from scheduler_extender.snapshot import state_from_snapshot

from .waiting import free_ports, stop_child, wait_for


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (127.0.0.0/8 is loopback as a whole: a
    second one such as 127.0.0.2 would prove nothing)."""
    candidates: list[str] = []
    ip = shutil.which("ip")
    if ip:
        out = subprocess.run([ip, "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True,
                             check=False).stdout
        candidates += [line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3]
    with contextlib.suppress(OSError):
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect(("192.0.2.1", 9))  # no packet is sent: only the route's source address is chosen
        candidates.append(udp.getsockname()[0])
    for address in candidates:
        if not address.startswith("127.") and address != "0.0.0.0":
            with contextlib.suppress(OSError), socket.socket() as s:
                s.bind((address, 0))  # really ours
                return address
    return None


@pytest.fixture(scope="module")
def outside() -> str:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address: 'unreachable from the network' cannot be "
                    "shown here (a second loopback address would be reachable only from here anyway)")
    return address


@pytest.fixture(scope="module")
def extender(tmp_path_factory) -> Iterator[dict[str, object]]:
    """The real CLI, deploy/'s way: env vars for the ports, the addresses left at their defaults."""
    snapshot = tmp_path_factory.mktemp("snap") / "snapshot.yaml"
    doc = demo_snapshot()
    snapshot.write_text(yaml.safe_dump(doc))
    verbs_port, metrics_port = free_ports(2)
    env = {**os.environ, "LINSTOR_SCHEDULER_PORT": str(verbs_port), "LINSTOR_SCHEDULER_METRICS_PORT": str(metrics_port)}
    for var in ("LINSTOR_SCHEDULER_LISTEN_ADDRESS", "LINSTOR_SCHEDULER_METRICS_ADDRESS"):
        env.pop(var, None)
    child = subprocess.Popen([sys.executable, "-m", "linstor_scheduler.cli", "extender", "--snapshot", str(snapshot)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        assert child.poll() is None, child.stdout.read().decode()
        try:
            up = httpx.get(f"http://127.0.0.1:{metrics_port}/healthz").status_code == 200
            return up and httpx.get(f"http://127.0.0.1:{verbs_port}/docs").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, timeout=30, what="the extender's two listeners")
        nodes = all_node_names(state_from_snapshot(doc, now=0.0))
        yield {"verbs": verbs_port, "metrics": metrics_port, "nodes": nodes, "child": child}
    finally:
        stop_child(child)
    output = child.stdout.read().decode()
    assert child.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output


def verb_body(nodes: list[str]) -> dict[str, object]:
    return {"Pod": k.pod("p", claims=["nothing-known"]), "NodeNames": nodes}


VERBS = ("/filter", "/prioritize", "/explain")


def test_verbs_answer_on_loopback(extender):
    for verb in VERBS:
        r = httpx.post(f"http://127.0.0.1:{extender['verbs']}{verb}", json=verb_body(extender["nodes"]))
        assert r.status_code == 200, (verb, r.text)
    assert httpx.post(f"http://127.0.0.1:{extender['verbs']}/filter",
                      json=verb_body(extender["nodes"])).json()["NodeNames"] == extender["nodes"]


def test_verbs_are_unreachable_from_the_network(extender, outside):
    for verb in VERBS:
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"http://{outside}:{extender['verbs']}{verb}", json=verb_body(extender["nodes"]))


def test_health_and_metrics_are_reachable_from_the_network(extender, outside):
    base = f"http://{outside}:{extender['metrics']}"
    assert httpx.get(base + "/healthz").text == "ok"
    ready = httpx.get(base + "/readyz")
    assert ready.status_code == 200 and ready.json()["mode"] == "snapshot"
    metrics = httpx.get(base + "/metrics")
    assert metrics.status_code == 200 and "linstor_scheduler_ready 1.0" in metrics.text


@pytest.mark.parametrize("host", ["outside", "127.0.0.1"])
def test_the_metrics_port_serves_no_verb(extender, outside, host):
    base = f"http://{outside if host == 'outside' else host}:{extender['metrics']}"
    for verb in VERBS:
        assert httpx.post(base + verb, json=verb_body(extender["nodes"])).status_code == 404, verb
    for path in ("/docs", "/openapi.json", "/"):
        assert httpx.get(base + path).status_code == 404, path


def test_the_verbs_port_serves_no_metrics(extender):
    base = f"http://127.0.0.1:{extender['verbs']}"
    for path in ("/metrics", "/healthz", "/readyz"):
        assert httpx.get(base + path).status_code == 404, path


def test_one_port_for_both_is_refused(tmp_path):
    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text(yaml.safe_dump(demo_snapshot()))
    out = subprocess.run([sys.executable, "-m", "linstor_scheduler.cli", "extender", "--snapshot", str(snapshot),
                          "--port", "8099", "--metrics-port", "8099"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 2 and "--port and --metrics-port must differ" in out.stderr


def test_defaults_keep_the_verbs_on_loopback():
    from linstor_scheduler.cli import build_parser
    from scheduler_extender.wiring import is_loopback

    with pytest.MonkeyPatch.context() as env:
        env.delenv("LINSTOR_SCHEDULER_LISTEN_ADDRESS", raising=False)
        args = build_parser().parse_args(["extender"])
    assert is_loopback(args.listen_address) and args.port != args.metrics_port
    assert [is_loopback(a) for a in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.1", "")] == [
        True, True, True, False, False, False]
