"""Building an API client for the official ``kubernetes`` package: in-cluster, kubeconfig or a URL.

A fresh ``Configuration`` every time: the library's global default is never touched, so several
clients (tests, a stand-in and a real cluster) coexist in one process.

Every call has a deadline and no hidden retry. The official client sends a call with no timeout
unless the caller passes ``_request_timeout`` (kubernetes/client/rest.py, ``RESTClientObject.request``:
``timeout = None``), so a backend that accepts and never answers holds the calling thread for as long
as the kernel keeps the connection (~15 minutes); and it hands urllib3 its default ``Retry(3)``
(``RESTClientObject.__init__`` passes ``configuration.retries`` only when set), which sends a read
that timed out up to four times and a DELETE twice. ``TimedApiClient`` fills in ``timeout`` where a
call names none, and ``retries=False`` makes urllib3 raise the first error as it is: a write is sent
once, and a read is retried only where we say so (``calls.KubeCalls.read``), inside its deadline.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linstor_scheduler.config import ConfigError, add_option

if TYPE_CHECKING:
    from kubernetes import client as k8s


class KubeConfigError(ConfigError, RuntimeError):
    pass


DEFAULT_TIMEOUT = 10.0  # seconds: connect and each read of one call (``--api-timeout``)


def timed_client(configuration: k8s.Configuration, timeout: float = DEFAULT_TIMEOUT) -> k8s.ApiClient:
    """An ``ApiClient`` whose calls without ``_request_timeout`` get ``(min(timeout, 3), timeout)``
    (connect, read), and whose connection pool never retries (``retries=False``: urllib3 raises the
    first error). A call that passes its own ``_request_timeout`` (a watch) keeps it."""
    from kubernetes import client as k8s

    configuration.retries = False

    class TimedApiClient(k8s.ApiClient):
        default_timeout = (min(timeout, 3.0), timeout)

        def call_api(self, method: str, url: str, header_params: Any = None, body: Any = None,
                     post_params: Any = None, _request_timeout: Any = None) -> Any:
            return super().call_api(method, url, header_params=header_params, body=body, post_params=post_params,
                                    _request_timeout=_request_timeout or self.default_timeout)

    return TimedApiClient(configuration)


def make_api_client(kubeconfig: str | None = None, *, context: str | None = None,
                    host: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> k8s.ApiClient:
    """``host``: plain HTTP(S) to that URL (tests, ``kubectl proxy``); else ``kubeconfig``; else
    in-cluster when running in a pod; else ``$KUBECONFIG`` / ``~/.kube/config``. ``timeout``: the
    deadline of a call that names none (see the module's docstring)."""
    from kubernetes import client as k8s  # imported here: building the CLI must not pay for it
    from kubernetes import config as k8s_config

    configuration = k8s.Configuration()
    if host:
        configuration.host = host.rstrip("/")
        return timed_client(configuration, timeout)
    if kubeconfig:
        if not Path(kubeconfig).is_file():  # the library would say "Invalid kube-config file" for a typo
            raise KubeConfigError(f"kubeconfig file {kubeconfig} (--kubeconfig or KUBECONFIG) does not exist")
        k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        return timed_client(configuration, timeout)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
        return timed_client(configuration, timeout)
    default = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not Path(default.split(os.pathsep)[0]).exists():
        raise KubeConfigError(
            "no Kubernetes configuration: not running in a pod, no --kubeconfig, and "
            f"{default} does not exist (use --kubeconfig, KUBECONFIG or --kube-api-url)")
    k8s_config.load_kube_config(config_file=default, context=context, client_configuration=configuration)
    return timed_client(configuration, timeout)


def add_kube_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kubernetes")
    add_option(group, "--kubeconfig", env="KUBECONFIG",
               help="kubeconfig file (default: in-cluster config, else ~/.kube/config)")
    add_option(group, "--kube-context", help="context of the kubeconfig to use")
    add_option(group, "--kube-api-url", help="API server URL to use without credentials (e.g. kubectl proxy)")
    add_option(group, "--api-timeout", type=float, default=DEFAULT_TIMEOUT, above=0,
               help="seconds one Kubernetes call may take (connect and each read); watches end on their own "
               "shorter bound")


# Said with a connection failure to the API server that ends a command (cli.fatal): which settings chose it.
KUBE_WHERE_TO_SET = (" (the Kubernetes API server did not answer: is --kube-api-url, --kubeconfig / KUBECONFIG or "
                     "--kube-context right?)")


def where_to_look(exc: BaseException) -> str:
    """The hint for an error of the Kubernetes client's transport (urllib3: refused, not resolved,
    timed out, "Max retries exceeded"), else nothing: its own text names the host, not the flag."""
    import urllib3

    return KUBE_WHERE_TO_SET if isinstance(exc, urllib3.exceptions.HTTPError) else ""


def api_client_from_args(args: argparse.Namespace) -> k8s.ApiClient:
    timeout = float(getattr(args, "api_timeout", DEFAULT_TIMEOUT))  # its range is the parser's (config.py)
    return make_api_client(args.kubeconfig, context=args.kube_context, host=args.kube_api_url, timeout=timeout)


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


def retry_after_seconds(exc: BaseException) -> float | None:
    """The seconds of an answer's ``Retry-After`` header (429 from API Priority and Fairness or a
    PodDisruptionBudget, 503 from a server shutting down); None when it has none, or names a date."""
    headers = getattr(exc, "headers", None)
    raw = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except (TypeError, ValueError):
        return None
