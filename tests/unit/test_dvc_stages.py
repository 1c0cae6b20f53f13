"""``dvc.yaml`` lists exactly what each stage reads: its module files and its params keys.

``dvc repro`` skips a stage whose listed inputs did not change, so a module or a key the
stage reads but does not list is a stale result waiting to happen, and one it lists but
does not read reruns it for nothing. Both sides are derived here, never typed twice:

- modules: the ``mlops`` modules ``python -m mlops <verb>`` imports, read with ``ast``
  (imports inside functions too, ``if TYPE_CHECKING:`` blocks not): ``mlops/__main__.py``,
  ``mlops/cli.py`` without the other verbs' ``do_*`` functions (the CLI imports each verb
  lazily inside its own), ``mlops/<verb>.py``, and everything they import, transitively;
- params: the attributes each stage reads from ``Params`` when it runs for real, in
  process, on a small real project (three weeks of flights to train on, one to score),
  recorded on the pydantic models themselves so properties such as ``params.gate_metric``
  count through the keys they read.

The other half of what the tests assume of ``dvc.yaml``, that a second ``dvc repro`` does
nothing, is ``test_dvc_repro_runs_the_stages_then_does_nothing`` in
``tests/integration/test_pipeline.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from mlops import cli
from mlops.config import ENV, Params, load_params, settings

REPO = Path(__file__).resolve().parents[2]
DVC_YAML = REPO / "dvc.yaml"
STAGES = cli.STAGES
# Attribute reads that take a whole model (serialising, hashing, comparing, copying).
WHOLE = frozenset(
    {"__dict__", "model_dump", "model_dump_json", "model_copy", "__getstate__", "__iter__"}
)


def dvc_stages() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(DVC_YAML.read_text())["stages"]


# --------------------------------------------------------------------------- modules
def module_file(name: str) -> Path | None:
    """The file of module ``name`` (a package's ``__init__.py``), or None if it is not ours."""
    base = REPO.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node below ``nodes``, except what only a type checker runs."""
    for node in nodes:
        if isinstance(node, ast.If) and _type_checking(node.test):
            yield from _nodes(node.orelse)
            continue
        yield node
        yield from _nodes(ast.iter_child_nodes(node))


def imports(name: str, body: list[ast.stmt]) -> set[str]:
    """The ``mlops`` modules (and their parent packages) that ``body`` of ``name`` imports."""
    path = module_file(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _nodes(body):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from mlops import io` imports mlops and the module mlops.io
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    with_parents = {
        ".".join(parts[:i]) for m in found for parts in [m.split(".")] for i in range(len(parts))
    } | found
    return {m for m in with_parents if m.split(".")[0] == "mlops" and module_file(m)}


def cli_body(verb: str) -> list[ast.stmt]:
    """``mlops/cli.py`` as it runs for ``verb``: all of it but the other verbs' ``do_*``."""
    tree = ast.parse((REPO / "mlops" / "cli.py").read_text())
    return [
        s
        for s in tree.body
        if not (
            isinstance(s, ast.FunctionDef) and s.name.startswith("do_") and s.name != f"do_{verb}"
        )
    ]


def stage_modules(verb: str) -> set[str]:
    """The module files ``python -m mlops <verb>`` imports, relative to the repository."""
    seen: set[str] = set()
    todo = ["mlops.__main__", "mlops.cli", f"mlops.{verb}"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        assert path is not None, f"{name} is imported but has no file"
        body = cli_body(verb) if name == "mlops.cli" else ast.parse(path.read_text()).body
        todo.extend(imports(name, body) - seen)
    return {str(module_file(m).relative_to(REPO)) for m in seen}  # type: ignore[union-attr]


def listed_modules(stage: dict[str, Any]) -> set[str]:
    return {str(d) for d in stage.get("deps", []) if str(d).split("/")[0] == "mlops"}


def test_the_import_reader_sees_lazy_and_package_imports() -> None:
    # given the reader, then it follows imports inside functions and skips the other verbs
    train = ast.parse((REPO / "mlops" / "train.py").read_text()).body
    assert "mlops.registry" in imports("mlops.train", train)
    assert "mlops/ingest.py" in stage_modules("ingest")
    assert "mlops/ingest.py" not in stage_modules("train")
    assert "mlops/__init__.py" in stage_modules("train")
    # do_promote imports governance itself (the manual move); so does promote.py
    assert "mlops/governance.py" in stage_modules("promote")


def test_dvc_yaml_has_the_cli_stages_in_order() -> None:
    stages = dvc_stages()
    assert list(stages) == STAGES, f"dvc.yaml stages {list(stages)} != cli.STAGES {STAGES}"
    for verb, stage in stages.items():
        assert stage["cmd"] == f"python -m mlops {verb}"


@pytest.mark.parametrize("verb", STAGES)
def test_a_stage_lists_exactly_the_modules_it_imports(verb: str) -> None:
    # given the modules `python -m mlops <verb>` imports and the deps dvc.yaml lists
    derived, listed = stage_modules(verb), listed_modules(dvc_stages()[verb])
    # then they are the same files
    missing, extra = sorted(derived - listed), sorted(listed - derived)
    assert not missing and not extra, (
        f"dvc.yaml stage {verb!r}: "
        + (f"add to deps {missing} (imported by `python -m mlops {verb}`); " if missing else "")
        + (f"remove from deps {extra} (not imported by the stage)" if extra else "")
    )


# --------------------------------------------------------------------------- params
def _groups() -> tuple[dict[str, str], dict[type[BaseModel], str]]:
    """Params field -> params.yaml key, and each stage-group model class -> its key."""
    keys = {name: f.alias or name for name, f in Params.model_fields.items()}
    groups: dict[type[BaseModel], str] = {}
    for name, f in Params.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            assert f.annotation not in groups, f"{f.annotation} is two groups; record by instance"
            groups[f.annotation] = keys[name]
    return keys, groups


@contextmanager
def recording(reads: set[str]) -> Iterator[None]:
    """Add to ``reads`` every params.yaml key read from a ``Params`` while inside.

    Scalars of ``Params`` (``model_name``) and fields of a group (``train.partitions``) are
    recorded as read; a group taken whole (``model_dump``, hashing, ``repr``) as the group.
    Properties and methods record what their bodies read.
    """
    keys, groups = _groups()
    fields = {cls: {n: f.alias or n for n, f in cls.model_fields.items()} for cls in groups}

    def on_params(self: Any, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name in keys and not isinstance(value, BaseModel):
            reads.add(keys[name])
        elif name in WHOLE:
            reads.update(keys.values())
        return value

    def on_group(self: Any, name: str) -> Any:
        value = object.__getattribute__(self, name)
        cls = type(self)
        if name in fields[cls]:
            reads.add(f"{groups[cls]}.{fields[cls][name]}")
        elif name in WHOLE:
            reads.add(groups[cls])
        return value

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Params, "__getattribute__", on_params)
        for cls in groups:
            mp.setattr(cls, "__getattribute__", on_group)
        yield


def listed_params(stage: dict[str, Any]) -> set[str]:
    """The params.yaml entries of a dvc stage (``key`` or ``{params.yaml: [key, ...]}``)."""
    out: set[str] = set()
    for entry in stage.get("params", []):
        if isinstance(entry, str):
            out.add(entry)
        else:
            for file, names in entry.items():
                assert file == "params.yaml", f"params from {file}: only params.yaml is read"
                out.update(names or [])
    return out


def covers(entry: str, read: str) -> bool:
    return read == entry or read.startswith(f"{entry}.")


def compare(verb: str, reads: set[str], listed: set[str]) -> str | None:
    """What to add to or remove from a stage's params; None when they agree."""
    missing = {r for r in reads if not any(covers(e, r) for e in listed)}
    # a group read whole covers its keys: suggest 'materialize', not also 'materialize.project'
    missing = sorted(r for r in missing if not any(covers(m, r) for m in missing - {r}))
    unread = sorted(e for e in listed if not any(covers(e, r) for r in reads))
    if not missing and not unread:
        return None
    msg = f"dvc.yaml stage {verb!r} params: "
    if missing:
        msg += f"add {missing} (read by the stage; a group entry such as 'contract' also covers); "
    if unread:
        msg += (
            f"remove {unread} (never read by the stage; if it reads one only on some path, "
            "make this test's run take that path)"
        )
    return msg


def test_the_recorder_sees_fields_properties_and_whole_groups() -> None:
    # given the repository's params
    params = load_params(REPO / "params.yaml")
    reads: set[str] = set()
    # when properties, a scalar and a whole-group dump are read
    with recording(reads):
        _ = params.gate_metric, params.train.holdout, params.model_name
        params.materialize.model_dump()
        _ = params.validate_cfg.build_data_docs, params.contract.feature_names
    # then each is recorded as the keys behind it
    assert reads == {
        "train.metric",
        "train.partitions",
        "train.holdout_partitions",
        "model_name",
        "materialize",
        "validate.build_data_docs",
        "contract.features",
    }
    # and nothing is recorded once outside
    _ = params.score.partitions
    assert "score.partitions" not in reads
    assert compare("x", {"contract.task", "train.seed"}, {"contract", "train.seed"}) is None
    assert "add ['model_name']" in (compare("x", {"model_name"}, set()) or "")
    assert "remove ['score']" in (compare("x", set(), {"score"}) or "")
    assert "add ['materialize'] " in (
        compare("x", {"materialize", "materialize.ttl_days"}, set()) or ""
    )


@pytest.fixture(scope="module")
def stage_reads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """The params keys each stage read, over two pipeline runs on a small real project.

    The second run finds a champion, so the gate also compares against it.
    """
    from tests.conftest import FLIGHTS, FLIGHTS_SMALL, make_project

    params_path = make_project(tmp_path_factory.mktemp("dvc_stages"), FLIGHTS, FLIGHTS_SMALL)
    reads: dict[str, set[str]] = {verb: set() for verb in STAGES}
    with pytest.MonkeyPatch.context() as mp:
        for var in [*ENV, "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"]:
            mp.delenv(var, raising=False)
        mp.chdir(params_path.parent)
        for _ in range(2):
            for verb in STAGES:
                # as `python -m mlops <verb>` (cli.main): parse, load, then dispatch
                args = cli.parser().parse_args(["--params", str(params_path), verb])
                params, st = load_params(args.params), settings(args.params)
                with recording(reads[verb]):
                    cli.COMMANDS[verb](params, st, args)
    return reads


@pytest.mark.integration
@pytest.mark.parametrize("verb", STAGES)
def test_a_stage_lists_exactly_the_params_it_reads(
    verb: str, stage_reads: dict[str, set[str]]
) -> None:
    # given the keys the stage read when it ran and the params dvc.yaml lists
    problem = compare(verb, stage_reads[verb], listed_params(dvc_stages()[verb]))
    # then every read is listed and every listed entry was read
    assert problem is None, f"{problem}\n(read: {sorted(stage_reads[verb])})"
