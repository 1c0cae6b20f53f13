"""The ZenML peer of the benchmark stays outside the project: pinned in a requirements
file of its own, absent from the lock and pyproject, imported by nothing in the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "bench" / "peers" / "requirements-zenml.txt"
PIPELINE = REPO / "bench" / "zenml_pipeline.py"
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!-]+$")


def requirement_lines() -> list[str]:
    lines = (ln.split("#", 1)[0].strip() for ln in REQUIREMENTS.read_text().splitlines())
    return [ln for ln in lines if ln]


def test_every_requirement_is_pinned():
    lines = requirement_lines()
    assert lines
    loose = [ln for ln in lines if not PIN.match(ln)]
    assert not loose, loose
    names = [re.split(r"[\[=]", ln)[0].lower() for ln in lines]
    assert len(names) == len(set(names)), "a package is listed twice"


def test_zenml_is_pinned_in_the_requirements():
    assert any(re.match(r"^zenml(\[[^\]]*\])?==0\.98\.0$", ln) for ln in requirement_lines())


def test_zenml_is_not_a_project_dependency():
    for name in ("uv.lock", "pyproject.toml"):
        assert "zenml" not in (REPO / name).read_text().lower(), name


def test_the_pipeline_parses():
    tree = ast.parse(PIPELINE.read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"ingest", "validate", "train", "score", "monitor", "flights", "main"} <= names


def test_the_package_never_imports_the_peers():
    for path in (REPO / "mlops").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                assert not mod.startswith(("bench", "zenml")), f"{path}: imports {mod}"
