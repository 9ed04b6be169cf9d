"""What the image holds and weighs: the layers our Dockerfile adds on top of its base (the figures
docs/install.md gives), no build tool and no unused client copy in the virtualenv, and the host's
CA bundle, mounted for the build's pip only, in no layer."""

from __future__ import annotations

import json

from .conftest import ROOT, podman

BASE = next(line.split("=", 1)[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
            if line.startswith("ARG BASE="))
MB = 1000 * 1000


def added_layers(image: str) -> list[tuple[int, str]]:
    """(size, instruction) of each layer above the base's, from ``podman history``."""
    def history(name: str) -> list[dict]:
        return json.loads(podman("history", "--format", "json", name).stdout)

    ours, base = history(image), history(BASE)
    return [(int(h["size"]), h.get("CreatedBy") or h.get("createdBy", "")) for h in ours[: len(ours) - len(base)]]


def test_our_layers_are_lvm2_the_virtualenv_and_our_code_and_weigh_what_the_docs_say(image):
    layers = [(size, how) for size, how in added_layers(image) if size > 100_000]
    assert len(layers) == 3, layers
    app, venv = sorted(size for size, how in layers if "COPY" in how)
    apt = next(size for size, how in layers if "apt-get" in how)
    assert venv < 150 * MB, f"the virtualenv layer is {venv / MB:.0f} MB (docs/install.md says 141)"
    assert app < 3 * MB, f"our code's layer is {app / MB:.1f} MB (docs/install.md says 2)"
    assert apt < 12 * MB, f"the lvm2 layer is {apt / MB:.0f} MB (docs/install.md says 9): apt's caches kept?"


def test_the_virtualenv_has_no_build_tools_and_no_asyncio_client_copy(image):
    done = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                  "ls /opt/venv/lib/python3.11/site-packages; python -c 'import kubernetes.aio' 2>&1 | tail -1")
    packages = done.stdout.split()
    assert "kubernetes" in packages and "fastapi" in packages and "linstor_scheduler" not in packages
    assert not [p for p in packages if p.split("-")[0] in ("pip", "setuptools", "wheel")], packages
    assert "No module named 'kubernetes.aio'" in done.stdout


def test_the_build_hosts_ca_bundle_is_in_no_layer(image):
    """`make image` mounts it at /etc/ssl/certs/ca-certificates.crt for pip; the image keeps the base's."""
    def bundle(name: str) -> str:
        return podman("run", "--rm", "--network", "none", "--entrypoint", "sha256sum", name,
                      "/etc/ssl/certs/ca-certificates.crt").stdout

    assert bundle(image).split()[0] == bundle(BASE).split()[0]



def test_our_code_is_in_opt_app_without_the_devkit(image):
    """/opt/app holds our packages and their entry points (how the subcommands are found), not devkit."""
    done = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                  "ls /opt/app; command -v linstor-scheduler; python -c 'import devkit' 2>&1 | tail -1")
    listed = done.stdout.split()
    ours = {"linstor_scheduler", "scheduler_extender", "storage_sync", "fencing", "admission", "locality"}
    assert ours <= set(listed), listed
    assert "devkit" not in listed and "No module named 'devkit'" in done.stdout
    assert "/opt/app/bin/linstor-scheduler" in listed
    assert any(name.startswith("linstor_scheduler-") and name.endswith(".dist-info") for name in listed)
