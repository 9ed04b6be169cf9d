"""deploy/ is what operators apply: every object valid for every Kubernetes version we claim, and every
name, port, flag, env var, verb and RBAC rule in it agreeing with the code it runs.

Offline: ``kubernetes-validate`` bundles the Kubernetes JSON schemas (strict: unknown fields are
errors). ``kubectl kustomize`` (no cluster needed) renders the three entry points when kubectl is
installed; the file-level checks run without it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import types
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from kubernetes_validate import utils as kv

import linstor_scheduler
from admission import OPT_OUT_LABEL, OPT_OUT_VALUE
from admission.lookups import WEBHOOK_KINDS
from devkit import kube_objects as k
from linstor_scheduler.cli import build_parser
from linstor_scheduler.httpserver import ServerThread
from linstor_scheduler.kube.informer import KINDS
from scheduler_extender.refresh import EXTENDER_KINDS

from .cluster import standard

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OUR_IMAGE = "ghcr.io/linstor-scheduler/linstor-scheduler"
KUBE_SCHEDULER_IMAGE = "registry.k8s.io/kube-scheduler"
MIN_VERSION = (1, 25)  # kubescheduler.config.k8s.io/v1 is GA from 1.25
# No schema bundled with kubernetes-validate: ServiceMonitors are checked below, the PrometheusRule
# against its CRD's schema in test_monitoring.py.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
NON_FLAG_ENV = {"TMPDIR", "POD_NAME", "LVM_SYSTEM_DIR"}  # tempfile; Lease identity (kube/lease.py); the LVM tools
ENTRY_POINTS = ("", "legacy-policy", "monitoring")


# --- loading -------------------------------------------------------------------------------------


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(directory: Path) -> dict[str, Any]:
    return load(directory / "kustomization.yaml")[0]


def manifest_files() -> list[Path]:
    """Files that hold whole objects: the resources of every kustomization (patches are partial)."""
    files = []
    for kfile in sorted(DEPLOY.rglob("kustomization.yaml")):
        for entry in kustomization(kfile.parent).get("resources") or []:
            path = (kfile.parent / entry).resolve()
            if path.is_file():
                files.append(path)
    return files


def objects(files: list[Path] | None = None) -> list[dict[str, Any]]:
    return [obj for f in files or manifest_files() for obj in load(f)]


@cache
def rendered(entry: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: rendering with `kubectl kustomize` cannot be checked here")
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY / entry)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"kubectl kustomize deploy/{entry} failed: {out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


@cache
def rendered_with(entry: str, *components: str) -> tuple[dict[str, Any], ...]:
    """``entry`` plus ``components`` (of deploy/components/), as an operator's overlay adds them."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: rendering with `kubectl kustomize` cannot be checked here")
    with tempfile.TemporaryDirectory() as tmp:
        # kustomize takes relative paths only.
        base = os.path.relpath(DEPLOY / entry, tmp)
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [base],
            "components": [os.path.relpath(DEPLOY / "components" / c, tmp) for c in components]}))
        out = subprocess.run([kubectl, "kustomize", tmp], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def find(objs: Any, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(objs: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for o in objs:
        if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            yield o, o["spec"]["template"]["spec"]


def container(objs: Any, deployment: str, name: str) -> dict[str, Any]:
    spec = find(objs, "Deployment", deployment)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, str | None]:
    """The container's environment: its ConfigMaps (envFrom) first, then its own env, which wins."""
    env: dict[str, str | None] = {}
    for source in c.get("envFrom") or []:
        env.update(find(objects(), "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e.get("value") for e in c.get("env") or []})
    return env


# --- the CLI, as the manifests must use it -------------------------------------------------------


@cache
def cli_flags() -> dict[str, dict[str, tuple[str, Any]]]:
    """subcommand -> flag -> (env var, default), from the real parser's help texts ``[env VAR]``."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    result: dict[str, dict[str, tuple[str, Any]]] = {}
    for name, p in sub.choices.items():
        flags = {}
        for action in p._actions:
            m = re.search(r"\[env (\w+)\]", action.help or "")
            for flag in action.option_strings:
                if m:
                    flags[flag] = (m.group(1), action.default)
        result[name] = flags
    return result


def setting(c: dict[str, Any], flag: str) -> str:
    """What the container sets ``flag`` to: ``--flag=value`` in args, else its env var, else the default."""
    subcommand = c["args"][0]
    var, default = cli_flags()[subcommand][flag]
    for arg in c["args"][1:]:
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    env = env_of(c)
    return env[var] if var in env else str(default)


def network_ports(c: dict[str, Any]) -> set[int]:
    """The ports our container serves on the pod network, from its flags: the extender's verbs are on
    loopback (only its metrics port is out there) or, in main-scheduler mode, there over HTTPS only;
    the webhook has /mutate and a metrics port."""
    subcommand = c["args"][0]
    if subcommand == "extender":
        address = setting(c, "--listen-address")
        if address == "127.0.0.1":
            return {int(setting(c, "--metrics-port"))}
        assert address == "0.0.0.0" and setting(c, "--tls-cert-file") not in ("", "None"), \
            "the verbs leave loopback over HTTPS only"
        return {int(setting(c, "--port")), int(setting(c, "--metrics-port"))}
    if subcommand == "webhook":
        return {int(setting(c, "--port")), int(setting(c, "--metrics-port"))}
    return {int(setting(c, "--port"))}


def probe_port(c: dict[str, Any]) -> int:
    """Where kubelet finds /healthz and /readyz of our container."""
    return int(setting(c, "--metrics-port" if c["args"][0] in ("extender", "webhook") else "--port"))


def our_containers(objs: Any) -> list[dict[str, Any]]:
    return [c for _, spec in pod_specs(objs) for c in spec["containers"] if c["image"].startswith(OUR_IMAGE)]


# --- kustomization: lists every file, and every listed file exists ---------------------------------


def test_every_file_is_listed_and_every_listed_file_exists():
    listed: set[Path] = set()
    for kfile in DEPLOY.rglob("kustomization.yaml"):
        doc = kustomization(kfile.parent)
        assert (doc["apiVersion"], doc["kind"]) in {("kustomize.config.k8s.io/v1beta1", "Kustomization"),
                                                    ("kustomize.config.k8s.io/v1alpha1", "Component")}
        entries = list(doc.get("resources") or []) + list(doc.get("components") or []) + [
            p["path"] for p in doc.get("patches") or [] if "path" in p]
        entries += [f for g in doc.get("configMapGenerator") or [] for f in g.get("files") or []]
        for entry in entries:
            path = (kfile.parent / entry).resolve()
            assert path.exists(), f"{kfile.relative_to(ROOT)} lists {entry}, which does not exist"
            if path.is_dir():
                assert (path / "kustomization.yaml").exists(), f"{entry} is not a kustomization"
            listed.add(path)
    for path in DEPLOY.rglob("*"):
        if path == DEPLOY / "components":  # a folder of kustomize Components, each checked as a directory
            continue
        if path.is_dir():
            assert (path / "kustomization.yaml").exists(), f"{path.relative_to(ROOT)} has no kustomization.yaml"
        elif path.name not in ("kustomization.yaml", "README.md"):
            assert path.resolve() in listed, f"{path.relative_to(ROOT)} is in no kustomization"
    assert (DEPLOY / "base").resolve() in listed


def test_fencing_is_deployed_with_the_fields_safety_rules():
    """Issue 20, 6: as shipped, fencing fails over labelled pods only, sets no taint (a satellite or
    CSI node pod that does not tolerate it could not come back: piraeus-operator #561, #825), and
    refuses pods with storage it cannot fence."""
    c = container(objects(), "linstor-scheduler-fencing", "fencing")
    assert setting(c, "--select") == "labelled"
    assert setting(c, "--taint").lower() == "false"
    assert setting(c, "--fail-over-unsafe-pods").lower() == "false"


def test_sync_node_tolerates_the_fencing_taint():
    """docs/fencing.md, "The taint": with --taint, our own storage agent still starts on a tainted node."""
    from fencing.actions import TAINT_KEY

    (spec,) = [spec for o, spec in pod_specs(objects()) if o["metadata"]["name"] == "linstor-scheduler-sync-node"]
    taint = {"key": TAINT_KEY, "effect": "NoSchedule"}

    def tolerates(t: dict[str, Any]) -> bool:
        return (t.get("key") in (None, taint["key"]) and t.get("effect") in (None, taint["effect"])
                and (t.get("operator") == "Exists" or t.get("key") == taint["key"]))

    assert any(tolerates(t) for t in spec.get("tolerations") or [])


def test_places_for_the_other_workloads_are_marked():
    text = (DEPLOY / "base" / "kustomization.yaml").read_text()
    for entry in ("fencing-deployment.yaml", "sync-node-daemonset.yaml", "sync-classes-deployment.yaml"):
        assert re.search(rf"^  - {entry}$", text, re.M), f"{entry} is not in deploy/base/kustomization.yaml"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_each_entry_point_renders(entry):
    objs = rendered(entry)
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Deployment", "MutatingWebhookConfiguration", "PodDisruptionBudget"} <= kinds
    assert len(objs) == len({(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs})
    auth = find(objs, "RoleBinding", "linstor-scheduler-extension-apiserver-authentication-reader")
    assert auth["metadata"]["namespace"] == "kube-system", "a global namespace: would have moved it"
    images = {c["image"] for c in our_containers(objs)}
    assert images == {f"{OUR_IMAGE}:{linstor_scheduler.__version__}"}


# --- schemas ---------------------------------------------------------------------------------------


def versions() -> list[str]:
    found = sorted({kv.major_minor(v) for v in kv.all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
    return [v for v in found if tuple(map(int, v.split("."))) >= MIN_VERSION]


def test_bundled_schemas_cover_the_versions_we_claim():
    assert versions()[0] == "1.25" and len(versions()) >= 7, versions()


def validate(objs: Any, version: str) -> list[str]:
    errors = []
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            errors.append(exc.message)
    return errors


@pytest.mark.parametrize("version", versions())
def test_every_manifest_validates_strictly(version):
    assert validate(objects(), version) == []


@pytest.mark.parametrize("version", versions())
def test_rendered_overlays_validate_strictly(version):
    """The legacy overlay's patched Deployment exists only after rendering. Objects that kustomize
    only labelled were validated file by file above; the rest (patched or new) is validated here."""
    def plain(obj: dict[str, Any]) -> dict[str, Any]:
        copy = json.loads(json.dumps(obj))
        copy["metadata"].pop("labels", None)
        return copy

    from_files = [plain(o) for o in objects()]
    for entry in ENTRY_POINTS:
        changed = [o for o in rendered(entry) if plain(o) not in from_files]
        assert validate(changed, version) == [], entry
    assert any(o["kind"] == "Deployment" for o in rendered("legacy-policy") if plain(o) not in from_files)


def test_strict_validation_catches_a_misspelt_field():
    deployment = json.loads(json.dumps(find(objects(), "Deployment", "linstor-scheduler")))
    deployment["spec"]["template"]["spec"]["containers"][1]["readinesProbe"] = {}
    assert any("readinesProbe" in e for e in validate([deployment], versions()[-1]))


def test_service_monitors():
    monitors = [o for o in objects() if o["kind"] == "ServiceMonitor"]
    services = [o for o in objects() if o["kind"] == "Service"]
    assert {m["metadata"]["name"] for m in monitors} == {f"linstor-scheduler-{c}" for c in (
        "extender", "webhook", "fencing", "sync-node", "sync-classes", "locality")}
    for m in monitors:
        assert m["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(m["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        svc = [s for s in services if s["metadata"]["namespace"] == m["metadata"]["namespace"]
               and m["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert len(svc) == 1, f"{m['metadata']['name']} selects {len(svc)} Services"
        port_names = {p["name"] for p in svc[0]["spec"]["ports"]}
        for ep in m["spec"]["endpoints"]:
            assert set(ep) <= {"port", "path", "scheme", "interval", "tlsConfig"}
            assert ep["port"] in port_names and ep["path"] == "/metrics"
    for m in monitors:  # every /metrics is plain HTTP on a port named "metrics" (the NetworkPolicy opens that one)
        assert [(ep["port"], ep.get("scheme", "http")) for ep in m["spec"]["endpoints"]] == [("metrics", "http")]


# --- the scheduler configuration against the real extender ----------------------------------------


def scheduler_config() -> dict[str, Any]:
    cm = find(objects(), "ConfigMap", "linstor-scheduler-config")
    return yaml.safe_load(cm["data"]["config.yaml"])


def rendered_scheduler_config(entry: str) -> dict[str, Any]:
    """kube-scheduler's configuration as the entry point deploys it (an overlay may patch it)."""
    return yaml.safe_load(find(rendered(entry), "ConfigMap", "linstor-scheduler-config")["data"]["config.yaml"])


@pytest.fixture(scope="module")
def extender_http():
    from scheduler_extender.holder import StateHolder
    from scheduler_extender.http import create_app
    from scheduler_extender.judge import Extender

    holder = StateHolder(static=True, ready=True)
    holder.swap(standard())
    app = create_app(Extender(holder))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        yield app, http


def post_routes(app: Any) -> set[str]:
    return {r.path for r in app.routes if "POST" in (getattr(r, "methods", None) or ())}


def get_routes(app: Any) -> set[str]:
    return {r.path for r in app.routes if "GET" in (getattr(r, "methods", None) or ())}


def duration_seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    assert m, f"not a duration: {text}"
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def test_scheduler_configuration(extender_http):
    app, http = extender_http
    cfg = scheduler_config()
    assert cfg["apiVersion"] == "kubescheduler.config.k8s.io/v1" and cfg["kind"] == "KubeSchedulerConfiguration"
    assert cfg["profiles"] == [{"schedulerName": "linstor"}]
    le = cfg["leaderElection"]
    assert le["leaderElect"] is True and le["resourceLock"] == "leases"
    assert (le["resourceNamespace"], le["resourceName"]) == ("linstor-scheduler", "linstor-scheduler")
    [ext] = cfg["extenders"]
    assert {"/" + ext["filterVerb"], "/" + ext["prioritizeVerb"]} == {"/filter", "/prioritize"}
    assert {"/filter", "/prioritize"} <= set(app.fast), "served by the verbs' raw handlers (http.ExtenderApp)"
    assert ext["nodeCacheCapable"] is True and ext["ignorable"] is True and ext["enableHTTPS"] is False
    assert "managedResources" not in ext and "bindVerb" not in ext and "preemptVerb" not in ext
    assert ext["weight"] > 0 and 0 < duration_seconds(ext["httpTimeout"]) <= 10
    url = urlparse(ext["urlPrefix"])
    assert url.scheme == "http" and url.hostname == "127.0.0.1" and url.path in ("", "/")
    sidecar = container(objects(), "linstor-scheduler", "extender")
    assert sidecar["args"][0] == "extender"
    assert url.port == int(setting(sidecar, "--port")) and url.hostname == setting(sidecar, "--listen-address")
    assert url.port not in {p["containerPort"] for p in sidecar["ports"]}, "the verbs are not on the pod network"
    # nodeCacheCapable: kube-scheduler sends NodeNames only; the extender must answer in kind.
    r = http.post(f"/{ext['filterVerb']}", json={"Pod": k.pod("p", claims=["c-local"]), "NodeNames": ["w1", "w2"]})
    assert r.status_code == 200 and r.json()["Nodes"] is None and r.json()["NodeNames"] == ["w2"]
    r = http.post(f"/{ext['prioritizeVerb']}", json={"Pod": k.pod("p", claims=["c-local"]), "NodeNames": ["w2"]})
    assert r.status_code == 200 and [h["Host"] for h in r.json()] == ["w2"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_shipped_configuration_scores_every_node(entry):
    """kube-scheduler offers the extender only the nodes it filtered before its feasible-node cut-off
    (schedule_one.go ``numFeasibleNodesToFind``; 1.19-1.22: core/generic_scheduler.go): as each entry
    point deploys it, the cut-off must be off for the ``linstor`` profile, read from what
    ``kubectl kustomize`` renders (the legacy overlay carries its own configuration)."""
    cfg = rendered_scheduler_config(entry)
    assert cfg.get("percentageOfNodesToScore") == 100, f"deploy/{entry}: percentageOfNodesToScore: 100 is missing"
    [profile] = [p for p in cfg["profiles"] if p["schedulerName"] == "linstor"]
    assert profile.get("percentageOfNodesToScore", 100) == 100, "the profile must not lower it"


def test_scheduler_reads_its_configuration():
    deployment = find(objects(), "Deployment", "linstor-scheduler")
    spec = deployment["spec"]["template"]["spec"]
    ks = next(c for c in spec["containers"] if c["name"] == "kube-scheduler")
    config_arg = next(a for a in ks["command"] if a.startswith("--config="))
    path = Path(config_arg.split("=", 1)[1])
    mount = next(m for m in ks["volumeMounts"] if path.parent == Path(m["mountPath"]))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "linstor-scheduler-config"
    assert path.name in find(objects(), "ConfigMap", "linstor-scheduler-config")["data"]
    assert deployment["spec"]["replicas"] == 2


def test_kube_scheduler_image_is_the_documented_edit():
    text = (DEPLOY / "base" / "scheduler-deployment.yaml").read_text()
    lines = text.splitlines()
    [at] = [i for i, line in enumerate(lines) if KUBE_SCHEDULER_IMAGE in line]
    assert lines[at].strip() == f"image: {KUBE_SCHEDULER_IMAGE}:v1.31.0"
    assert "THE ONE EDIT" in lines[at - 2] or "THE ONE EDIT" in lines[at - 1]
    assert "THE ONE EDIT" in (ROOT / "docs" / "install.md").read_text()


# kubescheduler.config.k8s.io/v1beta1, the version the legacy overlay writes: the JSON names of
# its fields, from k8s.io/kube-scheduler config/v1beta1 types.go (KubeSchedulerConfiguration, Extender,
# KubeSchedulerProfile), identical in 1.19.0, 1.20.0, 1.21.0 and 1.22.0 but for "parallelism" (1.20+).
# kube-scheduler decodes it strictly: a name not here (e.g. v1's per-profile percentageOfNodesToScore,
# or the legacy Policy's "enableHttps") would stop it from starting.
V1BETA1_CONFIGURATION_FIELDS = {"apiVersion", "kind", "leaderElection", "clientConnection", "healthzBindAddress",
                                "metricsBindAddress", "enableProfiling", "enableContentionProfiling",
                                "percentageOfNodesToScore", "podInitialBackoffSeconds", "podMaxBackoffSeconds",
                                "profiles", "extenders"}
V1BETA1_PROFILE_FIELDS = {"schedulerName", "plugins", "pluginConfig"}
V1BETA1_EXTENDER_FIELDS = {"urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "weight", "bindVerb",
                           "enableHTTPS", "tlsConfig", "httpTimeout", "nodeCacheCapable", "managedResources",
                           "ignorable"}
# Flags that must not reach kube-scheduler 1.21/1.22: removed in 1.22 (--scheduler-name,
# kubernetes/kubernetes#102805), a Policy source (deprecated; overrides the profiles), or ignored
# next to --config (the leader election flags: the file's leaderElection is used instead).
LEGACY_FLAGS = ("--scheduler-name", "--policy-config-file", "--policy-configmap", "--use-legacy-policy-config",
                "--algorithm-provider", "--leader-elect", "--lock-object")


def test_legacy_configuration_is_the_base_configuration_in_v1beta1():
    """The legacy overlay does what base/ does, in the version kube-scheduler 1.21/1.22 decode."""
    base, legacy = scheduler_config(), rendered_scheduler_config("legacy-policy")
    assert legacy["apiVersion"] == "kubescheduler.config.k8s.io/v1beta1" and legacy["kind"] == base["kind"]
    assert set(legacy) <= V1BETA1_CONFIGURATION_FIELDS, set(legacy) - V1BETA1_CONFIGURATION_FIELDS
    assert all(set(p) <= V1BETA1_PROFILE_FIELDS for p in legacy["profiles"])
    assert all(set(e) <= V1BETA1_EXTENDER_FIELDS for e in legacy["extenders"])
    same = {k: v for k, v in legacy.items() if k != "apiVersion"}
    assert same == {k: v for k, v in base.items() if k != "apiVersion"}, "profile, extender, leader election, cut-off"
    assert isinstance(legacy["extenders"][0]["httpTimeout"], str), "v1beta1: a duration string (metav1.Duration)"


def test_the_v1beta1_field_check_can_fail():
    v1_only = {"profiles": [{"schedulerName": "linstor", "percentageOfNodesToScore": 100}],
               "extenders": [{"urlPrefix": "x", "enableHttps": False}]}
    assert not all(set(p) <= V1BETA1_PROFILE_FIELDS for p in v1_only["profiles"])
    assert not all(set(e) <= V1BETA1_EXTENDER_FIELDS for e in v1_only["extenders"])


def test_legacy_overlay_runs_kube_scheduler_with_its_configuration():
    objs = rendered("legacy-policy")
    ks = container(objs, "linstor-scheduler", "kube-scheduler")
    version = re.search(r":v1\.(\d+)\.", ks["image"])
    assert version and 21 <= int(version.group(1)) < 23, "v1beta1: 1.19-1.22; the rest of base/: 1.21+"
    assert ks["command"] == container(rendered(""), "linstor-scheduler", "kube-scheduler")["command"]
    assert not [a for a in ks["command"] if a.startswith(LEGACY_FLAGS)]
    config_arg = next(a for a in ks["command"] if a.startswith("--config="))
    spec = find(objs, "Deployment", "linstor-scheduler")["spec"]["template"]["spec"]
    mount = next(m for m in ks["volumeMounts"] if Path(config_arg.split("=", 1)[1]).parent == Path(m["mountPath"]))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "linstor-scheduler-config"
    # No Policy, so nothing to read it with: the scheduler's RBAC is base/'s.
    assert not [o for o in objs if "policy" in o["metadata"]["name"] and o["kind"] in ("ConfigMap", "Role")]
    assert [o for o in objs if o["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")] == [
        o for o in rendered("") if o["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    assert container(objs, "linstor-scheduler", "extender") == container(rendered(""), "linstor-scheduler",
                                                                         "extender")


# --- our containers use the CLI as it is ------------------------------------------------------------


@pytest.mark.parametrize("variant", ["files", "main-scheduler"])
def test_containers_use_real_subcommands_flags_and_env_vars(variant):
    """Every manifest as written, and deploy/ with the main-scheduler components (their settings)."""
    objs = objects() if variant == "files" else rendered_with("", "main-scheduler", "main-scheduler-client-auth")
    containers = our_containers(objs)
    opt_in = {"affinity-sync"} if variant == "files" else set()  # deploy/components/affinity-sync, as written
    assert {c["args"][0] for c in containers} == {"extender", "webhook", "fencing", "sync-node", "sync-classes",
                                                 "locality-exporter", *opt_in}
    for c in containers:
        subcommand = c["args"][0]
        flags = cli_flags()[subcommand]
        for arg in c["args"][1:]:
            assert arg.split("=", 1)[0] in flags, f"{c['name']}: {arg} is not a flag of {subcommand}"
        known = {var for var, _ in flags.values()} | NON_FLAG_ENV
        for var in env_of(c):
            assert var in known, f"{c['name']}: env {var} is read by no flag of {subcommand}"
        with pytest.MonkeyPatch.context() as env:  # every value the manifest sets parses as its flag's type
            for var, value in env_of(c).items():
                env.setenv(var, value or "from-the-downward-api")
            args = build_parser().parse_args([subcommand, *c["args"][1:]])
        assert args.command == subcommand
        assert network_ports(c) == {p["containerPort"] for p in c["ports"]}


def test_probes_hit_real_routes():
    from prometheus_client import CollectorRegistry

    from admission.http import create_app as webhook_app
    from admission.review import Lookups, SchedulerNameMutator
    from fencing.http import create_app as fencing_app
    from fencing.metrics import FencingMetrics
    from linstor_scheduler.health import health_app
    from scheduler_extender.holder import StateHolder
    from scheduler_extender.http import create_app as extender_app
    from scheduler_extender.judge import Extender

    routes = {
        "extender": get_routes(extender_app(Extender(StateHolder())).ops),
        "webhook": get_routes(webhook_app(SchedulerNameMutator(Lookups(dict.get, dict.get, dict.get)),
                                          is_ready=bool).ops),
        "fencing": get_routes(fencing_app(types.SimpleNamespace(metrics=FencingMetrics()),
                                          types.SimpleNamespace(objects=dict))),
        "sync-node": get_routes(health_app(CollectorRegistry(), ready=lambda: (True, ""))),
        "sync-classes": get_routes(health_app(CollectorRegistry(), ready=lambda: (True, ""))),
        "locality-exporter": get_routes(health_app(CollectorRegistry(), ready=lambda: (True, ""))),
        "affinity-sync": get_routes(health_app(CollectorRegistry(), ready=lambda: (True, ""))),
    }
    for c in our_containers(objects()):
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path and path in routes[c["args"][0]]
            assert ports.get(get["port"], get["port"]) == probe_port(c)
            assert get.get("scheme", "HTTP") == "HTTP"


PRIVILEGED = {"linstor-scheduler-sync-node"}  # LVM on the host's block devices: the one exception


def test_pods_are_hardened():
    for deployment, spec in pod_specs(objects()):
        name = deployment["metadata"]["name"]
        assert spec["enableServiceLinks"] is False, f"{name}: LINSTOR_SCHEDULER_*_PORT env from Service links"
        if name in PRIVILEGED:
            continue
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        assert deployment["spec"]["replicas"] >= 2
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
            assert "livenessProbe" in c and "readinessProbe" in c, c["name"]


def test_the_node_agent_is_privileged_only_where_lvm_needs_it():
    objs = objects()
    privileged = {d["metadata"]["name"] for d, spec in pod_specs(objs)
                  if any((c.get("securityContext") or {}).get("privileged") for c in spec["containers"])}
    assert privileged == PRIVILEGED
    ds = find(objs, "DaemonSet", "linstor-scheduler-sync-node")
    spec = ds["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"linstor.csi.linbit.com/storage-node": "true"}
    (c,) = spec["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host == {"dev": "/dev", "udev": "/run/udev", "lvm-lock": "/run/lock/lvm", "host-lvm": "/etc/lvm",
                    "machine-id": "/etc/machine-id", "host-proc": "/proc"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["udev"]["readOnly"] is True
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_the_node_agent_reads_lvm_with_the_hosts_configuration_read_only():
    """The host's lvm.conf, system ID and devices file, not a configuration of our own (issue #23):
    LVM_SYSTEM_DIR is the host's /etc/lvm, mounted read-only, and so is the machine ID that
    system_id_source = "machineid" reads (lvmsystemid(7))."""
    objs = objects()
    spec = find(objs, "DaemonSet", "linstor-scheduler-sync-node")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    env = {e["name"]: e for e in c["env"]}
    assert env["LVM_SYSTEM_DIR"]["value"] == mounts["host-lvm"]["mountPath"]
    assert mounts["host-lvm"]["readOnly"] is True and mounts["machine-id"]["readOnly"] is True
    assert mounts["machine-id"]["mountPath"] == "/etc/machine-id"
    assert not [o for o in objs if o["kind"] == "ConfigMap" and "lvm" in o["metadata"]["name"]], \
        "no lvm.conf of our own: it would hide the host's filter, system ID and devices file"


def test_the_node_agents_lvm_runs_in_the_hosts_uts_namespace():
    """A system ID from system_id_source = "uname" is uname(2)'s nodename: in the pod's own UTS namespace
    (no hostNetwork) the pod's name. The agent's LVM commands join the host's, through the host's /proc
    mounted read-only (tests/test_storage_lvm_host.py runs the agent so, on real LVM)."""
    spec = find(list(rendered("")), "DaemonSet", "linstor-scheduler-sync-node")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    if spec.get("hostNetwork"):  # the CRI runtimes give a hostNetwork pod the host's UTS namespace too
        return
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert env["LINSTOR_SCHEDULER_HOST_UTS_NAMESPACE"] == "/host/proc/1/ns/uts"
    assert host_paths[mounts["/host/proc"]["name"]] == "/proc" and mounts["/host/proc"]["readOnly"] is True
    assert c["securityContext"]["privileged"] is True, "setns(CLONE_NEWUTS) needs CAP_SYS_ADMIN"


IMAGE_USER = "65532"  # the Dockerfile's USER (test_dockerfile_runs_as_non_root checks it is the last one)


@cache
def lvm_subcommands() -> frozenset[str]:
    """The subcommands that run the LVM tools: those whose parser has ``--lvm-binary``."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return frozenset(name for name, p in sub.choices.items()
                     if any("--lvm-binary" in a.option_strings for a in p._actions))


def run_as_user(spec: dict[str, Any], c: dict[str, Any]) -> str:
    """The user a container runs as: its own securityContext, else the pod's, else the image's USER."""
    for context in (c.get("securityContext") or {}, spec.get("securityContext") or {}):
        if "runAsUser" in context:
            return str(context["runAsUser"])
    return IMAGE_USER


def root_problems(objs: Any) -> list[str]:
    """Containers that run LVM but not as root (LVM refuses any other user), and containers that run
    as root without running LVM."""
    problems = []
    for workload, spec in pod_specs(objs):
        for c in spec["containers"]:
            if not c["image"].startswith(OUR_IMAGE):
                continue
            needs_root = c["args"][0] in lvm_subcommands()
            user = run_as_user(spec, c)
            where = f"{workload['kind']} {workload['metadata']['name']}, container {c['name']}"
            if needs_root and user != "0":
                problems.append(f"{where} runs LVM ({c['args'][0]}) as user {user}: LVM needs root")
            if needs_root and (c.get("securityContext") or {}).get("runAsNonRoot"):
                problems.append(f"{where} runs LVM but sets runAsNonRoot")
            if not needs_root and user == "0":
                problems.append(f"{where} runs as root without running LVM")
    return problems


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_containers_that_run_lvm_run_as_root_and_only_they(entry):
    objs = rendered(entry)
    assert lvm_subcommands() == {"sync-node"}
    assert root_problems(objs) == []
    assert {d["metadata"]["name"] for d, spec in pod_specs(objs)
            if any(run_as_user(spec, c) == "0" for c in spec["containers"])} == PRIVILEGED


def test_the_root_check_fails_for_a_node_agent_left_on_the_images_user():
    """As shipped before: privileged, but no runAsUser, so the image's 65532 (LVM then refuses)."""
    objs = copy.deepcopy(rendered(""))
    ds = find(objs, "DaemonSet", "linstor-scheduler-sync-node")
    del ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"]
    assert root_problems(objs) == ["DaemonSet linstor-scheduler-sync-node, container sync-node runs LVM "
                                   "(sync-node) as user 65532: LVM needs root"]
    fencing = find(objs, "Deployment", "linstor-scheduler-fencing")["spec"]["template"]["spec"]
    fencing["securityContext"]["runAsUser"] = 0
    assert len(root_problems(objs)) == 2 and ("Deployment linstor-scheduler-fencing, container fencing runs as "
                                              "root without running LVM") in root_problems(objs)


def test_the_class_config_in_the_manifest_is_the_built_in_default():
    import yaml

    from storage_sync.classes import ClassConfig

    data = find(objects(), "ConfigMap", "linstor-scheduler-classes")["data"]["classes.yaml"]
    assert ClassConfig.from_mapping(yaml.safe_load(data)) == ClassConfig()


def test_disruption_budgets_and_services_select_real_pods():
    objs = objects()
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d, _ in pod_specs(objs)]
    for o in objs:
        if o["kind"] == "PodDisruptionBudget":
            selector = o["spec"]["selector"]["matchLabels"]
        elif o["kind"] == "Service":
            selector = o["spec"]["selector"]
        else:
            continue
        matching = [lbl for lbl in pod_labels if selector.items() <= lbl.items()]
        assert len(matching) == 1, f"{o['kind']} {o['metadata']['name']} selects {len(matching)} workloads"
    # Every workload of more than one replica has a budget of one replica down at a time, counted from
    # its replicas (maxUnavailable), so that a budget never asks for more pods than the workload has.
    budgets = {tuple(sorted(o["spec"]["selector"]["matchLabels"].items())): o["spec"] for o in objs
               if o["kind"] == "PodDisruptionBudget"}
    for workload, _ in pod_specs(objs):
        if workload["kind"] == "Deployment" and workload["spec"]["replicas"] > 1:
            labels = tuple(sorted(workload["spec"]["selector"]["matchLabels"].items()))
            assert budgets.get(labels) == {"maxUnavailable": 1, "selector": {"matchLabels": dict(labels)}}, \
                workload["metadata"]["name"]
    assert find(objs, "PodDisruptionBudget", "linstor-scheduler-locality")["spec"]["maxUnavailable"] == 1


# --- the webhook's configuration ---------------------------------------------------------------------


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics, enough for matchLabels and In/NotIn/Exists/DoesNotExist."""
    if any(labels.get(key) != v for key, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        value, op = labels.get(e["key"]), e["operator"]
        if (op == "In" and value not in e["values"]) or (op == "NotIn" and value in e["values"]) \
                or (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def test_webhook_configuration():
    objs = objects()
    config = find(objs, "MutatingWebhookConfiguration")
    webhook = container(objs, "linstor-scheduler-webhook", "webhook")
    assert config["metadata"]["name"] == setting(webhook, "--webhook-config-name")
    [hook] = config["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"] and "caBundle" not in hook["clientConfig"]
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    ref = hook["clientConfig"]["service"]
    service = find(objs, "Service", ref["name"])
    assert ref["name"] == setting(webhook, "--service-name") and ref["namespace"] == service["metadata"]["namespace"]
    assert ref["namespace"] == webhook_namespace()
    [port] = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]]
    assert {p["name"]: p["containerPort"] for p in webhook["ports"]}[port["targetPort"]] == int(
        setting(webhook, "--port"))
    from admission.http import create_app
    from admission.review import Lookups, SchedulerNameMutator

    app = create_app(SchedulerNameMutator(Lookups(dict.get, dict.get, dict.get)), is_ready=bool)
    assert post_routes(app.mutate) == {ref["path"]} and not get_routes(app.mutate), "/mutate only there"
    assert setting(webhook, "--scheduler-name") == scheduler_config()["profiles"][0]["schedulerName"]


def webhook_namespace() -> str:
    return find(objects(), "Deployment", "linstor-scheduler-webhook")["metadata"]["namespace"]


@pytest.mark.parametrize("namespace,pod_labels,called", [
    ({"kubernetes.io/metadata.name": "default"}, {}, True),
    ({"kubernetes.io/metadata.name": "apps", "team": "a"}, {"app": "db"}, True),
    ({"kubernetes.io/metadata.name": "apps"}, {OPT_OUT_LABEL: OPT_OUT_VALUE}, False),
    ({"kubernetes.io/metadata.name": "apps", OPT_OUT_LABEL: OPT_OUT_VALUE}, {}, False),
    ({"kubernetes.io/metadata.name": "kube-system"}, {}, False),
    ({"kubernetes.io/metadata.name": "linstor-scheduler", OPT_OUT_LABEL: OPT_OUT_VALUE}, {}, False),
])
def test_opt_out_label_and_kube_system_are_excluded(namespace, pod_labels, called):
    [hook] = find(objects(), "MutatingWebhookConfiguration")["webhooks"]
    got = selector_matches(hook["namespaceSelector"], namespace) and selector_matches(hook["objectSelector"],
                                                                                     pod_labels)
    assert got is called


def test_our_namespace_is_opted_out():
    ns = find(objects(), "Namespace", webhook_namespace())
    assert ns["metadata"]["labels"][OPT_OUT_LABEL] == OPT_OUT_VALUE


# --- RBAC ------------------------------------------------------------------------------------------------

PLURALS = {"Node": ("", "nodes"), "Pod": ("", "pods"), "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
           "PersistentVolume": ("", "persistentvolumes"), "StorageClass": ("storage.k8s.io", "storageclasses"),
           "VolumeAttachment": ("storage.k8s.io", "volumeattachments"), "Lease": ("coordination.k8s.io", "leases")}
BUILT_IN_ROLES = {("ClusterRole", "system:kube-scheduler"), ("ClusterRole", "system:volume-scheduler"),
                  ("Role", "extension-apiserver-authentication-reader")}


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               and (not r.get("resourceNames") or name in r["resourceNames"]) for r in rules)


def role(objs: Any, kind: str, name: str) -> list[dict[str, Any]]:
    return find(objs, kind, name)["rules"]


def test_plurals_cover_every_informer_kind():
    assert set(PLURALS) == set(KINDS)


def test_extender_can_list_and_watch_what_its_informers_read():
    """The index's kinds and the Pod informer of placements.py; its one write: creating Events."""
    rules = role(objects(), "ClusterRole", "linstor-scheduler-extender")
    kinds = (*EXTENDER_KINDS, "Pod")
    for kind in kinds:
        for verb in ("list", "watch"):
            assert allows(rules, *PLURALS[kind], verb), f"extender cannot {verb} {kind}"
    assert allows(rules, "", "events", "create")
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert granted == {(*PLURALS[kind], v) for kind in kinds for v in ("list", "watch")} | {("", "events", "create")}, \
        "no more than its informers read and its Event"


def test_the_extender_reads_fencing_s_lease_by_name_only():
    """--fencing-lease's default names the Lease fencing leads with (its --lease-name default), and
    the extender may list and watch that one Lease, in its namespace, and nothing else of Leases."""
    from fencing.cli import register  # noqa: F401  (the subcommand whose default we compare)
    from linstor_scheduler.cli import build_parser
    from linstor_scheduler.lost_storage import DEFAULT_LEASE

    assert build_parser().parse_args(["fencing"]).lease_name == DEFAULT_LEASE
    assert build_parser().parse_args(["extender"]).fencing_lease == DEFAULT_LEASE
    rules = role(objects(), "Role", "linstor-scheduler-extender-fencing-record")
    assert rules == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": [DEFAULT_LEASE], "verbs": ["list", "watch"]}]
    binding = find(objects(), "RoleBinding", "linstor-scheduler-extender-fencing-record")
    assert binding["metadata"]["namespace"] == webhook_namespace()
    assert [s["name"] for s in binding["subjects"]] == ["linstor-scheduler"]


def test_webhook_rbac():
    objs = objects()
    rules = role(objs, "ClusterRole", "linstor-scheduler-webhook")
    webhook = container(objs, "linstor-scheduler-webhook", "webhook")
    for kind in WEBHOOK_KINDS:
        assert allows(rules, *PLURALS[kind], "list") and allows(rules, *PLURALS[kind], "watch"), kind
    assert allows(rules, "", "persistentvolumeclaims", "get"), "the direct read of an uncached claim"
    config = setting(webhook, "--webhook-config-name")
    for verb in ("get", "patch"):
        assert allows(rules, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", verb, config)
        assert not allows(rules, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", verb, "other")
    secret_rules = role(objs, "Role", "linstor-scheduler-webhook-tls")
    secret = setting(webhook, "--tls-secret")
    for verb in ("get", "update", "create"):
        assert allows(secret_rules, "", "secrets", verb, secret)
    assert not allows(secret_rules, "", "secrets", "get", "some-other-secret")
    assert find(objs, "Role", "linstor-scheduler-webhook-tls")["metadata"]["namespace"] == webhook_namespace()


def test_webhook_timeout_drain_and_budget():
    """Issue 24: the webhook knows the API server's timeoutSeconds and ends each review before it;
    SIGTERM's drain window and uvicorn's graceful stop fit in terminationGracePeriodSeconds; a
    disruption budget keeps a replica through drains; the shared CA's Lease and the Event are granted."""
    from admission.http import DEFAULT_REVIEW_DEADLINE
    from linstor_scheduler.runtime import GRACEFUL_SECONDS

    objs = objects()
    [hook] = find(objs, "MutatingWebhookConfiguration")["webhooks"]
    webhook = container(objs, "linstor-scheduler-webhook", "webhook")
    assert float(setting(webhook, "--timeout-seconds")) == hook["timeoutSeconds"]
    deadline = float(setting(webhook, "--review-deadline"))
    assert deadline == DEFAULT_REVIEW_DEADLINE or "LINSTOR_SCHEDULER_REVIEW_DEADLINE" in env_of(webhook)
    assert deadline <= hook["timeoutSeconds"] - 1, "a second at least for TLS, the body and the answer"
    pod = find(objs, "Deployment", "linstor-scheduler-webhook")["spec"]["template"]["spec"]
    drain = float(setting(webhook, "--drain-seconds"))
    assert drain >= 5 and pod["terminationGracePeriodSeconds"] >= drain + GRACEFUL_SECONDS
    budget = find(objs, "PodDisruptionBudget", "linstor-scheduler-webhook")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"] == find(objs, "Deployment", "linstor-scheduler-webhook")["spec"][
        "selector"]["matchLabels"]
    lease = role(objs, "Role", "linstor-scheduler-webhook-tls")
    for verb in ("get", "update", "create"):
        assert allows(lease, "coordination.k8s.io", "leases", verb, "linstor-scheduler-webhook-ca")
    assert not allows(lease, "coordination.k8s.io", "leases", "update", "linstor-scheduler-fencing")
    assert allows(role(objs, "ClusterRole", "linstor-scheduler-webhook"), "", "events", "create")


def test_scheduler_rbac():
    objs = objects()
    election = scheduler_config()["leaderElection"]
    rules = role(objs, "Role", "linstor-scheduler-leader-election")
    assert find(objs, "Role", "linstor-scheduler-leader-election")["metadata"]["namespace"] == election[
        "resourceNamespace"]
    for verb in ("get", "update", "create"):
        assert allows(rules, "coordination.k8s.io", "leases", verb, election["resourceName"])
    assert not allows(rules, "coordination.k8s.io", "leases", "update", "kube-scheduler")
    sa = find(objs, "Deployment", "linstor-scheduler")["spec"]["template"]["spec"]["serviceAccountName"]
    bound = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in objs if b["kind"].endswith("Binding")
             and any(s["name"] == sa for s in b["subjects"])}
    assert {("ClusterRole", "system:kube-scheduler"), ("ClusterRole", "system:volume-scheduler"),
            ("Role", "extension-apiserver-authentication-reader"),
            ("Role", "linstor-scheduler-leader-election"), ("ClusterRole", "linstor-scheduler-extender")} <= bound


def test_bindings_name_existing_roles_and_service_accounts_and_nothing_is_a_wildcard():
    for entry in ENTRY_POINTS:
        objs = rendered(entry) if shutil.which("kubectl") else objects()
        accounts = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs if o["kind"] == "ServiceAccount"}
        for d, spec in pod_specs(objs):
            assert (d["metadata"]["namespace"], spec["serviceAccountName"]) in accounts
        for b in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
            ref = (b["roleRef"]["kind"], b["roleRef"]["name"])
            if ref not in BUILT_IN_ROLES:
                target = find(objs, *ref)
                if b["kind"] == "RoleBinding" and ref[0] == "Role":
                    assert target["metadata"]["namespace"] == b["metadata"]["namespace"]
            for s in b["subjects"]:
                assert (s["namespace"], s["name"]) in accounts, f"{b['metadata']['name']}: unknown subject"
        for r in (o for o in objs if o["kind"] in ("Role", "ClusterRole")):
            for rule in r["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], r["metadata"]["name"]
            if r["kind"] == "ClusterRole":
                assert not any("secrets" in rule["resources"] for rule in r["rules"]), "Secrets: namespaced only"


# --- Dockerfile --------------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last:]


def test_dockerfile_runs_as_non_root():
    users = [arg for op, arg in final_stage() if op == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert user == IMAGE_USER
    for workload, spec in pod_specs(objects()):
        if workload["metadata"]["name"] not in PRIVILEGED:
            assert str(spec["securityContext"]["runAsUser"]) == user


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each from its FROM on."""
    steps = dockerfile()
    starts = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    return [steps[a:b] for a, b in zip(starts, [*starts[1:], len(steps)], strict=True)]


def test_dockerfile_installs_lvm2_our_package_and_entry_point():
    stage = final_stage()
    runs = " ".join(arg for op, arg in stage if op == "RUN")
    assert re.search(r"apt-get install\b.*\blvm2\b", runs)
    assert "linstor-scheduler --version" in runs
    assert [json.loads(arg) for op, arg in stage if op == "ENTRYPOINT"] == [["linstor-scheduler"]]
    # Every package pyproject installs is copied into the build (a new top-level package is not forgotten),
    # except devkit (doubles, demo): development only, never in the image.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {src for op, arg in dockerfile() if op == "COPY" and "--from" not in arg for src in arg.split()[:-1]}
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        if pattern.rstrip("*") != "devkit":
            assert pattern.rstrip("*") in copied, f"Dockerfile does not COPY {pattern.rstrip('*')}"
    assert "devkit" not in copied and "devkit" in (ROOT / ".dockerignore").read_text().split()
    assert {project["project"]["readme"], "pyproject.toml", *project["project"]["license-files"]} <= copied


VENV = "/opt/venv"
APP = "/opt/app"


def stage(name: str) -> list[tuple[str, str]]:
    return next(st for st in stages() if st[0][1].endswith(f" AS {name}"))


def test_the_final_stage_copies_a_virtualenv_and_our_code_not_wheels():
    """A wheels directory copied in and removed after `pip install` still weighs in its own layer; the
    dependencies' virtualenv, copied whole, and our code beside it are the layers our Python adds,
    the large one unchanged while only our code changes."""
    final = final_stage()
    assert [arg for op, arg in final if op == "COPY"] == [f"--from=runtime {VENV} {VENV}", f"--from=build {APP} {APP}"]
    assert stage("build")[0][1] == "deps AS build" and stage("runtime")[0][1] == "deps AS runtime"
    deps = " ".join(a for op, a in stage("deps") if op == "RUN")
    assert f"python3 -m venv {VENV}" in deps and f"echo {APP} > " in deps and ".pth" in deps
    runs = " ".join(arg for op, arg in final if op == "RUN")
    assert "pip " not in runs and "wheel" not in runs
    env = " ".join(arg for op, arg in final if op == "ENV")
    assert f"PATH={APP}/bin:{VENV}/bin:$PATH" in env.split()
    # pip and setuptools build; they are not shipped.
    assert re.search(r"pip uninstall (-\w+ )*pip setuptools", " ".join(a for op, a in stage("runtime") if op == "RUN"))


def test_both_stages_use_one_base_python_311_slim_bookworm():
    """One ARG names the base of the stages: the virtualenv's interpreter is the final stage's, and
    image/requirements.txt (binary wheels per Python version) was resolved on it."""
    import tomllib

    steps = dockerfile()
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE=")
    base = steps[0][1].split("=", 1)[1]
    assert re.fullmatch(r"docker\.io/library/python:3\.11-slim-bookworm", base)
    assert [arg.split()[0] for op, arg in steps if op == "FROM"] == ["${BASE}", "deps", "deps", "${BASE}"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11", "the base's Python must be one the project supports"
    assert base in (ROOT / "image" / "requirements.txt").read_text().splitlines()[0], "resolved on another base"


LOCK = ROOT / "image" / "requirements.txt"


def pins(text: str | None = None) -> dict[str, str]:
    """image/requirements.txt: canonical name -> version; every line is ``name==version``."""
    from packaging.utils import canonicalize_name

    found = {}
    for line in (LOCK.read_text() if text is None else text).splitlines():
        if line and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", line)
            assert m, f"image/requirements.txt: {line!r} is not name==version"
            found[canonicalize_name(m.group(1))] = m.group(2)
    return found


def test_the_image_installs_the_pinned_dependencies_and_nothing_else():
    deps, build = stage("deps"), stage("build")
    assert [arg for op, arg in deps if op == "COPY"] == ["image/requirements.txt /tmp/requirements.txt"]
    assert f"{VENV}/bin/pip install --no-deps -r /tmp/requirements.txt" in [a for op, a in deps if op == "RUN"]
    (ours,) = [a for op, a in build if op == "RUN"]
    assert f"{VENV}/bin/pip install --no-deps --no-build-isolation --target {APP} ." in ours and "pip check" in ours
    assert not any("--upgrade" in a for op, a in dockerfile() if op == "RUN")
    assert "image" not in (ROOT / ".dockerignore").read_text().split()


def unpinned(pinned: dict[str, str]) -> list[str]:
    """pyproject's dependencies, their own dependencies (as far as this machine has them installed to
    read their metadata) and the build backend that ``pinned`` lacks or pins to a version they refuse."""
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    todo = [Requirement(r) for r in project["project"]["dependencies"] + project["build-system"]["requires"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    problems = []
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        if name not in pinned:
            problems.append(f"{req} is not pinned")
            continue
        if not req.specifier.contains(pinned[name], prereleases=True):
            problems.append(f"{name}=={pinned[name]} does not meet {req}")
        try:
            requires = [Requirement(r) for r in md.requires(req.name) or []]
        except md.PackageNotFoundError:
            continue
        todo += [sub for sub in requires
                 if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in {"", *req.extras})]
    return problems


def test_every_dependency_is_pinned_in_the_lock():
    pinned = pins()
    assert unpinned(pinned) == [], "make image-lock"
    assert len(pinned) > 20 and {"uvloop", "httptools", "setuptools"} <= set(pinned)


def test_the_lock_check_catches_an_unpinned_dependency():
    problems = unpinned(pins("fastapi==0.1\n"))
    assert "fastapi==0.1 does not meet fastapi>=0.110" in problems and "kubernetes>=36 is not pinned" in problems


def test_pyproject_license_is_an_spdx_expression_with_its_file():
    """setuptools >= 77 takes `license` as an SPDX string and `license-files` (PEP 639); the table form
    it warns about on every build stops being accepted on 2027-02-18."""
    import tomllib

    from packaging.requirements import Requirement

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    assert project["license"] == "Apache-2.0"
    assert [p.name for f in project["license-files"] for p in ROOT.glob(f)] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    (backend,) = map(Requirement, data["build-system"]["requires"])
    assert backend.name == "setuptools" and not backend.specifier.contains("76.9")
    assert backend.specifier.contains(pins()["setuptools"])


def test_the_images_user_has_a_home():
    """Without a passwd entry for 65532, HOME is / for every component."""
    runs = " ".join(arg for op, arg in final_stage() if op == "RUN")
    m = re.search(rf"useradd (?:--?[\w-]+(?: [^-\s]\S*)? )*?--uid {IMAGE_USER}\b[^&]*", runs)
    assert m and f"--gid {IMAGE_USER}" in m.group(0) and "--home-dir /home/nonroot" in m.group(0), runs
    assert "--create-home" in m.group(0) and f"groupadd --gid {IMAGE_USER}" in runs


def test_ci_runs_the_image_test_after_the_tests_with_what_it_needs():
    """docs/install.md: `.ci/run` runs `make image-test` after `make test`, installing podman, runc and
    mmdebstrap (and lvm2, for sync-node on real LVM) as it installs its other tools."""
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines() if not ln.strip().startswith("#")]
    assert lines.index("make test") < lines.index("make image-test")
    for tool, package in (("lvm", "lvm2"), ("runc", "runc"), ("podman", "podman"), ("mmdebstrap", "mmdebstrap")):
        assert f"need {tool} {package}" in lines
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^image-test: .*\bimage\b", make, re.M) and "--pull=never" in make


def test_dockerignore_keeps_the_context_small():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests"} <= ignored
    assert not ignored & {"README.md", "pyproject.toml", "admission", "linstor_scheduler"}


def test_the_lvm_config_the_agent_adds_is_valid_for_lvm():
    """lvmconfig itself reads what the agent adds on the command line (the DRBD exclusion in front of
    the host's filter): a misspelt key would be ignored by LVM, not by us."""
    from storage_sync.lvm import filter_config

    lvmconfig = shutil.which("lvmconfig")
    if lvmconfig is None:
        pytest.skip("lvmconfig (lvm2) is not installed: the configuration cannot be validated here")
    env = {"PATH": "/usr/sbin:/sbin:/usr/bin:/bin", "LVM_SUPPRESS_FD_WARNINGS": "1"}
    config = filter_config(["r|^/dev/sdb$|", "a|.*|"])
    out = subprocess.run([lvmconfig, "--validate", "--config", config], capture_output=True, text=True, env=env,
                         check=False)
    assert out.returncode == 0 and "LVM configuration valid" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([lvmconfig, "--config", config, "devices/global_filter",
                          "devices/obtain_device_list_from_udev"], capture_output=True, text=True, env=env, check=False)
    assert out.stdout.split() == ['global_filter=["r|^/dev/drbd|","r|^/dev/sdb$|","a|.*|"]',
                                  "obtain_device_list_from_udev=0"], out.stderr
    out = subprocess.run([lvmconfig, "--validate", "--config", config.replace("global_filter", "global_filtr")],
                         capture_output=True, text=True, env=env, check=False)
    assert out.returncode != 0  # the check can fail


def test_the_namespace_admits_the_privileged_agent():
    ns = find(objects(), "Namespace", "linstor-scheduler")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


# --- the LINSTOR connection: one ConfigMap (and one optional Secret) for every component ----------

LINSTOR_CONNECTION = DEPLOY / "base" / "linstor-connection.yaml"
TLS_MOUNT = "/etc/linstor-scheduler/linstor-tls"


def linstor_containers(objs: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) of every container whose subcommand talks to LINSTOR (has --controllers)."""
    return [(spec, c) for _, spec in pod_specs(objs) for c in spec["containers"]
            if c["image"].startswith(OUR_IMAGE) and "--controllers" in cli_flags()[c["args"][0]]]


def test_the_linstor_connection_is_set_in_one_place():
    objs = objects()
    found = linstor_containers(objs)
    assert sorted(c["args"][0] for _, c in found) == ["affinity-sync", "extender", "fencing", "locality-exporter",
                                                      "sync-classes", "sync-node"]
    config = find(objs, "ConfigMap", "linstor-scheduler-linstor")
    assert config["data"]["LS_CONTROLLERS"] == "http://linstor-controller.piraeus-datastore.svc:3370"
    for spec, c in found:
        assert c["envFrom"] == [{"configMapRef": {"name": "linstor-scheduler-linstor"}}], c["name"]
        own = {e["name"] for e in c.get("env") or []}
        assert not own & {"LS_CONTROLLERS", "LINSTOR_SCHEDULER_LINSTOR_CA_FILE", "LINSTOR_SCHEDULER_LINSTOR_CERT_FILE",
                          "LINSTOR_SCHEDULER_LINSTOR_KEY_FILE", "LINSTOR_SCHEDULER_LINSTOR_TIMEOUT"}, c["name"]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "linstor-tls")
        assert mount == {"name": "linstor-tls", "mountPath": TLS_MOUNT, "readOnly": True}
        volume = next(v for v in spec["volumes"] if v["name"] == "linstor-tls")
        assert volume["secret"] == {"secretName": "linstor-scheduler-linstor-tls", "optional": True,
                                    "defaultMode": 0o440}  # the key: the pod's group only
        assert setting(c, "--controllers") == config["data"]["LS_CONTROLLERS"]
    webhook = next(c for c in our_containers(objs) if c["args"][0] == "webhook")
    assert "envFrom" not in webhook  # it never talks to LINSTOR


def test_the_tls_components_settings_reach_every_component():
    """HTTPS is switched on by components/linstor-tls alone, in the shared ConfigMap: each setting it
    adds names a real flag's variable of every component and a file in the mounted Secret, and its
    URL names the same controller as base/'s plain one (HTTPS port). base/ itself carries no TLS setting."""
    base = yaml.safe_load(LINSTOR_CONNECTION.read_text())["data"]
    assert set(base) == {"LS_CONTROLLERS"}
    patch = yaml.safe_load((DEPLOY / "components" / "linstor-tls" / "linstor-connection.yaml").read_text())
    assert patch["metadata"]["name"] == "linstor-scheduler-linstor"
    tls = patch["data"]
    assert {k: v for k, v in tls.items() if k != "LS_CONTROLLERS"} == {
        f"LINSTOR_SCHEDULER_LINSTOR_{part}_FILE": f"{TLS_MOUNT}/{file}"
        for part, file in (("CA", "ca.crt"), ("CERT", "tls.crt"), ("KEY", "tls.key"))}
    plain, secure = urlparse(base["LS_CONTROLLERS"]), urlparse(tls["LS_CONTROLLERS"])
    assert (secure.scheme, secure.hostname, secure.port) == ("linstor+ssl", plain.hostname, 3371)
    for _, c in linstor_containers(objects()):
        with pytest.MonkeyPatch.context() as env:
            for var, value in {**env_of(c), **tls}.items():
                env.setenv(var, value or "from-the-downward-api")
            args = build_parser().parse_args(c["args"])
        assert (args.linstor_ca_file, args.linstor_cert_file, args.linstor_key_file) == (
            f"{TLS_MOUNT}/ca.crt", f"{TLS_MOUNT}/tls.crt", f"{TLS_MOUNT}/tls.key"), c["name"]
        assert args.controllers == tls["LS_CONTROLLERS"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_rendered_entry_point_carries_the_connection(entry):
    objs = rendered(entry)
    find(objs, "ConfigMap", "linstor-scheduler-linstor")
    assert len(linstor_containers(objs)) == 5


# --- main-scheduler mode: the stanza docs/install.md gives your kube-scheduler -----------------------

# k8s.io/kube-scheduler config/v1 types.go: Extender and ExtenderTLSConfig (decoded strictly).
V1_EXTENDER_FIELDS = V1BETA1_EXTENDER_FIELDS
V1_EXTENDER_TLS_FIELDS = {"insecure", "serverName", "certFile", "keyFile", "caFile", "certData", "keyData", "caData"}


def main_scheduler_stanza() -> dict[str, Any]:
    text = (ROOT / "docs" / "install.md").read_text()
    section = text.split("## Main-scheduler mode", 1)[1].split("\n## ", 1)[0]
    blocks = [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    [stanza] = [yaml.safe_load(b) for b in blocks if "KubeSchedulerConfiguration" in b]
    return stanza


def test_the_documented_main_scheduler_stanza_matches_the_component():
    """The configuration docs/install.md tells you to give your kube-scheduler reaches the component's
    Service by its name and port over HTTPS, checks its certificate by that name, serves the profile
    the extender judges, turns the feasible-node cut-off off, and calls the verbs as our own
    scheduler does (same verbs, weight, timeout, ignorable, nodeCacheCapable)."""
    cfg = main_scheduler_stanza()
    objs = rendered_with("", "main-scheduler")
    assert cfg["apiVersion"] == "kubescheduler.config.k8s.io/v1" and cfg["percentageOfNodesToScore"] == 100
    assert set(cfg) <= V1BETA1_CONFIGURATION_FIELDS
    [ext] = cfg["extenders"]
    assert set(ext) <= V1_EXTENDER_FIELDS and set(ext["tlsConfig"]) <= V1_EXTENDER_TLS_FIELDS
    svc = find(objs, "Service", "linstor-scheduler-extender-https")
    host = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    url = urlparse(ext["urlPrefix"])
    assert (url.scheme, url.hostname, url.port) == ("https", host, svc["spec"]["ports"][0]["port"])
    assert ext["enableHTTPS"] is True and ext["tlsConfig"]["serverName"] == host and "caData" in ext["tlsConfig"]
    extender = container(objs, "linstor-scheduler", "extender")
    profile = setting(extender, "--scheduler-name")
    assert profile in {p["schedulerName"] for p in cfg["profiles"]}
    assert all(p.get("percentageOfNodesToScore", 100) == 100 for p in cfg["profiles"])
    [ours] = scheduler_config()["extenders"]
    same = ("filterVerb", "prioritizeVerb", "weight", "nodeCacheCapable", "httpTimeout", "ignorable")
    assert {f: ext[f] for f in same} == {f: ours[f] for f in same}
    assert "managedResources" not in ext, "pods are chosen by their profile (--scheduler-name), not by resources"
