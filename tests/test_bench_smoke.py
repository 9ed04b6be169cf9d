"""The benchmarks still run against the code they measure (a bench that rots gives no figures when
they are needed): the in-process probes on a tiny cluster, checked for what they report, not timed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import extender_bench as eb


def test_cache_across_polls_probe_runs_and_keeps_the_generation_when_nothing_changed():
    cluster = eb.make_cluster(30, 200, 50)
    result = eb.polls_probe(cluster, eb.make_bodies(cluster, 10, 50, full_nodes=False), polls=2)
    assert result["unchanged"]["generation"] == 1  # two unchanged polls: the same state, the caches kept
    assert result["unchanged"]["answer_hit_rate"] == 1.0
    assert result["changed"]["generation"] == 3  # a pool's free space moved at each poll
    assert result["changed"]["answer_hit_rate"] == 0.0


def test_full_node_bodies_are_what_the_extender_decodes():
    from scheduler_extender.codec import decode_args

    cluster = eb.make_cluster(5, 10, 5)
    args = decode_args(eb.make_bodies(cluster, 1, 5, full_nodes=True)[0])
    assert args.node_names == cluster["names"]


def test_affinity_bench_runs_its_three_passes_on_a_small_cluster():
    """bench/affinity_bench.py at 200 PVs, 10 stale: the worker processes it starts find them, replace
    them, then find everything in step; every claim ends Bound."""
    import affinity_bench as ab

    ks, emu, stale = ab.build(200, 10, 20)
    assert stale == 10
    with ks.serve() as ksrv, emu.serve() as lsrv:
        dry = ab.run_pass(ks, emu, ksrv.url, lsrv.url, [])
        acting = ab.run_pass(ks, emu, ksrv.url, lsrv.url, ["--no-dry-run", "--max-per-pass", "10"])
        steady = ab.run_pass(ks, emu, ksrv.url, lsrv.url, ["--no-dry-run"])
    assert (dry["stale"], dry["exit"], dry["kube"].get("POST", 0)) == (10, 1, 0)
    assert acting["outcomes"] == {"replaced": 10} and acting["linstor"]["PUT"] == 20
    assert steady["stale"] == 0 and steady["exit"] == 0 and acting["peak_rss"] > 0
    assert all(c["status"]["phase"] == "Bound" for c in ks.list("PersistentVolumeClaim"))
