"""Fixtures several test modules share."""

from __future__ import annotations

import pytest

from devkit.kube_standin import KubeStandin


@pytest.fixture
def ks():
    """The Kubernetes API stand-in, served over HTTP, with ``url`` and an official-client ``api``."""
    ks = KubeStandin()
    with ks.serve() as srv:
        ks.url = srv.url
        ks.api = ks.api_client(srv.url)
        yield ks
