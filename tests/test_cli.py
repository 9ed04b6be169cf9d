"""The one CLI: --help everywhere, env vars for every flag, explain and snapshot as operators run them."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devkit.demo_cluster import demo_emulator, demo_kube_objects, demo_snapshot
from devkit.kube_standin import KubeStandin
from linstor_scheduler.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["extender", "explain", "snapshot", "demo", "fencing"]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_each_subcommand(command):
    out = subprocess.run([sys.executable, "-m", "linstor_scheduler.cli", command, "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"usage: linstor-scheduler {command}")
    assert "[env LINSTOR_SCHEDULER_LOG_LEVEL]" in " ".join(out.split())


@pytest.mark.parametrize("command", [[], ["fencing"], ["sync-node"]])
def test_version(command):
    out = subprocess.run([sys.executable, "-m", "linstor_scheduler.cli", *command, "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert re.fullmatch(r"linstor-scheduler \d+\.\d+\.\d+\n", out)


def test_every_subcommand_takes_version():
    for name, sub in subparsers().items():
        assert "--version" in sub._option_string_actions, name


def test_every_flag_has_an_env_var_and_is_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for name, sub in subparsers().items():
        for action in sub._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help", "--version") or flag.startswith("--no-"):
                    continue
                assert "[env " in (action.help or ""), f"{name} {flag} has no environment variable"
                assert f"`{flag}`" in doc, f"docs/configuration.md does not document {name} {flag}"


def test_env_var_sets_a_flag(monkeypatch):
    monkeypatch.setenv("LINSTOR_SCHEDULER_POLL_INTERVAL", "2.5")
    monkeypatch.setenv("LS_CONTROLLERS", "linstor://ctl-a,linstor://ctl-b")
    monkeypatch.setenv("LINSTOR_SCHEDULER_NODE_EVENTS", "false")
    args = build_parser().parse_args(["extender"])
    assert args.poll_interval == 2.5 and args.controllers == "linstor://ctl-a,linstor://ctl-b"
    assert args.node_events is False
    assert build_parser().parse_args(["extender", "--poll-interval", "7"]).poll_interval == 7.0  # flag wins


def test_bad_env_value_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("LINSTOR_SCHEDULER_PORT", "eighty")
    parser = build_parser()  # a variable is read when its subcommand runs, not when the parser is built
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["extender"])
    assert exit_.value.code == 2
    assert ("environment variable LINSTOR_SCHEDULER_PORT='eighty' (for --port): expected a whole number"
            in capsys.readouterr().err)


@pytest.fixture(scope="module")
def snapshot_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("snap") / "demo.yaml"
    path.write_text(yaml.safe_dump(demo_snapshot()))
    return path


def test_explain_from_snapshot_table(snapshot_file, capsys):
    assert main(["explain", "--snapshot", str(snapshot_file), "--pod", "default/db-0", "--nodes", "w1,w2,w5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "pod default/db-0"
    assert out[1].split() == ["NODE", "VERDICT", "SCORE", "REASON"]
    assert out[2].split()[:3] == ["w1", "pass", "10"] and "diskful replica on w1 is UpToDate" in out[2]
    assert out[-1].split()[:3] == ["w5", "fail", "0"]


def test_explain_json_and_unknown_pod(snapshot_file, capsys):
    assert main(["explain", "--snapshot", str(snapshot_file), "--pod", "default/logger", "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["node"]: r for r in doc["nodes"]}
    assert rows["w2"]["score"] == 10 and rows["w1"]["verdict"] == "fail"
    assert main(["explain", "--snapshot", str(snapshot_file), "--pod", "default/nope"]) == 1
    assert "pod default/nope not found" in capsys.readouterr().err


def test_snapshot_from_live_doubles_round_trips_through_explain(tmp_path, capsys):
    emu = demo_emulator()
    ks = KubeStandin()
    for obj in demo_kube_objects():
        ks.add(obj)
    with emu.serve() as lsrv, ks.serve() as ksrv:
        assert main(["snapshot", "--controllers", lsrv.url, "--kube-api-url", ksrv.url]) == 0
        snap = capsys.readouterr().out
        assert main(["explain", "--controllers", lsrv.url, "--kube-api-url", ksrv.url, "--pod", "default/db-0",
                     "--output", "json"]) == 0
        live = json.loads(capsys.readouterr().out)
    doc = yaml.safe_load(snap)
    assert {n["name"] for n in doc["linstor"]["nodes"]} == {"w1", "w2", "w3", "w4", "w5", "cp1"}
    kinds = {i["kind"] for i in doc["kubernetes"]["items"]}
    assert kinds == {"Node", "PersistentVolume", "PersistentVolumeClaim", "StorageClass", "Pod"}
    path = tmp_path / "snap.yaml"
    path.write_text(snap)
    assert main(["explain", "--snapshot", str(path), "--pod", "default/db-0", "--output", "json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed == live  # a snapshot replays exactly what the live cluster said


def test_bad_snapshot_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("linstor: {nodes: [{type: SATELLITE}]}\n")
    assert main(["explain", "--snapshot", str(path), "--pod", "default/x"]) == 1
    assert f"{path}: linstor.nodes[0] ?: name: Field required" in capsys.readouterr().err
