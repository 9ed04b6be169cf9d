"""``linstor-scheduler extender`` as deploy/ runs it, over real sockets: the verbs on loopback only,
health and metrics on their own port, reachable from the pod network, and nothing else there.

The child process is the real CLI with its defaults (no --listen-address), run in a network
namespace this module creates and removes (``ip netns``): besides its loopback, that namespace's
``lo`` carries a non-loopback address, ``OUTSIDE`` (198.18.0.0/15, reserved for benchmarking), where
a pod on the same network would knock. Every probe runs inside the namespace too, so no packet of
these tests leaves it (the rule of this workplace: tests send traffic to loopback or to namespaces
they create, never to this machine's own interfaces). Skipped, with the reason, when not root or
without ``ip netns``; CI runs as root.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from devkit import kube_objects as k
from devkit.demo_cluster import demo_snapshot
from scheduler_extender.scoring import all_node_names
from scheduler_extender.snapshot_mode import state_from_snapshot

from .waiting import stop_child, wait_for

OUTSIDE = "198.18.0.1"  # not loopback: a socket bound to 127.0.0.1 does not answer here
VERBS_PORT, METRICS_PORT = 8099, 8098  # deploy/'s ports: the namespace is new, so nothing else holds them


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A fresh network namespace: ``lo`` up with 127.0.0.1 and ``OUTSIDE``; deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace (ip netns add) needs root: the check that the verbs are "
                    "unreachable on a non-loopback address runs only inside one")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed: no network namespace can be made")
    name = f"ls-listeners-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    added = ip("netns", "add", name)
    if added.returncode != 0:
        pytest.skip(f"`ip netns add` is unavailable here: {added.stderr.strip()}")
    try:
        for step in (("link", "set", "lo", "up"), ("addr", "add", f"{OUTSIDE}/32", "dev", "lo")):
            done = ip("-n", name, *step)
            assert done.returncode == 0, (step, done.stderr)
        yield name
    finally:
        deleted = ip("netns", "delete", name)
        assert deleted.returncode == 0, deleted.stderr


# Runs inside the namespace: one line of JSON per request in, one per answer out. Standard library
# only (no app code): a client as plain as the kubelet's or Prometheus'.
PROBE = r"""
import http.client, json, sys
for line in sys.stdin:
    method, host, port, path, body = json.loads(line)
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        data = None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers={} if body is None else {"Content-Type": "application/json"})
        answer = conn.getresponse()
        out = {"status": answer.status, "text": answer.read().decode()}
        conn.close()
    except OSError as exc:
        out = {"error": type(exc).__name__}
    print(json.dumps(out), flush=True)
"""


class Probe:
    """An HTTP client living in the namespace (``ip netns exec``), driven over its stdin/stdout."""

    def __init__(self, ns: str) -> None:
        self.child = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE], text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def __call__(self, method: str, host: str, port: int, path: str, body: Any = None) -> dict[str, Any]:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(json.dumps([method, host, port, path, body]) + "\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline()
        assert line, f"the probe in the namespace ended (exit {self.child.poll()})"
        return json.loads(line)

    def close(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()
        self.child.wait(10)


@pytest.fixture(scope="module")
def extender(netns, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The real CLI, deploy/'s way (env vars for the ports, the addresses left at their defaults), in
    the namespace; ``probe`` sends requests from inside it."""
    snapshot = tmp_path_factory.mktemp("snap") / "snapshot.yaml"
    doc = demo_snapshot()
    snapshot.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "LINSTOR_SCHEDULER_PORT": str(VERBS_PORT), "LINSTOR_SCHEDULER_METRICS_PORT": str(METRICS_PORT)}
    for var in ("LINSTOR_SCHEDULER_LISTEN_ADDRESS", "LINSTOR_SCHEDULER_METRICS_ADDRESS"):
        env.pop(var, None)
    # `ip netns exec` enters the namespace and execs the command: the child is the extender itself.
    child = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "linstor_scheduler.cli",
                              "extender", "--snapshot", str(snapshot)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    probe = Probe(netns)

    def healthy() -> bool:
        assert child.poll() is None, child.stdout.read().decode()
        return (probe("GET", "127.0.0.1", METRICS_PORT, "/healthz").get("status") == 200
                and probe("GET", "127.0.0.1", VERBS_PORT, "/docs").get("status") == 200)

    try:
        wait_for(healthy, timeout=30, what="the extender's two listeners in the namespace")
        nodes = all_node_names(state_from_snapshot(doc, now=0.0))
        yield {"nodes": nodes, "probe": probe}
    finally:
        probe.close()
        stop_child(child)
    output = child.stdout.read().decode()
    assert child.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output


def test_the_outside_address_is_not_loopback():
    assert not ipaddress.ip_address(OUTSIDE).is_loopback and not ipaddress.ip_address(OUTSIDE).is_unspecified


def verb_body(nodes: list[str]) -> dict[str, object]:
    return {"Pod": k.pod("p", claims=["nothing-known"]), "NodeNames": nodes}


VERBS = ("/filter", "/prioritize", "/explain")


def test_verbs_answer_on_loopback(extender):
    probe, nodes = extender["probe"], extender["nodes"]
    for verb in VERBS:
        r = probe("POST", "127.0.0.1", VERBS_PORT, verb, verb_body(nodes))
        assert r.get("status") == 200, (verb, r)
    answer = probe("POST", "127.0.0.1", VERBS_PORT, "/filter", verb_body(nodes))
    assert json.loads(answer["text"])["NodeNames"] == nodes


def test_verbs_are_unreachable_from_the_network(extender):
    """Refused (nothing listens there), not merely unanswered: the verbs' socket is bound to loopback."""
    probe, nodes = extender["probe"], extender["nodes"]
    for verb in VERBS:
        assert probe("POST", OUTSIDE, VERBS_PORT, verb, verb_body(nodes)) == {"error": "ConnectionRefusedError"}


def test_health_and_metrics_are_reachable_from_the_network(extender):
    probe = extender["probe"]
    assert probe("GET", OUTSIDE, METRICS_PORT, "/healthz") == {"status": 200, "text": "ok"}
    ready = probe("GET", OUTSIDE, METRICS_PORT, "/readyz")
    assert ready["status"] == 200 and json.loads(ready["text"])["mode"] == "snapshot"
    metrics = probe("GET", OUTSIDE, METRICS_PORT, "/metrics")
    assert metrics["status"] == 200 and "linstor_scheduler_ready 1.0" in metrics["text"]


@pytest.mark.parametrize("host", [OUTSIDE, "127.0.0.1"])
def test_the_metrics_port_serves_no_verb(extender, host):
    probe, nodes = extender["probe"], extender["nodes"]
    for verb in VERBS:
        assert probe("POST", host, METRICS_PORT, verb, verb_body(nodes)).get("status") == 404, verb
    for path in ("/docs", "/openapi.json", "/"):
        assert probe("GET", host, METRICS_PORT, path).get("status") == 404, path


def test_the_verbs_port_serves_no_metrics(extender):
    for path in ("/metrics", "/healthz", "/readyz"):
        assert extender["probe"]("GET", "127.0.0.1", VERBS_PORT, path).get("status") == 404, path


def test_one_port_for_both_is_refused(tmp_path):
    """A setting to fix: one line, exit 2, before any socket is opened."""
    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text(yaml.safe_dump(demo_snapshot()))
    out = subprocess.run([sys.executable, "-m", "linstor_scheduler.cli", "extender", "--snapshot", str(snapshot),
                          "--port", "8099", "--metrics-port", "8099"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 2 and "--port and --metrics-port must differ" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_defaults_keep_the_verbs_on_loopback():
    from linstor_scheduler.cli import build_parser
    from scheduler_extender.wiring import is_loopback

    with pytest.MonkeyPatch.context() as env:
        env.delenv("LINSTOR_SCHEDULER_LISTEN_ADDRESS", raising=False)
        args = build_parser().parse_args(["extender"])
    assert is_loopback(args.listen_address) and args.port != args.metrics_port
    assert [is_loopback(a) for a in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.1", "")] == [
        True, True, True, False, False, False]
