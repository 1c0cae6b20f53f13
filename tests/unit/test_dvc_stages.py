"""``dvc.yaml`` lists exactly what each stage reads: its module files and its params keys.

``dvc repro`` skips a stage whose listed inputs did not change, so a module or a key the
stage reads but does not list is a stale result waiting to happen, and one it lists but
does not read reruns it for nothing. ``mlops.stages`` derives every project's
``dvc.yaml``; here the repository's own is checked to be its output, and both halves of
what it lists are checked against the code:

- modules: ``mlops.stages.stage_modules`` reads the imports of ``python -m mlops <verb>``
  with ``ast`` (the reader is tested here);
- params: ``mlops.stages.PARAMS`` must be the attributes each stage reads from
  ``Params`` when it runs for real, in process, on a small real project (three weeks of
  flights to train on, one to score), recorded on the pydantic models themselves so
  properties such as ``params.gate_metric`` count through the keys they read.

The other half of what the tests assume of ``dvc.yaml``, that a second ``dvc repro`` does
nothing, is ``test_dvc_repro_runs_the_stages_then_does_nothing`` in
``tests/integration/test_pipeline.py``.
"""

from __future__ import annotations

import ast
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from mlops import cli, models, stages
from mlops.config import ENV, Params, load_params, settings
from mlops.stages import imports, stage_modules

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
    # `mlops init` is no stage: its modules are in no stage's deps
    assert not {"mlops/init.py", "mlops/infer.py"} & set(stage_modules("ingest"))


def test_the_stages_are_the_cli_stages() -> None:
    assert stages.STAGES == STAGES
    assert list(stages.PARAMS) == list(stages.DATA_DEPS) == list(stages.OUTS) == STAGES


def test_dvc_yaml_is_what_mlops_stages_generates() -> None:
    # given the repository's dvc.yaml and the one mlops.stages derives for the repository
    generated = stages.render(REPO)
    # then they are the same, text and all
    assert DVC_YAML.read_text() == generated, (
        "dvc.yaml is stale: regenerate it with "
        "`python -c \"from mlops import stages; stages.write('.')\"`"
    )


@pytest.mark.parametrize(
    "folder", sorted(p.parent.name for p in (REPO / "examples").glob("*/dvc.yaml"))
)
def test_an_examples_dvc_yaml_is_what_mlops_stages_generates(folder: str) -> None:
    # given an example made by `mlops init`, then its dvc.yaml is current too
    project = REPO / "examples" / folder
    assert (project / "dvc.yaml").read_text() == stages.render(project), (
        f"examples/{folder}/dvc.yaml is stale: regenerate it with "
        f"`python -c \"from mlops import stages; stages.write('examples/{folder}')\"`"
    )


def test_dvc_yaml_has_the_cli_stages_in_order() -> None:
    stages_ = dvc_stages()
    assert list(stages_) == STAGES, f"dvc.yaml stages {list(stages_)} != cli.STAGES {STAGES}"
    for verb, stage in stages_.items():
        assert stage["cmd"] == f"python -m mlops {verb}"


@pytest.mark.parametrize("verb", STAGES)
def test_a_stage_lists_exactly_the_modules_it_imports(verb: str) -> None:
    # given the modules `python -m mlops <verb>` imports and the deps dvc.yaml lists
    derived, listed = set(stage_modules(verb)), listed_modules(dvc_stages()[verb])
    # then they are the same files
    missing, extra = sorted(derived - listed), sorted(listed - derived)
    assert not missing and not extra, (
        f"dvc.yaml stage {verb!r}: "
        + (f"add to deps {missing} (imported by `python -m mlops {verb}`); " if missing else "")
        + (f"remove from deps {extra} (not imported by the stage)" if extra else "")
    )


def test_a_project_elsewhere_lists_no_code_and_one_inside_lists_it_relative(
    tmp_path: Path,
) -> None:
    # given a project outside the repository (its own git) and one in a sub-folder of it
    (tmp_path / ".git").mkdir()
    outside = stages.dvc_yaml(tmp_path)["stages"]
    inside = stages.dvc_yaml(REPO / "examples" / "seattle_weather")["stages"]
    # then the first lists data only, the second the package's files from its folder
    assert outside["ingest"].get("deps") is None
    assert outside["validate"]["deps"] == ["data/state/ingest.json"]
    assert "../../mlops/cli.py" in inside["ingest"]["deps"]
    assert (REPO / "examples" / "seattle_weather" / "../../mlops/cli.py").is_file()
    assert outside["train"]["params"] == inside["train"]["params"] == stages.PARAMS["train"]


# --------------------------------------------------------------------------- params
def _groups() -> tuple[dict[str, str], dict[type[BaseModel], str]]:
    """Params field -> params.yaml key, and each stage-group model class -> its key."""
    keys = {name: f.alias or name for name, f in Params.model_fields.items()}
    groups: dict[type[BaseModel], str] = {}
    for name, f in Params.model_fields.items():
        # an optional group (``labels: Labels | None``) is recorded as its model class
        for cls in (f.annotation, *typing.get_args(f.annotation)):
            if isinstance(cls, type) and issubclass(cls, BaseModel):
                assert cls not in groups, f"{cls} is two groups; record by instance"
                groups[cls] = keys[name]
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

    The second run finds a champion, so the gate also compares against it, and has a
    ``labels`` group.
    """
    from tests.conftest import FLIGHTS, FLIGHTS_SMALL, make_project

    params_path = make_project(tmp_path_factory.mktemp("dvc_stages"), FLIGHTS, FLIGHTS_SMALL)
    reads: dict[str, set[str]] = {verb: set() for verb in STAGES}
    with pytest.MonkeyPatch.context() as mp:
        for var in [*ENV, "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"]:
            mp.delenv(var, raising=False)
        mp.chdir(params_path.parent)
        for round_ in range(2):
            if round_:
                # another seed: train registers a new version (the same inputs would give
                # back the champion), so the gate compares it against the champion
                raw = yaml.safe_load(params_path.read_text())
                raw["train"]["seed"] += 1
                # and the optional labels group, which ingest and label then read
                raw["labels"] = {"delay": 1, "withhold": False}
                params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
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
    problem = compare(verb, stage_reads[verb], set(stages.PARAMS[verb]))
    # then every read is listed (in mlops.stages.PARAMS) and every listed entry was read
    assert problem is None, (
        f"{problem} in mlops/stages.py PARAMS\n(read: {sorted(stage_reads[verb])})"
    )
    assert listed_params(dvc_stages()[verb]) == set(stages.PARAMS[verb])


@pytest.mark.parametrize(
    ("folder", "files"),
    [
        (".", ["roc.csv", "precision_recall.csv"]),  # flight delays: a classifier
        ("examples/seattle_weather", ["residuals.csv"]),  # a regressor
    ],
)
def test_evaluate_declares_its_metrics_and_the_curves_of_the_projects_task(
    folder: str, files: list[str]
) -> None:
    doc = yaml.safe_load((REPO / folder / "dvc.yaml").read_text())["stages"]
    assert doc["evaluate"]["metrics"] == [{"data/metrics/evaluate.json": {"cache": False}}]
    assert doc["promote"]["metrics"] == [{"data/metrics/promote.json": {"cache": False}}]
    plots = [next(iter(p)) for p in doc["evaluate"]["plots"]]
    assert plots == [f"data/plots/evaluate/{f}" for f in files]
    for p in doc["evaluate"]["plots"]:
        ((path, spec),) = p.items()
        assert (spec["x"], spec["y"]) == models.PLOTS[
            "regression" if "residuals" in path else "classification"
        ][path.rsplit("/", 1)[1]]
