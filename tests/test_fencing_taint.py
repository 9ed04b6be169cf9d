"""Fencing's taint (--taint): set on a lost node even when the Node changed since it was listed (the
node lifecycle controller's taint kept), and taken off once the node's own storage is back, whatever
its peers do: removing it needs both witnesses, as every other decision does. Real HTTP (LINSTOR
emulator + Kubernetes API stand-in), a fake clock (tests/fencing_rig.py, ``rig`` in tests/conftest.py).

Also here: tainted before the pod goes and taken off by a new instance; no taint while the storm
breaker holds. The taint's other cases: tests/test_fencing_safety.py (off by default, bounded),
tests/test_fencing_matrix.py.
"""

from __future__ import annotations

from fencing.actions import TAINT_KEY
from fencing.controller import Settings

from .fencing_rig import taint_keys


# --- the taint must survive a concurrent update of the Node ----------------------------------------
def test_the_taint_is_set_even_when_the_node_changed_since_it_was_listed(rig):
    """The node lifecycle controller taints a NotReady node (node.kubernetes.io/unreachable) right
    between our list and our taint patch, as it does in every real power loss. The patch carries the
    listed resourceVersion (to never drop such a taint), so the API server answers 409. Before the
    fix the taint was simply not set, the pod was deleted anyway, and no later pass tainted the node
    (only a pod removal does): the recreated pod could go straight back to the dead node. Now the
    node is read live and the patch retried, keeping the lifecycle controller's taint."""
    rig.settings.taint = True  # --taint
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    get_pod = rig.ctrl.actions.get_pod

    def lifecycle_controller_meanwhile(namespace: str, name: str):
        node = rig.ks.get("Node", "n1")
        taints = (node.get("spec") or {}).get("taints") or []
        if not any(t["key"] == "node.kubernetes.io/unreachable" for t in taints):
            node.setdefault("spec", {})["taints"] = [*taints, {"key": "node.kubernetes.io/unreachable",
                                                              "effect": "NoSchedule"}]
            rig.ks.update(node)
        return get_pod(namespace, name)

    rig.ctrl.actions.get_pod = lifecycle_controller_meanwhile
    rig.run(40)
    assert rig.evicted() == ["db-0"]
    assert taint_keys(rig, "n1") == sorted([TAINT_KEY, "node.kubernetes.io/unreachable"]), \
        "ours is set, and the lifecycle controller's taint is not lost"


# --- our taint comes off a node whose storage is back, whatever its peers do ---------------------
def test_the_taint_comes_off_when_only_the_nodes_peers_are_lost(rig):
    """n1 loses power, db-0 fails over to n2, n1 is tainted. n1 comes back just as n2 and n3 (the
    other replica and the tie-breaker of pvc-a) lose power: n1's replica of pvc-a now reports every
    peer down, because its peers are gone. No witness says n1 is lost (LINSTOR reaches it, no peer
    can testify), yet the taint stayed on n1 for as long as n2 and n3 were down: _untaint counted
    either witness alone. It now needs what every other decision needs: both."""
    rig.settings.taint = True  # --taint
    data = rig.volume("pvc-a", ["n1", "n2"], diskless=["n3"], in_use="n1")
    rig.pod("db-0", "n1", [data])
    rig.run(10)
    rig.power_off("n1")
    rig.run(40)
    assert rig.evicted() == ["db-0"] and TAINT_KEY in taint_keys(rig, "n1")
    rig.recreate("db-0", "n4", [data])
    rig.power_off("n2")
    rig.power_off("n3")
    rig.recover("n1")
    rig.run(90)
    assert TAINT_KEY not in taint_keys(rig, "n1"), "n1's storage is back; its peers are what is lost"
    assert rig.evicted() == ["db-0"]


def test_the_lost_node_is_tainted_while_fencing_acts_and_untainted_by_a_new_instance(rig):
    rig.settings.taint = True  # --taint
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n2"], in_use="n1")])
    rig.run(10)
    rig.power_off("n1")
    rig.run(40)
    assert rig.ks.get("Node", "n1")["spec"]["taints"] == [
        {"key": "linstor.csi.linbit.com/storage-lost", "effect": "NoSchedule"}]
    patch_at = next(i for i, w in enumerate(rig.ks.writes) if w[0] == "PATCH" and "/nodes/n1" in w[1])
    delete_at = next(i for i, w in enumerate(rig.ks.writes) if w[0] == "DELETE" and "/pods/db-0" in w[1])
    assert patch_at < delete_at, "tainted before the pod goes: the new pod does not come back to n1"
    rig.ctrl = rig.controller(settings=Settings(taint=False, taint_stable_seconds=60))  # restart, --no-taint
    rig.recover("n1")
    rig.run(55)
    assert rig.ks.get("Node", "n1")["spec"]["taints"], "back for less than 60 s"
    rig.run(10)
    assert rig.ks.get("Node", "n1")["spec"]["taints"] == [], "ours, removed by the new instance"


def test_no_taint_while_the_storm_breaker_holds(rig):
    rig.settings.taint = True  # --taint
    rig.pod("db-0", "n1", [rig.volume("pvc-r2", ["n1", "n4"], diskless=["n5"], in_use="n1")])
    rig.run(10)
    for node in ("n1", "n2", "n3"):
        rig.power_off(node)
    rig.run(90)
    assert rig.writes("PATCH", "/nodes/") == []
