"""A stage killed with SIGKILL at a random moment ends, after one rerun, where an
uninterrupted run ends: the same registry, lineage and files.

Unlike ``test_kill`` (fault points at chosen steps), the kill comes from outside, after a
random delay within the stage's measured duration, as an out-of-memory killer or a lost
worker would deliver it. For each stage a reference is made once: the project folder is
saved (the MLflow sqlite store and artifact paths are absolute, so states are restored in
place, never run from a copy elsewhere), the stage runs uninterrupted, and the normalised
state is kept. Each seed then restores the saved folder, starts the stage as a child
process, kills its process group after ``fraction * duration`` seconds, reruns it once to
completion and compares. The stages run a copy of the package made when the module starts,
so an edit of the tree meanwhile cannot make a difference (a version's fingerprint hashes
the code).

Seeds: ``MLOPS_RANDOM_KILL_SEEDS`` is a count (``5``: seeds 0-4) or a list (``3,7``);
the default is 2 seeds per stage. A failure names the seed and how to re-run it alone.
``MLOPS_RANDOM_KILL_SELF_CHECK=1`` also reruns each stage uninterrupted and checks that it
compares equal, which shows the comparison ignores only what differs between two runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.reliability.conftest import SCORED, TRAIN, Project

pytestmark = pytest.mark.integration
AREA = "Killed at a random moment"
PARAMS = "params_random_kill.yaml"
VERBS = ["train", "promote", "score", "monitor"]
ENV_SEEDS = "MLOPS_RANDOM_KILL_SEEDS"
ENV_SELF_CHECK = "MLOPS_RANDOM_KILL_SELF_CHECK"


def _seeds() -> list[int]:
    raw = os.environ.get(ENV_SEEDS, "2").strip()
    if "," in raw:
        return [int(s) for s in raw.split(",") if s.strip()]
    return list(range(int(raw)))


@dataclass(frozen=True)
class Kill:
    id: str
    case: str
    behaviour: str


SAME = (
    "after one rerun the registry (versions, aliases, gate and approval tags), audit history, "
    "MLflow runs (none left RUNNING), lineage and data files are an uninterrupted run's"
)
KILLS = [
    Kill(
        "train",
        "`train` killed (SIGKILL) at a random moment, several seeds",
        f"{SAME}; one version",
    ),
    Kill(
        "promote",
        "the promotion gate (`promote`) killed (SIGKILL) at a random moment, several seeds",
        f"{SAME}; the alias move and its audit event both happen, once",
    ),
    Kill(
        "score",
        "`score` killed (SIGKILL) at a random moment, several seeds",
        f"{SAME}; the predictions are byte-identical",
    ),
    Kill(
        "monitor",
        "`monitor` killed (SIGKILL) at a random moment, several seeds",
        f"{SAME}; one monitor run for the partition",
    ),
]


# --------------------------------------------------------------------------- folders
def _save(root: Path, to: Path) -> Path:
    shutil.copytree(root, to, symlinks=True)
    return to


def _restore(saved: Path, root: Path) -> None:
    """Put ``saved`` back at ``root`` (same path), and drop pooled MLflow connections."""
    for p in root.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    shutil.copytree(saved, root, symlinks=True, dirs_exist_ok=True)
    _reconnect()


def _reconnect() -> None:
    """Close this process's connections to the MLflow and Feast stores, whose files were replaced.

    MLflow keeps one SQLAlchemy engine per URI for the process (a private class map); a
    pooled sqlite connection may hold pages cached from the replaced file.
    """
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as Models
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as Runs

    for cls in (Models, Runs):
        for engine in getattr(cls, "_engine_map", {}).values():
            engine.dispose()
    # Feast stores are cached per process too, their SQLite files opened on the old inodes
    from mlops import features

    features._STORES.clear()


# --------------------------------------------------------------------------- the state
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?")
LOGGED_MODEL = re.compile(r"m-[0-9a-f]{32}")
VOLATILE = re.compile(r"(^|[._])(at|since|seconds|total|duration|elapsed|time|timestamp)$")
VOLATILE_TAGS = re.compile(r"(_since|\.at|run_id|code_revision)$")


def _norm(obj: Any, runs: dict[str, str]) -> Any:
    """``obj`` without what differs between two identical runs: times, run and model ids."""
    if isinstance(obj, dict):
        return {k: _norm(v, runs) for k, v in obj.items() if not VOLATILE.search(str(k).lower())}
    if isinstance(obj, list | tuple):
        return [_norm(v, runs) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.10g}")  # drift statistics differ in the last bits between runs
    if isinstance(obj, str):
        text = ISO_TIME.sub("<time>", LOGGED_MODEL.sub("<model>", obj))
        for run_id, name in runs.items():
            if run_id in text:
                text = text.replace(run_id, f"<run {name}>")
        return text
    return obj


def _without_killed(obj: Any) -> Any:
    """``obj`` without the runs it lists as KILLED: a killed run may be kept, flagged."""
    if isinstance(obj, dict):
        return {k: _without_killed(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [
            _without_killed(v)
            for v in obj
            if not (isinstance(v, dict) and v.get("status") == "KILLED")
        ]
    return obj


def _renamed(text: str, ids: dict[str, str]) -> str:
    for sid, name in ids.items():
        text = text.replace(sid, name)
    return text


def _runs(client: Any) -> list[Any]:
    exps = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(exps, max_results=5000)) if exps else []


def _files(data_root: Path, runs: dict[str, str]) -> dict[str, Any]:
    """Every file under the data root: JSON normalised, HTML present, others by digest."""
    out: dict[str, Any] = {}
    # Timeline snapshots are named by a fresh id each time one is written: name them by
    # the partition and kind their index says they hold.
    ids: dict[str, str] = {}
    for index in data_root.glob("timeline/*/mlops-index.json"):
        with contextlib.suppress(ValueError, AttributeError):
            for sid, held in json.loads(index.read_text()).items():
                if isinstance(held, list):
                    ids[sid] = "snapshot:" + "/".join(map(str, held))
    for p in sorted(data_root.rglob("*")):
        rel = Path(_renamed(str(p.relative_to(data_root)), ids))
        if not p.is_file() or rel.parts[:2] in {("state", "logs"), ("state", "locks")}:
            continue
        if p.suffix == ".lock" or rel.parts[0] == ".dvc":
            continue
        if rel.parts[0] == "timeline" and rel.parts[2:3] == ("snapshots",):
            out[str(rel)] = "snapshot"  # Evidently's widgets hold random ids, as HTML does
        elif p.suffix == ".json":
            try:
                out[str(rel)] = _norm(json.loads(_renamed(p.read_text(), ids)), runs)
            except ValueError:
                out[str(rel)] = "damaged JSON"
        elif p.suffix == ".html":
            out[str(rel)] = "html"  # Evidently's reports hold random element ids
        else:
            out[str(rel)] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


def state(proj: Project) -> dict[str, Any]:
    """What must be the same after a killed-and-rerun stage as after an uninterrupted one."""
    from mlops import audit, lineage
    from mlops.registry import connect

    st, model = proj.st, proj.params.model_name
    reg = connect(st)
    client = reg.client
    all_runs = _runs(client)
    names = {r.info.run_id: r.info.run_name or "" for r in all_runs}
    aliases: dict[str, list[str]] = {}
    for alias, v in client.get_registered_model(model).aliases.items():
        aliases.setdefault(str(v), []).append(alias)
    versions = {
        str(mv.version): {
            "status": str(mv.status),
            "aliases": sorted(aliases.get(str(mv.version), [])),
            "tags": {k: v for k, v in mv.tags.items() if not VOLATILE_TAGS.search(k)},
        }
        for mv in client.search_model_versions(f"name='{model}'")
    }
    keep = ("action", "alias", "from_version", "to_version", "version", "override", "state")
    history = [{k: e.get(k) for k in keep} for e in audit.history(reg, model)]
    # a run its stage was killed in may be kept, closed as KILLED; no other may be extra
    runs = sorted(
        (r.data.tags.get("mlops.stage", "-"), r.info.run_name or "", r.info.status)
        for r in all_runs
        if r.info.status != "KILLED"
    )
    return _norm(
        {
            "versions": versions,
            "history": history,
            "runs": runs,
            "lineage": {p: _without_killed(lineage.trace(st, p)) for p in (TRAIN[0], SCORED)},
            "files": _files(st.data_root, names),
        },
        names,
    )


def differences(want: Any, got: Any, where: str = "", limit: int = 12) -> list[str]:
    """Where ``got`` differs from ``want``, as short lines (at most ``limit``)."""
    out: list[str] = []

    def walk(a: Any, b: Any, at: str) -> None:
        if len(out) >= limit or a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                if k not in b:
                    out.append(f"{at}/{k}: missing (uninterrupted: {str(a[k])[:160]})")
                elif k not in a:
                    out.append(f"{at}/{k}: extra ({str(b[k])[:160]})")
                else:
                    walk(a[k], b[k], f"{at}/{k}")
            return
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{at}[{i}]")
            return
        out.append(f"{at}: uninterrupted {str(a)[:200]} | killed+rerun {str(b)[:200]}")

    walk(want, got, where)
    return out[:limit]


# --------------------------------------------------------------------------- running
CODE: list[Path] = []  # the frozen copy of the package the stages run (set by the fixture)


def _freeze_code(to: Path) -> Path:
    """A copy of the ``mlops`` package for the stages to run: the same code for the
    reference, the killed run and the rerun, whatever is edited in the tree meanwhile (a
    version's fingerprint hashes the code, so an edit between two runs is a new version)."""
    shutil.copytree(REPO / "mlops", to / "mlops", ignore=shutil.ignore_patterns("__pycache__"))
    CODE[:] = [to]
    return to


def _command(proj: Project, *args: str) -> tuple[list[str], dict[str, str], Path]:
    code = CODE[0] if CODE else REPO
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("MLOPS_FAULT", None)
    cmd = [sys.executable, "-m", "mlops", "--params", str(proj.root / PARAMS), *args]
    return cmd, env, code


def run(proj: Project, verb: str) -> float:
    """Run ``verb`` uninterrupted; return how long it took."""
    cmd, env, cwd = _command(proj, verb)
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert res.returncode == 0, f"{verb}: {res.stderr[-3000:]}"
    return time.monotonic() - t0


def kill_after(proj: Project, verb: str, delay: float) -> int | None:
    """Start ``verb``, SIGKILL its process group after ``delay`` s; its exit code if it ended."""
    cmd, env, cwd = _command(proj, verb)
    child = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        return child.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it ended just now
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return None


def _fast(proj: Project) -> None:
    """One small candidate, and a gate any candidate above the floor passes (so the
    promotion moves the champion and scoring and monitoring use the new model)."""
    raw = yaml.safe_load(proj.params_path.read_text())
    raw["train"]["candidates"] = [
        {"name": "xgb", "kind": "xgboost", "params": {"n_estimators": 20, "max_depth": 3}}
    ]
    raw["promote"]["min_improvement"] = -1
    (proj.root / PARAMS).write_text(yaml.safe_dump(raw, sort_keys=False))


@dataclass(frozen=True)
class Reference:
    base: Path
    seconds: float
    state: dict[str, Any]


@pytest.fixture(scope="module")
def references(
    proj: Project, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Reference]]:
    """Each stage's starting folder, duration and end state uninterrupted, in pipeline order
    (train, evaluate, promote, score, monitor); the project is put back afterwards."""
    keep = tmp_path_factory.mktemp("random_kill")
    original = _save(proj.root, keep / "original")
    _freeze_code(keep / "code")
    try:
        _fast(proj)
        refs: dict[str, Reference] = {}
        for verb in VERBS:
            if verb == "promote":
                run(proj, "evaluate")  # the gate's input, part of its starting state
            base = _save(proj.root, keep / verb)
            seconds = run(proj, verb)
            refs[verb] = Reference(base, seconds, state(proj))
        yield refs
    finally:
        CODE.clear()
        _restore(original, proj.root)


@pytest.mark.parametrize(
    ("verb", "seed"),
    [(v, s) for v in VERBS for s in _seeds()],
    ids=[f"{v}-seed{s}" for v in VERBS for s in _seeds()],
)
def test_killed_at_a_random_moment_then_rerun(
    proj: Project, references: dict[str, Reference], verb: str, seed: int
) -> None:
    """Cases: KILLS"""
    ref = references[verb]
    fraction = random.Random(f"{verb}:{seed}").random()
    delay = fraction * ref.seconds
    _restore(ref.base, proj.root)

    # when the stage is killed after a random delay, then rerun once
    code = kill_after(proj, verb, delay)
    cmd, env, cwd = _command(proj, verb)
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)

    # then it ends where the uninterrupted run ended
    how = (
        f"{verb} killed after {delay:.2f}s of {ref.seconds:.1f}s (seed {seed}, fraction "
        f"{fraction:.3f}{'; it had already exited ' + str(code) if code is not None else ''}); "
        f"re-run alone: {ENV_SEEDS}={seed} pytest {Path(__file__).relative_to(REPO)} "
        f"-k '{verb}-seed{seed}'"
    )
    assert rerun.returncode == 0, f"{how}\nthe rerun failed: {rerun.stderr[-3000:]}"
    diff = differences(ref.state, state(proj))
    assert not diff, how + "\n" + "\n".join(diff)


@pytest.mark.skipif(
    os.environ.get(ENV_SELF_CHECK) != "1", reason=f"{ENV_SELF_CHECK}=1 runs the self-check"
)
@pytest.mark.parametrize("verb", VERBS)
def test_an_uninterrupted_rerun_compares_equal(
    proj: Project, references: dict[str, Reference], verb: str
) -> None:
    """Self-check: the same stage run again uninterrupted from the same folder gives the same
    normalised state (so a difference after a kill is the kill's, not noise)."""
    ref = references[verb]
    _restore(ref.base, proj.root)
    run(proj, verb)
    assert not differences(ref.state, state(proj))
