"""From a pod to its LINSTOR resources: pod volume -> PVC -> PV -> ``spec.csi.volumeHandle``.

Shared by the scheduler extender, the webhook, the locality exporter and the fencing controller, so
all agree on which volumes of a pod are LINSTOR volumes. Pods are raw Kubernetes dicts (the JSON
form); claims and volumes are the compact records of ``claims.py`` (what the informers keep), or
objects read into them. Pure functions: lookups are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .claims import ClaimRecord, VolumeRecord, as_claim, as_volume, template_record
from .kube import objects
from .quantity import parse_quantity as parse_quantity  # its old home: callers import it from here

CSI_DRIVER = "linstor.csi.linbit.com"
PARAM_PREFIX = CSI_DRIVER + "/"
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")

Obj = Mapping[str, Any]

def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{n}B"


def first_label(labels: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = labels.get(key)
        if value:
            return value
    return None


# --- StorageClass -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteAccess:
    """``allowRemoteVolumeAccess``: ``true`` (any node), ``false``, or a list of ``fromSame`` rules.

    A rule ``fromSame: [topology.kubernetes.io/zone]`` allows diskless access from a node that has
    the same values for all listed labels as some node with a diskful replica.
    """

    allowed: bool = True
    from_same: tuple[tuple[str, ...], ...] = ()

    def describe(self) -> str:
        if not self.allowed:
            return "forbids remote access"
        if self.from_same:
            rules = " or ".join("+".join(keys) for keys in self.from_same)
            return f"allows remote access only from nodes with the same {rules} as a diskful replica"
        return "allows remote access"


def parse_remote_access(raw: Any) -> RemoteAccess:
    """Parse the StorageClass parameter as linstor-csi does (bool string or YAML list)."""
    if raw is None:
        return RemoteAccess(True)  # linstor-csi's default is true
    text = str(raw).strip()
    if text.lower() in ("true", "yes", "1", ""):
        return RemoteAccess(True)
    if text.lower() in ("false", "no", "0"):
        return RemoteAccess(False)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return RemoteAccess(False)  # unreadable policy: be strict, never place remote by guess
    rules: list[tuple[str, ...]] = []
    if isinstance(doc, list):
        for rule in doc:
            if isinstance(rule, dict) and isinstance(rule.get("fromSame"), list):
                rules.append(tuple(str(k) for k in rule["fromSame"]))
    if not rules:
        return RemoteAccess(False)
    return RemoteAccess(True, tuple(rules))


def _param(params: Mapping[str, Any], key: str) -> Any:
    """linstor-csi accepts prefixed keys and, for old classes, the bare key (case-insensitive)."""
    lowered = {k.lower(): v for k, v in params.items()}
    for candidate in (PARAM_PREFIX + key, key):
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None


@dataclass(frozen=True, slots=True)
class StorageClassInfo:
    name: str
    provisioner: str
    storage_pool: str | None
    remote_access: RemoteAccess
    wait_for_first_consumer: bool

    @property
    def is_linstor(self) -> bool:
        return self.provisioner == CSI_DRIVER

    @classmethod
    def from_object(cls, sc: Obj) -> StorageClassInfo:
        params = sc.get("parameters") or {}
        return cls(
            name=objects.name(sc, ""),
            provisioner=sc.get("provisioner", ""),
            storage_pool=_param(params, "storagePool"),
            remote_access=parse_remote_access(_param(params, "allowRemoteVolumeAccess")),
            wait_for_first_consumer=sc.get("volumeBindingMode") == "WaitForFirstConsumer",
        )


# --- node selectors (PV node affinity) ---------------------------------------------------------


def requirement_holds(value: str | None, operator: str | None, wanted: Sequence[str]) -> bool:
    """One ``NodeSelectorRequirement`` against a label's (or field's) value, None when the node has
    no such label; the operators as Kubernetes reads them (component-helpers
    scheduling/corev1/nodeaffinity: ``In``, ``NotIn``, ``Exists``, ``DoesNotExist``, and ``Gt`` /
    ``Lt`` of one integer). Written once: the extender's and webhook's node selectors and
    affinity-sync's PV rules both ask here."""
    if operator == "In":
        return value is not None and value in wanted
    if operator == "NotIn":
        return value is None or value not in wanted
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and wanted:
        try:
            a, b = int(value), int(wanted[0])
        except ValueError:
            return False
        return a > b if operator == "Gt" else a < b
    return False


def _match_expression(expr: Obj, values_of: Callable[[str], str | None]) -> bool:
    return requirement_holds(values_of(expr.get("key", "")), expr.get("operator"), expr.get("values") or [])


def node_selector_matches(selector: Obj | None, node_name: str, labels: Mapping[str, str]) -> bool:
    """``v1.NodeSelector`` semantics: terms are ORed, expressions within a term ANDed."""
    if not selector:
        return True
    terms = selector.get("nodeSelectorTerms") or []
    if not terms:
        return True
    fields = {"metadata.name": node_name}
    for term in terms:
        exprs = term.get("matchExpressions") or []
        field_exprs = term.get("matchFields") or []
        if not exprs and not field_exprs:
            continue  # an empty term matches nothing (as in Kubernetes)
        if all(_match_expression(e, labels.get) for e in exprs) and all(
            _match_expression(e, fields.get) for e in field_exprs
        ):
            return True
    return False


# --- pod -> claims -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimRef:
    """A pod volume that names a claim: ``persistentVolumeClaim`` or a generic ephemeral volume."""

    namespace: str
    name: str
    volume: str
    template: Obj | None = None  # ephemeral.volumeClaimTemplate, used until the PVC exists

    @property
    def key(self) -> str:
        return objects.key_of(self.namespace, self.name)


def named_volumes(pod: Obj) -> Iterator[tuple[str, Obj]]:
    """A pod's volumes as (name, volume source), malformed entries skipped."""
    for vol in objects.spec(pod).get("volumes") or []:
        if isinstance(vol, Mapping):
            yield str(vol.get("name") or ""), vol


def pod_claims(pod: Obj) -> list[ClaimRef]:
    """Claims of a pod; an ephemeral volume's PVC is named ``<pod>-<volume>`` by Kubernetes."""
    namespace = objects.namespace(pod, objects.DEFAULT_NAMESPACE)
    pod_name = objects.name(pod, "")
    refs: list[ClaimRef] = []
    for name, vol in named_volumes(pod):
        pvc = vol.get("persistentVolumeClaim")
        if isinstance(pvc, Mapping) and pvc.get("claimName"):
            refs.append(ClaimRef(namespace, str(pvc["claimName"]), name))
            continue
        eph = vol.get("ephemeral")
        if isinstance(eph, Mapping) and isinstance(eph.get("volumeClaimTemplate"), Mapping):
            refs.append(ClaimRef(namespace, f"{pod_name}-{name}", name, eph["volumeClaimTemplate"]))
    return refs


@dataclass(frozen=True, slots=True)
class Claim:
    """What we know of one claim of a pod, resolved against the Kubernetes objects.

    ``resource`` is the LINSTOR resource definition name once the claim is bound to a LINSTOR PV.
    ``is_linstor`` is False for claims that are not ours (another driver): they are ignored.
    ``pending`` says why a LINSTOR-looking claim cannot be judged yet (PVC or PV not seen).
    """

    ref: ClaimRef
    is_linstor: bool
    resource: str | None = None
    storage_class: StorageClassInfo | None = None
    size_bytes: int | None = None
    pv_affinity: Obj | None = None
    pending: str | None = None

    @property
    def bound(self) -> bool:
        return self.resource is not None

    @property
    def label(self) -> str:
        """How reasons name the volume: the LINSTOR resource when bound, else the claim."""
        return f"volume {self.resource}" if self.resource else f"claim {self.ref.key}"


ClaimLookup = Callable[[str], ClaimRecord | Obj | None]
VolumeLookup = Callable[[str], VolumeRecord | Obj | None]


def resolve_claim(
    ref: ClaimRef,
    get_pvc: ClaimLookup,
    get_pv: VolumeLookup,
    get_sc: Callable[[str], StorageClassInfo | None],
) -> Claim:
    """``get_pvc``/``get_pv`` answer records (the informers keep nothing else) or, from a direct read,
    a snapshot or a test, the objects, read into records here."""
    pvc = as_claim(get_pvc(ref.key))
    seen = pvc is not None
    if pvc is None and ref.template is not None:
        pvc = template_record(ref.namespace, ref.name, ref.template)
    sc_name = pvc.storage_class if pvc is not None else None
    sc = get_sc(sc_name) if sc_name else None
    size = pvc.size_bytes if pvc is not None else None
    volume_name = pvc.volume if pvc is not None and seen else None
    if volume_name:
        pv = as_volume(get_pv(volume_name))
        if pv is None:
            linstor = sc.is_linstor if sc else True
            return Claim(ref, linstor, None, sc, size, pending=f"PersistentVolume {volume_name} not seen yet")
        if pv.driver != CSI_DRIVER or not pv.handle:
            return Claim(ref, False)
        pv_sc = get_sc(pv.storage_class or "") or sc
        size = pv.size_bytes or size
        return Claim(ref, True, pv.handle, pv_sc, size, pv.node_affinity)
    if sc is None:
        if not seen and ref.template is None:
            # Unknown claim: it may well be ours; kube-scheduler reports the missing PVC itself.
            return Claim(ref, True, pending=f"PersistentVolumeClaim {ref.key} not seen yet")
        if sc_name:
            return Claim(ref, True, pending=f"StorageClass {sc_name} not seen yet")
        return Claim(ref, False)  # no class, not bound: not something we provision
    if not sc.is_linstor:
        return Claim(ref, False)
    if not sc.wait_for_first_consumer:
        return Claim(ref, True, None, sc, size,
                     pending="claim is not bound yet and its StorageClass binds immediately")
    return Claim(ref, True, None, sc, size)


def resolve_pod_claims(
    pod: Obj,
    get_pvc: ClaimLookup,
    get_pv: VolumeLookup,
    get_sc: Callable[[str], StorageClassInfo | None],
) -> list[Claim]:
    """The LINSTOR claims of a pod (claims of other drivers are dropped)."""
    claims = [resolve_claim(ref, get_pvc, get_pv, get_sc) for ref in pod_claims(pod)]
    return [c for c in claims if c.is_linstor]
