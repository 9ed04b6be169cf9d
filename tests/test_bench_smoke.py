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
