"""The drill's prediction is what fencing then does: for generated topologies (2 or 3 diskful replicas,
with and without a diskless client and LINSTOR's tie-breaker, quorum majority or all,
quorum-minimum-redundancy off, 1 or 2) and failures (nodes losing power at once, or a set of nodes
cut from the others on the replication network), the drill on the healthy cluster's snapshot names
the same action and reason as the fencing controller, run pass by pass against the LINSTOR emulator
(whose DRBD follows the same quorum rules) after the same event. Seeded: a failing case names its
seed and can be run alone."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

import pytest

from devkit import kube_objects as k
from fencing.controller import Settings
from locality.drill import DrillSettings, drill

from .fencing_rig import Rig

NODES = ("n1", "n2", "n3", "n4", "n5")
STORM_SHARE = 0.9  # the storm breaker has its own tests: here it would hide the quorum rules
CASES = 30
KINDS = ("Node", "Pod", "PersistentVolumeClaim", "PersistentVolume")


@dataclass(frozen=True)
class Case:
    diskful: tuple[str, ...]
    tie_breaker: str | None
    client: str | None
    pod_on: str
    redundancy: str | None
    quorum: str
    power_off: tuple[str, ...]
    cut: tuple[str, ...]

    def __str__(self) -> str:
        event = f"power off {','.join(self.power_off)}" if self.power_off else f"cut {','.join(self.cut)}"
        return (f"diskful {','.join(self.diskful)}; tie-breaker {self.tie_breaker}; client {self.client}; "
                f"pod on {self.pod_on}; quorum {self.quorum}; qmr {self.redundancy}; {event}")


def generate(seed: int) -> Case:
    rnd = random.Random(seed)
    diskful = NODES[:rnd.choice((2, 3))]
    spare = [n for n in NODES if n not in diskful]
    tie_breaker = spare.pop(0) if rnd.random() < 0.6 else None
    client = spare.pop(0) if rnd.random() < 0.5 else None
    pod_on = client if client and rnd.random() < 0.3 else diskful[0]
    involved = [*diskful, *(n for n in (tie_breaker, client) if n)]
    failed = set(rnd.sample(involved, rnd.choice((1, 1, 2))))
    if rnd.random() < 0.6:  # most failures hit the pod's node: that is where fencing has something to decide
        failed = {pod_on} | set(rnd.sample(sorted(failed), len(failed) - 1))
    failed = tuple(sorted(failed))
    power = rnd.random() < 0.5
    return Case(diskful, tie_breaker, client, pod_on, rnd.choice((None, "1", "2")),
                rnd.choice(("majority", "majority", "all")), failed if power else (), () if power else failed)


def build(rig: Rig, case: Case) -> None:
    props = {"DrbdOptions/Resource/quorum": case.quorum}
    if case.redundancy:
        props["DrbdOptions/Resource/quorum-minimum-redundancy"] = case.redundancy
    for node in case.diskful:
        rig.emu.add_resource("pvc-db", node, in_use=node == case.pod_on)
    if case.tie_breaker:
        rig.emu.add_resource("pvc-db", case.tie_breaker, diskful=False, flags=["TIE_BREAKER"])
    if case.client:
        rig.emu.add_resource("pvc-db", case.client, diskful=False, in_use=case.client == case.pod_on)
    rig.emu.set_rd_props("pvc-db", props)
    for obj in k.bound_volume("data-db-0", "pvc-db"):
        rig.ks.add(obj)
    rig.pod("db-0", case.pod_on, ["data-db-0"])


def snapshot(rig: Rig) -> dict[str, Any]:
    """The healthy cluster as ``linstor-scheduler snapshot`` writes it (the REST items the emulator
    serves, the policies' three levels, the Kubernetes objects), read without HTTP: the drill's input."""
    linstor: dict[str, Any] = rig.emu.snapshot()
    with rig.emu._lock:
        linstor.update(resource_definitions=copy.deepcopy(list(rig.emu._rds.values())),
                       resource_groups=copy.deepcopy(list(rig.emu._rgs.values())),
                       controller_properties=dict(rig.emu._controller_props))
    return {"linstor": linstor, "kubernetes": {"items": [{"kind": kind, **o} for kind in KINDS
                                                         for o in rig.ks.list(kind)]}}


@pytest.mark.parametrize("seed", range(CASES))
def test_the_drill_predicts_what_fencing_does_after_the_same_failure(seed):
    case = generate(seed)
    with Rig(nodes=NODES, settings=Settings(storm_share=STORM_SHARE)) as rig:
        build(rig, case)
        (row,) = drill(snapshot(rig), case.power_off, DrillSettings(storm_share=STORM_SHARE), cut=case.cut)["pods"]
        rig.step()  # fencing sees the healthy cluster
        if case.power_off:  # at once, as a rack does
            rig.emu.power_off(*case.power_off)
            for node in case.power_off:
                rig.set_ready(node, False)
        else:
            rig.emu.split(case.cut)
        rig.run(rig.settings.grace_period + 2 * rig.settings.poll_interval)
        moved = rig.evicted() == ["db-0"]
        assert moved is (row["action"] == "remove"), (str(case), row, rig.reports[-1].decisions)
        if row["action"] == "refuse":
            assert rig.events(row["reason"], "db-0"), (str(case), row)
        if row["action"] == "none":
            assert [e for e in rig.events(pod="db-0") if e["type"] == "Warning"] == [], (str(case), row)


def test_the_generated_cases_cover_every_kind():
    """The property is only as good as its cases: each topology, failure and outcome kind occurs."""
    cases = [generate(seed) for seed in range(CASES)]
    assert {len(c.diskful) for c in cases} == {2, 3}
    assert {c.tie_breaker is not None for c in cases} == {True, False}
    assert {c.client is not None for c in cases} == {True, False}
    assert {c.redundancy for c in cases} == {None, "1", "2"}
    assert {c.quorum for c in cases} == {"majority", "all"}
    assert {bool(c.power_off) for c in cases} == {True, False}
    assert any(c.pod_on == c.client for c in cases), "a diskless Primary"
