"""``linstor-scheduler fencing --once --dry-run`` prints the verdict table and writes nothing."""

from __future__ import annotations

from linstor_scheduler.cli import main

from .fencing_rig import Rig


def test_once_dry_run_prints_the_verdict_table(capsys):
    with Rig() as rig:
        c2 = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
        rig.pod("db-0", "n1", [c2])
        c_b = rig.volume("pvc-b", ["n3", "n4"], in_use="n3")
        rig.pod("web-0", "n3", [c_b], labelled="keep")
        rig.crash("n1")
        code = main(["fencing", "--once", "--dry-run", "--controllers", rig.emu_url, "--kube-api-url", rig.ks_url])
        out = capsys.readouterr().out
        assert code == 0
        lines = out.splitlines()
        assert lines[0].split() == ["POD", "NODE", "VERDICT", "REASON", "DETAIL"]
        row = next(line for line in lines if line.startswith("default/db-0"))
        assert row.split()[1:4] == ["n1", "waiting", "GracePeriod"] and "satellite of node n1 is OFFLINE" in row
        assert next(line for line in lines if line.startswith("default/web-0")).split()[2] == "healthy"
        assert rig.ks.writes == [], "--once acts never and records no Events"
