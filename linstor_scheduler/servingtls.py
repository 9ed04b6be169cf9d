"""A TLS server context from certificate files, re-read when the files change: no restart to rotate.

Used by every HTTPS listener of ours whose certificate lives in files: the webhook (its own
self-signed pair, or cert-manager's through ``--tls-cert-file``) and the extender's verbs in the
main-scheduler mode (``deploy/components/main-scheduler``). cert-manager renews a certificate in its
Secret some time before it ends, and the kubelet writes the new files into the mounted volume
(an atomic swap of the ``..data`` symlink, kubernetes pkg/volume/util/atomic_writer.go); a server
that loaded its pair once at start would keep serving the old certificate until it expired.

How: every handshake first runs the context's ``sni_callback`` (OpenSSL calls its servername
callback for every ClientHello, with or without SNI; CPython passes ``None`` then, ``_ssl.c``
``_servername_callback``). The callback compares the files' ``stat`` (inode, size, mtime: the
swap changes the inode) with what was loaded; when they changed it builds a new context and sets
it on the connection (``SSLObject.context``, the documented way to switch contexts in that
callback). A pair that does not load (half-written, key and certificate not matching) is logged
once and the previous one kept. The callback runs on the server's event loop, so no lock is needed.

Every context refuses protocols before TLS 1.2 (``MIN_TLS_VERSION``) and, with a client
CA, requires a client certificate signed by it (``CERT_REQUIRED``): the handshake fails without one.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

from .config import ConfigError

log = logging.getLogger(__name__)
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2  # every TLS server of ours (httpserver.loaded_config too)

Stamp = tuple[tuple[int, int, int, int], ...]


class ServingTLS:
    """``context`` is what the server listens with; it switches each handshake to the newest pair."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str | None = None) -> None:
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self.reloads = 0  # contexts built after the first (rotations seen)
        stamp = self._stamp()
        try:
            self.context = self._build()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS files {self._files()}: {exc}") from None
        self.context.sni_callback = self._on_hello
        self._current, self._loaded = self.context, stamp
        self._failed: Stamp | None = None

    @property
    def client_auth(self) -> bool:
        return self.client_ca_file is not None

    def _files(self) -> list[str]:
        return [f for f in (self.cert_file, self.key_file, self.client_ca_file) if f]

    def _stamp(self) -> Stamp:
        """What changes when a file is replaced or rewritten; a missing file stamps as zeros."""
        out = []
        for path in self._files():
            try:
                st = os.stat(path)  # follows the Secret volume's symlinks to the current files
            except OSError:
                out.append((0, 0, 0, 0))
            else:
                out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = MIN_TLS_VERSION
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.load_verify_locations(cafile=self.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def current(self) -> ssl.SSLContext:
        """The context of the newest pair that loads (checked at each call: a few ``stat``s)."""
        stamp = self._stamp()
        if stamp != self._loaded and stamp != self._failed:
            try:
                fresh = self._build()
            except (OSError, ssl.SSLError) as exc:
                self._failed = stamp
                log.warning("TLS files %s changed but do not load (%s): serving the previous certificate until "
                            "they do", self._files(), exc)
            else:
                self._current, self._loaded, self._failed = fresh, stamp, None
                self.reloads += 1
                log.info("TLS files %s changed: new connections get the new certificate", self._files())
        return self._current

    def _on_hello(self, conn: Any, _server_name: str | None, ctx: ssl.SSLContext) -> int | None:
        try:
            fresh = self.current()
            if fresh is not ctx:
                conn.context = fresh
        except Exception:  # an error here would fail the handshake: keep serving the loaded pair
            log.exception("switching to the reloaded TLS certificate")
        return None
