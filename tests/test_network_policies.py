"""deploy/'s NetworkPolicies, judged as a CNI would: for each workload, the policies that select its
pod, added up, must allow exactly the ports its containers serve, to exactly the peers that need
them, and egress to exactly the API server, the LINSTOR controller and DNS where it uses them.

The ports a container serves come from its flags (``network_ports`` in test_deploy.py); who needs
which port is the table below. The same check runs on the rendered LINSTOR-over-HTTPS variant
(deploy/components/linstor-tls), whose manifests must also validate strictly.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from linstor_scheduler.linstor.client import parse_controllers

from .test_deploy import (
    DEPLOY,
    ENTRY_POINTS,
    OUR_IMAGE,
    cli_flags,
    network_ports,
    pod_specs,
    rendered,
    rendered_with,
    selector_matches,
    validate,
    versions,
)

# The peers, as the default manifests name them (docs/install.md#network-policies says how to change them).
PROMETHEUS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
API_SERVER = {"ipBlock": {"cidr": "0.0.0.0/0"}}
LINSTOR = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "piraeus-datastore"}},
           "podSelector": {"matchLabels": {"app.kubernetes.io/component": "linstor-controller"}}}
DNS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
       "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
# Main-scheduler mode (deploy/components/main-scheduler): the namespace of the kube-scheduler that calls the verbs.
MAIN_SCHEDULER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
ANYONE, ALL_PORTS = {"anyone": True}, "all ports"
API_SERVER_PORTS = {443, 6443}  # the Service's port, and the endpoint's (kubeadm) that most CNIs judge
PROBE_ONLY = {("kube-scheduler", 10259)}  # kubelet's probes: a pod is always reachable from its own node


def key(peer: dict[str, Any]) -> str:
    return json.dumps(peer, sort_keys=True)


Rule = tuple[str, Any, str]  # (peer, port number or ALL_PORTS, protocol)


def allowed(objs: Any, workload: dict[str, Any], direction: str) -> tuple[set[Rule], bool]:
    """What the NetworkPolicies selecting ``workload``'s pods allow in ``direction`` (Ingress/Egress),
    and whether any policy selects them for it at all (if none does, everything is allowed)."""
    namespace = workload["metadata"]["namespace"]
    template = workload["spec"]["template"]
    labels = template["metadata"]["labels"]
    named = {p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
             for c in template["spec"]["containers"] for p in c.get("ports") or [] if "name" in p}
    rules: set[Rule] = set()
    isolated = False
    for policy in objs:
        if policy["kind"] != "NetworkPolicy" or policy["metadata"]["namespace"] != namespace:
            continue
        spec = policy["spec"]
        if not selector_matches(spec["podSelector"], labels) or direction not in spec["policyTypes"]:
            continue
        isolated = True
        for rule in spec.get(direction.lower()) or []:
            peers = rule.get("from" if direction == "Ingress" else "to") or [ANYONE]
            for peer in peers:
                for port in rule.get("ports") or [{"port": ALL_PORTS}]:
                    number, protocol = port["port"], port.get("protocol", "TCP")
                    if isinstance(number, str) and number != ALL_PORTS:
                        if direction == "Egress":  # a name there means the peer's port: we never use one
                            raise AssertionError(f"{policy['metadata']['name']}: named egress port {number}")
                        if number not in named or named[number][1] != protocol:
                            continue  # a port this pod does not have: the rule opens nothing here
                        number = named[number][0]
                    rules.add((key(peer), number, protocol))
    return rules, isolated


def env_of(objs: Any, c: dict[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom ConfigMaps, then env on top."""
    env: dict[str, str] = {}
    for source in c.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            [cm] = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref["name"]]
            env.update({source.get("prefix", "") + k: v for k, v in (cm.get("data") or {}).items()})
    env.update({e["name"]: e["value"] for e in c.get("env") or [] if "value" in e})
    return env


def flag(objs: Any, c: dict[str, Any], name: str) -> str | None:
    var, default = cli_flags()[c["args"][0]][name]
    return env_of(objs, c).get(var, default)


def uses_linstor(c: dict[str, Any]) -> bool:
    return "--controllers" in cli_flags()[c["args"][0]]


def linstor_ports(objs: Any, c: dict[str, Any]) -> set[int]:
    return {urlparse(url).port for url in parse_controllers(flag(objs, c, "--controllers"))}


def expected(objs: Any, spec: dict[str, Any]) -> tuple[set[Rule], set[Rule]]:
    """(ingress, egress) a pod of ``spec`` needs: from its containers' flags and the table above."""
    ingress: set[Rule] = set()
    egress: set[Rule] = {(key(API_SERVER), port, "TCP") for port in API_SERVER_PORTS}
    for c in spec["containers"]:
        if not c["image"].startswith(OUR_IMAGE):
            continue
        subcommand = c["args"][0]
        metrics = int(flag(objs, c, "--metrics-port" if subcommand in ("extender", "webhook") else "--port"))
        assert metrics in network_ports(c)
        ingress.add((key(PROMETHEUS), metrics, "TCP"))
        if subcommand == "webhook":
            ingress.add((key(API_SERVER), int(flag(objs, c, "--port")), "TCP"))
        if subcommand == "extender" and int(flag(objs, c, "--port")) in network_ports(c):
            ingress.add((key(MAIN_SCHEDULER), int(flag(objs, c, "--port")), "TCP"))
        if uses_linstor(c):
            egress |= {(key(LINSTOR), port, "TCP") for port in linstor_ports(objs, c)}
            egress |= {(key(DNS), 53, "UDP"), (key(DNS), 53, "TCP")}
    return ingress, egress


def served(spec: dict[str, Any]) -> set[int]:
    """Every port a container of the pod declares, less kubelet's probe-only ones."""
    return {p["containerPort"] for c in spec["containers"] for p in c.get("ports") or []
            if (c["name"], p["containerPort"]) not in PROBE_ONLY}


def check_policies(objs: Any, extra: frozenset[str] = frozenset()) -> None:
    workloads = list(pod_specs(objs))
    assert {w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for w, _ in workloads} == {
        "scheduler", "webhook", "fencing", "sync-node", "sync-classes", "locality", *extra}
    for workload, spec in workloads:
        name = workload["metadata"]["name"]
        want_in, want_out = expected(objs, spec)
        got_in, isolated_in = allowed(objs, workload, "Ingress")
        got_out, isolated_out = allowed(objs, workload, "Egress")
        assert isolated_in and isolated_out, f"{name}: no policy isolates it (everything allowed)"
        assert got_in == want_in, f"{name} ingress: extra {got_in - want_in}, missing {want_in - got_in}"
        assert got_out == want_out, f"{name} egress: extra {got_out - want_out}, missing {want_out - got_out}"
        assert {port for _, port, _ in got_in} == served(spec), f"{name}: the ports its containers serve"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_each_component_may_talk_to_exactly_what_it_needs(entry):
    check_policies(rendered(entry))


def test_the_opt_in_affinity_sync_may_talk_to_exactly_what_it_needs():
    """deploy/components/affinity-sync added to deploy/ (which has the network policies)."""
    check_policies(rendered_with("", "affinity-sync"), frozenset({"affinity-sync"}))


def test_the_check_can_fail():
    """A port or a peer too many, or one too few, is caught."""
    objs = [copy.deepcopy(o) for o in rendered("")]
    metrics = next(o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-metrics"))
    metrics["spec"]["ingress"][0]["ports"].append({"protocol": "TCP", "port": 8099})  # the verbs' port
    with pytest.raises(AssertionError, match="extra"):
        check_policies(objs)
    metrics["spec"]["ingress"][0]["ports"].pop()
    metrics["spec"]["ingress"][0]["from"].append({"podSelector": {}})  # any pod of our namespace
    with pytest.raises(AssertionError, match="extra"):
        check_policies(objs)
    objs = [o for o in rendered("") if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-dns"))]
    with pytest.raises(AssertionError, match="missing"):
        check_policies(objs)


def test_prometheus_is_named_in_one_place():
    text = (DEPLOY / "components" / "network-policies" / "network-policies.yaml").read_text()
    policies = [d for d in yaml.safe_load_all(text) if d]
    peers = [peer for p in policies for rule in p["spec"].get("ingress") or [] for peer in rule.get("from") or []]
    assert [key(p) for p in peers].count(key(PROMETHEUS)) == 1


def test_every_pod_of_the_namespace_is_denied_by_default():
    [deny] = [o for o in rendered("") if o["kind"] == "NetworkPolicy" and o["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny["spec"] \
        and "egress" not in deny["spec"]


# --- LINSTOR over HTTPS: deploy/components/linstor-tls ---------------------------------------------------

# The Secret base/ mounts in every LINSTOR client (optional); with Piraeus, a copy of its
# `linstor-client-tls` (LinstorCluster .spec.apiTLS.clientSecretName default).
CLIENT_SECRET = "linstor-scheduler-linstor-tls"
SECRET_KEYS = {"ca.crt", "tls.crt", "tls.key"}  # kubernetes.io/tls plus the CA, as Piraeus writes it
LINSTOR_CONFIG = "linstor-scheduler-linstor"  # the one ConfigMap every LINSTOR client reads (envFrom)


def rendered_tls(entry: str = "") -> tuple[dict[str, Any], ...]:
    """``entry`` plus the linstor-tls component, as an operator's overlay adds it."""
    return rendered_with(entry, "linstor-tls")


def linstor_containers(objs: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(spec, c) for _, spec in pod_specs(objs) for c in spec["containers"]
            if c["image"].startswith(OUR_IMAGE) and uses_linstor(c)]


def secret_mount(spec: dict[str, Any], c: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, mount) of the LINSTOR client certificate Secret in container ``c`` of pod ``spec``."""
    [volume] = [v for v in spec["volumes"] if (v.get("secret") or {}).get("secretName") == CLIENT_SECRET]
    [mount] = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    return volume, mount


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_tls_component_switches_every_linstor_client(entry):
    objs = rendered_tls(entry)
    clients = linstor_containers(objs)
    assert {c["args"][0] for _, c in clients} == {"extender", "fencing", "sync-node", "sync-classes",
                                                  "locality-exporter"}
    for spec, c in clients:
        urls = parse_controllers(flag(objs, c, "--controllers"))
        assert urls and all(u.startswith("https://") for u in urls), (c["name"], urls)
        assert flag(objs, c, "--controllers").startswith("linstor+ssl://")
        assert {"configMapRef": {"name": LINSTOR_CONFIG}} in c["envFrom"]
        volume, mount = secret_mount(spec, c)
        assert mount["readOnly"] is True
        files = {f: flag(objs, c, f) for f in ("--linstor-ca-file", "--linstor-cert-file", "--linstor-key-file")}
        assert {os.path.dirname(p) for p in files.values()} == {mount["mountPath"]}
        assert {os.path.basename(p) for p in files.values()} == SECRET_KEYS
        mode = volume["secret"]["defaultMode"]
        assert mode & 0o007 == 0, "the key is not world-readable"
        user = (spec.get("securityContext") or {}).get("runAsUser", 0)
        if user != 0:  # a non-root pod reads the key through its group
            assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"] and mode & 0o040
    check_policies(objs)
    [policy] = [o for o in objs if o["kind"] == "NetworkPolicy"
                and o["metadata"]["name"] == "linstor-scheduler-linstor"]
    assert [p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]] == [3371], "HTTPS only"


@pytest.mark.parametrize("version", versions())
def test_tls_variant_validates_strictly(version):
    assert validate(rendered_tls(""), version) == []


def test_tls_component_changes_nothing_but_linstor_access():
    """The same objects as without it, but for the LINSTOR settings of the one shared ConfigMap and
    the policy's port: every workload is byte for byte the same (no per-container settings)."""
    def strip(objs: Any) -> list[str]:
        out = []
        for o in copy.deepcopy(list(objs)):
            if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "linstor-scheduler-linstor":
                o["spec"]["egress"][0].pop("ports")
            if o["kind"] == "ConfigMap" and o["metadata"]["name"] == LINSTOR_CONFIG:
                o["data"] = {k: v for k, v in o["data"].items()
                             if k != "LS_CONTROLLERS" and not k.startswith("LINSTOR_SCHEDULER_LINSTOR_")}
            out.append(json.dumps(o, sort_keys=True))
        return sorted(out)

    assert strip(rendered_tls("")) == strip(rendered(""))
    workloads = {json.dumps(w, sort_keys=True) for w, _ in pod_specs(rendered(""))}
    assert workloads == {json.dumps(w, sort_keys=True) for w, _ in pod_specs(rendered_tls(""))}


@pytest.mark.parametrize("components", [(), ("main-scheduler",)], ids=["deploy", "main-scheduler"])
def test_services_expose_only_ports_served_on_the_pod_network(components):
    """Each Service's targets are ports the selected containers serve on the pod network; the
    extender's metrics Service has its metrics port and nothing else (the verbs are on loopback, or,
    in main-scheduler mode, behind their own HTTPS Service)."""
    objs = rendered_with("", *components)
    for svc in (o for o in objs if o["kind"] == "Service"):
        [(workload, spec)] = [(w, s) for w, s in pod_specs(objs)
                              if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        ours = [c for c in spec["containers"] if c["image"].startswith(OUR_IMAGE)]
        named = {p["name"]: p["containerPort"] for c in ours for p in c["ports"]}
        targets = {named.get(p["targetPort"], p["targetPort"]) for p in svc["spec"]["ports"]}
        assert targets <= set().union(*map(network_ports, ours)), svc["metadata"]["name"]
        if workload["metadata"]["name"] == "linstor-scheduler":
            [extender] = ours
            if svc["metadata"]["name"] == "linstor-scheduler-extender-https":
                assert components and targets == {int(flag(objs, extender, "--port"))}
                assert flag(objs, extender, "--tls-cert-file") not in (None, "None"), "the verbs over HTTPS only"
                continue
            assert targets == {int(flag(objs, extender, "--metrics-port"))}
            assert [p["name"] for p in svc["spec"]["ports"]] == ["metrics"]


# --- Main-scheduler mode: deploy/components/main-scheduler (+ main-scheduler-client-auth) ------------

MAIN_SCHEDULER_ENTRIES = ("", "monitoring")  # kubescheduler.config.k8s.io/v1: not the legacy overlay
MAIN_VARIANTS = (("main-scheduler",), ("main-scheduler", "main-scheduler-client-auth"),
                 ("main-scheduler", "linstor-tls"))
EXTENDER_SECRET = "linstor-scheduler-extender-tls"


def extender_of(objs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    [(spec, c)] = [(spec, c) for w, spec in pod_specs(objs) if w["metadata"]["name"] == "linstor-scheduler"
                   for c in spec["containers"]]
    return spec, c


@pytest.mark.parametrize("entry", MAIN_SCHEDULER_ENTRIES)
@pytest.mark.parametrize("components", MAIN_VARIANTS, ids="+".join)
def test_main_scheduler_mode_exposes_the_verbs_over_https_to_the_scheduler_only(entry, components):
    """The verbs reach the pod network over HTTPS only, and only the scheduler's namespace may reach
    them (with Prometheus on the metrics port, and nothing else); every other workload as before."""
    objs = rendered_with(entry, *components)
    check_policies(objs)
    spec, extender = extender_of(objs)
    verbs = int(flag(objs, extender, "--port"))
    assert verbs in network_ports(extender) and flag(objs, extender, "--listen-address") == "0.0.0.0"
    [policy] = [o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("main-scheduler")]
    assert [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]] == [MAIN_SCHEDULER]
    # The certificate: the Secret's files, mounted read-only, the key not world-readable; not optional,
    # so that a pod without it waits instead of serving plain HTTP.
    [volume] = [v for v in spec["volumes"] if (v.get("secret") or {}).get("secretName") == EXTENDER_SECRET]
    [mount] = [m for m in extender["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and not volume["secret"].get("optional")
    assert volume["secret"]["defaultMode"] & 0o007 == 0
    files = {f: flag(objs, extender, f) for f in ("--tls-cert-file", "--tls-key-file", "--tls-client-ca-file")}
    assert os.path.dirname(files["--tls-cert-file"]) == os.path.dirname(files["--tls-key-file"]) == mount["mountPath"]
    if "main-scheduler-client-auth" in components:
        assert os.path.dirname(files["--tls-client-ca-file"]) == mount["mountPath"]
    else:
        assert files["--tls-client-ca-file"] in (None, "None"), "client certificates only with the second component"
    # Only the linstor profile's pods are judged: the name the webhook gives LINSTOR pods.
    [webhook] = [c for _, s in pod_specs(objs) for c in s["containers"] if c.get("args", [None])[0] == "webhook"]
    assert flag(objs, extender, "--scheduler-name") == flag(objs, webhook, "--scheduler-name") == "linstor"
    # Its Service sends 443 to the verbs and nothing else.
    svc = next(o for o in objs if o["kind"] == "Service"
               and o["metadata"]["name"] == "linstor-scheduler-extender-https")
    named = {p["name"]: p["containerPort"] for p in extender["ports"]}
    assert [(p["port"], named[p["targetPort"]]) for p in svc["spec"]["ports"]] == [(443, verbs)]


def test_main_scheduler_mode_runs_no_second_scheduler():
    """No kube-scheduler container, configuration or the RBAC only it used: two schedulers of the
    profile ``linstor`` would both bind its pods. The extender's own ClusterRole stays."""
    plain, objs = rendered(""), rendered_with("", "main-scheduler")
    spec, extender = extender_of(objs)
    assert [c["name"] for c in spec["containers"]] == ["extender"]
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    gone = {(o["kind"], o["metadata"]["name"]) for o in plain} - names
    assert gone == {("ConfigMap", "linstor-scheduler-config"),
                    ("ClusterRoleBinding", "linstor-scheduler-as-kube-scheduler"),
                    ("ClusterRoleBinding", "linstor-scheduler-as-volume-scheduler"),
                    ("RoleBinding", "linstor-scheduler-extension-apiserver-authentication-reader"),
                    ("Role", "linstor-scheduler-leader-election"), ("RoleBinding", "linstor-scheduler-leader-election")}
    assert ("ClusterRoleBinding", "linstor-scheduler-extender") in names
    assert {v["name"] for v in spec["volumes"]} >= {m["name"] for m in extender["volumeMounts"]}
    # Every other workload is byte for byte as without the component.
    def others(objs: Any) -> set[str]:
        return {json.dumps(w, sort_keys=True) for w, _ in pod_specs(objs)
                if w["metadata"]["name"] != "linstor-scheduler"}

    assert others(plain) == others(objs)


@pytest.mark.parametrize("version", versions())
def test_main_scheduler_variant_validates_strictly(version):
    assert validate(rendered_with("", "main-scheduler", "main-scheduler-client-auth"), version) == []
