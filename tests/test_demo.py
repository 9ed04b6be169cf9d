"""`make demo`'s command, run as a user would: it must tell each sample pod's story over HTTP."""

from __future__ import annotations

import io

from devkit.extender_demo import run


def test_demo_prints_verdicts_and_curl_lines():
    out = io.StringIO()
    assert run(port=0, serve=False, out=out) == 0
    text = out.getvalue()
    assert "w1    pass        10  volume pvc-db: diskful replica on w1 is UpToDate" in text
    assert "cp1   fail         0  node cp1 has no LINSTOR satellite" in text
    assert "w5    fail         0  LINSTOR satellite on node w5 is OFFLINE, not ONLINE" in text
    assert "volume pvc-logs: no diskful replica on node w1 and its StorageClass forbids remote access" in text
    assert "volume pvc-metrics: diskful replica on w4 is Inconsistent (syncing, 42% done)" in text
    assert "neutral: pod has no LINSTOR volumes" in text
    assert text.count("curl -s -X POST") == 2 and "/filter" in text and "/prioritize" in text
