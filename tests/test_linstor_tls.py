"""HTTPS with client certificates between our LINSTOR client and the emulator (as linstor+ssl://)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess

import pytest

from devkit.linstor_emulator import LinstorEmulator
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.linstor import LinstorClient, LinstorUnavailable

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=test-ca", cwd=d)
    for name, cn in (("server", "127.0.0.1"), ("client", "linstor-scheduler")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


def test_client_certificate_required_and_accepted(pki):
    emu = LinstorEmulator()
    emu.add_node("w1")
    server = ServerThread(emu.app, ssl_certfile=str(pki / "server.crt"), ssl_keyfile=str(pki / "server.key"),
                          ssl_ca_certs=str(pki / "ca.crt"), ssl_cert_reqs=ssl.CERT_REQUIRED)
    with server:
        url = f"linstor+ssl://127.0.0.1:{server.port}"

        async def nodes(**tls):
            async with LinstorClient(url, retries=1, timeout=5, **tls) as client:
                return [n.name for n in await client.get_nodes()]

        assert asyncio.run(nodes(ca_file=str(pki / "ca.crt"), cert_file=str(pki / "client.crt"),
                                 key_file=str(pki / "client.key"))) == ["w1"]
        with pytest.raises(LinstorUnavailable):  # no client certificate: the controller refuses
            asyncio.run(nodes(ca_file=str(pki / "ca.crt")))
        with pytest.raises(LinstorUnavailable):  # unknown CA: we refuse the controller
            asyncio.run(nodes(cert_file=str(pki / "client.crt"), key_file=str(pki / "client.key")))
