"""``linstor_scheduler.kube.objects``: the one place that reads raw Kubernetes objects' metadata.

The accessors' rules (missing, null, empty or malformed fields), the one ``namespace/name`` key,
and the rule that keeps it the one place: no product module reads ``["metadata"]`` or
``.get("metadata")`` by hand (``ast``, as tests/test_structure.py reads imports)."""

from __future__ import annotations

import ast
import copy
import pickle

import orjson
import pytest

from linstor_scheduler.kube import objects
from tests.test_structure import PACKAGES, ROOT

ACCESSORS = ROOT / "linstor_scheduler" / "kube" / "objects.py"
# Calls that read (or read and then write) ``metadata`` by hand; ``objects.writable_meta`` writes.
READING_METHODS = ("get", "setdefault", "pop")


def _is_metadata(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == "metadata"


def hand_reads(source: str) -> list[int]:
    """The lines of ``source`` that read ``metadata`` by hand: ``x["metadata"]`` read (not a store or
    a del: building an object is fine) and ``x.get("metadata")`` (``setdefault``, ``pop`` too)."""
    def reads(node: ast.AST) -> bool:
        if isinstance(node, ast.Subscript):
            return isinstance(node.ctx, ast.Load) and _is_metadata(node.slice)
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in READING_METHODS and bool(node.args) and _is_metadata(node.args[0]))

    return sorted(node.lineno for node in ast.walk(ast.parse(source)) if reads(node))


def test_the_check_finds_each_kind_of_hand_read_and_passes_writes():
    source = '''
a = obj["metadata"]["name"]
b = (obj.get("metadata") or {}).get("uid")
c = obj.setdefault("metadata", {})
obj.pop("metadata", None)
obj["metadata"]["labels"] = {}
obj["metadata"] = {"name": "x"}
del obj["metadata"]
d = {"metadata": {"name": "x"}}
e = objects.name(obj)
'''
    assert hand_reads(source) == [2, 3, 4, 5, 6]


def test_no_product_module_reads_metadata_by_hand():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ACCESSORS:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{line}" for line in hand_reads(path.read_text())]
    assert not offenders, ("read metadata with linstor_scheduler.kube.objects (name, namespace, uid, labels, "
                           "key, ...; writable_meta to write), not by hand: " + ", ".join(offenders))


# --- the accessors -----------------------------------------------------------------------------------

POD = {"kind": "Pod", "metadata": {
    "name": "db-0", "namespace": "prod", "uid": "u-1", "resourceVersion": "42", "generateName": "db-",
    "creationTimestamp": "2026-01-01T00:00:00Z", "deletionTimestamp": "2026-01-02T00:00:00Z",
    "deletionGracePeriodSeconds": 30, "labels": {"app": "db"}, "annotations": {"a": "b"},
    "ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": True}],
    "finalizers": ["f"]}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}

STRINGS = (objects.name, objects.namespace, objects.uid, objects.generate_name)
PLAIN = (objects.resource_version, objects.creation_timestamp, objects.deletion_timestamp,
         objects.deletion_grace_period_seconds, objects.continue_token)
MAPS = (objects.labels, objects.annotations, objects.spec, objects.status, objects.meta)
LISTS = (objects.owner_references, objects.finalizers)


def test_each_accessor_reads_its_field():
    assert (objects.name(POD), objects.namespace(POD), objects.uid(POD), objects.generate_name(POD)) == \
        ("db-0", "prod", "u-1", "db-")
    assert objects.resource_version(POD) == "42"
    assert objects.creation_timestamp(POD) == "2026-01-01T00:00:00Z"
    assert objects.deletion_timestamp(POD) == "2026-01-02T00:00:00Z"
    assert objects.deletion_grace_period_seconds(POD) == 30
    assert objects.labels(POD) == {"app": "db"} and objects.labels(POD) is POD["metadata"]["labels"]
    assert objects.annotations(POD) == {"a": "b"}
    assert objects.owner_references(POD)[0]["name"] == "db" and objects.finalizers(POD) == ["f"]
    assert objects.meta(POD) is POD["metadata"]
    assert objects.spec(POD) is POD["spec"] and objects.status(POD) is POD["status"]
    assert objects.raw_meta(POD) is POD["metadata"]


@pytest.mark.parametrize("obj", [None, {}, {"metadata": None}, {"metadata": "text"}, {"metadata": ["x"]},
                                 {"metadata": {}}, {"spec": None, "status": 3}],
                         ids=["None", "no metadata", "null metadata", "text metadata", "list metadata",
                              "empty metadata", "malformed spec and status"])
def test_a_missing_null_or_malformed_part_reads_as_empty(obj):
    for read in (*STRINGS, *PLAIN):
        assert read(obj) is None, read.__name__
    for read in STRINGS:
        assert read(obj, "fallback") == "fallback", read.__name__
    for read in MAPS:  # EMPTY, or the object's own empty metadata
        assert read(obj) == {} and isinstance(read(obj), dict), read.__name__
    for read in LISTS:
        assert read(obj) == (), read.__name__


def test_null_empty_or_malformed_fields_read_as_their_default():
    obj = {"metadata": {"name": None, "namespace": "", "uid": None, "labels": None, "annotations": ["x"],
                        "ownerReferences": {"kind": "x"}, "finalizers": None, "resourceVersion": None}}
    assert objects.name(obj) is None and objects.name(obj, "") == ""
    assert objects.namespace(obj) is None and objects.namespace(obj, objects.DEFAULT_NAMESPACE) == "default"
    assert objects.uid(obj, "") == "" and objects.resource_version(obj) is None
    assert objects.labels(obj) is objects.EMPTY and objects.annotations(obj) is objects.EMPTY
    assert objects.owner_references(obj) == () and objects.finalizers(obj) == ()


def test_a_grace_period_of_zero_is_a_value_not_a_missing_one():
    assert objects.deletion_grace_period_seconds({"metadata": {"deletionGracePeriodSeconds": 0}}) == 0


def test_a_list_answers_resource_version_and_continue_token():
    page = {"kind": "PodList", "metadata": {"resourceVersion": "7", "continue": "tok"}, "items": []}
    assert objects.resource_version(page) == "7" and objects.continue_token(page) == "tok"
    assert objects.continue_token({"metadata": {"resourceVersion": "7"}}) is None


def test_raw_meta_keeps_the_wrong_shape_for_validators():
    assert objects.raw_meta({"metadata": "text"}) == "text" and objects.raw_meta({}) is None


# --- EMPTY and writable_meta ------------------------------------------------------------------------

def test_empty_is_one_shared_dict_that_refuses_writes():
    assert objects.labels({}) is objects.labels({"metadata": {}}) is objects.EMPTY
    assert objects.EMPTY == {} and isinstance(objects.EMPTY, dict) and not objects.EMPTY
    for write in (lambda e: e.__setitem__("k", 1), lambda e: e.setdefault("k", 1), lambda e: e.update(k=1),
                  lambda e: e.pop("k", None), lambda e: e.popitem(), lambda e: e.clear(),
                  lambda e: e.__delitem__("k")):
        with pytest.raises(TypeError, match="read-only"):
            write(objects.EMPTY)
    assert objects.EMPTY == {}


def test_copies_of_empty_are_plain_dicts_of_their_own():
    for made in (dict(objects.EMPTY), objects.EMPTY.copy(), copy.copy(objects.EMPTY),
                 copy.deepcopy(objects.EMPTY), {**objects.EMPTY}, pickle.loads(pickle.dumps(objects.EMPTY))):
        assert type(made) is dict and made == {}
        made["k"] = 1
    deep = copy.deepcopy({"spec": objects.spec({})})
    deep["spec"]["k"] = 1
    assert objects.EMPTY == {}
    assert orjson.loads(orjson.dumps({"labels": objects.labels({})})) == {"labels": {}}


def test_writable_meta_is_the_objects_own_made_when_missing_or_malformed():
    obj = {"metadata": {"name": "x"}}
    assert objects.writable_meta(obj) is obj["metadata"]
    for bad in ({}, {"metadata": None}, {"metadata": "text"}):
        objects.writable_meta(bad)["namespace"] = "ns"
        assert bad["metadata"] == {"namespace": "ns"}


# --- the key ------------------------------------------------------------------------------------------

def test_key_is_namespace_slash_name():
    assert objects.key(POD) == "prod/db-0"
    assert objects.key_of("prod", "db-0") == "prod/db-0"


@pytest.mark.parametrize("obj", [{"metadata": {"name": "db-0"}}, {"metadata": {"name": "db-0", "namespace": None}},
                                 {"metadata": {"name": "db-0", "namespace": ""}}])
def test_a_namespaced_object_without_a_namespace_is_in_default(obj):
    """A pod in an AdmissionReview or ExtenderArgs often has none: the API server puts it in default."""
    assert objects.key(obj) == "default/db-0"


def test_without_a_default_namespace_a_cluster_scoped_object_is_its_name():
    """The informers' store keys: Nodes, PVs and StorageClasses by name, namespaced kinds by ns/name."""
    assert objects.key({"metadata": {"name": "node-1"}}, default_namespace=None) == "node-1"
    assert objects.key(POD, default_namespace=None) == "prod/db-0"
    assert objects.key_of(None, "pv-1", default_namespace=None) == "pv-1"
    assert objects.key_of("", "pv-1", default_namespace=None) == "pv-1"


@pytest.mark.parametrize("obj", [None, {}, {"metadata": None}, {"metadata": {"name": None}},
                                 {"metadata": {"name": ""}}])
def test_a_missing_name_is_a_question_mark(obj):
    assert objects.key(obj) == "default/?"
    assert objects.key(obj, default_namespace=None) == "?"


def test_the_informer_keys_and_finds_objects_as_the_key_says():
    from linstor_scheduler.kube.informer import object_key

    assert object_key({"metadata": {"name": "n1"}}) == "n1"
    assert object_key({"metadata": {"name": "c", "namespace": "ns"}}) == "ns/c"


def test_records_and_objects_share_the_key():
    """A claim's record, a pod's claim reference and the claim object itself name it alike, so
    the lookups by key (``volumes.resolve_claim``) find it whichever side built the key."""
    from linstor_scheduler.claims import claim_record
    from linstor_scheduler.volumes import pod_claims

    claim = {"kind": "PersistentVolumeClaim", "metadata": {"name": "data"}, "spec": {}}
    pod = {"metadata": {"name": "p"}, "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {
        "claimName": "data"}}]}}
    assert claim_record(claim).key == pod_claims(pod)[0].key == objects.key(claim) == "default/data"
