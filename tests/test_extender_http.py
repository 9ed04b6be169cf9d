"""The extender over real HTTP, called the way kube-scheduler calls it (extender v1 JSON)."""

from __future__ import annotations

import copy
import dataclasses
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit import kube_objects as k
from linstor_scheduler.httpserver import ServerThread
from scheduler_extender.holder import StateHolder
from scheduler_extender.http import create_app
from scheduler_extender.judge import Extender

from .cluster import standard

NAMES = ["w1", "w2", "w3", "w4", "w5", "w6", "nosat"]


@pytest.fixture(scope="module")
def server():
    holder = StateHolder(static=True, ready=True)
    holder.swap(standard())
    app = create_app(Extender(holder), max_body=256 * 1024)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        yield http


def full_nodes(names):
    return {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
            "items": [k.node(n, zone="a") | {"status": {"capacity": {"cpu": "4"}, "allocatable": {"cpu": 3.5}}}
                      for n in names]}


def test_filter_names_mode_exact_result(server):
    r = server.post("/filter", json={"Pod": k.pod("p", claims=["c-local"]), "NodeNames": NAMES})
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"]
    assert body["Nodes"] is None and body["Error"] == "" and body["FailedNodes"] == {}
    assert body["NodeNames"] == ["w2"]
    assert body["FailedAndUnresolvableNodes"] == {
        "w1": "volume pvc-local: no diskful replica on node w1 and its StorageClass forbids remote access",
        "w3": "volume pvc-local: no diskful replica on node w3 and its StorageClass forbids remote access",
        "w4": "volume pvc-local: no diskful replica on node w4 and its StorageClass forbids remote access",
        "w5": "volume pvc-local: no diskful replica on node w5 and its StorageClass forbids remote access",
        "w6": "LINSTOR satellite on node w6 is OFFLINE, not ONLINE",
        "nosat": "node nosat has no LINSTOR satellite",
    }


def test_filter_full_node_mode_returns_node_objects_unchanged(server):
    nodes = full_nodes(["w1", "w2", "w6"])
    r = server.post("/filter", json={"Pod": k.pod("p", claims=["c-a"]), "Nodes": nodes})
    body = r.json()
    assert body["NodeNames"] is None
    assert body["Nodes"]["kind"] == "NodeList" and body["Nodes"]["metadata"] == {"resourceVersion": "7"}
    assert body["Nodes"]["items"] == [nodes["items"][0], nodes["items"][1]]  # byte-for-byte the same objects
    assert list(body["FailedAndUnresolvableNodes"]) == ["w6"]


def test_prioritize_scores_per_candidate(server):
    r = server.post("/prioritize", json={"Pod": k.pod("p", claims=["c-a"]), "NodeNames": NAMES})
    assert r.status_code == 200
    assert r.json() == [{"Host": "w1", "Score": 10}, {"Host": "w2", "Score": 4}, {"Host": "w3", "Score": 8},
                        {"Host": "w4", "Score": 2}, {"Host": "w5", "Score": 1}, {"Host": "w6", "Score": 0},
                        {"Host": "nosat", "Score": 0}]


def test_prioritize_full_node_mode(server):
    r = server.post("/prioritize", json={"Pod": k.pod("p", claims=["c-a"]), "Nodes": full_nodes(["w3", "w1"])})
    assert r.json() == [{"Host": "w3", "Score": 8}, {"Host": "w1", "Score": 10}]


def test_keys_are_case_insensitive_on_input(server):
    r = server.post("/prioritize", json={"pod": k.pod("p", claims=["c-a"]), "nodenames": ["w1"]})
    assert r.json() == [{"Host": "w1", "Score": 10}]
    r = server.post("/filter", json={"POD": k.pod("p", claims=["c-a"]), "NODES": {"ITEMS": [k.node("w1")]}})
    assert [n["metadata"]["name"] for n in r.json()["Nodes"]["items"]] == ["w1"]


def test_pod_without_linstor_volumes_passes_everything_with_zero(server):
    pod = k.pod("web", extra_volumes=[{"name": "c", "emptyDir": {}}])
    r = server.post("/filter", json={"Pod": pod, "NodeNames": NAMES})
    assert r.json()["NodeNames"] == NAMES and r.json()["FailedAndUnresolvableNodes"] == {}
    r = server.post("/prioritize", json={"Pod": pod, "NodeNames": NAMES})
    assert {h["Score"] for h in r.json()} == {0} and len(r.json()) == len(NAMES)


def test_node_names_are_json_escaped(server):
    odd = 'we"ird\\node'
    r = server.post("/prioritize", json={"Pod": k.pod("p", claims=["c-a"]), "NodeNames": [odd]})
    assert r.json() == [{"Host": odd, "Score": 0}]


def test_empty_candidate_list_is_answered(server):
    assert server.post("/prioritize", json={"Pod": k.pod("p"), "NodeNames": []}).json() == []
    assert server.post("/filter", json={"Pod": k.pod("p", claims=["c-a"]), "NodeNames": []}).json()["NodeNames"] == []


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "request body is not valid JSON"),
        (b"[1, 2]", 400, "ExtenderArgs must be a JSON object, got list"),
        (b'{"NodeNames": ["w1"]}', 400, "ExtenderArgs.Pod is missing"),
        (b'{"Pod": "x", "NodeNames": ["w1"]}', 400, "ExtenderArgs.Pod must be an object, got str"),
        (b'{"Pod": {}, "NodeNames": "w1"}', 400, "ExtenderArgs.NodeNames must be a list of strings"),
        (b'{"Pod": {}, "NodeNames": [1]}', 400, "ExtenderArgs.NodeNames must be a list of strings"),
        (b'{"Pod": {}}', 400, "ExtenderArgs has neither NodeNames nor Nodes"),
        (b'{"Pod": {}, "Nodes": {"items": [{"metadata": {}}]}}', 400,
         "ExtenderArgs.Nodes.items[0] has no metadata.name"),
        (b'{"Pod": {"spec": {"volumes": {}}}, "NodeNames": []}', 400, "ExtenderArgs.Pod.spec.volumes must be a list"),
        (b"", 400, "request body is not valid JSON"),
    ],
)
@pytest.mark.parametrize("verb", ["filter", "prioritize"])
def test_bad_input_gets_a_clear_400(server, verb, body, status, message):
    r = server.post(f"/{verb}", content=body)
    assert r.status_code == status
    assert r.json()["Error"].startswith(message)


def test_unknown_fields_are_ignored(server):
    r = server.post("/prioritize", json={"Pod": k.pod("p", claims=["c-a"]), "NodeNames": ["w1"], "Extra": {"x": 1}})
    assert r.json() == [{"Host": "w1", "Score": 10}]


def test_body_over_the_limit_is_413_and_server_keeps_serving(server):
    big = b'{"Pod": {}, "NodeNames": [' + b",".join([b'"node-xxxxxxxxxx"'] * 20000) + b"]}"
    r = server.post("/filter", content=big)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["Error"]

    def chunks():
        yield big[:1000]
        yield big[1000:]

    r = server.post("/filter", content=chunks())  # chunked: no Content-Length to check up front
    assert r.status_code == 413
    assert server.get("/healthz").text == "ok"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                        st.sampled_from(["Pod", "NodeNames", "Nodes", "items", "metadata", "name", "spec", "volumes",
                                         "persistentVolumeClaim", "claimName", "ephemeral", "x"]), kids, max_size=4),
                    max_leaves=20))
def test_random_bodies_never_crash(server, doc):
    for verb in ("filter", "prioritize"):
        r = server.post(f"/{verb}", content=json.dumps(doc))
        assert r.status_code in (200, 400), r.text
        if r.status_code == 400:
            assert r.json()["Error"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_real_requests_never_crash(server, data):
    """Take a real request and put random values at random places of the pod: 200 or 400, never 500."""
    doc = {"Pod": k.pod("p", claims=["c-a", "c-new"], ephemeral={"e": k.claim_template("local")}), "NodeNames": NAMES}
    mutated = copy.deepcopy(doc)
    target = mutated["Pod"]
    for _ in range(data.draw(st.integers(1, 4))):
        if not isinstance(target, dict) or not target:
            break
        key = data.draw(st.sampled_from(sorted(target)))
        if data.draw(st.booleans()) and isinstance(target[key], dict):
            target = target[key]
            continue
        target[key] = data.draw(st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2))
        break
    for verb in ("filter", "prioritize"):
        r = server.post(f"/{verb}", content=json.dumps(mutated))
        assert r.status_code in (200, 400), r.text


def test_explain_endpoint(server):
    r = server.post("/explain", json={"Pod": k.pod("p", claims=["c-a"])})
    rows = {row["node"]: row for row in r.json()["nodes"]}
    assert rows["w1"] == {"node": "w1", "verdict": "pass", "score": 10,
                          "reasons": ["volume pvc-a: diskful replica on w1 is UpToDate"]}
    assert rows["nosat"]["verdict"] == "fail"


def test_health_readiness_metrics(server):
    assert server.get("/healthz").status_code == 200
    ready = server.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["mode"] == "snapshot"
    server.post("/filter", json={"Pod": k.pod("p", claims=["c-a"]), "NodeNames": NAMES})
    text = server.get("/metrics").text
    assert 'linstor_scheduler_extender_requests_total{outcome="ok",verb="filter"}' in text
    assert "linstor_scheduler_state_age_seconds" in text


# --- the answer cache and the raw entry point ------------------------------------------------------
@pytest.fixture
def swappable():
    holder = StateHolder(static=True, ready=True)
    holder.swap(standard())
    app = create_app(Extender(holder))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        yield holder, app, http


def test_a_repeated_request_is_answered_from_the_cache_byte_for_byte(swappable):
    _holder, app, http = swappable
    answers = app.state.answers
    body = {"Pod": k.pod("p", claims=["c-a"]), "NodeNames": NAMES}
    first = http.post("/prioritize", json=body)
    hits = answers.hits
    other_pod_same_volume = {"Pod": k.pod("q", claims=["c-a"]), "NodeNames": NAMES}
    second = http.post("/prioritize", json=other_pod_same_volume)
    assert answers.hits == hits + 1 and second.content == first.content
    shorter = http.post("/prioritize", json={"Pod": k.pod("p", claims=["c-a"]), "NodeNames": NAMES[:2]})
    assert answers.hits == hits + 1, "another candidate list is another answer"
    assert shorter.json() == [{"Host": "w1", "Score": 10}, {"Host": "w2", "Score": 4}]
    filtered = http.post("/filter", json=body)
    assert answers.hits == hits + 1, "filter and prioritize never share an answer"
    assert filtered.json()["NodeNames"] == ["w1", "w2", "w3", "w4", "w5"]


def test_a_new_state_is_never_answered_from_the_old_cache(swappable):
    holder, _app, http = swappable
    body = {"Pod": k.pod("p", claims=["c-a"]), "NodeNames": ["w1", "w3"]}
    assert http.post("/prioritize", json=body).json() == [{"Host": "w1", "Score": 10}, {"Host": "w3", "Score": 8}]
    old = standard()
    replicas = dict(old.resources["pvc-a"].replicas)
    replicas["w3"], replicas["w1"] = replicas["w1"], replicas["w3"]  # the UpToDate replica is now on w3
    moved = dataclasses.replace(old.resources["pvc-a"], replicas=replicas)
    holder.swap(dataclasses.replace(old, generation=2, resources={**old.resources, "pvc-a": moved}))
    assert http.post("/prioritize", json=body).json() == [{"Host": "w1", "Score": 8}, {"Host": "w3", "Score": 10}]


def test_raw_entry_point_keeps_the_errors_and_the_other_routes(swappable):
    _, _, http = swappable
    assert http.get("/filter").status_code == 405
    assert http.get("/healthz").text == "ok"
    bad = http.post("/prioritize", json={"Pod": k.pod("p", claims=["c-a"]), "NodeNames": [1, 2]})
    assert bad.status_code == 400 and bad.json() == {"Error": "ExtenderArgs.NodeNames must be a list of strings"}
    bad = http.post("/filter", json={"Pod": k.pod("p", claims=["c-a"]), "NodeNames": "w1"})
    assert bad.status_code == 400 and "must be a list of strings" in bad.json()["Error"]
    chunks = [b'{"Pod": ', json.dumps(k.pod("p", claims=["c-a"])).encode(), b', "NodeNames": ["w1"]}']
    streamed = http.post("/prioritize", content=iter(chunks))  # chunked transfer: several receive() calls
    assert streamed.json() == [{"Host": "w1", "Score": 10}]


def test_pod_without_linstor_volumes_is_echoed_without_decoding_twice(swappable):
    _, app, http = swappable
    pod = k.pod("web", extra_volumes=[{"name": "c", "emptyDir": {}}])
    first = http.post("/filter", json={"Pod": pod, "NodeNames": NAMES})
    hits = app.state.answers.hits
    again = http.post("/filter", json={"Pod": k.pod("web-2"), "NodeNames": NAMES})
    assert app.state.answers.hits == hits + 1 and again.content == first.content
    assert again.json()["NodeNames"] == NAMES


@pytest.mark.parametrize("body", [
    b'{"Pod":{"metadata":{"name":"p"}},"Nodes":null,"NodeNames":["w1","w2"]}',  # kube-scheduler's own order
    b'{"NodeNames":["w1","w2"],"Pod":{"metadata":{"name":"p"}}}',  # names first: the general path
    b'{"Pod":{"metadata":{"name":"p","labels":{"NodeNames":"x"}}},"NodeNames":["w1","w2"]}',
    b'{"Pod":{"metadata":{"name":"p","annotations":{"a":"\\"NodeNames\\":[\\"w9\\"]"}}},"NodeNames":["w1","w2"]}',
    b'{"Pod":{"spec":{"x":{"NodeNames":["w9"]}}},"NodeNames":["w1","w2"]}',
    b'{"Pod":{"metadata":{"name":"p"}}, "NodeNames": ["w1", "w2"]}',  # spaces
    b'{"Pod":{"metadata":{"name":"p"}},"nodenames":["w9"],"NodeNames":["w1","w2"]}',  # exact case wins, as in Go
    b'{"Pod":{"metadata":{"name":"p"}},"NodeNames":["w1","w]2"]}',
])
def test_the_names_fast_path_decodes_exactly_like_the_general_one(body):
    from scheduler_extender.codec import _decode_args, decode_args

    fast, general = decode_args(body), _decode_args(body)
    assert fast.pod == general.pod
    assert fast.node_names == general.node_names
    assert fast.raw_names == general.raw_names


def test_the_names_fast_path_still_refuses_bad_bodies(server):
    head = b'{"Pod":' + json.dumps(k.pod("p", claims=["c-a"])).encode()
    for tail, message in ((b',"NodeNames":["w1",2]}', "ExtenderArgs.NodeNames must be a list of strings"),
                          (b',"NodeNames":["w1"]]}', "request body is not valid JSON"),
                          (b'x,"NodeNames":["w1"]}', "request body is not valid JSON")):
        r = server.post("/prioritize", content=head + tail)
        assert r.status_code == 400 and r.json()["Error"].startswith(message), (tail, r.text)


def test_the_same_pod_bytes_skip_the_claims_but_never_the_staleness_check():
    from devkit.clock import FakeClock

    from .test_judge import live_holder

    clock = FakeClock(100.0)
    holder = live_holder(clock)
    extender = Extender(holder, max_staleness=120, clock=clock)
    pod = k.pod("p", claims=["c-a"])
    raw_pod = json.dumps(pod, separators=(",", ":")).encode()
    body = b'{"Pod":' + raw_pod + b',"NodeNames":["w1","w3"]}'

    def prioritize(http):
        return http.post("/prioritize", content=body, headers={"Content-Type": "application/json"}).json()

    with ServerThread(create_app(extender)) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        assert prioritize(http) == [{"Host": "w1", "Score": 10}, {"Host": "w3", "Score": 8}]
        assert raw_pod in extender.pod_bytes, "the pod's side is kept by its bytes"
        clock.now = 121.0  # the state is now older than the limit: neutral, even for a pod seen before
        assert prioritize(http) == [{"Host": "w1", "Score": 0}, {"Host": "w3", "Score": 0}]
        holder.swap(dataclasses.replace(standard(), generation=2, linstor_synced_at=121.0, kube_synced_at=121.0))
        assert extender.pod_bytes.get(raw_pod, holder.state.generation) is None, "not across a new generation"
        assert prioritize(http)[0] == {"Host": "w1", "Score": 10}


@pytest.mark.parametrize("body", [
    b'{"Pod":{"metadata":{"name":"p"}},"Nodes":{"kind":"NodeList","apiVersion":"v1","metadata":{},"items":['
    b'{"metadata":{"name":"w1"},"status":{"x":[1,2]}},{"metadata":{"name":"w2"}}]},"NodeNames":null}',
    b'{"Pod":{"metadata":{"name":"p"}},"Nodes":{"items":[{"metadata":{"name":"w1"}}]},"NodeNames":null}',
    b'{"Pod":{"metadata":{"name":"p"}},"Nodes":{"items":null},"NodeNames":null}',
    b'{"pod":{"metadata":{"name":"p"}},"nodes":{"ITEMS":[{"metadata":{"name":"w1"}}]}}',  # other spelling
    b'{"Pod":{"metadata":{"name":"p"}},"Nodes":{"items":[{"metadata":{"name":"w1"}}],"extra":1},"NodeNames":null}',
])
def test_the_full_node_fast_path_decodes_exactly_like_the_general_one(body):
    from scheduler_extender.codec import _decode_args, decode_args

    fast, general = decode_args(body), _decode_args(body)
    assert fast.pod == general.pod and fast.node_names == general.node_names
    assert [bytes(i) for i in fast.node_items] == [bytes(i) for i in general.node_items]
    assert {k: bytes(v) for k, v in fast.nodes.items()} == {k: bytes(v) for k, v in general.nodes.items()}


def test_the_full_node_fast_path_still_refuses_a_node_without_a_name():
    from scheduler_extender.codec import BadRequest, decode_args

    with pytest.raises(BadRequest, match=r"ExtenderArgs.Nodes.items\[1\] has no metadata.name"):
        decode_args(b'{"Pod":{},"Nodes":{"items":[{"metadata":{"name":"w1"}},{"spec":{}}]},"NodeNames":null}')


def test_healthz_says_what_stopped_turning():
    """/healthz is the live extender's loops (informers, LINSTOR poll, Kubernetes rebuild): 503 with
    their text when one stopped, so the kubelet restarts it and ``kubectl describe`` says why."""
    holder = StateHolder(static=True, ready=True)
    holder.swap(standard())
    verdict = [(True, "informers running; sync loops turning")]
    app = create_app(Extender(holder), alive=lambda: verdict[0])
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        verdict[0] = (False, "informers running; LINSTOR poll made no progress for 41s (bound 40s)")
        r = http.get("/healthz")
        assert r.status_code == 503 and r.text == verdict[0][1]
        assert http.get("/readyz").status_code == 200, "liveness is not readiness"


# --- the verbs' one route ----------------------------------------------------------------------------
def scheduler_urls() -> dict[str, str]:
    """The URL of each verb as kube-scheduler builds it from the shipped configuration
    (pkg/scheduler/extender.go, ``HTTPExtender.send``: ``strings.TrimRight(urlPrefix, "/") + "/" +
    verb``, always POST)."""
    from .test_batching import rendered_scheduler_config

    [ext] = [e for e in rendered_scheduler_config()["extenders"] if e.get("filterVerb")]
    prefix = ext["urlPrefix"].rstrip("/")
    return {verb: prefix + "/" + ext[f"{verb}Verb"] for verb in ("filter", "prioritize")}


def test_every_call_kube_scheduler_makes_is_answered_by_the_raw_handlers(monkeypatch):
    """Whatever the body (good, full Node objects, broken, empty, chunked, too big), a POST to a
    verb's URL reaches its raw handler on the listener the CLI serves (``ExtenderApp.verbs``), and
    nothing of the FastAPI app reads a body: a second FastAPI route for the verbs could never run."""
    import scheduler_extender.http as module

    holder = StateHolder(static=True, ready=True)
    holder.swap(standard())
    app = create_app(Extender(holder), max_body=64 * 1024)
    reached: list[str] = []
    for path, handler in list(app.fast.items()):
        async def counted(scope, receive, send, handler=handler, path=path):
            reached.append(path)
            await handler(scope, receive, send)
        app.fast[path] = counted
    read_by_fastapi: list[object] = []
    original = module.read_body

    async def spy(request, limit):
        read_by_fastapi.append(request.url.path)
        return await original(request, limit)

    monkeypatch.setattr(module, "read_body", spy)
    pod = k.pod("p", claims=["c-a"])
    bodies = [json.dumps({"Pod": pod, "NodeNames": NAMES}).encode(),
              json.dumps({"Pod": pod, "Nodes": full_nodes(NAMES[:2]), "NodeNames": None}).encode(),
              b'{"Pod": {', b"", b"x" * (128 * 1024)]
    urls = scheduler_urls()
    sent = 0
    with ServerThread(app.verbs, interface="asgi3") as srv, httpx.Client(timeout=10) as http:
        for url in urls.values():
            local = srv.url + httpx.URL(url).path
            for body in bodies:
                r = http.post(local, content=body, headers={"Content-Type": "application/json"})
                assert r.status_code in (200, 400, 413) and r.headers["content-type"] == "application/json", r.text
                sent += 1
            chunks = [b'{"Pod": ', json.dumps(pod).encode(), b', "NodeNames": ["w1"]}']
            assert http.post(local, content=iter(chunks)).status_code == 200
            sent += 1
    assert sorted(set(reached)) == sorted(httpx.URL(u).path for u in urls.values()) and len(reached) == sent
    assert read_by_fastapi == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD"])
def test_a_verb_asked_with_another_method_is_405_allowing_post(server, method):
    for path in ("/filter", "/prioritize"):
        r = server.request(method, path)
        assert r.status_code == 405 and r.headers["allow"] == "POST", (method, path)
        if method != "HEAD":
            assert r.json() == {"detail": "Method Not Allowed"}


@pytest.mark.parametrize("field", ["namespace", "name"])
def test_a_pod_whose_name_or_namespace_is_a_number_is_the_senders_error(server, field):
    """They name the pod's claims (an ephemeral volume's PVC is ``<pod>-<volume>`` in its namespace):
    a number there was a 500 (claims.py interns the namespace), now a 400 that says which field."""
    pod = k.pod("p", claims=["c-a"], ephemeral={"e": k.claim_template("local")})
    pod["metadata"][field] = 1
    for verb in ("/filter", "/prioritize"):
        r = server.post(verb, json={"Pod": pod, "NodeNames": NAMES})
        assert r.status_code == 400 and r.json() == {"Error": f"ExtenderArgs.Pod.metadata.{field} must be a string"}
