"""Configuration mistakes as an operator meets them: the real CLI as a subprocess.

A bad value is one line on stderr naming the flag or variable and what it expects, exit code 2,
no traceback; a variable meant for another subcommand changes nothing; ``--help`` shows readable
defaults; ``--log-format json`` makes every line JSON, uvicorn's included.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import yaml

from linstor_scheduler.cli import main

from .fencing_rig import Rig

CLI = [sys.executable, "-m", "linstor_scheduler.cli"]


def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LINSTOR_SCHEDULER_", "LS_", "KUBE"))}
    return subprocess.run([*CLI, *argv], env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    """A port free now (the extender's ports are 1..65535: kube-scheduler must know them in advance)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("var,value,argv,says", [
    ("LINSTOR_SCHEDULER_LINSTOR_TIMEOUT", "abc", ["snapshot"], "expected a number"),
    ("LINSTOR_SCHEDULER_LOG_LEVEL", "verbose", ["snapshot"], "expected one of debug, info, warning, error"),
    ("LINSTOR_SCHEDULER_OUTPUT", "xml", ["explain", "--pod", "a/b"], "expected one of table, json"),
    ("LINSTOR_SCHEDULER_FORMAT", "toml", ["snapshot"], "expected one of yaml, json"),
    ("LINSTOR_SCHEDULER_NODE_EVENTS", "maybe", ["extender"], "expected true or false"),
    ("LINSTOR_SCHEDULER_PORT", "80a", ["extender"], "expected a whole number"),
])
def test_a_bad_variable_is_one_line_naming_it_exit_2(var, value, argv, says):
    line = one_error_line(run(*argv, env={var: value}))
    assert line.startswith(f"linstor-scheduler {argv[0]}: error: environment variable {var}={value!r}")
    assert says in line


def test_a_bad_flag_value_is_one_line_exit_2():
    line = one_error_line(run("extender", "--poll-interval", "soon"))
    assert "--poll-interval" in line and "soon" in line


NO_KUBE = ["--kube-api-url", "http://127.0.0.1:9"]  # never reached: the settings are checked first


class ClassConfig(str):
    """The text of a ``--config`` file, written to the test's tmp_path when the test runs."""


# A flag value that parses but cannot work, checked where the service is built: the same one line and
# exit 2 as a value argparse refuses, naming the flag, its variable and what it expects.
@pytest.mark.parametrize("argv,says", [
    (["fencing", "--storm-share", "2"],
     ["--storm-share (or LINSTOR_SCHEDULER_STORM_SHARE) is 2", "expected a number greater than 0 and at most 1"]),
    (["fencing", "--grace-period", "-1"],
     ["--grace-period (or LINSTOR_SCHEDULER_GRACE_PERIOD) is -1", "a number of at least 0"]),
    (["fencing", "--poll-interval", "0"],
     ["--poll-interval (or LINSTOR_SCHEDULER_POLL_INTERVAL) is 0", "expected a number greater than 0"]),
    (["fencing", "--no-promotion-events", "--lease-duration", "0.1", *NO_KUBE],
     ["--lease-duration (or LINSTOR_SCHEDULER_LEASE_DURATION) is 0.1", "greater than 0.2"]),
    (["drill", "--snapshot", "unread.yaml"], ["--fail-node (or LINSTOR_SCHEDULER_FAIL_NODE) is required"]),
    (["drill", "--fail-node", "n1", "--storm-share", "0"],
     ["--storm-share (or LINSTOR_SCHEDULER_STORM_SHARE) is 0", "greater than 0 and at most 1"]),
    (["drill", "--fail-node", "n1", "--grace-period", "-3"], ["--grace-period (or LINSTOR_SCHEDULER_GRACE_PERIOD)"]),
    (["locality", "--score-weights", "bogus=1"],
     ["--score-weights (or LINSTOR_SCHEDULER_SCORE_WEIGHTS) is 'bogus=1'", "unknown score weight 'bogus'"]),
    (["explain", "--pod", "a/b", "--score-weights", "remote=x"], ["--score-weights", "remote='x' is not a number"]),
    (["extender", "--score-weights", "remote=11"], ["--score-weights", "outside 0..10"]),
    (["explain"], ["--pod (or LINSTOR_SCHEDULER_POD) is required"]),
    (["snapshot", "--controllers", "ftp://ctl", *NO_KUBE],
     ["--controllers (or LS_CONTROLLERS) is 'ftp://ctl'", "unsupported LINSTOR controller URL scheme 'ftp'"]),
    (["sync-node"], ["--node-name (or NODE_NAME) is required"]),
    (["sync-node", "--node-name", "n1", "--recorded-vgs", "vgs.json"],
     ["--recorded-vgs (or LINSTOR_SCHEDULER_RECORDED_VGS) and --recorded-lvs", "go together"]),
    (["sync-classes", "--config", "/nonexistent/classes.yaml"],
     ["--config (or LINSTOR_SCHEDULER_CONFIG): cannot read /nonexistent/classes.yaml"]),
    (["sync-classes", "--config", ClassConfig("- a list\n")],
     ["(--config or LINSTOR_SCHEDULER_CONFIG): expected a mapping", "not a list"]),
    (["sync-classes", "--config", ClassConfig("maxReplicas: [\n")], ["(--config or ", "is not YAML"]),
    (["sync-classes", "--config", ClassConfig("paramters: {}\n")],
     ["(--config or ", "unknown keys in the class config: paramters"]),
    (["webhook", "--tls-cert-file", "cert.pem"],
     ["--tls-cert-file (or LINSTOR_SCHEDULER_TLS_CERT_FILE) and --tls-key-file", "go together"]),
    pytest.param(["webhook", *NO_KUBE], ["--namespace (or POD_NAMESPACE) is required outside a pod"],
                 marks=pytest.mark.skipif(os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/namespace"),
                                          reason="in a pod: the namespace is known")),
])
def test_a_flag_value_that_cannot_work_is_one_line_naming_it_exit_2(argv, says, tmp_path):
    for i, arg in enumerate(argv):
        if isinstance(arg, ClassConfig):
            path = tmp_path / "classes.yaml"
            path.write_text(arg)
            argv = [*argv[:i], str(path), *argv[i + 1:]]
    line = one_error_line(run(*argv))
    assert line.startswith(f"linstor-scheduler {argv[0]}: error: ")
    for words in says:
        assert words in line


# Values outside a flag's declared range (every numeric flag has one: test_flag_ranges.py walks them
# in-process) and relations between flags, as an operator meets them: before any socket or client.
@pytest.mark.parametrize("argv,env,says", [
    (["extender", "--port", "70000"], {}, "--port (or LINSTOR_SCHEDULER_PORT) is 70000: expected a whole number "
     "from 1 to 65535"),
    (["extender", "--port", "-1"], {}, "--port (or LINSTOR_SCHEDULER_PORT) is -1: expected a whole number from 1"),
    (["webhook"], {"LINSTOR_SCHEDULER_METRICS_PORT": "0"}, "--metrics-port (or LINSTOR_SCHEDULER_METRICS_PORT) is 0"),
    (["extender", "--max-staleness", "0"], {},
     "--max-staleness (or LINSTOR_SCHEDULER_MAX_STALENESS) is 0: expected a number greater than 0"),
    (["extender", "--max-body-bytes", "0"], {},
     "--max-body-bytes (or LINSTOR_SCHEDULER_MAX_BODY_BYTES) is 0: expected a whole number of at least 65536"),
    (["extender"], {"LINSTOR_SCHEDULER_POLL_INTERVAL": "-5"},
     "--poll-interval (or LINSTOR_SCHEDULER_POLL_INTERVAL) is -5: expected a number greater than 0"),
    (["fencing", "--failover-budget", "0"], {}, "--failover-budget (or LINSTOR_SCHEDULER_FAILOVER_BUDGET) is 0"),
    (["fencing", "--poll-interval", "10", "--max-staleness", "5", *NO_KUBE], {},
     "--max-staleness (or LINSTOR_SCHEDULER_MAX_STALENESS) is 5: expected more than --poll-interval (or "
     "LINSTOR_SCHEDULER_POLL_INTERVAL), which is 10"),
    (["extender", "--poll-interval", "120", *NO_KUBE], {},
     "--max-staleness (or LINSTOR_SCHEDULER_MAX_STALENESS) is 120: expected more than --poll-interval"),
    (["sync-node", "--node-name", "n1", "--interval", "600", *NO_KUBE], {},
     "--max-backoff (or LINSTOR_SCHEDULER_MAX_BACKOFF) is 300: expected at least --interval"),
])
def test_a_value_out_of_range_or_against_another_flag_is_one_line_exit_2(argv, env, says):
    line = one_error_line(run(*argv, env=env))
    assert line.startswith(f"linstor-scheduler {argv[0]}: error: {says}"), line


@pytest.mark.parametrize("argv", [["--version"], ["extender", "--help"], ["explain", "--help"]])
def test_a_variable_meant_for_another_subcommand_changes_nothing(argv):
    env = {"LINSTOR_SCHEDULER_LINSTOR_TIMEOUT": "abc", "LINSTOR_SCHEDULER_OUTPUT": "xml",
           "LINSTOR_SCHEDULER_FORMAT": "toml", "LINSTOR_SCHEDULER_DEVICES": "[", "LINSTOR_SCHEDULER_GRACE_PERIOD": "x"}
    result = run(*argv, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_bad_variable_of_sync_node_does_not_break_explain(tmp_path):
    from devkit.demo_cluster import demo_snapshot

    snap = tmp_path / "snap.yaml"
    snap.write_text(yaml.safe_dump(demo_snapshot()))
    result = run("explain", "--snapshot", str(snap), "--pod", "default/db-0",
                 env={"LINSTOR_SCHEDULER_NODE_NAME": "", "LINSTOR_SCHEDULER_GRACE_PERIOD": "soon"})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["extender", "explain", "webhook", "sync-node", "sync-classes", "fencing"])
def test_help_shows_readable_defaults(command):
    text = " ".join(run(command, "--help").stdout.split())
    assert "(default: )" not in text
    assert not re.search(r"\(default[^)]*\) \(default", text)  # a default said twice
    assert "33333" not in text
    assert "(default: 10)" in text or command in ("webhook", "sync-classes", "sync-node")


def test_missing_kubeconfig_says_the_file_is_missing(tmp_path):
    missing = tmp_path / "nope.yaml"
    line = one_error_line(run("extender", "--kubeconfig", str(missing)))
    assert f"kubeconfig file {missing}" in line and "does not exist" in line
    line = one_error_line(run("extender", env={"KUBECONFIG": str(missing)}))
    assert "does not exist" in line


def test_linstor_unreachable_says_which_setting_and_does_not_promise_another_controller():
    result = run("snapshot", "--controllers", "http://127.0.0.1:9", "--linstor-timeout", "0.5",
                 "--kube-api-url", "http://127.0.0.1:9")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "trying the next controller" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("set --controllers or LS_CONTROLLERS)")


def test_log_format_json_makes_every_line_json_uvicorn_included(tmp_path):
    from devkit.demo_cluster import demo_snapshot

    snap = tmp_path / "snap.yaml"
    snap.write_text(yaml.safe_dump(demo_snapshot()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINSTOR_SCHEDULER_")}
    proc = subprocess.Popen([*CLI, "extender", "--snapshot", str(snap), "--port", str(free_port()), "--listen-address",
                             "127.0.0.1", "--metrics-port", str(free_port()), "--metrics-address", "127.0.0.1",
                             "--log-format", "json"], env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # waits on the server's own words, not on time
            lines.append(line)
            if "Uvicorn running on" in line:
                break
        proc.send_signal(signal.SIGTERM)
        lines += proc.stderr.readlines()
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    finally:
        proc.kill()
    docs = [json.loads(line) for line in lines]  # every line parses
    loggers = {d["logger"] for d in docs}
    assert "uvicorn.error" in loggers and "linstor_scheduler.extender" in loggers
    assert any(d["msg"] == "Application shutdown complete." for d in docs)


def test_log_format_json_makes_the_final_error_json_too(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = run("extender", "--kubeconfig", str(missing), "--log-format", "json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    docs = [json.loads(line) for line in result.stderr.splitlines()]
    assert docs[-1]["level"] == "error" and docs[-1]["msg"] == (
        f"linstor-scheduler extender: error: kubeconfig file {missing} (--kubeconfig or KUBECONFIG) does not exist")


def test_fencing_once_exits_non_zero_when_everything_was_held_for_stale_data(capsys):
    with Rig() as rig:
        volume = rig.volume("pvc-r2", ["n1", "n2"], diskless=["n3"], in_use="n1")
        rig.pod("db-0", "n1", [volume])
        code = main(["fencing", "--once", "--dry-run", "--controllers", "http://127.0.0.1:9",
                     "--linstor-timeout", "0.5", "--kube-api-url", rig.ks_url])
        assert "StaleData" in capsys.readouterr().out
        assert code != 0



@pytest.mark.parametrize("command", ["extender", "webhook", "sync-node", "sync-classes", "fencing"])
def test_keep_alive_is_above_90_s_by_default_and_configurable(command, monkeypatch):
    from linstor_scheduler import httpserver
    from linstor_scheduler.cli import build_parser

    assert build_parser().parse_args([command]).keep_alive_timeout == 120
    monkeypatch.setenv("LINSTOR_SCHEDULER_KEEP_ALIVE_TIMEOUT", "300")
    args = build_parser().parse_args([command])
    try:
        httpserver.configure(keep_alive=args.keep_alive_timeout)  # as main() does
        assert httpserver.ServerThread(None).config.timeout_keep_alive == 300  # fencing's and sync's health ports
        assert httpserver.uvicorn_options()["timeout_keep_alive"] == 300  # the extender's and webhook's uvicorn.run
    finally:
        httpserver.configure(keep_alive=httpserver.KEEP_ALIVE_SECONDS)


@pytest.mark.parametrize("argv", [["demo", "--extender-only"], ["demo"]])
def test_the_demo_leaves_no_temporary_folder_and_prints_none(tmp_path, argv):
    """Not serving: no request file is written, and no command names one (it would be gone)."""
    result = run(*argv, "--port", "0", "--metrics-port", "0", "--no-serve", env={"TMPDIR": str(tmp_path)},
                 timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--data @" not in result.stdout and "--serve" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_busy_port_says_to_use_port_0():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("demo", "--extender-only", "--no-serve", "--port", str(port), "--metrics-port", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"linstor-scheduler demo: error: port {port} on 127.0.0.1 is in use: choose another with --port, "
        "or --port 0 for any free port")


def busy_port() -> socket.socket:
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    return busy


def test_a_busy_metrics_port_names_the_metrics_port(tmp_path):
    """The extender's side port: the hint names --metrics-port, not --port."""
    from devkit.demo_cluster import demo_snapshot

    snapshot = tmp_path / "snap.yaml"
    snapshot.write_text(yaml.safe_dump(demo_snapshot()))
    with busy_port() as busy:
        port = busy.getsockname()[1]
        result = run("extender", "--snapshot", str(snapshot), "--port", str(free_port()), "--metrics-port", str(port))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"linstor-scheduler extender: error: port {port} on 0.0.0.0 is in use: choose another with --metrics-port, "
        "or --metrics-port 0 for any free port")


def test_an_unreachable_api_server_names_the_settings_that_chose_it():
    """A refused connection to the API server (urllib3's error) says which settings to check."""
    from devkit.linstor_emulator import LinstorEmulator

    emu = LinstorEmulator()
    emu.add_node("w1")
    with emu.serve() as srv:
        dead = f"http://127.0.0.1:{free_port()}"
        result = run("snapshot", "--controllers", srv.url, "--kube-api-url", dead)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("linstor-scheduler snapshot: error: ") and "Connection refused" in last
    assert last.endswith("(the Kubernetes API server did not answer: is --kube-api-url, --kubeconfig / KUBECONFIG "
                         "or --kube-context right?)")


def test_the_demo_refuses_one_port_for_verbs_and_metrics():
    result = run("demo", "--extender-only", "--no-serve", "--port", "8099", "--metrics-port", "8099")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--port (or LINSTOR_SCHEDULER_PORT) and --metrics-port (or LINSTOR_SCHEDULER_METRICS_PORT) must differ" \
        in result.stderr
