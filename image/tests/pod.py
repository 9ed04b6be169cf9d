"""A container of the rendered manifests (``kubectl kustomize deploy/``) as a ``podman run`` command
line, doing what the kubelet does with each field, so the image test runs what operators apply and
nothing written a second time.

What maps to what (the kubelet's behaviour from the Kubernetes documentation, "Configure a Security
Context for a Pod or Container", "Volumes", "Expose Pod Information to Containers Through
Environment Variables", "Accessing the Kubernetes API from a Pod"):

- user: the container's ``runAsUser``/``runAsGroup``, else the pod's, else the image's ``USER``;
  ``fsGroup`` and ``supplementalGroups`` are supplementary groups; ``runAsNonRoot`` with user 0 is
  refused, as the kubelet refuses to start the container.
- ``readOnlyRootFilesystem``: ``--read-only`` without podman's own writable /tmp, /var/tmp and /run
  (``--read-only-tmpfs=false``): in a pod only volumes are writable.
- ``privileged``, ``capabilities`` (add, drop), ``allowPrivilegeEscalation: false`` (no_new_privs).
- ``env`` (values; fieldRef of metadata.name, metadata.namespace, spec.nodeName, status.podIP) after
  ``envFrom`` ConfigMaps, as the kubelet orders them; ``args`` after the image's entry point.
- volumes: emptyDir as a tmpfs (mode 0777, as the kubelet makes it), hostPath as a bind mount of the
  same host path (``DirectoryOrCreate`` creates it), configMap as files of its data (read-only), a
  secret from the ``secrets`` given or, when the volume is optional and the Secret absent, empty;
  with the pod's ``fsGroup``, configMap and secret files belong to that group and are group-readable
  whatever their ``defaultMode`` (the kubelet's SetVolumeOwnership).
- the service account (``automountServiceAccountToken`` not false): token, ca.crt and namespace at
  /var/run/secrets/kubernetes.io/serviceaccount and ``KUBERNETES_SERVICE_HOST``/``_PORT``, which is
  how the client library finds the API server in a pod (``load_incluster_config``).
- memory limits: ``--memory``.
- networking: the host's (``--network host``), so the container reaches the test's doubles on
  loopback; a pod has its own network namespace, which nothing here depends on.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}


@dataclass
class InCluster:
    """What the kubelet gives a pod to reach the API server: an HTTPS address and the CA it trusts."""

    host: str
    port: int
    ca_pem: bytes
    token: str = "image-test-token"


@dataclass
class Workload:
    """One workload of the rendered manifests: its pod spec and the objects its volumes name."""

    objects: tuple[dict[str, Any], ...]
    kind: str
    name: str
    obj: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        found = [o for o in self.objects if o["kind"] == self.kind and o["metadata"]["name"] == self.name]
        assert len(found) == 1, f"{self.kind} {self.name}: {len(found)} in the rendered manifests"
        self.obj = found[0]

    @property
    def spec(self) -> dict[str, Any]:
        return self.obj["spec"]["template"]["spec"]

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    def container(self, name: str) -> dict[str, Any]:
        return next(c for c in self.spec["containers"] if c["name"] == name)

    def config_map(self, name: str) -> dict[str, str]:
        found = [o for o in self.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name
                 and o["metadata"].get("namespace") == self.namespace]
        assert len(found) == 1, f"ConfigMap {name}: {len(found)} in the rendered manifests"
        return dict(found[0].get("data") or {})


def quantity(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]i?|)", str(text))
    assert m, f"quantity {text!r}"
    return int(m.group(1)) * UNITS[m.group(2)]


def run_as(spec: dict[str, Any], c: dict[str, Any]) -> tuple[int | None, int | None]:
    """(user, group) the kubelet asks for; None where the image's USER decides."""
    pod, own = spec.get("securityContext") or {}, c.get("securityContext") or {}
    user = own.get("runAsUser", pod.get("runAsUser"))
    group = own.get("runAsGroup", pod.get("runAsGroup"))
    return user, group


def podman_args(workload: Workload, container: str, *, image: str, workdir: Path, node_name: str = "node-1",
                pod_name: str | None = None, kube: InCluster | None = None,
                secrets: dict[str, dict[str, bytes]] | None = None, image_user: int = 65532,
                podman_options: tuple[str, ...] = (), extra_args: tuple[str, ...] = (),
                args: list[str] | None = None, command: list[str] | None = None) -> list[str]:
    """``podman run`` arguments (after ``run``) for ``container`` of ``workload``, as the kubelet would
    start it. ``workdir`` receives the files of configMap and secret volumes and the service account.
    ``extra_args`` follow the manifest's args; ``args``/``command`` replace the manifest's (a test
    that runs something else under the same container settings); ``podman_options`` go before the
    image (a test's own extra mount)."""
    spec, c = workload.spec, workload.container(container)
    pod_name = pod_name or f"{workload.name}-{uuid.uuid4().hex[:5]}"
    argv = ["--rm", "--network", "host", "--name", f"{pod_name}-{container}"]
    pod_sc, sc = spec.get("securityContext") or {}, c.get("securityContext") or {}

    user, group = run_as(spec, c)
    effective = image_user if user is None else int(user)
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and effective == 0:
        raise PermissionError(f"{workload.name}/{container}: runAsNonRoot, but it would run as root")
    if user is not None:
        argv += ["--user", f"{user}:{group}" if group is not None else str(user)]
    for extra in [pod_sc.get("fsGroup"), *(pod_sc.get("supplementalGroups") or [])]:
        if extra is not None:
            argv += ["--group-add", str(extra)]

    if sc.get("readOnlyRootFilesystem"):
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("privileged"):
        argv += ["--privileged"]
    for cap in (sc.get("capabilities") or {}).get("drop") or []:
        argv += ["--cap-drop", cap]
    for cap in (sc.get("capabilities") or {}).get("add") or []:
        argv += ["--cap-add", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    limit = (c.get("resources") or {}).get("limits", {}).get("memory")
    if limit:
        argv += ["--memory", str(quantity(limit))]

    env: dict[str, str] = {}
    for source in c.get("envFrom") or []:
        assert set(source) == {"configMapRef"}, f"envFrom {source}: not modelled"
        env.update(workload.config_map(source["configMapRef"]["name"]))
    fields = {"metadata.name": pod_name, "metadata.namespace": workload.namespace, "spec.nodeName": node_name,
              "status.podIP": "127.0.0.1"}
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]

    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mounts = c.get("volumeMounts") or []
    for mount in mounts:
        argv += _mount(workload, volumes[mount["name"]], mount, workdir / "volumes", secrets or {},
                       nested=[m["mountPath"] for m in mounts if m["mountPath"].startswith(mount["mountPath"] + "/")],
                       fs_group=pod_sc.get("fsGroup"))
    if kube is not None and spec.get("automountServiceAccountToken", True):
        sa = workdir / "serviceaccount"
        sa.mkdir(parents=True, exist_ok=True)
        (sa / "token").write_text(kube.token)
        (sa / "ca.crt").write_bytes(kube.ca_pem)
        (sa / "namespace").write_text(workload.namespace)
        for f in sa.iterdir():
            f.chmod(0o644)
        argv += ["--volume", f"{sa}:{SERVICE_ACCOUNT_DIR}:ro"]
        env |= {"KUBERNETES_SERVICE_HOST": kube.host, "KUBERNETES_SERVICE_PORT": str(kube.port)}
    for name, value in env.items():
        argv += ["--env", f"{name}={value}"]

    command = c.get("command") if command is None else command
    if command:
        argv += ["--entrypoint", command[0]]
    args = c.get("args") or [] if args is None else args
    return [*argv, *podman_options, image, *(command or [])[1:], *args, *extra_args]


def _mount(workload: Workload, volume: dict[str, Any], mount: dict[str, Any], workdir: Path,
           secrets: dict[str, dict[str, bytes]], nested: list[str], fs_group: int | None = None) -> list[str]:
    """``nested``: mount paths beneath this one. The kubelet makes their mount points inside a
    configMap or secret volume's files (pkg/volume/util/nested_volumes.go, MakeNestedMountpoints),
    since the runtime cannot create them in the read-only volume."""
    target, ro = mount["mountPath"], bool(mount.get("readOnly"))
    assert "subPath" not in mount, "subPath: not modelled"
    suffix = ":ro" if ro else ""
    if "emptyDir" in volume:
        return ["--tmpfs", f"{target}:rw,exec,mode=0777"]
    if "hostPath" in volume:
        path = Path(volume["hostPath"]["path"])
        kind = volume["hostPath"].get("type", "")
        if kind == "DirectoryOrCreate":
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        elif kind == "Directory":
            assert path.is_dir(), f"hostPath {path} (type Directory) does not exist: the pod would not start"
        return ["--volume", f"{path}:{target}{suffix}"]
    files: dict[str, bytes]
    mode = 0o644
    if "configMap" in volume:
        source = volume["configMap"]
        data = workload.config_map(source["name"])
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        files = {item["path"]: data[item["key"]].encode() for item in items}
        mode = source.get("defaultMode", mode)
    elif "secret" in volume:
        name = volume["secret"]["secretName"]
        if name not in secrets:
            assert volume["secret"].get("optional"), f"Secret {name} is missing and not optional: no start"
            files = {}
        else:
            files = secrets[name]
        mode = volume["secret"].get("defaultMode", mode)
    else:
        raise ValueError(f"volume {volume['name']}: kind not modelled")
    directory = workdir / volume["name"]
    directory.mkdir(parents=True, exist_ok=True)
    for key, data in files.items():
        (directory / key).write_bytes(data)
        (directory / key).chmod(mode)
    if fs_group is not None:
        # The kubelet hands the volume to the pod's fsGroup (pkg/volume/volume_linux.go,
        # SetVolumeOwnership): group ownership fsGroup, the read-only mask (0440, secret and configMap
        # volumes are read-only) added to each file's mode, setgid on the directory.
        os.chown(directory, -1, int(fs_group))
        directory.chmod(directory.stat().st_mode | 0o2550)
        for key in files:
            os.chown(directory / key, -1, int(fs_group))
            (directory / key).chmod(mode | 0o440)
    for path in nested:
        (directory / Path(path).relative_to(target)).mkdir(parents=True, exist_ok=True)
    return ["--volume", f"{directory}:{target}:ro"]
