"""The extender's subcommands built from their options: ``build_live_app`` (LINSTOR client +
Kubernetes caches -> Syncer -> app; used by the CLI and by the end-to-end tests, so both run the same
assembly), serving from a snapshot, ``explain`` and ``snapshot``."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import yaml

from linstor_scheduler import gcpolicy
from linstor_scheduler.capture import capture
from linstor_scheduler.config import ConfigError, exceeds, parsed, setting
from linstor_scheduler.kube import objects
from linstor_scheduler.kube.client import DEFAULT_TIMEOUT as DEFAULT_API_TIMEOUT
from linstor_scheduler.kube.client import api_client_from_args
from linstor_scheduler.kube.events import EventRecorder
from linstor_scheduler.kube.informer import RECORD_PAGE_SIZE, Informer, KubeCaches, bounded_by
from linstor_scheduler.kube.metrics import KubeCollector
from linstor_scheduler.linstor.client import LinstorClient
from linstor_scheduler.linstor.options import make_linstor_client
from linstor_scheduler.lost_storage import Lost, lost_now, read_record
from linstor_scheduler.runtime import serve_asgi
from linstor_scheduler.servingtls import ServingTLS
from linstor_scheduler.snapshot import read_snapshot

from .explain import explain_ref, render_explain_table
from .fallback import FallbackReader
from .holder import StateHolder
from .http import DEFAULT_MAX_BODY, ExtenderApp, create_app
from .judge import Extender
from .metrics import ExtenderMetrics
from .placements import PROFILE as PLACEMENT_PROFILE
from .placements import PlacementReporter
from .refresh import EXTENDER_KINDS, Syncer
from .reservations import DEFAULT_TTL, Ledger
from .scoring import Weights
from .selections import SelectionFeed
from .snapshot_mode import snapshot_extender
from .state import EXTENDER_TRANSFORMS, ClusterState, ResourceIndexer

log = logging.getLogger("linstor_scheduler.extender")
DEFAULT_RECORD_MAX_AGE = 60.0  # fencing's record: --max-staleness (20 s) + its Lease (15 s), with margin
LEASE_PART = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a DNS-1123 subdomain


def build_live_app(
    client: LinstorClient,
    api_client: Any,
    *,
    poll_interval: float = 10.0,
    poll_min_factor: float = 4.0,
    max_staleness: float = 120.0,
    fallback_timeout: float = 1.0,
    weights: Weights | None = None,
    use_events: bool = True,
    max_body: int = DEFAULT_MAX_BODY,
    metrics: ExtenderMetrics | None = None,
    api_timeout: float = DEFAULT_API_TIMEOUT,
    reservation_ttl: float = DEFAULT_TTL,
    scheduler_name: str | None = None,
    fencing_lease: str | None = None,
    fencing_record_max_age: float = DEFAULT_RECORD_MAX_AGE,
    wall_clock: Callable[[], float] = time.time,
) -> ExtenderApp:
    """The live extender. ``max_staleness`` bounds everything it answers from: the informers are
    kept to it (``bounded_by``: a watch ended by the server every third of it, a silent one ended
    within two thirds, retries at least every third), one LINSTOR read may take at most that long,
    and past it (either source) the extender answers neutrally and ``/readyz`` fails saying why."""
    metrics = metrics or ExtenderMetrics()
    holder = StateHolder()
    client.on_request = lambda method, _path, status, _secs: metrics.linstor_requests.labels(
        method, str(status) if status is not None else "error").inc()
    fallback = FallbackReader(client, timeout=fallback_timeout,
                              on_read=lambda outcome: metrics.fallback_reads.labels(outcome).inc())
    syncer = Syncer(holder, client, None, poll_interval=poll_interval, poll_min_factor=poll_min_factor,
                    use_events=use_events, metrics=metrics, fallback=fallback, read_in_thread=True,
                    read_deadline=max_staleness, gc_policy=gcpolicy.SERVICE)
    caches = KubeCaches(api_client, list(EXTENDER_KINDS), on_change=syncer.kube_changed, max_age=max_staleness,
                        transforms=EXTENDER_TRANSFORMS, page_size=RECORD_PAGE_SIZE,
                        **bounded_by(max_staleness, api_timeout))
    syncer.caches = caches
    leases: Informer | None = None
    if fencing_lease:
        # Fencing's Lease, whose leader records the nodes it judges to have lost their storage
        # (linstor_scheduler.lost_storage): one object, read by name (RBAC: resourceNames), kept as its
        # record only. Not part of ``caches``: the record carries its own time (``observed``) and ages
        # out by it, so a Lease this extender cannot read (403: a RoleBinding in another namespace)
        # or whose watch lags filters nothing on fencing's word, as when fencing is not deployed; it
        # never makes the extender unready, nor neutral for every pod.
        namespace, name = fencing_lease.split("/", 1)
        leases = Informer(
            api_client, "Lease", namespace=namespace, field_selector=f"metadata.name={name}",
            on_change=syncer.lost_changed, transform=read_record,
            watch_timeout=caches.informers["Node"].watch_timeout, **bounded_by(max_staleness, api_timeout))

        def lost_by_record() -> Lost:
            assert leases is not None
            return lost_now(next(iter(leases.snapshot().values()), None), wall_clock(), fencing_record_max_age)

        syncer.lost_source = lost_by_record
    ledger = Ledger(ttl=reservation_ttl)
    extender = Extender(holder, weights=weights, max_staleness=max_staleness, fallback=fallback, kube=syncer,
                        ledger=ledger, scheduler_name=scheduler_name)
    feed = SelectionFeed(ledger, holder)  # kube-scheduler's choices, from the claim informer at once
    claims = caches.informers["PersistentVolumeClaim"]

    def claim_changed(kind: str, obj: Any) -> None:
        syncer.kube_changed(kind, obj)
        feed.heard(kind, obj)

    def published(state: ClusterState) -> None:  # holds move, settle and expire with each published state
        extender.reconcile(state)
        feed.published(state)

    claims.on_change = claim_changed
    syncer.on_publish = published
    metrics.bind_reservations(ledger.totals)
    recorder = EventRecorder(api_client, component="linstor-scheduler-extender")
    placements = PlacementReporter(extender, recorder, metrics.placements)
    # Bindings, for placements only: outside ``caches`` on purpose, so a slow Pod watch never makes
    # the extender neutral (the verdicts do not read pods). Only the profile's pods, and nothing of
    # them is kept but the few bindings waiting to be judged (PlacementReporter.keep).
    pods = Informer(api_client, "Pod", field_selector=f"spec.schedulerName={PLACEMENT_PROFILE}",
                    transform=placements.keep, on_change=placements.changed,
                    watch_timeout=caches.informers["Node"].watch_timeout, **bounded_by(max_staleness, api_timeout))
    metrics.registry.register(KubeCollector(caches, recorder=recorder))

    async def startup() -> None:
        feed.start(asyncio.get_running_loop())
        caches.start()
        pods.start()
        if leases is not None:
            leases.start()
        try:
            await syncer.start()
        except BaseException:  # the server will not serve: what started here must not run on
            await shutdown()
            raise

    async def shutdown() -> None:
        """Every step runs, whatever an earlier one raised or a forced exit cancelled: a step
        skipped leaves informer threads polling after the server is gone."""
        try:
            await syncer.stop()
        finally:
            caches.stop()
            pods.stop(1.0)
            if leases is not None:
                leases.stop(1.0)
            await client.aclose()

    def alive() -> tuple[bool, str]:
        """``/healthz``: the informers' loops and the sync's loops all still turn."""
        checks = [caches.liveness(), syncer.liveness()]
        return all(ok for ok, _ in checks), "; ".join(text for _, text in checks)

    def kube_details() -> dict[str, object]:
        errors = caches.errors()
        if leases is not None and leases.error:
            errors = {**errors, "Lease": f"fencing's record unread, nothing filtered on it: {leases.error}"}
        return {"kube_errors": errors}

    app = create_app(extender, metrics=metrics, max_body=max_body, startup=startup, shutdown=shutdown,
                     alive=alive, kube_details=kube_details, placements=placements)
    app.state.syncer = syncer
    app.state.caches = caches
    app.state.placements = placements
    app.state.recorder = recorder
    app.state.client = client
    return app


def score_weights(args: argparse.Namespace) -> Weights:
    """``--score-weights``; a bad one is a ``ConfigError`` naming it (exit 2)."""
    return parsed("--score-weights", Weights.parse, args.score_weights)


def run_extender(args: argparse.Namespace) -> int:
    weights = score_weights(args)
    tls = serving_tls(args)  # bad TLS settings or files fail before LINSTOR or the API server is asked
    metrics = ExtenderMetrics()
    if args.snapshot:
        extender = snapshot_extender(args.snapshot, weights=weights, max_staleness=args.max_staleness,
                                     scheduler_name=args.scheduler_name or None)
        state = extender.holder.state
        gcpolicy.SERVICE.published(new_content=True)  # served from for good, as a live sync's state
        log.info("serving from snapshot %s: %d nodes, %d resources", args.snapshot,
                 len(state.nodes), len(state.resources))
        app = create_app(extender, metrics=metrics, max_body=args.max_body_bytes)
    else:  # a snapshot never ages: only a live extender polls
        exceeds(args, "--max-staleness", "--poll-interval",
                "state a poll old would be stale, and the extender neutral, between every two reads")
        app = build_live_app(
            make_linstor_client(args), api_client_from_args(args), poll_interval=args.poll_interval,
            poll_min_factor=args.poll_min_factor, max_staleness=args.max_staleness,
            fallback_timeout=args.fallback_timeout, weights=weights, use_events=args.node_events,
            max_body=args.max_body_bytes, metrics=metrics, api_timeout=args.api_timeout,
            reservation_ttl=args.reservation_ttl, scheduler_name=args.scheduler_name or None,
            fencing_lease=fencing_lease(args), fencing_record_max_age=args.fencing_record_max_age,
        )
    return serve_extender(app, args, tls)


def fencing_lease(args: argparse.Namespace) -> str | None:
    """``--fencing-lease`` as NAMESPACE/NAME (a bare NAME is in ``--fencing-lease-namespace``), or None
    when empty (off); a name that cannot be a Lease's is a ``ConfigError`` naming the flag."""
    text = (args.fencing_lease or "").strip()
    if not text:
        return None
    namespace, _, name = text.rpartition("/")
    namespace = namespace or args.fencing_lease_namespace
    for part in (namespace, name):
        if not LEASE_PART.fullmatch(part):
            raise ConfigError(f"{setting('--fencing-lease')} {text!r} is not NAMESPACE/NAME of a Lease "
                              "(lower-case letters, digits, '-' and '.'), or empty for off")
    return objects.key_of(namespace, name)


def serving_tls(args: argparse.Namespace) -> ServingTLS | None:
    """The verbs' HTTPS (``--tls-*-file``), or None for plain HTTP; half a pair is a ``ConfigError``."""
    cert, key, client_ca = (getattr(args, f, None) for f in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"))
    if bool(cert) != bool(key):
        raise ConfigError(f"{setting('--tls-cert-file')} and {setting('--tls-key-file')} go together: give both "
                          "or neither")
    if client_ca and not cert:
        raise ConfigError(f"{setting('--tls-client-ca-file')} needs HTTPS: give {setting('--tls-cert-file')} "
                          f"and {setting('--tls-key-file')} too")
    return ServingTLS(cert, key, client_ca or None) if cert else None


def serve_extender(app: ExtenderApp, args: argparse.Namespace, tls: ServingTLS | None) -> int:
    """The verbs on ``--listen-address:--port`` (loopback by default; HTTPS with ``tls``), health and
    metrics on ``--metrics-address:--metrics-port``, until SIGTERM."""
    if not is_loopback(args.listen_address) and (tls is None or not tls.client_auth):
        log.warning("the verbs /filter, /prioritize and /explain listen on %s%s: every client that reaches "
                    "it can ask (and learn where each claim's replicas are); kube-scheduler in the same pod "
                    "needs only 127.0.0.1, another one a NetworkPolicy or --tls-client-ca-file",
                    args.listen_address, " over HTTPS" if tls else "")
    return serve_asgi(app.verbs, host=args.listen_address, port=args.port, log_level=args.log_level, tls=tls,
                      ops=app.ops, ops_host=args.metrics_address, ops_port=args.metrics_port)


def is_loopback(address: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: reachable from this network namespace only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _nodes_arg(text: str) -> list[str] | None:
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


def run_explain(args: argparse.Namespace) -> int:
    if not args.pod:
        raise ConfigError(f"{setting('--pod')} is required: the pod to explain, NAMESPACE/NAME")
    weights = score_weights(args)  # a bad setting before the cluster is read
    doc = (read_snapshot(args.snapshot, resources=ResourceIndexer()) if args.snapshot
           else asyncio.run(live_snapshot(args, pod=args.pod)))
    result = explain_ref(doc, args.pod, _nodes_arg(args.nodes), weights)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if args.output == "json"
          else render_explain_table(result))
    return 0


def live_snapshot(args: argparse.Namespace, *, pod: str | None = None) -> Any:
    return capture(make_linstor_client(args), api_client_from_args(args), pod=pod,
                   scheduler_name=getattr(args, "scheduler_name", "linstor"))


def run_snapshot(args: argparse.Namespace) -> int:
    doc = asyncio.run(live_snapshot(args))
    if args.format == "json":
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    return 0
