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
    assert result.fenced == [("taint", "w2", "done"), ("pod_delete", "default/db-0", "done"),
                             ("attachment_delete", "csi-pvc-3f1e9c2a-w2-linstor", "done")]
    assert 30 <= result.seconds_to_failover <= 40
    assert "Normal FencedPod: deleted (grace 0) from node w2" in text
    # 4. the recreated pod lands next to the surviving replica, the lost node filtered out
    assert result.second_node == result.replicas[1] == "w3"
    assert "w2    fail         0  LINSTOR satellite on node w2 is OFFLINE, not ONLINE" in text
    assert "w3    pass        10  volume pvc-3f1e9c2a: diskful replica on w3 is UpToDate" in text
    assert text.count("curl -s -X POST") == 2


def test_make_demo_command_exits_zero(capsys):
    assert main(["demo", "--port", "0", "--no-serve"]) == 0
    assert "the pod goes to w3" in capsys.readouterr().out
