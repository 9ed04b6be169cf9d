"""The Kubernetes API stand-in, checked by the official client (whose models validate strictly)."""

from __future__ import annotations

import base64
import threading
import time

import orjson
import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from devkit import kube_objects as k
from devkit.kube_standin import KubeStandin
from tests.waiting import wait_for


def test_create_and_read_back_typed(ks):
    core = k8s.CoreV1Api(ks.api)
    created = core.create_namespaced_pod("apps", k.pod("db-0", namespace="apps", claims=["data"]))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    pod = core.read_namespaced_pod("db-0", "apps")
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "data"
    assert pod.spec.scheduler_name == "linstor"
    k8s.StorageV1Api(ks.api).create_storage_class(k.storage_class("r2"))
    sc = k8s.StorageV1Api(ks.api).read_storage_class("r2")
    assert sc.parameters["linstor.csi.linbit.com/storagePool"] == "thindata"
    core.create_persistent_volume(k.pv("pvc-1"))
    assert core.read_persistent_volume("pvc-1").spec.csi.volume_handle == "pvc-1"
    core.create_node(k.node("w1", zone="a"))
    node = core.read_node("w1")
    assert node.metadata.labels["topology.kubernetes.io/zone"] == "a" and node.status.conditions[0].type == "Ready"
    with pytest.raises(ApiException) as err:
        core.create_node(k.node("w1"))
    assert err.value.status == 409 and orjson.loads(err.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        core.read_node("nope")
    assert err.value.status == 404


def test_selectors(ks):
    core = k8s.CoreV1Api(ks.api)
    ks.add(k.pod("a", labels={"app": "db", "fence": "remove"}, node_name="w1"))
    ks.add(k.pod("b", labels={"app": "web"}, node_name="w2"))
    ks.add(k.pod("c", labels={"app": "db"}, node_name="w2"))

    def names(**kw):
        return sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(**kw).items)

    assert names(label_selector="app=db") == ["a", "c"]
    assert names(label_selector="app in (db,web),fence") == ["a"]
    assert names(label_selector="app notin (db),!fence") == ["b"]
    assert names(label_selector="app!=db") == ["b"]
    assert names(field_selector="spec.nodeName=w2") == ["b", "c"]
    assert names(field_selector="spec.nodeName=w2,metadata.name!=b", label_selector="app==db") == ["c"]


def test_delete_with_uid_precondition(ks):
    core = k8s.CoreV1Api(ks.api)
    uid = ks.add(k.pod("p"))["metadata"]["uid"]
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_pod("p", "default", body=k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid="x")))
    assert err.value.status == 409 and ks.get("Pod", "p") is not None
    core.delete_namespaced_pod("p", "default", grace_period_seconds=0,
                               body=k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=uid)))
    assert ks.get("Pod", "p") is None


def test_patch_merge_and_json(ks):
    core = k8s.CoreV1Api(ks.api)
    ks.add(k.node("w1"))
    core.patch_node("w1", {"metadata": {"labels": {"x": "1"}}})
    core.patch_node("w1", [{"op": "add", "path": "/spec/taints", "value": [{"key": "t", "effect": "NoSchedule"}]}])
    node = core.read_node("w1")
    assert node.metadata.labels["x"] == "1" and node.spec.taints[0].key == "t"


def test_raw_list_and_resource_version(ks):
    ks.add(k.node("w1"))
    raw = orjson.loads(k8s.CoreV1Api(ks.api).list_node(_preload_content=False).data)
    assert raw["kind"] == "NodeList" and raw["items"][0]["metadata"]["name"] == "w1"
    assert int(raw["metadata"]["resourceVersion"]) >= int(raw["items"][0]["metadata"]["resourceVersion"])


def test_watch_sees_changes_from_another_thread(ks):
    core = k8s.CoreV1Api(ks.api)
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    seen: list[tuple[str, str]] = []
    w = k8s_watch.Watch()

    def mutate():
        ks.add(k.pod("p1"))
        ks.patch("Pod", "p1", {"metadata": {"labels": {"x": "y"}}})
        ks.delete("Pod", "p1")

    threading.Thread(target=mutate).start()
    for event in w.stream(core.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "p1"), ("MODIFIED", "p1"), ("DELETED", "p1")]


def test_watch_from_expired_version_is_410(ks):
    core = k8s.CoreV1Api(ks.api)
    ks.add(k.pod("old"))
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    ks.add(k.pod("newer"))
    ks.compact()
    with pytest.raises(ApiException) as err:
        for _ in k8s_watch.Watch().stream(core.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5):
            pass
    assert err.value.status == 410


def test_eviction_and_injected_faults(ks):
    core = k8s.CoreV1Api(ks.api)
    ks.add(k.pod("p"))
    ks.inject(fail=1, status=429, path_prefix="/api/v1/namespaces/default/pods/p/eviction")
    body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name="p", namespace="default"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod_eviction("p", "default", body)
    assert err.value.status == 429
    core.create_namespaced_pod_eviction("p", "default", body)
    assert ks.get("Pod", "p") is None


def test_lease_replace_conflict(ks):
    coord = k8s.CoordinationV1Api(ks.api)
    lease = coord.create_namespaced_lease("default", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                      "metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}})
    lease.spec.holder_identity = "b"
    coord.replace_namespaced_lease("l", "default", lease)
    lease.spec.holder_identity = "c"  # still the old resourceVersion
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("l", "default", lease)
    assert err.value.status == 409
    assert coord.read_namespaced_lease("l", "default").spec.holder_identity == "b"


# --- the API server's bad days, checked through the official client --------------------------------


def bare_api(ks) -> k8s.ApiClient:
    """A client that does not retry by itself (urllib3's default retries a GET that timed out),
    so each test sees the server's answer, or its absence, as it is."""
    configuration = k8s.Configuration()
    configuration.host = ks.url
    configuration.retries = False
    return k8s.ApiClient(configuration)


class RawWatch:
    """A watch read line by line in a thread (``Watch.stream(deserialize=False)`` fails on ERROR
    events): ``events`` fill as lines arrive, ``ended`` is set when the server ends the stream."""

    def __init__(self, list_call, **params) -> None:
        self.response = list_call(watch=True, _preload_content=False, _request_timeout=(2, 30), **params)
        self.status = self.response.status
        self.events: list[dict] = []
        self.ended = threading.Event()
        self.error: BaseException | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self.response:
                for part in raw.splitlines():
                    if part.strip():
                        self.events.append(orjson.loads(part))
        except Exception as exc:  # the test reads it
            self.error = exc
        finally:
            self.ended.set()

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def close(self) -> None:
        self.response.release_conn()


def one_error_line(list_call, rv: str) -> tuple[int, list[dict]]:
    """A watch from ``rv`` read to its end: (HTTP status, events)."""
    response = list_call(watch=True, resource_version=rv, _preload_content=False, _request_timeout=(2, 5))
    return response.status, [orjson.loads(line) for line in response.data.splitlines() if line.strip()]


def test_restart_ends_open_watches_and_a_resumed_older_watch_gets_410(ks):
    core = k8s.CoreV1Api(ks.api)
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    w = RawWatch(core.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=60)
    wait_for(lambda: ks.open_watches("/api/v1/pods") == 1, what="the watch open")
    pod_rv = ks.add(k.pod("p1"))["metadata"]["resourceVersion"]
    wait_for(lambda: w.types() == ["ADDED"], what="the pod's event")
    now = ks.add(k.node("w1"))["metadata"]["resourceVersion"]  # another kind moves on
    ks.restart()
    assert w.ended.wait(5) and w.error is None
    assert w.types() == ["ADDED"]  # ended without a final event
    assert ks.open_watches() == 0
    status, events = one_error_line(core.list_pod_for_all_namespaces, pod_rv)
    assert status == 200 and len(events) == 1
    assert events[0] == {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
        "message": f"too old resource version: {pod_rv} ({now})"}}
    resumed = RawWatch(core.list_pod_for_all_namespaces, resource_version=now, timeout_seconds=60)
    ks.add(k.pod("p2"))
    wait_for(lambda: resumed.types() == ["ADDED"], what="a watch from the current version goes on")
    resumed.close()


def test_down_answers_503_shutting_down_until_up(ks):
    core = k8s.CoreV1Api(bare_api(ks))
    ks.add(k.node("w1"))
    w = RawWatch(core.list_node, timeout_seconds=60)
    wait_for(lambda: ks.open_watches() == 1, what="the watch open")
    ks.down()
    assert w.ended.wait(5)
    with pytest.raises(ApiException) as err:
        core.list_node()
    body = orjson.loads(err.value.body)
    assert err.value.status == 503 and err.value.headers["Retry-After"] == "1"
    assert body["reason"] == "ServiceUnavailable" and body["message"] == "apiserver is shutting down"
    ks.up()
    assert [n.metadata.name for n in core.list_node().items] == ["w1"]


def test_compacting_a_quiet_kind_expires_its_watch_while_a_busy_kind_goes_on(ks):
    core = k8s.CoreV1Api(ks.api)
    ks.add(k.node("w1"))
    node_rv = core.list_node().metadata.resource_version  # the quiet kind's informer stays here
    pod_rv = ks.add(k.pod("p1"))["metadata"]["resourceVersion"]
    ks.add(k.pod("p2"))
    ks.compact(kinds=["Node"])
    status, events = one_error_line(core.list_node, node_rv)
    assert status == 200 and [e["object"]["code"] for e in events] == [410]
    assert events[0]["object"]["reason"] == "Expired"
    w = RawWatch(core.list_pod_for_all_namespaces, resource_version=pod_rv, timeout_seconds=60)
    wait_for(lambda: w.types() == ["ADDED"], what="the pods' history kept")
    assert w.events[0]["object"]["metadata"]["name"] == "p2"
    w.close()


def test_compaction_at_a_past_version_keeps_later_watches(ks):
    core = k8s.CoreV1Api(ks.api)
    before = ks.add(k.pod("p1"))["metadata"]["resourceVersion"]
    point = ks.add(k.pod("p2"))["metadata"]["resourceVersion"]
    ks.add(k.pod("p3"))
    ks.compact(at=int(point))
    _, events = one_error_line(core.list_pod_for_all_namespaces, before)
    assert events[0]["object"]["message"] == f"too old resource version: {before} ({point})"
    w = RawWatch(core.list_pod_for_all_namespaces, resource_version=point, timeout_seconds=60)
    wait_for(lambda: len(w.events) == 1, what="the event after the compaction point")
    assert w.events[0]["object"]["metadata"]["name"] == "p3"
    w.close()


def decode_token(token: str) -> dict:
    return orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def test_continue_token_carries_the_list_version_and_expires_with_compaction(ks):
    core = k8s.CoreV1Api(ks.api)
    for name in ("a", "b", "c"):
        ks.add(k.node(name))
    first = core.list_node(limit=1)
    token = decode_token(first.metadata._continue)
    assert token["v"] == "meta.k8s.io/v1" and str(token["rv"]) == first.metadata.resource_version
    second = core.list_node(limit=1, _continue=first.metadata._continue)
    assert [n.metadata.name for n in second.items] == ["b"]
    assert second.metadata.resource_version == first.metadata.resource_version  # the list's version
    ks.add(k.node("d"))
    ks.compact()
    with pytest.raises(ApiException) as err:
        core.list_node(limit=1, _continue=second.metadata._continue)
    body = orjson.loads(err.value.body)
    assert err.value.status == 410 and body["reason"] == "Expired"
    assert body["message"].startswith("The provided continue parameter is too old to display a consistent list "
                                      "result. You can start a new list without the continue parameter, or use")
    assert decode_token(body["metadata"]["continue"])["rv"] == -1
    rest = core.list_node(_continue=body["metadata"]["continue"])  # the inconsistent remainder
    assert [n.metadata.name for n in rest.items] == ["c", "d"]


def test_expire_continue_tokens_expires_those_issued_before_only(ks):
    core = k8s.CoreV1Api(ks.api)
    for name in ("a", "b"):
        ks.add(k.node(name))
    old = core.list_node(limit=1).metadata._continue
    ks.expire_continue_tokens()
    with pytest.raises(ApiException) as err:
        core.list_node(limit=1, _continue=old)
    assert err.value.status == 410
    fresh = core.list_node(limit=1).metadata._continue
    assert [n.metadata.name for n in core.list_node(_continue=fresh).items] == ["b"]


def test_hang_holds_requests_until_released(ks):
    core = k8s.CoreV1Api(bare_api(ks))
    ks.add(k.node("w1"))
    ks.hang(path_prefix="/api/v1/nodes", count=1)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core.list_node(_request_timeout=(2, 0.3))
    assert ks.hung_requests() == 1
    assert core.list_namespace().items == []  # other paths answer meanwhile
    assert core.list_node().items[0].metadata.name == "w1"  # count=1: the next one is answered
    ks.release_hangs()
    wait_for(lambda: ks.hung_requests() == 0, what="the held request let go")


def test_a_hung_request_does_not_hold_the_server_stop():
    ks = KubeStandin()
    srv = ks.serve().start()
    ks.url = srv.url
    ks.hang()
    core = k8s.CoreV1Api(bare_api(ks))
    caught: list[BaseException] = []

    def call() -> None:
        try:
            core.list_node(_request_timeout=(2, 30))
        except Exception as exc:
            caught.append(exc)

    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: ks.hung_requests() == 1, what="the request held")
    started = time.monotonic()
    srv.stop()
    t.join(10)
    assert time.monotonic() - started < 5 and not t.is_alive()
    assert caught and getattr(caught[0], "status", None) == 503  # answered "shutting down" at stop


def test_silent_watch_sends_nothing_not_even_its_timeout_until_released(ks):
    ks.bookmark_interval = 0.1
    core = k8s.CoreV1Api(ks.api)
    rv = core.list_node().metadata.resource_version
    ks.silent_watches("/api/v1/nodes")
    w = RawWatch(core.list_node, resource_version=rv, timeout_seconds=1, allow_watch_bookmarks=True)
    wait_for(lambda: ks.open_watches("/api/v1/nodes") == 1, what="the watch open")
    ks.add(k.node("w1"))
    deadline = threading.Event()
    deadline.wait(1.5)  # past timeoutSeconds and many bookmark intervals: the fault is the silence
    assert w.events == [] and not w.ended.is_set() and ks.open_watches("/api/v1/nodes") == 1
    ks.release_hangs()
    assert w.ended.wait(5) and w.events == []
    assert ks.open_watches() == 0


def test_slow_answers_come_late(ks):
    core = k8s.CoreV1Api(bare_api(ks))
    ks.add(k.node("w1"))
    ks.slow(0.5, path_prefix="/api/v1/nodes", method="GET", count=1)
    started = time.monotonic()
    assert core.list_node().items[0].metadata.name == "w1"
    assert time.monotonic() - started >= 0.5
    ks.slow(0.5, path_prefix="/api/v1/nodes")
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core.list_node(_request_timeout=(2, 0.2))  # slower than the client waits


def test_429_answers_as_priority_and_fairness_does(ks):
    core = k8s.CoreV1Api(bare_api(ks))
    ks.inject(fail=1, status=429, path_prefix="/api/v1/nodes", retry_after=7)
    with pytest.raises(ApiException) as err:
        core.list_node()
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "7"
    assert err.value.body == "Too many requests, please try again later.\n"  # plain text, no Status
    assert err.value.headers["Content-Type"].startswith("text/plain")
    ks.inject(fail=2, status=503, path_prefix="/api/v1/nodes")
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.list_node()
        assert err.value.status == 503 and orjson.loads(err.value.body)["reason"] == "ServiceUnavailable"
    assert core.list_node().items == []


def test_lost_answer_the_write_is_done_the_client_sees_a_broken_connection(ks):
    core = k8s.CoreV1Api(bare_api(ks))
    ks.lose_answers(path_prefix="/api/v1/nodes", method="POST", count=1)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        core.create_node(k.node("w1"))
    assert ks.get("Node", "w1") is not None  # carried out
    with pytest.raises(ApiException) as err:
        core.create_node(k.node("w1"))  # the retry of a create that did happen
    assert err.value.status == 409


def test_lost_answer_that_never_comes(ks):
    core = k8s.CoreV1Api(bare_api(ks))
    ks.add(k.node("w1"))
    ks.lose_answers(path_prefix="/api/v1/nodes/w1", method="PATCH", how="hang")
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core.patch_node("w1", {"metadata": {"labels": {"x": "1"}}}, _request_timeout=(2, 0.3))
    assert ks.get("Node", "w1")["metadata"]["labels"]["x"] == "1"
    assert ks.hung_requests() == 1
    ks.release_hangs()
    wait_for(lambda: ks.hung_requests() == 0, what="the held answer let go")


def test_bookmarks_every_interval_and_before_the_timeout(ks):
    ks.bookmark_interval = 0.2
    core = k8s.CoreV1Api(ks.api)
    rv = core.list_node().metadata.resource_version
    w = RawWatch(core.list_node, resource_version=rv, timeout_seconds=1, allow_watch_bookmarks=True)
    wait_for(lambda: "BOOKMARK" in w.types(), what="a periodic bookmark")
    added = ks.add(k.node("w1"))["metadata"]["resourceVersion"]
    assert w.ended.wait(5) and w.error is None
    types = w.types()
    assert types.count("BOOKMARK") >= 3 and "ADDED" in types and types[-1] == "BOOKMARK"
    last = w.events[-1]["object"]
    assert last == {"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": added}}
    for e in w.events[types.index("ADDED"):]:
        assert int(e["object"]["metadata"]["resourceVersion"]) >= int(added)  # never behind an event sent
    plain = RawWatch(core.list_node, resource_version=added, timeout_seconds=1)
    assert plain.ended.wait(5) and plain.events == []  # no bookmarks unless asked for


# --- names, as the API server validates them (issue #23: the stand-in accepted any name) -----------
def refused(call, *args):
    """The 422 answer of a create the API server refuses, as the official client raises it."""
    with pytest.raises(ApiException) as err:
        call(*args)
    assert err.value.status == 422, err.value.body
    body = orjson.loads(err.value.body)
    assert (body["kind"], body["status"], body["reason"], body["code"]) == ("Status", "Failure", "Invalid", 422)
    return body


LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
         "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
         "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
             "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def test_every_served_kind_has_the_api_servers_name_rule():
    from devkit.kube_standin import NAME_RULES, RESOURCES

    assert set(NAME_RULES) == {kind for kind, _, _ in RESOURCES.values()}


def test_a_namespace_name_is_a_dns_label_with_the_api_servers_status(ks):
    core = k8s.CoreV1Api(ks.api)
    body = refused(core.create_namespace, k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="Team_A")))
    cause = f'Invalid value: "Team_A": {LABEL}'
    assert body["message"] == f'Namespace "Team_A" is invalid: metadata.name: {cause}'
    assert body["details"] == {"name": "Team_A", "kind": "Namespace",
                               "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "metadata.name"}]}
    # a subdomain is no label: the API server's own wording for the dots
    dotted = refused(core.create_namespace, k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="team.a")))
    assert dotted["message"] == 'Namespace "team.a" is invalid: metadata.name: Invalid value: "team.a": must not ' \
                                "contain dots"
    too_long = "a" * 64
    assert refused(core.create_namespace, k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=too_long)))["details"][
        "causes"][0]["message"] == f'Invalid value: "{too_long}": must be no more than 63 characters'
    assert core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="team-a"))).metadata.uid
    assert ks.get("Namespace", "Team_A") is None


def test_most_kinds_take_a_dns_subdomain(ks):
    core, storage = k8s.CoreV1Api(ks.api), k8s.StorageV1Api(ks.api)
    body = refused(core.create_node, k.node("W1"))
    assert body["message"] == f'Node "W1" is invalid: metadata.name: Invalid value: "W1": {SUBDOMAIN}'
    assert "group" not in body["details"]
    refused(core.create_namespaced_pod, "default", k.pod("db_0"))
    refused(core.create_namespaced_persistent_volume_claim, "default", k.pvc("Data"))
    refused(core.create_persistent_volume, k.pv("pvc_1"))
    refused(core.create_namespaced_secret, "default", k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="-tls")))
    sc = refused(storage.create_storage_class, k.storage_class("linstor-pool_ssd-r1"))
    assert sc["details"]["group"] == "storage.k8s.io"
    assert sc["message"].startswith('StorageClass.storage.k8s.io "linstor-pool_ssd-r1" is invalid: metadata.name: ')
    refused(storage.create_volume_attachment, k.volume_attachment("pvc-1", "w1") | {"metadata": {"name": "VA"}})
    refused(storage.create_csi_node, {"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
                                      "metadata": {"name": "W1"}, "spec": {"drivers": []}})
    lease = refused(k8s.CoordinationV1Api(ks.api).create_namespaced_lease, "default",
                    k8s.V1Lease(metadata=k8s.V1ObjectMeta(name="Leader")))
    assert lease["message"].startswith('Lease.coordination.k8s.io "Leader" is invalid')
    refused(k8s.AdmissionregistrationV1Api(ks.api).create_mutating_webhook_configuration,
            k8s.V1MutatingWebhookConfiguration(metadata=k8s.V1ObjectMeta(name="Hook")))
    # a subdomain may have dots, unlike a namespace
    assert core.create_node(k.node("w1.example.com")).metadata.name == "w1.example.com"
    assert ks.list("Pod") == [] and ks.list("StorageClass") == []


def test_two_errors_are_aggregated_and_the_namespace_and_generate_name_are_checked(ks):
    core = k8s.CoreV1Api(ks.api)
    name = "X" * 254
    body = refused(core.create_node, k.node(name))
    causes = [c["message"] for c in body["details"]["causes"]]
    assert causes == [f'Invalid value: "{name}": must be no more than 253 characters',
                      f'Invalid value: "{name}": {SUBDOMAIN}']
    assert body["message"] == f'Node "{name}" is invalid: [metadata.name: {causes[0]}, metadata.name: {causes[1]}]'
    wrong_ns = refused(core.create_namespaced_pod, "Apps", k.pod("db-0", namespace="Apps"))
    assert [c["field"] for c in wrong_ns["details"]["causes"]] == ["metadata.namespace"]
    generated = refused(core.create_namespaced_pod, "default", {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "generateName": "Web_"}, "spec": {"containers": []}})
    assert [c["field"] for c in generated["details"]["causes"]] == ["metadata.generateName", "metadata.name"]
    ok = core.create_namespaced_pod("default", {"apiVersion": "v1", "kind": "Pod",
                                                "metadata": {"generateName": "web-"}, "spec": {"containers": []}})
    assert ok.metadata.name.startswith("web-")


def test_core_v1_events_and_disruption_budgets_take_any_path_segment(ks):
    """core/v1 Events skip the name rule "for backwards compatibility" and a PodDisruptionBudget's
    validation checks its spec only: only rest.BeforeCreate's path-segment rule applies."""
    core = k8s.CoreV1Api(ks.api)
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "Node_W1.17abc"},
             "involvedObject": {"kind": "Node", "name": "w1"}, "reason": "X", "message": "m", "type": "Normal"}
    assert core.create_namespaced_event("default", event).metadata.name == "Node_W1.17abc"
    policy = k8s.PolicyV1Api(ks.api)
    assert policy.create_namespaced_pod_disruption_budget("default", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "DB_pdb"},
        "spec": {"maxUnavailable": 1}}).metadata.name == "DB_pdb"
    body = refused(policy.create_namespaced_pod_disruption_budget, "default", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "a%b"}, "spec": {}})
    assert body["message"] == ('PodDisruptionBudget.policy "a%b" is invalid: metadata.name: Invalid value: "a%b": '
                               "may not contain '%'")
    refused(core.create_namespaced_event, "default", {**event, "metadata": {"name": ".."}})


def test_a_test_cannot_seed_an_object_no_api_server_would_hold(ks):
    from devkit.kube_standin import InvalidName

    with pytest.raises(InvalidName, match='Node "N1" is invalid'):
        ks.add(k.node("N1"))
    assert ks.list("Node") == []
