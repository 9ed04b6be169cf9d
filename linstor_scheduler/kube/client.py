"""Building an API client for the official ``kubernetes`` package: in-cluster, kubeconfig or a URL.

A fresh ``Configuration`` every time: the library's global default is never touched, so several
clients (tests, a stand-in and a real cluster) coexist in one process.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from linstor_scheduler.config import ConfigError, add_option

if TYPE_CHECKING:
    from kubernetes import client as k8s


class KubeConfigError(ConfigError, RuntimeError):
    pass


def make_api_client(kubeconfig: str | None = None, *, context: str | None = None,
                    host: str | None = None) -> k8s.ApiClient:
    """``host``: plain HTTP(S) to that URL (tests, ``kubectl proxy``); else ``kubeconfig``; else
    in-cluster when running in a pod; else ``$KUBECONFIG`` / ``~/.kube/config``."""
    from kubernetes import client as k8s  # imported here: building the CLI must not pay for it
    from kubernetes import config as k8s_config

    configuration = k8s.Configuration()
    if host:
        configuration.host = host.rstrip("/")
        return k8s.ApiClient(configuration)
    if kubeconfig:
        if not Path(kubeconfig).is_file():  # the library would say "Invalid kube-config file" for a typo
            raise KubeConfigError(f"kubeconfig file {kubeconfig} (--kubeconfig or KUBECONFIG) does not exist")
        k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        return k8s.ApiClient(configuration)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    default = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not Path(default.split(os.pathsep)[0]).exists():
        raise KubeConfigError(
            "no Kubernetes configuration: not running in a pod, no --kubeconfig, and "
            f"{default} does not exist (use --kubeconfig, KUBECONFIG or --kube-api-url)")
    k8s_config.load_kube_config(config_file=default, context=context, client_configuration=configuration)
    return k8s.ApiClient(configuration)


def add_kube_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kubernetes")
    add_option(group, "--kubeconfig", env="KUBECONFIG",
               help="kubeconfig file (default: in-cluster config, else ~/.kube/config)")
    add_option(group, "--kube-context", help="context of the kubeconfig to use")
    add_option(group, "--kube-api-url", help="API server URL to use without credentials (e.g. kubectl proxy)")


def api_client_from_args(args: argparse.Namespace) -> k8s.ApiClient:
    return make_api_client(args.kubeconfig, context=args.kube_context, host=args.kube_api_url)


def describe_api_error(exc: BaseException) -> str:
    """One line for a log or an Event: ``HTTP 409 Conflict: <the API server's message>``."""
    from kubernetes.client.rest import ApiException

    if isinstance(exc, ApiException):
        message = ""
        try:
            import json

            message = json.loads(exc.body or "{}").get("message") or ""
        except (ValueError, AttributeError):
            pass
        return f"HTTP {exc.status} {exc.reason}" + (f": {message}" if message else "")
    return f"{type(exc).__name__}: {exc}"
