"""HTTPS with client certificates between our LINSTOR client and the emulator (as linstor+ssl://):
the client itself, and the CLI configured exactly as deploy/components/linstor-tls configures it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
from urllib.parse import urlparse

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


def https_controller(pki) -> ServerThread:
    """The emulator as Piraeus' controller serves HTTPS: our CA, client certificates required."""
    emu = LinstorEmulator()
    emu.add_node("w1")
    return ServerThread(emu.app, ssl_certfile=str(pki / "server.crt"), ssl_keyfile=str(pki / "server.key"),
                        ssl_ca_certs=str(pki / "ca.crt"), ssl_cert_reqs=ssl.CERT_REQUIRED)


def test_client_certificate_required_and_accepted(pki):
    with https_controller(pki) as server:
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


def test_the_tls_component_end_to_end(pki, tmp_path):
    """Every LINSTOR client container of deploy/ + components/linstor-tls, as rendered: its environment
    (the controller URL's host swapped for the emulator's address, the Secret's mount for a directory
    holding the Secret's keys) runs the real CLI against the emulator over HTTPS. Without the client
    certificate the emulator refuses the same CLI."""
    from devkit.kube_standin import KubeStandin

    from .test_network_policies import (
        CLIENT_SECRET,
        SECRET_KEYS,
        env_of,
        linstor_containers,
        rendered_tls,
        secret_mount,
    )

    secret = tmp_path / CLIENT_SECRET  # the Secret as kubelet mounts it: one file per key
    secret.mkdir()
    for name, source in (("ca.crt", "ca.crt"), ("tls.crt", "client.crt"), ("tls.key", "client.key")):
        (secret / name).write_bytes((pki / source).read_bytes())
    assert {p.name for p in secret.iterdir()} == SECRET_KEYS
    objs = rendered_tls("")
    envs = []
    for spec, c in linstor_containers(objs):
        _, mount = secret_mount(spec, c)
        env = {k: v.replace(mount["mountPath"], str(secret)) for k, v in env_of(objs, c).items()
               if k == "LS_CONTROLLERS" or k.startswith("LINSTOR_SCHEDULER_LINSTOR_")}
        envs.append(env)
    assert len(envs) == 5 and all(env == envs[0] for env in envs), "one configuration for every component"
    env = envs[0]
    with https_controller(pki) as server, KubeStandin().serve() as kube:
        url = urlparse(env["LS_CONTROLLERS"])
        env["LS_CONTROLLERS"] = f"{url.scheme}://127.0.0.1:{server.port}"  # the certificate names 127.0.0.1
        assert url.scheme == "linstor+ssl"

        def snapshot(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
            base = {k: v for k, v in os.environ.items() if not k.startswith(("LINSTOR_SCHEDULER_", "LS_"))}
            return subprocess.run(
                [sys.executable, "-m", "linstor_scheduler.cli", "snapshot", "--format", "json",
                 "--linstor-timeout", "5", "--kube-api-url", kube.url],
                env={**base, **extra}, capture_output=True, text=True, timeout=120, check=False)

        done = snapshot(env)
        assert done.returncode == 0, done.stderr
        assert [n["name"] for n in json.loads(done.stdout)["linstor"]["nodes"]] == ["w1"]
        without = {k: v for k, v in env.items() if k not in ("LINSTOR_SCHEDULER_LINSTOR_CERT_FILE",
                                                             "LINSTOR_SCHEDULER_LINSTOR_KEY_FILE")}
        refused = snapshot(without)
        assert refused.returncode == 1 and "linstor-scheduler snapshot: error:" in refused.stderr, refused.stderr
