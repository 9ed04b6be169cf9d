"""Fencing's compact LINSTOR read (msgspec records folded into replica states as the body streams)
must see exactly what the model-based read sees: the same replicas, the same effective quorum
policy, the same faults, storm population and verdicts, on a cluster shaped by real-world events."""

from __future__ import annotations

import asyncio

from fencing.kubeview import ListedKube
from fencing.observe import (
    LinstorView,
    add_replicas,
    build_observed,
    faults,
    linstor_nodes,
    read_linstor,
    storage_nodes,
    with_policies,
)
from fencing.verdict import FENCE, HEALTHY, REFUSE, WAITING, judge
from linstor_scheduler.linstor.client import LinstorClient

from .fencing_rig import Rig

NODES = ("n1", "n2", "n3", "n4", "n5", "n6", "n7")


async def _model_view(client: LinstorClient) -> LinstorView:
    """The reference: every read as whole records (the shapes, not fencing's projections of them)."""
    nodes, resources, definitions, groups, props, pools = await asyncio.gather(
        client.get_nodes(), client.get_resources(), client.get_resource_definitions(), client.get_resource_groups(),
        client.get_controller_properties(), client.get_storage_pools())
    replicas: dict = {}
    add_replicas(replicas, resources)
    return LinstorView(nodes, with_policies(replicas, definitions, groups, props), props, 0.0, pools)


def test_compact_read_equals_the_model_read_on_a_cluster_with_faults():
    with Rig(nodes=NODES) as rig:
        rig.emu.set_resource_group("rg-weak", {"DrbdOptions/Resource/quorum": "1"})
        claims = {
            "a": rig.volume("pvc-a", ["n1", "n2", "n3"], in_use="n1"),
            "b": rig.volume("pvc-b", ["n1", "n4"], in_use="n1"),  # two diskful + a tie-breaker
            "c": rig.volume("pvc-c", ["n2", "n3", "n4"], in_use="n3"),
            "d": rig.volume("pvc-d", ["n5", "n6", "n7"], in_use="n5"),
            "e": rig.volume("pvc-e", ["n1", "n6"], diskless=["n7"], in_use="n7"),  # used on a diskless node
            "f": rig.volume("pvc-f", ["n1", "n5", "n6"], in_use="n1"),
        }
        for rd in ("pvc-a", "pvc-b", "pvc-c", "pvc-d", "pvc-e"):
            rig.emu.set_rd_props(rd, {"DrbdOptions/Resource/quorum": "majority"})
        rig.emu.set_rd_props("pvc-f", {"DrbdOptions/Resource/quorum": None}, resource_group="rg-weak")  # quorum=1
        rig.emu.set_disk_state("pvc-c", "n2", "Outdated")
        rig.pod("a-0", "n1", [claims["a"]])
        rig.pod("b-0", "n1", [claims["b"]])
        rig.pod("c-0", "n3", [claims["c"]])
        rig.pod("d-0", "n5", [claims["d"]], labelled=False)
        rig.pod("e-0", "n7", [claims["e"]])
        rig.pod("f-0", "n1", [claims["f"]])
        rig.power_off("n1")  # a crash
        rig.partition("n5")  # replication network down, LINSTOR still reaches it
        rig.cut_controller("n3")  # controller-only partition: one witness

        async def both() -> tuple[LinstorView, LinstorView]:
            client = LinstorClient(rig.emu_url, timeout=10.0, retries=1)
            try:
                return await read_linstor(client, 0.0), await _model_view(client)
            finally:
                await client.aclose()

        compact, model = rig.loop.run_until_complete(both())
        kube = ListedKube(rig.api)
        kube.refresh()
        objects = kube.objects()
        assert objects is not None

    assert compact.resources == model.resources
    assert {r: s.quorum_problem() for r, s in compact.resources.items()} == \
        {r: s.quorum_problem() for r, s in model.resources.items()}
    assert linstor_nodes(compact) == linstor_nodes(model)
    assert storage_nodes(compact) == storage_nodes(model)
    found = faults(compact.resources, linstor_nodes(compact))
    assert found == faults(model.resources, linstor_nodes(model))
    assert {node for _, node in found} >= {"n1", "n5"}, found  # (n6 too: alone in pvc-f once n1 and n5 are gone)

    since = dict.fromkeys(found, -1000.0)  # every fault timed through its grace period
    for now, grace in ((0.0, 30.0), (0.0, 3600.0)):
        got = judge(build_observed(compact, objects, since), now, grace)
        want = judge(build_observed(model, objects, since), now, grace)
        assert got == want
        assert len(got) == 5  # the labelled pods (d-0 is not: the label selector never lists it)
    verdicts = {d.pod.name: (d.verdict, d.reason) for d in judge(build_observed(compact, objects, since), 0.0, 30.0)}
    assert verdicts["a-0"] == (FENCE, "StorageLost")
    assert verdicts["f-0"][0] == REFUSE and verdicts["f-0"][1] == "NoQuorumPolicy"
    assert verdicts["c-0"] == (HEALTHY, "ControllerPartition")
    assert {v for v, _ in verdicts.values()} >= {FENCE, REFUSE, HEALTHY}
    assert WAITING in {d.verdict for d in judge(build_observed(compact, objects, {}), 0.0, 30.0)}
