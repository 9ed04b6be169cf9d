"""The whole system end to end, as `make demo` tells it: LINSTOR emulator + Kubernetes API stand-in
over HTTP, every component of ours against them, one story from LVM tags to a fail-over."""

from __future__ import annotations

import io

from devkit.story import FREE_GIB, NODES, run
from linstor_scheduler.cli import main


def test_the_whole_story():
    out = io.StringIO()
    result = run(out)
    text = out.getvalue()
    # 1. tags -> pools -> classes
    assert sorted(result.pools) == [(n, "thindata", "LVM_THIN") for n in sorted(NODES)]
    assert result.classes == ["linstor-thindata-r1", "linstor-thindata-r2", "linstor-thindata-r3"]
    # 2. the new pod goes where its volume will have the most room, and gets its first replica there
    assert result.first_node == max(FREE_GIB, key=FREE_GIB.get) == "w2"
    assert result.replicas[0] == "w2"
    assert "claim default/data-db-0: unbound, storage pool thindata on w2 has 400.0GiB free" in text
    # 3. its node loses storage: the pod, then its VolumeAttachment, are removed after the grace period
    assert result.fenced == [("pod_delete", "default/db-0", "done"),  # no taint: off by default
                             ("attachment_delete", "csi-pvc-3f1e9c2a-w2-linstor", "done")]
    assert 30 <= result.seconds_to_failover <= 40
    assert "Normal FencedPod: deleted (grace 0) from node w2" in text
    # 4. the recreated pod lands next to the surviving replica, the lost node filtered out
    assert result.second_node == result.replicas[1] == "w3"
    assert "w2    fail         0  LINSTOR satellite on node w2 is OFFLINE, not ONLINE" in text
    assert "w3    pass        10  volume pvc-3f1e9c2a: diskful replica on w3 is UpToDate" in text
    assert "curl" not in text and "demo --serve` keeps it running" in text  # nothing that is gone on return
    # 5. locality: local, then not while the node is gone, then local again on the survivor
    assert result.locality == [("before any failure", 1, 1), ("during the failure", 0, 1),
                               ("after the fail-over", 1, 1)]
    assert "default/db-0 on w2: unknown (satellite of w2 is OFFLINE" in text
    # the drill, run before the failure, predicted what fencing and the extender then did
    predicted = result.drill["pods"]
    assert [(p["pod"], p["action"], p["reason"]) for p in predicted] == [("default/db-0", "remove", "StorageLost")]
    assert predicted[0]["to"][0] == result.second_node == "w3" and result.drill["storm"] is False
    assert "the drill run before the failure said db-0 would go to w3; it went to w3" in text
    # and the next failure (w3, with w2 still down) would leave the volume without an UpToDate replica
    nxt = result.next_drill
    assert [(p["action"], p["reason"]) for p in nxt["pods"]] == [("refuse", "NowhereToGo")] and nxt["storm"]
    assert nxt["resources_at_risk"] == [{"resource": "pvc-3f1e9c2a", "up_to_date_left": 0, "quorum": False,
                                         "lost_replicas": ["w3"]}]
    # make demo ends with the locality summary and the drill of the next failure
    tail = text[text.index("Locality after the fail-over"):]
    assert "1 of 1 pods local (100%)" in tail and "drill --fail-node w3" in tail


def test_make_demo_command_exits_zero(capsys):
    assert main(["demo", "--port", "0", "--metrics-port", "0", "--no-serve"]) == 0
    assert "the pod goes to w3" in capsys.readouterr().out


def test_the_served_story_prints_a_snapshot_command_that_works(tmp_path):
    """`demo --serve`: a snapshot without a cluster (docs/extender.md), and the extender's commands."""
    import re
    import subprocess
    import sys
    import threading

    from linstor_scheduler.snapshot import read_snapshot

    from .test_demo import run_printed
    from .waiting import wait_for

    out, stop = io.StringIO(), threading.Event()
    thread = threading.Thread(target=run, args=(out,), kwargs={"serve": True, "stop": stop})
    thread.start()
    try:
        wait_for(lambda: "serving until Ctrl-C" in out.getvalue(), timeout=120, what="the story to serve")
        text = out.getvalue()
        command = re.search(r"linstor-scheduler snapshot (.*) > snap\.yaml", text)
        assert command, text
        snap = subprocess.run([sys.executable, "-m", "linstor_scheduler.cli", "snapshot", *command.group(1).split()],
                              capture_output=True, text=True, timeout=60)
        answers = run_printed([ln for ln in text.splitlines() if "curl " in ln])
    finally:
        stop.set()
        thread.join(30)
    assert snap.returncode == 0, snap.stderr
    (tmp_path / "snap.yaml").write_text(snap.stdout)
    taken = read_snapshot(tmp_path / "snap.yaml")
    assert {n.name for n in taken.nodes} == set(NODES) and any(i["kind"] == "Pod" for i in taken.kube_items)
    assert len(answers) == 4 and all(status == 200 for _, status, _ in answers), answers
    assert not thread.is_alive()
