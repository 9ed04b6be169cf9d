"""AdmissionReview v1 in and out, and the one decision: does this pod get ``schedulerName: linstor``?

The API server's body is checked with pydantic at the edge (a malformed review is the caller's
bug: 400 with a message). Which claims are LINSTOR claims is decided by
``linstor_scheduler.volumes`` -- the same mapping the extender and the fencing controller use --
so the three never disagree about which pods are ours.

A claim that could not be looked at in time (``LookupFailed``: the cache was stale or lacked it,
and the direct read failed or had no answer within the review's deadline) is never taken for "not
LINSTOR". Unless another claim of the pod is known to be LINSTOR-backed, the verdict is ``unknown``
and the pod is sent to the ``linstor`` profile all the same (the unknown-claims rule,
docs/install.md): that profile schedules any pod correctly, since the extender is neutral for pods
without LINSTOR volumes, while a pod left to the default scheduler keeps it for its whole life
(``schedulerName`` cannot change after creation). http.py counts it and puts a Warning Event
``LinstorClaimsUnknown`` on the pod.

A generic ephemeral volume's claim is judged from its ``volumeClaimTemplate``, never looked up: the
ephemeral volume controller makes it after the pod. ``storageClassName: ""`` there means no class
(a PV without one, as in a PVC); only a template without the field gets the default class.
"""

from __future__ import annotations

import base64
import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linstor_scheduler.kube import objects
from linstor_scheduler.volumes import (
    Claim,
    ClaimLookup,
    Obj,
    StorageClassInfo,
    VolumeLookup,
    pod_claims,
    resolve_claim,
)

from . import OPT_OUT_LABEL, OPT_OUT_VALUE

log = logging.getLogger(__name__)

API_VERSION = "admission.k8s.io/v1"
DEFAULT_SCHEDULERS = ("", "default-scheduler")
DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")


UNKNOWN = "unknown"  # the verdict's outcome when a look-up failed and nothing else decided
MUTATED = "mutated"


class BadReview(ValueError):
    """The body is not an AdmissionReview v1 we can answer: HTTP 400 with this message."""


class LookupFailed(Exception):
    """A PVC, PV or StorageClass could not be looked at: neither a fresh cache nor a direct read had it."""


class GroupVersionKind(BaseModel):
    model_config = ConfigDict(extra="ignore")
    group: str = ""
    version: str = ""
    kind: str = ""


class AdmissionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    uid: str = Field(min_length=1)
    kind: GroupVersionKind
    operation: str = ""
    namespace: str | None = None
    name: str | None = None
    object: dict[str, Any] | None = None
    dryRun: bool | None = None


class AdmissionReview(BaseModel):
    model_config = ConfigDict(extra="ignore")
    apiVersion: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


def parse_review(body: bytes) -> AdmissionReview:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadReview("body is not a JSON object (expected an AdmissionReview)")
    try:
        return AdmissionReview.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadReview(f"not an AdmissionReview {API_VERSION}: {where}: {first['msg']}") from None


@dataclass(frozen=True, slots=True)
class Verdict:
    """``outcome`` labels the metric; ``patch`` is the JSONPatch (None: allowed unchanged)."""

    outcome: str
    reason: str
    patch: list[dict[str, Any]] | None = None


def encode_response(uid: str, verdict: Verdict) -> bytes:
    """Always ``allowed: true``: this webhook only ever adds a scheduler name, it never refuses."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(verdict.patch)).decode()
    return orjson.dumps({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})


def is_default_class(sc: Obj) -> bool:
    annotations = objects.annotations(sc)
    return any(str(annotations.get(a, "")).lower() == "true" for a in DEFAULT_CLASS_ANNOTATIONS)


@dataclass
class Lookups:
    """How the mutator reads PVCs (key ``namespace/name``) and PVs (records, or objects read into
    them: ``volumes.resolve_claim``) and StorageClasses."""

    get_pvc: ClaimLookup
    get_pv: VolumeLookup
    get_sc: Callable[[str], StorageClassInfo | None]
    default_class: Callable[[], str | None] = lambda: None


def positively_linstor(claim: Claim) -> bool:
    """Bound to a LINSTOR PV, or provisioned by a LINSTOR StorageClass. A claim that merely *may*
    be ours (its PVC not seen) does not count: we only redirect pods we know are ours."""
    return claim.resource is not None or (claim.storage_class is not None and claim.storage_class.is_linstor)


class LookupSource(Protocol):
    def for_review(self) -> Lookups: ...


class SchedulerNameMutator:
    def __init__(self, lookups: Lookups | LookupSource, scheduler_name: str = "linstor") -> None:
        """``lookups``: fixed ones, or a source that gives each review its own (``KubeLookups``: one
        deadline for a review's direct reads)."""
        self.lookups = lookups
        self.scheduler_name = scheduler_name

    def _lookups(self) -> Lookups:
        return self.lookups if isinstance(self.lookups, Lookups) else self.lookups.for_review()

    def patch(self) -> list[dict[str, Any]]:
        return [{"op": "add", "path": "/spec/schedulerName", "value": self.scheduler_name}]

    def review(self, request: AdmissionRequest, lookups: Lookups | None = None) -> Verdict:
        """``lookups``: this review's (``ReviewReads.lookups()``); None: the mutator's own."""
        if request.kind.kind != "Pod" or request.kind.group != "" or request.operation != "CREATE":
            return Verdict("ignored", f"not a pod creation ({request.operation} {request.kind.kind})")
        pod = request.object
        if not isinstance(pod, dict):
            raise BadReview("request.object: a pod creation needs the pod")
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            raise BadReview("request.object.spec: missing or not an object")
        if objects.labels(pod).get(OPT_OUT_LABEL) == OPT_OUT_VALUE:
            return Verdict("opted_out", f"pod has label {OPT_OUT_LABEL}={OPT_OUT_VALUE}")
        current = spec.get("schedulerName") or ""
        if current == self.scheduler_name:
            return Verdict("already_set", f"schedulerName is already {current}")
        if current not in DEFAULT_SCHEDULERS:
            return Verdict("other_scheduler", f"pod asks for scheduler {current!r}; left alone")
        lookups = lookups or self._lookups()
        unknown: list[str] = []
        refs = pod_claims(self._normalised(pod, request.namespace, lookups, unknown))
        # An ephemeral volume's claim does not exist yet: its template is the claim (never read).
        ephemeral = {ref.key for ref in refs if ref.template is not None}

        def get_pvc(key: str) -> Any:
            return None if key in ephemeral else lookups.get_pvc(key)

        for ref in refs:
            try:
                claim = resolve_claim(ref, get_pvc, lookups.get_pv, lookups.get_sc)
            except LookupFailed as exc:
                unknown.append(str(exc))
                continue
            if positively_linstor(claim):  # one is enough: the claims after it need no look-up
                return Verdict(MUTATED, f"{claim.label} is LINSTOR-backed", self.patch())
        if unknown:
            return Verdict(UNKNOWN, "could not look up " + "; ".join(unknown), self.patch())
        return Verdict("no_linstor_volume", "no LINSTOR-backed claim")

    def _normalised(self, pod: dict[str, Any], namespace: str | None, lookups: Lookups,
                    unknown: list[str]) -> dict[str, Any]:
        """The pod as the claim mapping expects it: its namespace filled in (a pod being created
        often carries it only in the request) and ephemeral templates without a class given the
        default StorageClass, which the API server will assign when it creates the PVC."""
        volumes = objects.spec(pod).get("volumes") or []
        classless = [v for v in volumes if isinstance(v, dict) and isinstance(v.get("ephemeral"), dict)
                     and isinstance(v["ephemeral"].get("volumeClaimTemplate"), dict)
                     and _classless(v["ephemeral"]["volumeClaimTemplate"])]
        if objects.namespace(pod) and not classless:
            return pod
        pod = copy.deepcopy(pod)
        objects.writable_meta(pod).setdefault("namespace", namespace or objects.DEFAULT_NAMESPACE)
        default = None
        if classless:
            try:
                default = lookups.default_class()
            except LookupFailed as exc:  # the templates without a class stay unknown
                unknown.append(f"the default StorageClass: {exc}")
        if default:
            for vol in pod["spec"].get("volumes") or []:
                template = (vol.get("ephemeral") or {}).get("volumeClaimTemplate") if isinstance(vol, dict) else None
                if isinstance(template, dict):
                    spec = template.setdefault("spec", {})
                    if isinstance(spec, dict) and _classless(template):
                        spec["storageClassName"] = default
        return pod


def _classless(template: Mapping[str, Any]) -> bool:
    """A claim template that names no class (the field absent or null) gets the default class;
    ``storageClassName: ""`` is a class named: none (core/v1 PersistentVolumeClaimSpec)."""
    spec = template.get("spec")
    return not isinstance(spec, Mapping) or spec.get("storageClassName") is None
