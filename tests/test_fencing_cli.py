"""``linstor-scheduler fencing --once --dry-run`` prints the verdict table and writes nothing."""

from __future__ import annotations

from linstor_scheduler.cli import main

from .fencing_rig import Rig, assert_verdicts_of_one_node_crashed, one_node_crashed


def test_once_dry_run_prints_the_verdict_table(capsys):
    with Rig() as rig:
        one_node_crashed(rig)
        code = main(["fencing", "--once", "--dry-run", "--controllers", rig.emu_url, "--kube-api-url", rig.ks_url])
        assert code == 0
        assert_verdicts_of_one_node_crashed(capsys.readouterr().out)
        assert rig.ks.writes == [], "--once acts never and records no Events"
