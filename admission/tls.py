"""The webhook's serving certificate: mounted files, or a self-signed CA it makes and publishes.

The API server calls webhooks over HTTPS only and trusts exactly the ``caBundle`` of the
MutatingWebhookConfiguration. Without cert-manager, the webhook makes a small CA and a serving
certificate for its Service's DNS names itself. Several replicas must serve certificates from the
*same* CA (the API server may call any of them), so the pair is kept in one Secret: the first
replica creates it, the others (409 AlreadyExists) read it. The CA is then written into every
webhook entry of the configuration, and re-written whenever something (a re-apply, a person)
changes it.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.health import loop_liveness
from linstor_scheduler.kube import objects

log = logging.getLogger(__name__)

CA_KEY = "ca.crt"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class CertBundle:
    """PEM bytes: the CA that signs, the serving certificate and its key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path) -> tuple[Path, Path, Path]:
        """Files for uvicorn (it takes paths, not bytes); the key readable by us only."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = (directory / CA_KEY, directory / CERT_KEY, directory / KEY_KEY)
        for path, data in zip(paths, (self.ca_pem, self.cert_pem, self.key_pem), strict=True):
            path.write_bytes(data)
        paths[2].chmod(0o600)
        return paths

    def covers(self, names: list[str], now: dt.datetime | None = None) -> bool:
        """True if the certificate names every one of ``names`` and is valid beyond the renewal margin."""
        try:
            cert = x509.load_pem_x509_certificate(self.cert_pem)
            x509.load_pem_x509_certificate(self.ca_pem)
            serialization.load_pem_private_key(self.key_pem, password=None)
        except ValueError:
            return False
        now = now or dt.datetime.now(dt.UTC)
        if cert.not_valid_after_utc - RENEW_BEFORE < now or cert.not_valid_before_utc > now:
            return False
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        have = {str(n) for n in san.get_values_for_type(x509.DNSName)}
        have |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        return set(names) <= have


def service_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use for ``service.namespace``'s clientConfig.service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def generate_bundle(names: list[str], *, days: int = 3650, now: dt.datetime | None = None) -> CertBundle:
    """A CA (EC P-256, ``CA:TRUE``) and a serving certificate for ``names`` (DNS names or IPs) signed by it.

    Ten years by default: nobody is paged to rotate it, and a Secret that stops covering the names
    or nears its end is replaced at the next start (see ``load_or_create``)."""
    now = now or dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "linstor-scheduler-webhook-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CertBundle(
        ca.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    )


def _from_secret(secret: dict[str, object]) -> CertBundle | None:
    data = secret.get("data") or {}
    if not isinstance(data, dict) or not all(k in data for k in (CA_KEY, CERT_KEY, KEY_KEY)):
        return None
    try:
        return CertBundle(*(base64.b64decode(str(data[k])) for k in (CA_KEY, CERT_KEY, KEY_KEY)))
    except ValueError:
        return None


def _secret_body(name: str, bundle: CertBundle, resource_version: str | None = None) -> dict[str, object]:
    meta: dict[str, object] = {"name": name, "labels": {"app.kubernetes.io/name": "linstor-scheduler",
                                                        "app.kubernetes.io/component": "webhook"}}
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": meta,
        "data": {k: base64.b64encode(v).decode() for k, v in
                 ((CA_KEY, bundle.ca_pem), (CERT_KEY, bundle.cert_pem), (KEY_KEY, bundle.key_pem))},
    }


def load_or_create(api_client: k8s.ApiClient, namespace: str, name: str, names: list[str],
                   *, attempts: int = 3) -> CertBundle:
    """The shared certificate from Secret ``namespace/name``: read it, create it, or replace it when
    it does not cover ``names`` or nears its end. Races between replicas end in one Secret: a
    losing create (409) or replace (409, stale resourceVersion) reads again."""
    import orjson

    core = k8s.CoreV1Api(api_client)
    for _ in range(attempts):
        try:
            resp = core.read_namespaced_secret(name, namespace, _preload_content=False)
            secret = orjson.loads(resp.data)
        except ApiException as exc:
            if exc.status != 404:
                raise
            secret = None
        if secret is not None:
            bundle = _from_secret(secret)
            if bundle is not None and bundle.covers(names):
                log.info("serving certificate from Secret %s/%s", namespace, name)
                return bundle
            fresh = generate_bundle(names)
            rv = objects.resource_version(secret)
            try:
                core.replace_namespaced_secret(name, namespace, _secret_body(name, fresh, rv))
                log.info("replaced Secret %s/%s: it did not cover %s or was near its end", namespace, name, names)
                return fresh
            except ApiException as exc:
                if exc.status != 409:
                    raise
                continue
        fresh = generate_bundle(names)
        try:
            core.create_namespaced_secret(namespace, _secret_body(name, fresh))
            log.info("created Secret %s/%s with a new self-signed CA", namespace, name)
            return fresh
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise RuntimeError(f"Secret {namespace}/{name}: no stable certificate after {attempts} attempts")


class CaBundlePublisher:
    """Keeps ``caBundle`` of every webhook in MutatingWebhookConfiguration ``config_name`` equal to our CA."""

    def __init__(self, api_client: k8s.ApiClient, config_name: str, ca_pem: bytes, *, interval: float = 60.0,
                 call_timeout: float = 10.0) -> None:
        """``call_timeout``: the client's deadline per call (``--api-timeout``), for ``liveness``."""
        self.interval = interval
        self.call_timeout = call_timeout
        self.beat = boottime()  # when the loop last finished a pass (liveness)
        self.api = k8s.AdmissionregistrationV1Api(api_client)
        self.config_name = config_name
        self.ca_b64 = base64.b64encode(ca_pem).decode()
        self.published = threading.Event()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> bool:
        """One pass; True if a patch was sent. The patch tests the resourceVersion it was computed
        from, so a concurrent writer makes it fail (409/422) instead of being overwritten blindly."""
        import orjson

        resp = self.api.read_mutating_webhook_configuration(self.config_name, _preload_content=False)
        config = orjson.loads(resp.data)
        ops: list[dict[str, object]] = []
        for i, hook in enumerate(config.get("webhooks") or []):
            if (hook.get("clientConfig") or {}).get("caBundle") != self.ca_b64:
                ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": self.ca_b64})
        if ops:
            rv = objects.resource_version(config)
            ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": rv})
            self.api.patch_mutating_webhook_configuration(self.config_name, ops)
            log.info("published our CA into MutatingWebhookConfiguration %s (%d webhooks)",
                     self.config_name, len(ops) - 1)
        self.published.set()
        self.last_error = None
        return bool(ops)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, args=(self.interval,), name="ca-bundle", daemon=True)
        self._thread.start()

    def liveness(self) -> tuple[bool, str]:
        """For ``/healthz``: the loop still turns. A pass is a read and a patch, each within
        ``call_timeout``; then it waits at most ``interval``; 30 s of margin, as the informers'."""
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._stop.is_set():
            return False, "caBundle publisher thread ended"
        return loop_liveness("caBundle publisher", self.beat, boottime(), self.interval + 2 * self.call_timeout + 30.0)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.beat = boottime()
            try:
                self.publish()
                wait = interval
            except Exception as exc:  # API down, conflict, missing configuration: retry soon, keep serving
                self.last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
                log.warning("publishing caBundle to %s: %s", self.config_name, self.last_error)
                wait = min(interval, 5.0)
            self.beat = boottime()
            self._stop.wait(wait)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
