"""Bytes, not JSON: what kube-scheduler (or anything else) may put on the wire, over real HTTP.

Every verb of the extender (``/filter``, ``/prioritize``, ``/explain``, names and full-Node mode) and
the webhook's ``/mutate`` answer 200, 400, 405 or 413 whatever the bytes, with a message, and keep
serving. The bodies start as kube-scheduler writes them (Go field order, no spaces) and are then
truncated, flipped, given invalid UTF-8, nested deeper than any decoder allows, numbers beyond a
double and duplicate keys.
"""

from __future__ import annotations

import json
import logging
import socket

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit import kube_objects as k
from linstor_scheduler.httpserver import ServerThread
from scheduler_extender.holder import StateHolder
from scheduler_extender.http import create_app
from scheduler_extender.judge import Extender

from .cluster import standard
from .test_extender_http import server  # noqa: F401  (the extender fixture)
from .test_webhook import as_created, cluster, post, review  # noqa: F401  (the webhook fixture)

NAMES = ["w1", "w2", "w3", "nosat"]
VERBS = ("/filter", "/prioritize", "/explain")
ANSWERS = {200, 400, 405, 413}


def go(doc) -> bytes:
    """JSON as Go's encoding/json writes it: struct field order, no spaces."""
    return json.dumps(doc, separators=(",", ":")).encode()


POD = go(k.pod("db-0", claims=["c-a", "c-new"], ephemeral={"e": k.claim_template("local")}))
NODE_LIST = go({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
                "items": [k.node(n, zone="a") for n in NAMES]})
NAMES_BODY = b'{"Pod":' + POD + b',"Nodes":null,"NodeNames":' + go(NAMES) + b"}"
FULL_BODY = b'{"Pod":' + POD + b',"Nodes":' + NODE_LIST + b',"NodeNames":null}'
DEEP = b"[" * 5000 + b"]" * 5000
INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x80")


def inside_pod(body: bytes, value: bytes) -> bytes:
    """``value`` as the pod's first label value: a spot every decoder of ours must read."""
    return body.replace(b'"labels":{', b'"labels":{"x":' + value + b",", 1)


# The cases, one by one: each was a 500 with a traceback.
CASES = {
    "invalid UTF-8 in the Pod": lambda b: inside_pod(b, b'"\xff\xfe"'),
    "a lone surrogate in the Pod": lambda b: inside_pod(b, b'"\xed\xa0\x80"'),
    "nested deeper than 1,000 levels in the Pod": lambda b: inside_pod(b, DEEP),
    "a number beyond a double in the Pod": lambda b: inside_pod(b, b"1e999999"),
}


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("mode", ["names", "full-Node"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_bodies_that_were_500_are_a_clear_400(server, verb, mode, case):  # noqa: F811
    body = CASES[case](NAMES_BODY if mode == "names" else FULL_BODY)
    r = server.post(verb, content=body)
    assert r.status_code == 400, r.text
    assert "not valid JSON" in r.json()["Error"]


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("body", [
    NAMES_BODY.replace(b'"w2"', b'"w2\xff"'),  # invalid UTF-8 inside NodeNames
    NAMES_BODY.replace(b'"NodeNames":[', b'"NodeNames":[' + DEEP + b","),
    FULL_BODY.replace(b'"name":"w2"', b'"name":"w2\xc3\x28"'),  # inside a Node's name
    FULL_BODY.replace(b'"items":[', b'"items":[' + DEEP + b","),
], ids=["utf8-names", "deep-names", "utf8-node", "deep-nodes"])
def test_bad_bytes_among_the_nodes_are_a_clear_400(server, verb, body):  # noqa: F811
    r = server.post(verb, content=body)
    assert r.status_code == 400, r.text
    assert r.json()["Error"]


@st.composite
def mutated(draw, bases: tuple[bytes, ...] = (NAMES_BODY, FULL_BODY)) -> bytes:
    body = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "utf8", "deep", "number", "duplicate", "delete"]))
        at = draw(st.integers(0, len(body)))
        if kind == "truncate":
            del body[at:]
        elif kind == "flip" and body:
            body[min(at, len(body) - 1)] = draw(st.integers(0, 255))
        elif kind == "utf8":
            body[at:at] = draw(st.sampled_from(INVALID_UTF8))
        elif kind == "deep":
            depth = draw(st.sampled_from([600, 1100, 3000]))
            body[at:at] = draw(st.sampled_from([b"[", b'{"a":'])) * depth
        elif kind == "number":
            body[at:at] = draw(st.sampled_from([b"1e999999", b"-1e999999", b"1" * 400, b"0.1e-99999", b"NaN"]))
        elif kind == "duplicate":
            key = draw(st.sampled_from([b'"Pod":' + POD + b",", b'"NodeNames":["w9"],', b'"Nodes":null,',
                                        b'"pod":{},', b'"nodenames":7,']))
            body[1:1] = key
        elif kind == "delete" and body:
            end = draw(st.integers(at, min(len(body), at + 40)))
            del body[at:end]
    return bytes(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated(), verb=st.sampled_from(VERBS), method=st.sampled_from(["POST"] * 6 + ["PUT", "GET"]))
def test_mutated_kube_scheduler_bodies_get_only_200_400_405_413(server, body, verb, method):  # noqa: F811
    r = server.request(method, verb, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code in ANSWERS, (r.status_code, r.text[:300])
    if method != "POST":
        assert r.status_code == 405
    elif r.status_code != 200:
        assert r.json()["Error"]
    assert server.get("/healthz").text == "ok"  # and it keeps serving


def test_the_server_keeps_serving_and_logs_no_traceback(server, caplog):  # noqa: F811
    with caplog.at_level(logging.WARNING):
        for case in CASES.values():
            for body in (NAMES_BODY, FULL_BODY):
                for verb in VERBS:
                    assert server.post(verb, content=case(body)).status_code == 400
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert server.post("/filter", content=NAMES_BODY).json()["Error"] == ""
    assert server.get("/healthz").text == "ok"


# The webhook: the same bytes inside an AdmissionReview, and the body limit.

def test_webhook_answers_bad_bytes_with_400(cluster):  # noqa: F811
    good = orjson.dumps(review(as_created(k.pod("p", claims=["data-db-0"]))))
    for bad in (good.replace(b'"name":"p"', b'"name":"p\xff"'), good[:-1] + b',"x":' + DEEP + b"}",
                good[:-1] + b',"x":1e999999}', good[: len(good) // 2]):
        resp = post(cluster, bad)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]
    assert post(cluster, good).status_code == 200


REVIEW = orjson.dumps(review(as_created(k.pod("db-0", claims=["data-db-0"], ephemeral={"e": k.claim_template("x")}))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated((REVIEW,)))
def test_mutated_admission_reviews_get_only_200_400_413(cluster, body):  # noqa: F811
    resp = post(cluster, body)
    assert resp.status_code in (200, 400, 413), (resp.status_code, resp.text[:300])
    if resp.status_code != 200:
        assert resp.json()["error"]


def test_webhook_refuses_an_oversized_body_with_413(cluster):  # noqa: F811
    big = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","x":"' + b"a" * (9 << 20) + b'"}'
    resp = post(cluster, big)
    assert resp.status_code == 413, resp.text
    assert "limit" in resp.json()["error"]

    def chunks():  # no Content-Length: refused while reading, not after
        for _ in range(10):
            yield b"a" * (1 << 20)

    resp = cluster["client"].post("/mutate", content=chunks())
    assert resp.status_code == 413
    assert cluster["client"].get("/healthz").status_code == 200  # still serving, its loops turning


# Connections as kube-scheduler holds them: idle for up to 90 s, then reused.

def test_one_connection_is_reused_after_10_s_idle():
    """uvicorn's default closes an idle connection after 5 s; kube-scheduler's client keeps it 90 s
    and may send on it just as the server closes it. A real idle period is what is tested here."""
    holder = StateHolder(static=True, ready=True)
    holder.swap(standard())
    with ServerThread(create_app(Extender(holder))) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        request = (b"POST /prioritize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(NAMES_BODY)) + NAMES_BODY
        try:
            sock.sendall(request)
            first = _read_response(sock)
            assert first.startswith(b"HTTP/1.1 200")
            sock.settimeout(10.0)  # idle: a recv that returns before the timeout means the server closed
            with pytest.raises(TimeoutError):
                sock.recv(1)
            sock.settimeout(10.0)
            sock.sendall(request)
            assert _read_response(sock) == first
        finally:
            sock.close()


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed by the server"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(headers[b"content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed by the server"
        rest += chunk
    status = head.split(b"\r\n")[0]
    return status + b"\r\n" + rest
