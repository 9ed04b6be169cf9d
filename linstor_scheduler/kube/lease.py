"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Workers that must act once per cluster (``sync-classes``, ``fencing``) run one active instance:
the holder renews the Lease every ``renew_seconds``; the others take it over only when they have
*observed* no change to it for ``lease_seconds`` on their own clock (never by comparing the remote
``renewTime`` with our clock: clocks skew). Writes use the Lease's resourceVersion, so two
candidates cannot both win a race: the loser gets 409 and stays a follower.

``is_leader`` turns false as soon as our own last successful renewal is older than
``lease_seconds`` minus a safety margin, before anyone else may take over, so a leader cut off from
the API server stops acting by itself. ``leader_since`` lets callers wait for fresh caches after
winning (a new leader must not act on what its predecessor's caches said).

``eligible`` says whether this instance can do the leader's work at all: a leader whose view of
Kubernetes stayed blind past its bound still renews its Lease (the Lease is one small write, the
watches are another story), so no standby would ever take over. While ``eligible()`` is false the
elector releases the Lease it holds and does not campaign; a standby that sees can then lead.
The Lease also carries what a successor needs (``annotations``, written with every renewal and
kept on release; ``inherited``: what the Lease carried when we took it over), e.g. fencing's grace
timers, and ``inherited_skew``: how far the predecessor's wall clock looked behind ours at its last
renewal (our wall clock when we first saw that renewal, minus the ``renewTime`` it wrote; with
clocks that agree, only how late we looked), so a successor can tell a record written by a slow
clock. Deadlines use ``CLOCK_BOOTTIME`` (linstor_scheduler.clock): a suspended leader wakes up knowing its
Lease ran out meanwhile. Every call has the client's deadline (``client.timed_client``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from linstor_scheduler.clock import now as boottime
from linstor_scheduler.config import add_flag, add_option, invalid

if TYPE_CHECKING:
    from kubernetes import client as k8s

log = logging.getLogger(__name__)


def _micro_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """``<pod name>_<random>``: unique even when two processes share a hostname."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(self, api_client: k8s.ApiClient, name: str, namespace: str, *, identity: str | None = None,
                 lease_seconds: float = 15.0, renew_seconds: float = 5.0, retry_seconds: float = 2.0,
                 clock: Callable[[], float] = boottime, wall_clock: Callable[[], float] = time.time,
                 on_change: Callable[[bool], None] | None = None,
                 eligible: Callable[[], tuple[bool, str]] | None = None) -> None:
        """``eligible()``: (can this instance lead, why not); see the module's docstring."""
        from kubernetes import client as k8s  # here, not at import: the CLI's --help must stay fast

        if not renew_seconds < lease_seconds:
            raise ValueError("the renew interval must be shorter than the lease duration")
        self.api = k8s.CoordinationV1Api(api_client)
        self.name, self.namespace = name, namespace
        self.identity = identity or default_identity()
        self.lease_seconds, self.renew_seconds, self.retry_seconds = lease_seconds, renew_seconds, retry_seconds
        self.clock, self.wall_clock = clock, wall_clock
        self.on_change = on_change
        self.leader_since: float | None = None  # clock() when we last became leader
        self.holder: str | None = None  # who holds it, as last observed
        self._renewed_at: float | None = None  # clock() of our last successful write as holder
        self._observed: tuple[Any, ...] | None = None  # the other holder's record, and when it last changed
        self._observed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.eligible = eligible
        self.ineligible: str | None = None  # why we stepped aside, while we do
        self.released_for_blindness = 0
        self.beat = clock()  # the loop's last step (liveness)
        # Annotations carried on the Lease: ``annotations`` are ours, written with every renewal (a
        # component keeps there what its successor needs, e.g. fencing's grace timers); ``inherited``
        # are those the Lease carried when we took it over (the predecessor's last word).
        self.annotations: dict[str, str] = {}
        self.inherited: dict[str, str] = {}
        self.inherited_skew: float | None = None  # see the module's docstring; None: no renewTime to measure

    # --- the decision, one step at a time (tests drive this with a fake clock) -----------------
    @property
    def is_leader(self) -> bool:
        if self._renewed_at is None:
            return False
        return self.clock() - self._renewed_at < self.lease_seconds * 0.8

    def step(self) -> bool:
        """Try to acquire or renew once; returns whether we lead afterwards. Never raises."""
        from kubernetes.client.rest import ApiException

        was = self.leader_since is not None  # what we last reported, even if it lapsed since
        self.beat = self.clock()
        ok, why = self.eligible() if self.eligible else (True, "")
        if not ok:
            if self.ineligible is None:
                log.warning("lease %s/%s: %s steps aside: %s", self.namespace, self.name, self.identity, why)
            self.ineligible = why
            if self.is_leader:
                self.released_for_blindness += 1
                self.release()
            self._renewed_at = None
            if self.leader_since is not None:  # our lead had lapsed on its own: say so once
                self.leader_since = None
                if self.on_change:
                    self.on_change(False)
            return False
        if self.ineligible is not None:
            log.info("lease %s/%s: %s may lead again (%s is over)", self.namespace, self.name, self.identity,
                     self.ineligible)
            self.ineligible = None
        try:
            self._step()
        except ApiException as exc:
            log.warning("lease %s/%s: API error %s %s", self.namespace, self.name, exc.status, exc.reason)
        except Exception as exc:  # network down: we simply do not renew, and lose the lead in time
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
        now = self.is_leader
        if now != was:
            if now:
                self.leader_since = self.clock()
                log.info("lease %s/%s: %s became leader", self.namespace, self.name, self.identity)
            else:
                self.leader_since = None
                log.warning("lease %s/%s: %s lost the lead", self.namespace, self.name, self.identity)
            if self.on_change:
                self.on_change(now)
        return now

    def _spec(self, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _micro_time(self.wall_clock())
        return {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_seconds),
                "acquireTime": acquired or now, "renewTime": now, "leaseTransitions": transitions}

    def _step(self) -> None:
        from kubernetes import client as k8s
        from kubernetes.client.rest import ApiException

        started = self.clock()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.annotations, self.inherited, self.inherited_skew = {}, {}, None
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(0, None)}
            try:
                self.api.create_namespaced_lease(self.namespace, body)
            except ApiException as create_exc:
                if create_exc.status == 409:  # someone else created it first
                    return
                raise
            self._renewed_at, self.holder = started, self.identity
            return
        spec = lease.spec or k8s.V1LeaseSpec()
        holder = spec.holder_identity or ""
        self.holder = holder or None
        record = (holder, spec.renew_time, spec.lease_transitions, lease.metadata.resource_version)
        if record != self._observed:
            self._observed, self._observed_at = record, started
        duration = spec.lease_duration_seconds or self.lease_seconds
        if holder and holder != self.identity and started - self._observed_at < duration:
            self._renewed_at = None  # someone else holds a live lease
            return
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        found = dict(lease.metadata.annotations or {})
        if holder != self.identity or not self.is_leader:  # taking it over: what the predecessor left
            self.annotations, self.inherited = {}, found
            self.inherited_skew = self._skew(spec.renew_time)
        acquired = spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if (
            holder == self.identity and spec.acquire_time) else None
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": lease.metadata.resource_version,
                             "annotations": {**found, **self.annotations}},
                "spec": self._spec(transitions, acquired)}
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # lost a race: somebody else wrote first
                self._renewed_at = None
                return
            raise
        self._renewed_at, self.holder = started, self.identity

    def _skew(self, renewed: Any) -> float | None:
        """Our wall clock when we first saw the Lease as it is now, minus the ``renewTime`` its
        holder wrote (its wall clock): how far its clock is behind ours, plus how late we looked."""
        if not isinstance(renewed, dt.datetime):
            return None
        if renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=dt.UTC)
        seen = self.wall_clock() - (self.clock() - self._observed_at)
        return seen - renewed.timestamp()

    def release(self) -> None:
        """On graceful shutdown: hand the Lease over at once instead of after ``lease_seconds``."""
        if not self.is_leader:
            return
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if (lease.spec and lease.spec.holder_identity) == self.identity:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace,
                                     "resourceVersion": lease.metadata.resource_version,
                                     "annotations": {**(lease.metadata.annotations or {}), **self.annotations}},
                        "spec": {"holderIdentity": "", "leaseDurationSeconds": 1,
                                 "leaseTransitions": lease.spec.lease_transitions or 0,
                                 "renewTime": _micro_time(self.wall_clock())}}
                self.api.replace_namespaced_lease(self.name, self.namespace, body)
                log.info("lease %s/%s: released by %s", self.namespace, self.name, self.identity)
        except Exception as exc:
            log.warning("lease %s/%s: could not release: %s", self.namespace, self.name, exc)
        self._renewed_at = None
        self.leader_since = None
        if self.on_change:
            self.on_change(False)

    # --- the background loop -----------------------------------------------------------------
    def start(self) -> LeaderElector:
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        """A step every ``renew_seconds`` (``retry_seconds`` while following), counted from the start of
        the last one: a step slowed by the API server does not push the next renewal back, which made
        ``is_leader`` lapse between renewals whenever two calls took longer than the lease's margin."""
        while not self._stop.is_set():
            started = self.clock()
            leading = self.step()
            interval = self.renew_seconds if leading else self.retry_seconds
            self._stop.wait(max(0.0, interval - (self.clock() - started)))

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if release:
            self.release()


class StepAside:
    """The elector's ``eligible`` for a component that must see to lead: blind (``view()`` not ok)
    for longer than ``patience``, it steps aside (the elector releases the Lease and does not
    campaign) and stays aside for at least ``hold``, and until it sees again.

    ``patience`` is a few Lease durations: a blip of staleness (one slow list) must not hand the
    Lease around, which would restart every grace timer with the new term; a leader blind for that
    long is no use, and a standby whose watches work can lead. ``hold`` keeps us from taking the
    Lease straight back before a standby had its chance. A standby's own blindness counts the same
    way: it does not campaign while blind past ``patience``."""

    def __init__(self, view: Callable[[], tuple[bool, str]], *, patience: float, hold: float,
                 clock: Callable[[], float] = boottime) -> None:
        self.view, self.patience, self.hold, self.clock = view, patience, hold, clock
        self.blind_since: float | None = None
        self.aside_until: float | None = None
        self.why = ""

    def __call__(self) -> tuple[bool, str]:
        now = self.clock()
        ok, why = self.view()
        if ok:
            self.blind_since = None
        elif self.blind_since is None:
            self.blind_since = now
        if self.aside_until is not None:
            if now < self.aside_until or not ok:
                return False, self.why
            self.aside_until = None
        if ok:
            return True, why
        blind = now - self.blind_since if self.blind_since is not None else 0.0
        if blind < self.patience:
            return True, f"blind for {blind:.0f}s (steps aside after {self.patience:g}s): {why}"
        self.aside_until = now + self.hold
        self.why = f"blind for {blind:.0f}s (more than {self.patience:g}s): {why}" if self.patience else why
        return False, self.why


class AlwaysLeader:
    """``--no-leader-elect``: a single instance that acts without a Lease (development, tests)."""

    identity = "no-leader-election"
    holder = identity
    is_leader = True

    def __init__(self, clock: Callable[[], float] = boottime) -> None:
        self.leader_since = clock()

    def start(self) -> AlwaysLeader:
        return self

    def step(self) -> bool:
        return True

    def stop(self, release: bool = True) -> None:
        pass


def add_leader_options(parser: argparse.ArgumentParser, default_name: str) -> None:
    group = parser.add_argument_group("leader election")
    add_flag(group, "--leader-elect", default=True,
             help="run one active instance, elected through a coordination.k8s.io Lease")
    add_option(group, "--lease-name", default=default_name, help="name of the Lease")
    add_option(group, "--lease-namespace", env="POD_NAMESPACE", default="default",
               help="namespace of the Lease (the pod's own namespace in the deployment)")
    add_option(group, "--lease-duration", type=float, default=15.0, above=0.2,
               help="seconds without renewal after which another instance takes over")


def elector_from_args(api_client: k8s.ApiClient, args: argparse.Namespace,
                      on_change: Callable[[bool], None] | None = None,
                      eligible: Callable[[], tuple[bool, str]] | None = None) -> LeaderElector | AlwaysLeader:
    if not args.leader_elect:
        return AlwaysLeader()
    duration = float(args.lease_duration)
    renew = max(duration / 3, 0.2)
    if not renew < duration:  # renewed a third of the way through, never more often than every 0.2 s
        raise invalid("--lease-duration", duration, "seconds, more than 0.2")
    return LeaderElector(api_client, args.lease_name, args.lease_namespace, lease_seconds=duration,
                         renew_seconds=renew, retry_seconds=max(duration / 7, 0.1),
                         on_change=on_change, eligible=eligible)
