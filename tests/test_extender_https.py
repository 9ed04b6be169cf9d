"""The extender's verbs over HTTPS, as deploy/components/main-scheduler serves them to the main
kube-scheduler: the real CLI in a child process, a real TLS client (the standard library's).

The certificate files sit in a directory laid out as the kubelet lays out a Secret volume (each file a
symlink through ``..data`` to a timestamped directory, swapped atomically on update:
kubernetes pkg/volume/util/atomic_writer.go), so a rotation here is what cert-manager's renewal does
there. Checked: the verbs answer over TLS with a client certificate of the configured CA and refuse
the handshake without one or with another CA's; TLS 1.1 is refused (the server's alert); a rotated
certificate is served to new connections by the same process; pods of another scheduler pass every
node (``--scheduler-name``); bad TLS settings are one line and exit 2.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from admission.tls import generate_bundle
from devkit import kube_objects as k
from devkit.demo_cluster import demo_snapshot
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.servingtls import ServingTLS
from scheduler_extender.scoring import all_node_names
from scheduler_extender.snapshot_mode import state_from_snapshot

from .test_webhook import tls11_possible  # noqa: F401  (a fixture: can this machine speak TLS 1.1 at all?)
from .waiting import free_ports, stop_child, wait_for

SERVER_NAMES = ["linstor-scheduler-extender-https.linstor-scheduler.svc", "127.0.0.1"]


@dataclass
class ClientPair:
    ca_pem: bytes
    cert: Path
    key: Path


def client_pair(directory: Path, name: str) -> ClientPair:
    """A CA and a client certificate (``clientAuth``) signed by it, as kube-scheduler would present."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pair = ClientPair(ca.public_bytes(serialization.Encoding.PEM), directory / f"{name}.crt", directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return pair


class SecretVolume:
    """A directory as the kubelet keeps a mounted Secret: ``key -> ..data/key``, ``..data -> ..<n>``."""

    def __init__(self, root: Path) -> None:
        self.root, self.version = root, 0
        root.mkdir()

    def write(self, files: dict[str, bytes]) -> None:
        self.version += 1
        target = self.root / f"..{self.version}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(Path("..data") / name)
        staged = self.root / "..data_tmp"
        staged.symlink_to(target.name)
        os.replace(staged, self.root / "..data")  # the atomic swap: every file changes at once

    def path(self, name: str) -> str:
        return str(self.root / name)


@dataclass
class Served:
    port: int
    child: subprocess.Popen[bytes]
    secret: SecretVolume
    server_ca: bytes
    client: ClientPair
    nodes: list[str]


def client_context(ca_pem: bytes, client: ClientPair | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


def post(served: Served, path: str, body: Any, ctx: ssl.SSLContext) -> tuple[int, Any, bytes]:
    """One request on a new connection: (status, JSON answer, the server's certificate, DER)."""
    conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=ctx, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        peer = conn.sock.getpeercert(binary_form=True)
        return answer.status, json.loads(answer.read()), peer
    finally:
        conn.close()


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def start(tmp: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], int, int]:
    snapshot = tmp / "snapshot.yaml"
    snapshot.write_text(yaml.safe_dump(demo_snapshot()))
    port, metrics = free_ports(2)
    child = subprocess.Popen([sys.executable, "-m", "linstor_scheduler.cli", "extender", "--snapshot", str(snapshot),
                              "--listen-address", "127.0.0.1", "--port", str(port), "--metrics-address", "127.0.0.1",
                              "--metrics-port", str(metrics), *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return child, port, metrics


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    """The CLI as the component runs it: HTTPS from the Secret's files, client certificates of one CA
    required, only the ``linstor`` profile's pods judged."""
    tmp = tmp_path_factory.mktemp("https")
    bundle = generate_bundle(SERVER_NAMES)
    client = client_pair(tmp, "kube-scheduler")
    secret = SecretVolume(tmp / "secret")
    secret.write({"tls.crt": bundle.cert_pem, "tls.key": bundle.key_pem, "ca.crt": client.ca_pem})
    child, port, metrics = start(tmp, ["--tls-cert-file", secret.path("tls.crt"), "--tls-key-file",
                                       secret.path("tls.key"), "--tls-client-ca-file", secret.path("ca.crt"),
                                       "--scheduler-name", "linstor"])

    def ready() -> bool:
        assert child.poll() is None, child.stdout.read().decode()  # type: ignore[union-attr]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", metrics, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status != 200:
                return False
            socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the verbs' listener too
            return True
        except OSError:
            return False

    try:
        wait_for(ready, timeout=30, what="the extender's two listeners")
        nodes = all_node_names(state_from_snapshot(demo_snapshot(), now=0.0))
        yield Served(port, child, secret, bundle.ca_pem, client, nodes)
    finally:
        stop_child(child)
    output = child.stdout.read().decode()  # type: ignore[union-attr]
    assert child.returncode in (0, -signal.SIGTERM), output


def pod_body(nodes: list[str], scheduler: str = "linstor") -> dict[str, Any]:
    # "logs" is a one-replica LINSTOR volume of the demo cluster: only its node fits.
    return {"Pod": k.pod("p", claims=["logs"], scheduler=scheduler), "NodeNames": nodes}


def test_verbs_answer_over_tls_with_a_client_certificate(served):
    ctx = client_context(served.server_ca, served.client)
    status, answer, peer = post(served, "/filter", pod_body(served.nodes), ctx)
    assert status == 200 and peer == der(served_cert(served))
    assert 0 < len(answer["NodeNames"]) < len(served.nodes), answer  # judged: nodes without the replica fail
    status, scores, _ = post(served, "/prioritize", pod_body(served.nodes), ctx)
    assert status == 200 and {s["Host"] for s in scores} == set(served.nodes)


def served_cert(served: Served) -> bytes:
    """The certificate the Secret holds now."""
    return Path(served.secret.path("tls.crt")).read_bytes()


def test_pods_of_another_scheduler_pass_every_node(served):
    """--scheduler-name: the main kube-scheduler shows its extenders every profile's pods; only the
    linstor profile's are judged, the others pass unchanged with score 0."""
    ctx = client_context(served.server_ca, served.client)
    status, answer, _ = post(served, "/filter", pod_body(served.nodes, "default-scheduler"), ctx)
    assert status == 200 and answer["NodeNames"] == served.nodes and not answer.get("FailedNodes")
    status, scores, _ = post(served, "/prioritize", pod_body(served.nodes, "default-scheduler"), ctx)
    assert status == 200 and {s["Score"] for s in scores} == {0}


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_a_client_without_the_right_certificate_is_refused(served, tmp_path, who):
    client = None if who == "no certificate" else client_pair(tmp_path, "intruder")
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        # TLS 1.3: the server's refusal of the client's certificate arrives after the client's handshake
        # has finished, at the first read.
        post(served, "/filter", pod_body(served.nodes), client_context(served.server_ca, client))


def test_tls_1_1_is_refused_by_the_server(served, tls11_possible):  # noqa: F811 (the fixture imported above)
    def attempt(highest: ssl.TLSVersion) -> str:
        ctx = client_context(served.server_ca, served.client)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = highest
        try:
            status, _, _ = post(served, "/filter", pod_body(served.nodes), ctx)
        except ssl.SSLError as exc:
            return exc.reason or str(exc)
        return str(status)

    # The server ends the handshake: with its alert, or (uvloop's TLS) by closing the connection. Only
    # where this machine's OpenSSL can offer TLS 1.1 at all (else a refusal would prove nothing).
    if tls11_possible:
        assert attempt(ssl.TLSVersion.TLSv1_1) in ("TLSV1_ALERT_PROTOCOL_VERSION", "UNEXPECTED_EOF_WHILE_READING")
    assert attempt(ssl.TLSVersion.TLSv1_2) == "200"  # the same client, allowed 1.2


def test_a_rotated_certificate_is_served_without_a_restart(served):
    """A new CA and certificate swapped into the Secret volume: the next connection gets them (the
    old CA no longer verifies it), from the same process."""
    before = post(served, "/filter", pod_body(served.nodes), client_context(served.server_ca, served.client))[2]
    fresh = generate_bundle(SERVER_NAMES)
    served.secret.write({"tls.crt": fresh.cert_pem, "tls.key": fresh.key_pem, "ca.crt": served.client.ca_pem})
    status, _, peer = post(served, "/filter", pod_body(served.nodes), client_context(fresh.ca_pem, served.client))
    assert status == 200 and peer == der(fresh.cert_pem) != before
    with pytest.raises(ssl.SSLCertVerificationError):
        post(served, "/filter", pod_body(served.nodes), client_context(served.server_ca, served.client))
    # The new context still requires the client's certificate.
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        post(served, "/filter", pod_body(served.nodes), client_context(fresh.ca_pem, None))
    assert served.child.poll() is None
    served.server_ca = fresh.ca_pem


def test_a_rotated_client_ca_is_trusted_without_a_restart(served, tmp_path):
    """ca.crt renewed in the Secret: clients of the new CA get in, those of the old one no longer."""
    renewed = client_pair(tmp_path, "kube-scheduler-renewed")
    pem = Path(served.secret.path("tls.crt")).read_bytes(), Path(served.secret.path("tls.key")).read_bytes()
    served.secret.write({"tls.crt": pem[0], "tls.key": pem[1], "ca.crt": renewed.ca_pem})
    status, _, _ = post(served, "/filter", pod_body(served.nodes), client_context(served.server_ca, renewed))
    assert status == 200
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        post(served, "/filter", pod_body(served.nodes), client_context(served.server_ca, served.client))
    assert served.child.poll() is None
    served.client = renewed


def test_a_half_written_pair_keeps_the_previous_certificate(tmp_path):
    """A key that does not match the certificate (a rotation caught half-way) is not loaded: the
    loaded pair is served until the files agree again."""
    first, second = generate_bundle(["127.0.0.1"]), generate_bundle(["127.0.0.1"])
    secret = SecretVolume(tmp_path / "secret")
    secret.write({"tls.crt": first.cert_pem, "tls.key": first.key_pem})
    tls = ServingTLS(secret.path("tls.crt"), secret.path("tls.key"))
    secret.write({"tls.crt": second.cert_pem, "tls.key": first.key_pem})
    assert tls.current() is tls.context and tls.reloads == 0
    secret.write({"tls.crt": second.cert_pem, "tls.key": second.key_pem})
    assert tls.current() is not tls.context and tls.reloads == 1


def test_without_a_client_ca_no_client_certificate_is_asked(tmp_path):
    """The same server context on uvloop (the extender's loop): HTTPS, no client certificate needed."""
    bundle = generate_bundle(["127.0.0.1"])
    _, cert, key = bundle.write(tmp_path)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    with ServerThread(app, tls=ServingTLS(str(cert), str(key)), loop="uvloop", lifespan="off") as srv:
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=client_context(bundle.ca_pem, None),
                                           timeout=10)
        conn.request("POST", "/filter", body=b"{}")
        assert conn.getresponse().status == 200
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        conn.close()


@pytest.mark.parametrize("flags,message", [
    (["--tls-cert-file", "x.crt"], "--tls-cert-file (or LINSTOR_SCHEDULER_TLS_CERT_FILE) and --tls-key-file"),
    (["--tls-client-ca-file", "ca.crt"], "--tls-client-ca-file (or LINSTOR_SCHEDULER_TLS_CLIENT_CA_FILE) needs HTTPS"),
    (["--tls-cert-file", "/nonexistent.crt", "--tls-key-file", "/nonexistent.key"], "TLS files"),
])
def test_bad_tls_settings_are_one_line_and_exit_2(tmp_path, flags, message):
    child, _, _ = start(tmp_path, flags)
    output = child.communicate(timeout=60)[0].decode()
    assert child.returncode == 2 and message in output and "Traceback" not in output, output
