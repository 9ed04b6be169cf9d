"""The ``webhook`` subcommand: serve the scheduler-name mutating admission webhook over HTTPS."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from linstor_scheduler.config import add_option

log = logging.getLogger("linstor_scheduler.webhook")
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "webhook", parents=[parent], help="serve the admission webhook that sets schedulerName on LINSTOR pods",
        description="A mutating admission webhook (AdmissionReview v1, POST /mutate): a pod that mounts a "
        "LINSTOR-backed claim and kept the default scheduler gets schedulerName set to the linstor profile. "
        "Pods or namespaces labelled linstor.csi.linbit.com/scheduler=disabled are left alone. Serves "
        "/healthz, /readyz and /metrics on the same HTTPS port.")
    add_option(p, "--listen-address", default="0.0.0.0", help="address to listen on")
    add_option(p, "--port", type=int, default=8443, help="HTTPS port to listen on")
    add_option(p, "--scheduler-name", default="linstor", help="schedulerName given to LINSTOR pods")
    add_option(p, "--pvc-read-timeout", type=float, default=1.0,
               help="seconds for the one direct read of a PVC missing from the cache")
    tls = p.add_argument_group("TLS")
    add_option(tls, "--tls-cert-file", help="serving certificate (PEM), e.g. from cert-manager; with "
               "--tls-key-file, disables the self-signed certificate and caBundle publishing")
    add_option(tls, "--tls-key-file", help="key of --tls-cert-file (PEM)")
    add_option(tls, "--tls-secret", default="linstor-scheduler-webhook-tls",
               help="Secret (in --namespace) holding the self-signed CA and certificate shared by all replicas; "
               "empty: a certificate in memory for this process only (one replica)")
    add_option(tls, "--namespace", env="POD_NAMESPACE",
               help="namespace of the webhook's Service and Secret (default: the pod's own namespace)")
    add_option(tls, "--service-name", default="linstor-scheduler-webhook",
               help="Service the API server calls; its DNS names go into the certificate")
    add_option(tls, "--webhook-config-name", default="linstor-scheduler",
               help="MutatingWebhookConfiguration whose caBundle gets our CA (empty: do not publish)")
    add_option(tls, "--ca-bundle-interval", type=float, default=60.0,
               help="seconds between checks that the caBundle is still ours")
    from linstor_scheduler.kube.client import add_kube_options

    add_kube_options(p)
    p.set_defaults(func=run_webhook)


def own_namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    path = Path(SA_NAMESPACE_FILE)
    if path.exists():
        return path.read_text().strip()
    raise ValueError("--namespace (POD_NAMESPACE) is needed outside a pod for the self-signed certificate")


def run_webhook(args: argparse.Namespace) -> int:
    import uvicorn

    from linstor_scheduler.httpserver import uvicorn_options
    from linstor_scheduler.kube.client import api_client_from_args

    from .live import build_webhook_app
    from .tls import CaBundlePublisher, generate_bundle, load_or_create, service_names

    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        raise ValueError("--tls-cert-file and --tls-key-file go together")
    api = api_client_from_args(args)
    publisher = None
    if args.tls_cert_file:
        cert_file, key_file = args.tls_cert_file, args.tls_key_file
        log.info("serving certificate from %s (caBundle managed elsewhere)", cert_file)
    else:
        namespace = own_namespace(args.namespace)
        names = service_names(args.service_name, namespace)
        bundle = load_or_create(api, namespace, args.tls_secret, names) if args.tls_secret \
            else generate_bundle(names)
        # A read-only root filesystem: the files go to $TMPDIR (an emptyDir in deploy/).
        directory = Path(tempfile.mkdtemp(prefix="webhook-tls-", dir=os.environ.get("TMPDIR")))
        _, cert_path, key_path = bundle.write(directory)
        cert_file, key_file = str(cert_path), str(key_path)
        if args.webhook_config_name:
            publisher = CaBundlePublisher(api, args.webhook_config_name, bundle.ca_pem,
                                          interval=args.ca_bundle_interval)
    app = build_webhook_app(api, scheduler_name=args.scheduler_name, publisher=publisher,
                            read_timeout=args.pvc_read_timeout)
    uvicorn.run(app, **uvicorn_options(host=args.listen_address, port=args.port, ssl_certfile=cert_file,
                                       ssl_keyfile=key_file, access_log=False, log_level=args.log_level,
                                       timeout_graceful_shutdown=10))
    return 0
