"""The locality exporter as deploy/ runs it, against the LINSTOR emulator and the Kubernetes API stand-in
(in-cluster over HTTPS) holding the demo cluster: it takes its Lease and exports the locality of
the running pods' volumes (its first computation comes one --interval, 30 s, after it leads)."""

from __future__ import annotations

import httpx

from devkit.demo_cluster import demo_emulator, demo_kube_objects
from devkit.kube_standin import KubeStandin

from .conftest import https_api, running, with_linstor_at
from .pod import Workload


def test_locality_exporter_takes_its_lease_and_exports(image, manifests, tmp_path):
    emu, ks = demo_emulator(), KubeStandin()
    placed = {"db-0": "w1", "logger": "w4"}  # next to its replica; away from its only (local-only) one
    for obj in demo_kube_objects():
        if obj["kind"] == "Pod" and obj["metadata"]["name"] in placed:
            obj["spec"]["nodeName"] = placed[obj["metadata"]["name"]]
            obj["status"]["phase"] = "Running"
        ks.add(obj)
    with emu.serve() as linstor, https_api(ks, tmp_path) as api:
        workload = Workload(with_linstor_at(manifests, linstor.url), "Deployment", "linstor-scheduler-locality")
        c = workload.container("locality")
        port = next(e["value"] for e in c["env"] if e["name"] == "LINSTOR_SCHEDULER_PORT")
        lease = next(e["value"] for e in c["env"] if e["name"] == "LINSTOR_SCHEDULER_LEASE_NAME")

        def metrics() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                return ""

        with running(workload, "locality", image, tmp_path, kube=api,
                     pod_name="linstor-scheduler-locality-0") as exporter:
            def ready() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            exporter.wait_until(ready, "the exporter is ready")
            exporter.wait_until(lambda: "linstor_scheduler_pods_local_ratio " in metrics(), "the exported ratio")
            text = metrics()
            holder = ks.get("Lease", lease, workload.namespace)["spec"]["holderIdentity"]
        released = ks.get("Lease", lease, workload.namespace)["spec"].get("holderIdentity")
    assert holder.startswith("linstor-scheduler-locality-0_"), "POD_NAME (fieldRef metadata.name) names the holder"
    assert not released, "a stopped exporter hands its Lease back"
    assert "linstor_scheduler_pods_local_ratio 0.5" in text, text
    assert "locality: 1 of 2 pods local (50%)" in exporter.output()
    assert exporter.process.returncode in (0, 143), exporter.output()
