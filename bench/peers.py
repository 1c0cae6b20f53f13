"""Peer frameworks: the bare demo pipeline run by another framework, here ZenML.

``bench/zenml_pipeline.py`` is ``bench/bare_pipeline.py`` as a ZenML 0.98 pipeline on
ZenML's default stack. ZenML is not a dependency of the project: it runs in a venv of its
own (``WORK/peers/zenml-venv``), installed with uv from the fully pinned
``bench/peers/requirements-zenml.txt`` and reused while that file (and the interpreter)
stay the same. The computation's packages there are the project venv's versions (pydantic
and python-dateutil excepted: ZenML caps them; see the file's header), so the results
must equal the bare pipeline's: ``bench.e2e`` compares each run's holdout AUCs and
drifted features with it.

Every run is a fresh process (``bench.run.spawn``: wall time from outside, peak RSS) with
the repository on ``PYTHONPATH``. A cold run gets an initialised, empty ZenML store of its
own (``--setup``, untimed; see the pipeline's docstring); the cached pair shares one
store: the first run fills the cache, the second, timed, is the cached re-run. The runs
are interleaved with the bare pipeline, ``mlops run`` and ``dvc repro`` by ``bench.e2e``
(``make bench-peers``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "bench" / "peers" / "requirements-zenml.txt"
MODULE = "bench.zenml_pipeline"
STEPS = ("ingest", "validate", "train", "score", "monitor")
MARKER = ".requirements.sha256"
INSTALLED = ".install.json"


def uv() -> str:
    """The project's pinned uv (``.tools/bin/uv``), else the one on PATH."""
    local = REPO / ".tools" / "bin" / "uv"
    if local.is_file():
        return str(local)
    found = shutil.which("uv")
    if not found:
        raise RuntimeError("uv not found: make install (it puts uv in .tools/bin)")
    return found


def pinned_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """The requirement lines of ``path`` (comments and blank lines dropped)."""
    lines = (ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines())
    return [ln for ln in lines if ln]


def _digest() -> str:
    """What the venv is made from: the requirements and the interpreter."""
    h = hashlib.sha256(REQUIREMENTS.read_bytes())
    h.update(f"{sys.version}\n{Path(sys.executable).resolve()}".encode())
    return h.hexdigest()


def ensure_venv(work: Path) -> Path:
    """ZenML's venv under ``work/peers/zenml-venv``, created unless its marker matches the
    requirements; its python. The install time is kept in the venv (``.install.json``)."""
    venv = work / "peers" / "zenml-venv"
    py = venv / "bin" / "python"
    marker = venv / MARKER
    digest = _digest()
    if py.is_file() and marker.is_file() and marker.read_text().strip() == digest:
        return py
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Outside the repository, so that uv never looks at the project's pyproject or lock.
    cwd = venv.parent
    t0 = time.perf_counter()
    subprocess.run(
        [uv(), "venv", "--quiet", "--no-project", "--python", sys.executable, str(venv)],
        check=True,
        cwd=cwd,
    )
    t1 = time.perf_counter()
    cmd = [uv(), "pip", "install", "--quiet", "--python", str(py), "--compile-bytecode"]
    subprocess.run([*cmd, "-r", str(REQUIREMENTS)], check=True, cwd=cwd)
    t2 = time.perf_counter()
    out = subprocess.run(
        [str(py), "-c", "import zenml; print(zenml.__version__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    info = {
        "venv_seconds": round(t1 - t0, 2),
        "install_seconds": round(t2 - t1, 2),
        "zenml_version": out.stdout.strip(),
        "packages": len(pinned_requirements()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (venv / INSTALLED).write_text(json.dumps(info, indent=1))
    marker.write_text(digest)
    return py


def _peer_env(work: Path) -> dict[str, str]:
    """For the spawned ZenML processes: the repository importable, and uv on PATH (ZenML
    records the run's packages with ``uv pip freeze``, else ``pip freeze``, else warns),
    alone in a folder of its own (``.tools/bin`` also holds a python and a pip)."""
    bin_dir = work / "peers" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "uv"
    if not link.exists():
        link.symlink_to(uv())
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH") or os.defpath])
    return {"PYTHONPATH": str(REPO), "PATH": path}


def _zenml(work: Path, py: Path, out: Path, tag: str, *flags: str) -> dict[str, Any]:
    """One ZenML process on the store in ``out``, logged to ``logs/peers-zenml-TAG.log``."""
    from bench.run import spawn_json

    log = work / "logs" / f"peers-zenml-{tag}.log"
    return spawn_json([str(py), "-m", MODULE, str(out), *flags], log, env=_peer_env(work))


def _fresh_store(work: Path, py: Path, out: Path) -> dict[str, Any]:
    """An initialised, empty ZenML store in ``out`` (untimed)."""
    shutil.rmtree(out, ignore_errors=True)
    res = _zenml(work, py, out, f"setup-{out.name}", "--setup")
    if res.get("returncode") != 0:
        raise RuntimeError(f"ZenML store setup failed, see {res.get('log')}")
    return res


def _with_outputs(res: dict[str, Any]) -> dict[str, Any]:
    """Add ``outputs`` (AUC per candidate, drifted features: the form ``bench.e2e``
    compares), ``seconds`` (per step, as the bare script's sections) and
    ``framework_seconds``: the total less the steps' own computation."""
    if "holdout_auc" not in res:
        return res
    res["outputs"] = {"auc": res["holdout_auc"], "drifted": res["drifted_features"]}
    res["outputs"]["share"] = res["drift_share"]
    steps = res["step_seconds"]
    res["seconds"] = {"imports": res["imports_seconds"], **steps, "total": res["total_seconds"]}
    body = res.get("compute_seconds") or {}
    if set(body) == set(STEPS):  # every step ran (none cached)
        res["framework_seconds"] = round(res["total_seconds"] - sum(body.values()), 3)
        # ... of which: in the step runs (inputs, outputs, logs, records), and outside
        # them and the imports (the pipeline's compilation, snapshot and run records)
        res["in_steps_seconds"] = round(sum(steps[k] - body[k] for k in STEPS), 3)
        outside = res["total_seconds"] - res["imports_seconds"] - sum(steps.values())
        res["outside_steps_seconds"] = round(outside, 3)
    return res


def run_once(work: Path, py: Path, tag: str, *flags: str) -> dict[str, Any]:
    """One cold ZenML run in a fresh process on a fresh, initialised store
    (``work/peers/zenml/TAG``; the setup is untimed): ``spawn``'s measures, the
    pipeline's JSON line, ``outputs`` and ``seconds``."""
    out = work / "peers" / "zenml" / tag
    setup = _fresh_store(work, py, out)
    res = _with_outputs(_zenml(work, py, out, tag, *flags))
    res["setup"] = {k: setup.get(k) for k in ("setup_seconds", "wall_seconds")}
    return res


def run_cached(work: Path, py: Path) -> dict[str, Any]:
    """ZenML's cached re-run: a run with caching on fills the cache of a fresh store, a
    second process re-runs it (every step a cache hit); the second run's measures, the
    first under ``populate``."""
    populate = run_once(work, py, "cached", "--cache")
    out = work / "peers" / "zenml" / "cached"
    rerun = _with_outputs(_zenml(work, py, out, "cached-rerun", "--cache"))
    return {**rerun, "populate": populate}
