"""One CA per cluster for the self-signed mode: the Lease holder issues it, every replica serves from it.

The API server trusts exactly the ``caBundle`` of the MutatingWebhookConfiguration and may call any
ready replica. When each replica kept the CA it had read (or made) at start, a Secret recreated
while one ran left two CAs in the cluster: each replica wrote its own into the ``caBundle`` every
pass, the value flapped, and about half of the calls failed TLS (the pod admitted unchanged, for
its whole life) while both replicas reported Ready. Now:

- **the Lease holder issues**: only the holder of the Lease ``--ca-lease-name`` creates the Secret
  ``--tls-secret`` (or replaces it when it does not cover the Service's names or nears its end,
  ``tls.RENEW_BEFORE``) and writes the ``caBundle``. The caBundle it writes is the Secret's CA,
  plus, for ``retire_after`` seconds, the CAs it replaced there, so a replica still serving the
  previous certificate stays verified until it has read the new one;
- **every replica serves from the Secret**: each pass reads it and, when it changed, writes the pair
  into the files the HTTPS listener serves from (``servingtls.ServingTLS`` switches to new files at
  the next handshake, no restart); until the first pass a throwaway certificate is served;
- **not ready while unverified**: ``readiness()`` is false while the certificate this replica serves
  is not signed by a CA in the published ``caBundle`` (or not valid now), so the Service does not
  send the API server to it.

A pass runs every ``interval`` (``--ca-bundle-interval``); the holder's writes test the
resourceVersion they were computed from (a concurrent writer makes them fail, and the next pass
reads again).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import threading
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.health import loop_liveness
from linstor_scheduler.kube import objects

from .tls import CA_KEY, CERT_KEY, KEY_KEY, CertBundle, _from_secret, _secret_body, generate_bundle

log = logging.getLogger(__name__)


def pem_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM bundle; what does not parse is skipped."""
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def verified_by(cert_pem: bytes, bundle_pem: bytes, now: dt.datetime | None = None) -> bool:
    """True when ``cert_pem`` is valid now and signed by one of the CAs in ``bundle_pem`` (the
    chain the API server builds for our self-signed CA: one step)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return False
    now = now or dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return False
    for ca in pem_certificates(bundle_pem):
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # InvalidSignature, another issuer (ValueError), another key type (TypeError)
            continue
        if ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
            return True
    return False


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """A new file renamed over the old one: a reader sees the old or the new, never half (a new inode:
    ServingTLS notices)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


class SharedCA:
    """The self-signed mode's certificate: see the module's docstring. ``cert_file``/``key_file`` are
    what the HTTPS listener serves (``ServingTLS``)."""

    def __init__(self, api_client: k8s.ApiClient, *, namespace: str, secret: str, names: list[str],
                 config_name: str | None, elector: Any, directory: Path, interval: float = 10.0,
                 call_timeout: float = 10.0, retire_after: float | None = None) -> None:
        """``elector``: a ``LeaderElector`` (or ``AlwaysLeader``) on ``--ca-lease-name``, started and
        stopped with us;
        ``config_name``: the MutatingWebhookConfiguration (None: the caBundle is not ours to write)."""
        self.core = k8s.CoreV1Api(api_client)
        self.admission = k8s.AdmissionregistrationV1Api(api_client)
        self.namespace, self.secret, self.names, self.config_name = namespace, secret, names, config_name
        self.elector = elector
        self.interval, self.call_timeout = interval, call_timeout
        self.retire_after = retire_after if retire_after is not None else 3 * interval + 2 * call_timeout
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file, self.cert_file, self.key_file = (directory / CA_KEY, directory / CERT_KEY, directory / KEY_KEY)
        placeholder = generate_bundle(names, days=1)  # served until the Secret's pair is read: never verified
        self._write(placeholder)
        self.serving: CertBundle = placeholder
        self.from_secret = False
        self.verified = False
        self.last_error: str | None = None
        self.retiring: dict[bytes, float] = {}  # CA PEMs the holder replaced -> until when they stay published
        self.retired: set[bytes] = set()  # ... and those it dropped since (not retired twice)
        self.published = threading.Event()  # (CaBundlePublisher's interface) set once we are verified
        self.beat = boottime()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one pass ------------------------------------------------------------------------------------
    def step(self) -> None:
        """Holder: issue and publish. Every replica: serve the Secret's pair, check it against the caBundle."""
        secret = self._read_secret()
        bundle = _from_secret(secret) if secret is not None else None
        if self.elector.is_leader:
            if bundle is None or not bundle.covers(self.names):
                bundle = self._issue(secret, bundle)
            if bundle is not None and self.config_name:
                self._publish(bundle)
        if bundle is not None and bundle != self.serving:
            self._write(bundle)
            log.info("serving the certificate of Secret %s/%s%s", self.namespace, self.secret,
                     "" if not self.from_secret else " (it changed)")
            self.serving, self.from_secret = bundle, True
        # Without a configuration to write, the caBundle is managed elsewhere: it must hold the Secret's CA.
        bundles = self._read_ca_bundles() if self.config_name else [self.serving.ca_pem]
        self.verified = self.from_secret and bool(bundles) and all(
            verified_by(self.serving.cert_pem, b) for b in bundles)
        if self.verified:
            self.published.set()
        else:
            self.published.clear()

    def readiness(self) -> tuple[bool, str]:
        if self.verified:
            return True, "serving the Secret's certificate, verified by the published caBundle"
        if not self.from_secret:
            why = f"Secret {self.namespace}/{self.secret} not read yet"
            if not self.elector.is_leader:
                why += f" (it is issued by the holder of Lease {getattr(self.elector, 'name', '?')})"
        else:
            why = f"the certificate we serve is not verified by the caBundle of {self.config_name} yet"
        return False, why + (f": {self.last_error}" if self.last_error else "")

    def _read_secret(self) -> dict[str, Any] | None:
        try:
            resp = self.core.read_namespaced_secret(self.secret, self.namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return orjson.loads(resp.data)

    def _issue(self, secret: dict[str, Any] | None, old: CertBundle | None) -> CertBundle | None:
        """A new CA and certificate into the Secret (holder only); None if another writer won the race."""
        fresh = generate_bundle(self.names)
        try:
            if secret is None:
                self.core.create_namespaced_secret(self.namespace, _secret_body(self.secret, fresh))
                log.info("created Secret %s/%s with a new self-signed CA (Lease holder)", self.namespace, self.secret)
            else:
                rv = objects.resource_version(secret)
                self.core.replace_namespaced_secret(self.secret, self.namespace, _secret_body(self.secret, fresh, rv))
                log.info("replaced Secret %s/%s: it did not cover %s or was near its end (Lease holder)",
                         self.namespace, self.secret, self.names)
        except ApiException as exc:
            if exc.status != 409:
                raise
            return None  # someone else wrote it: the next pass reads theirs
        if old is not None:
            self.retiring[old.ca_pem] = boottime() + self.retire_after
        return fresh

    def _read_config(self) -> dict[str, Any]:
        resp = self.admission.read_mutating_webhook_configuration(self.config_name, _preload_content=False)
        return orjson.loads(resp.data)

    def _read_ca_bundles(self) -> list[bytes]:
        """The caBundle (PEM) of every webhook of the configuration."""
        out = []
        for hook in self._read_config().get("webhooks") or []:
            try:
                out.append(base64.b64decode((hook.get("clientConfig") or {}).get("caBundle") or ""))
            except ValueError:
                out.append(b"")
        return out

    def _publish(self, bundle: CertBundle) -> None:
        """The Secret's CA, and the CAs retiring, in every webhook's caBundle (holder only). A CA
        published now that is not the Secret's (a Secret replaced or recreated) is kept for
        ``retire_after`` seconds: replicas that still serve a certificate it signs stay verified
        until their next pass has read the Secret."""
        config = self._read_config()
        now = boottime()
        current = [(h.get("clientConfig") or {}).get("caBundle") for h in config.get("webhooks") or []]
        for value in current:
            try:
                pem = base64.b64decode(value or "")
            except ValueError:
                continue
            for ca in pem_certificates(pem):
                one = ca.public_bytes(serialization.Encoding.PEM)
                if one != bundle.ca_pem and one not in self.retiring and one not in self.retired:
                    self.retiring[one] = now + self.retire_after
        for pem, until in list(self.retiring.items()):
            if until <= now or pem == bundle.ca_pem:
                del self.retiring[pem]
                self.retired.add(pem)
        want = base64.b64encode(bundle.ca_pem + b"".join(sorted(self.retiring))).decode()
        ops: list[dict[str, object]] = [
            {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": want}
            for i, value in enumerate(current) if value != want]
        if ops:
            rv = objects.resource_version(config)
            self.admission.patch_mutating_webhook_configuration(
                self.config_name, [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, *ops])
            log.info("published the Secret's CA into MutatingWebhookConfiguration %s (%d webhooks; %d CAs retiring)",
                     self.config_name, len(ops), len(self.retiring))

    def _write(self, bundle: CertBundle) -> None:
        write_atomically(self.ca_file, bundle.ca_pem)
        write_atomically(self.key_file, bundle.key_pem, 0o600)  # the key first: ServingTLS retries a mismatch
        write_atomically(self.cert_file, bundle.cert_pem)

    # --- the loop ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """The elector's loop and ours (with the app: lifespan startup)."""
        self.elector.start()
        self._thread = threading.Thread(target=self._run, name="shared-ca", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat = boottime()
            try:
                self.step()
                self.last_error = None
            except Exception as exc:  # API down, conflict, missing configuration: retry, keep serving
                self.last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
                log.warning("shared CA (Secret %s/%s, caBundle of %s): %s", self.namespace, self.secret,
                            self.config_name, self.last_error)
            self.beat = boottime()
            self._stop.wait(self.interval if self.verified else min(self.interval, 1.0))

    def liveness(self) -> tuple[bool, str]:
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._stop.is_set():
            return False, "shared CA thread ended"
        return loop_liveness("shared CA", self.beat, boottime(), self.interval + 4 * self.call_timeout + 30.0)

    def stop(self) -> None:
        """Ours, then the elector's, which gives the Lease back: another replica issues at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.elector.stop()
