"""What docs/install.md, docs/operations.md and deploy/README.md tell an operator, against what
deploy/ renders: every workload in the component table, the rollout check, the policy table and
the ports table; the "leave a component out" list covers every optional file; commands work as
written (a kubectl that reads `deploy ds` restarts a Deployment named "ds"; kubectl's built-in
kustomize has no `edit`)."""

from __future__ import annotations

import fnmatch
import re
import shlex

import yaml

from .test_deploy import DEPLOY, OUR_IMAGE, ROOT, kustomization, network_ports, our_containers, pod_specs, rendered

DOCS = ROOT / "docs"
INSTALL = (DOCS / "install.md").read_text()
OPERATIONS = (DOCS / "operations.md").read_text()
KUBECTL_TYPES = {"deploy", "deployment", "deployments", "ds", "daemonset", "daemonsets"}
SHORT = {"Deployment": "deploy", "DaemonSet": "ds"}


def section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def workloads() -> list[tuple[str, str]]:
    return [(w["kind"], w["metadata"]["name"]) for w, _ in pod_specs(rendered(""))]


def test_every_workload_is_in_the_component_table_and_the_policy_table():
    table = section(INSTALL, "## What each component does once applied")
    policies = section(INSTALL, "## Network policies")
    for kind, name in workloads():
        assert f"{kind} `{name}`" in table, f"{name} is not in install.md's component table"
        assert f"| `{name}`" in policies, f"{name} is not in install.md's network policy table"


def test_the_rollout_checks_name_every_workload():
    """Both the verification and the upgrade wait for every workload, one object per command."""
    loops = re.findall(r"for w in (.*?); do\n\s*kubectl -n linstor-scheduler rollout status \"\$w\"", INSTALL, re.S)
    assert len(loops) == 2, "step 6 and the upgrade each have one loop"
    want = {f"{SHORT[kind]}/{name}" for kind, name in workloads()}
    for loop in loops:
        assert set(loop.replace("\\\n", " ").split()) == want


def rollout_commands(text: str) -> list[list[str]]:
    """The positional arguments of every `kubectl ... rollout restart|status` in ``text``."""
    found = []
    for m in re.finditer(r"rollout (?:restart|status) ([^`\n|;]*)", text):
        words = shlex.split(m.group(1).replace("\\", " "), comments=True)
        found.append([w for w in words if not w.startswith("-")])
    return found


def test_rollout_commands_name_objects_as_kubectl_reads_them():
    """`TYPE NAME` makes the second word a name: `rollout restart deploy ds` restarts a Deployment
    called "ds". Each argument is TYPE/NAME, a loop variable, or a bare type standing alone."""
    texts = {"install.md": INSTALL, "operations.md": OPERATIONS, "README.md": (ROOT / "README.md").read_text(),
             "deploy/README.md": (DEPLOY / "README.md").read_text()}
    seen = 0
    for doc, text in texts.items():
        for args in rollout_commands(text):
            seen += 1
            bare = [a for a in args if a in KUBECTL_TYPES]
            assert not bare or args == bare[:1], f"{doc}: rollout {' '.join(args)}: a type followed by a name"
            assert all("/" in a or a in KUBECTL_TYPES or a.startswith("$") for a in args), (doc, args)
    assert seen >= 3
    assert rollout_commands("kubectl rollout restart deploy ds") == [["deploy", "ds"]]  # what the check rejects


def test_leaving_a_component_out_covers_every_optional_file():
    """The list of files to delete names every manifest of base/ but the namespace, the LINSTOR
    connection and the scheduler itself (which works without the others)."""
    bullet = re.search(r"- \*\*Leaving fencing out\*\*.*?(?=\n- |\n\n)", INSTALL, re.S)
    assert bullet
    patterns = set(re.findall(r"([\w*][\w*.-]*\.yaml)", bullet.group(0))) - {"kustomization.yaml"}
    resources = [r for r in kustomization(DEPLOY / "base")["resources"]
                 if r not in ("namespace.yaml", "linstor-connection.yaml") and not r.startswith("scheduler-")]
    for resource in resources:
        assert any(fnmatch.fnmatch(resource, p) for p in patterns), f"{resource} is in no 'leave it out' entry"
    assert all(any(fnmatch.fnmatch(r, p) for r in resources) for p in patterns), "a pattern that matches nothing"


def test_the_image_step_uses_what_kubectl_kustomize_reads():
    """No `kustomize edit` as a step (kubectl kustomize has none); the `images:` entry shown names
    the image the manifests use."""
    step = section(INSTALL, "## 1. Build and publish the image")
    commands = "\n".join(re.findall(r"```sh\n(.*?)```", step, re.S))
    assert "kustomize edit" not in commands
    [block] = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", step, re.S)]
    [shown] = block["images"]
    [ours] = kustomization(DEPLOY / "base")["images"]
    assert shown["name"] == ours["name"] == OUR_IMAGE and set(shown) == {"name", "newName", "newTag"}


def test_the_ports_table_has_every_metrics_port():
    """operations.md's ports table: a row per component with the port it serves on the pod network."""
    table = section(OPERATIONS, "## Ports")
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and re.match(r"\d+", cells[1]):
            rows.setdefault(cells[0], set()).update(int(p) for p in re.findall(r"\b(\d{4,5})\b", cells[1]))
    for c in our_containers(rendered("")):
        subcommand = c["args"][0]
        [row] = [ports for name, ports in rows.items() if subcommand in re.split(r",\s*", name)]
        assert network_ports(c) <= row, f"{subcommand}: {network_ports(c)} not in operations.md's ports table"
