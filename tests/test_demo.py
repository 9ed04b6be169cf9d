"""`make demo`'s command, run as a user would: it must tell each sample pod's story over HTTP."""

from __future__ import annotations

import io
import threading

from devkit.extender_demo import run

from .waiting import wait_for


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
    # Not serving: no commands for a request file and ports that are gone once it returns.
    assert "curl" not in text and "demo --extender-only --serve" in text


def run_printed(lines: list[str]) -> list[tuple[str, int, str]]:
    """Each printed curl command, done over HTTP: (URL, status, body)."""
    import re
    from pathlib import Path

    import httpx

    done = []
    for line in lines:
        for url in re.findall(r"https?://\S+", line):
            data = re.search(r"--data @(\S+)", line)
            r = (httpx.post(url, content=Path(data.group(1)).read_bytes(), headers={"Content-Type": "application/json"})
                 if data else httpx.get(url))
            done.append((url, r.status_code, r.text))
    return done


def test_served_demo_prints_commands_that_work_while_it_serves():
    """--serve: the printed commands reach the verbs and, on their own port as deployed, /metrics."""
    out, stop = io.StringIO(), threading.Event()
    thread = threading.Thread(target=run, kwargs={"port": 0, "serve": True, "out": out, "stop": stop})
    thread.start()
    try:
        wait_for(lambda: "Serving until Ctrl-C" in out.getvalue(), timeout=30, what="the demo to serve")
        lines = [ln.strip() for ln in out.getvalue().splitlines() if ln.strip().startswith("curl")]
        answers = run_printed(lines)
    finally:
        stop.set()
        thread.join(10)
    assert len(lines) == 3 and all(status == 200 for _, status, _ in answers), answers
    [metrics] = [text for url, _, text in answers if url.endswith("/metrics")]
    assert "linstor_scheduler_ready 1.0" in metrics
    verbs = {url.rsplit("/", 1)[0] for url, _, _ in answers if url.endswith(("/filter", "/prioritize"))}
    ops = {url.rsplit("/", 1)[0] for url, _, _ in answers if url.endswith(("/readyz", "/metrics"))}
    assert len(verbs) == len(ops) == 1 and verbs != ops, "two listeners, as the deployed extender"
    assert not thread.is_alive()
