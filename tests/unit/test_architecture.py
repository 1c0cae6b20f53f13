"""The package's shape: which way imports run, module size, and the documented settings.

Imports are read with ``ast``, including those inside functions (the package imports
heavy libraries lazily, and its own modules sometimes too).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mlops import config

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "mlops"
VERBS = {
    "ingest",
    "validate",
    "materialize",
    "train",
    "evaluate",
    "promote",
    "score",
    "monitor",
    "label",
    "serve",
    "ui",
}
# The entry points dispatch to the verbs; nothing else may import one.
ENTRY_POINTS = {"mlops.cli", "mlops.__main__", "mlops.airflow.tasks", "mlops.airflow.door"}
MAX_LINES = 450


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """The ``mlops`` modules a file imports, anywhere in it."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from mlops import io` imports the module mlops.io
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        out.update(n for n in names if n in MODULES)
    return out


GRAPH = {name: imports(path) - {name, "mlops"} for name, path in MODULES.items()}


def test_the_graph_sees_the_packages_imports() -> None:
    # given the import graph, then it holds the edges every reader knows are there
    assert "mlops.features" in GRAPH["mlops.train"]
    assert "mlops.config" in GRAPH["mlops.features"]
    assert "mlops.ingest" in GRAPH["mlops.cli"]  # a lazy import inside a function


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n not in ENTRY_POINTS))
def test_no_module_but_an_entry_point_imports_a_verb(name: str) -> None:
    verbs = {f"mlops.{v}" for v in VERBS}
    assert not (GRAPH[name] & verbs) - {name}, (
        f"{name} imports the pipeline verb(s) {sorted(GRAPH[name] & verbs)}; what two stages "
        "share belongs in a layer below them (features, partitions, registry, ...)"
    )


def test_the_import_graph_has_no_cycle() -> None:
    # Tarjan's strongly connected components: any component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_the_size_limit(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines; split it along its seams"


def test_the_readme_documents_every_setting_as_the_code_reads_it() -> None:
    # given the README's settings table
    text = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| (.+?) \|", text, flags=re.M))
    # then it has one row per variable that config.settings() reads, with its default
    assert set(rows) >= set(config.ENV)
    for name, (default, _meaning) in config.ENV.items():
        assert default in rows[name], f"README's row for {name} does not give {default!r}"


def test_settings_read_every_documented_variable(tmp_path: Path) -> None:
    # given every variable set to a distinctive value
    env = {
        "MLOPS_PARAMS": str(tmp_path / "params.yaml"),
        "MLOPS_DATA_ROOT": "elsewhere",
        "MLOPS_FEAST_ONLINE": "redis://127.0.0.1:6379/3",
        "MLOPS_RETRY_ATTEMPTS": "7",
        "MLOPS_RETRY_DELAY_S": "0.25",
        "MLOPS_DVC_LOCK_WAIT_S": "5",
        "MLOPS_DVC_REMOTE": "/shared/remote",
        "MLOPS_ACTOR": "eve",
        "MLOPS_APPROVAL_POKE_SECONDS": "5",
    }
    # when settings are resolved from it
    st = config.settings(env=env)
    # then each lands in its field
    assert st.data_root == (tmp_path / "elsewhere").resolve()
    assert (st.online_store, st.retry_attempts, st.retry_delay_s) == (
        "redis://127.0.0.1:6379/3",
        7,
        0.25,
    )
    assert (st.dvc_lock_wait_s, st.dvc_remote, st.actor) == (5.0, "/shared/remote", "eve")
    assert st.approval_poke_s == 5.0


# The DAG calendar moved to params.yaml's `schedule` group; these variables are read nowhere.
REMOVED_SCHEDULE_VARIABLES = (
    "MLOPS_TRAINING_CRON",
    "MLOPS_SCORING_CRON",
    "MLOPS_SCORING_START",
    "MLOPS_SCORING_END",
)


def test_the_dag_calendar_is_no_longer_set_from_the_environment() -> None:
    # given the settings, the package and the DAG files
    sources = [*MODULES.values(), *sorted((REPO / "dags").glob("*.py"))]
    # then no removed schedule variable is read, documented or mentioned there
    assert set(REMOVED_SCHEDULE_VARIABLES) & set(config.ENV) == set()
    assert not {"training_cron", "scoring_cron", "scoring_start"} & set(
        config.Settings.model_fields
    )
    for path in sources:
        text = path.read_text()
        found = [name for name in REMOVED_SCHEDULE_VARIABLES if name in text]
        assert found == [], f"{path.relative_to(REPO)} still mentions {found}"


def test_a_bad_number_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    env = {"MLOPS_PARAMS": str(tmp_path / "params.yaml"), "MLOPS_RETRY_ATTEMPTS": "four"}
    with pytest.raises(config.ConfigError, match="MLOPS_RETRY_ATTEMPTS='four' is not a number"):
        config.settings(env=env)


def test_no_module_reads_an_mlops_variable_but_config() -> None:
    # MLOPS_WORKER_NAME is read by Airflow's own process through the hostname callable,
    # and MLOPS_FAULT by the fault points of the tests: neither has a Settings to read.
    allowed = {
        "mlops.config": None,
        "mlops.settings": None,
        "mlops.airflow.stack": "MLOPS_WORKER_NAME",
        "mlops.faults": "MLOPS_FAULT",
    }
    for name, path in MODULES.items():
        found = set(re.findall(r"environ(?:\.get)?\(?\[?\s*[\"'](MLOPS_[A-Z_]+)", path.read_text()))
        if name in allowed:
            if allowed[name] is not None:
                assert found <= {allowed[name]}, name
            continue
        assert not found, f"{name} reads {sorted(found)} directly; go through config.settings()"
