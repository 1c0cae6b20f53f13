"""Peer frameworks: the bare demo pipeline run by another framework, here ZenML.

``bench/zenml_pipeline.py`` is ``bench/bare_pipeline.py`` as a ZenML 0.98 pipeline on
ZenML's default stack. ZenML is not a dependency of the project: it runs in a venv of its
own (``WORK/peers/zenml-venv``), installed with uv from the fully pinned
``bench/peers/requirements-zenml.txt`` and reused while that file (and the interpreter)
stay the same. The computation's packages there are the project venv's versions (pydantic
and python-dateutil excepted: ZenML caps them; see the file's header), so the results
must equal the bare pipeline's: ``run_zenml`` checks the holdout AUCs, the drift values
and decisions and the prediction sum against it.

Every run is a fresh process (``bench.run.spawn``: wall time from outside, peak RSS) with
the repository on ``PYTHONPATH``. A cold run gets an initialised, empty ZenML store of its
own (``--setup``, untimed; see the pipeline's docstring); the cached pair shares one
store: the first run fills the cache, the second, timed, is the cached re-run. The bare
pipeline runs in the project venv, alternating with the ZenML cold runs, so that both see
the same machine.

    python -m bench.peers [--work /tmp/mlops-bench] [--rounds 3] [--no-bare]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import statistics
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


def _bare(work: Path, i: int) -> dict[str, Any]:
    """``bench/bare_pipeline.py`` in the project venv, and its results in the same form."""
    from bench.run import PY, spawn

    out = work / "peers" / f"bare-{i}"
    shutil.rmtree(out, ignore_errors=True)
    log = work / "logs" / f"peers-bare-{i}.log"
    res = spawn([PY, "-m", "bench.bare_pipeline", str(out)], log)
    text = log.read_text()
    line = next((ln for ln in text.splitlines() if ln.startswith("bare pipeline: ")), None)
    if res["returncode"] != 0 or line is None:
        return {**res, "error": text[-800:]}
    head, _, auc = line.partition("; holdout auc ")
    secs = {}
    for part in head.removeprefix("bare pipeline: ").split(", "):
        name, _, value = part.partition(" ")
        secs[name] = float(value.rstrip("s"))
    if (out / "result.json").is_file():  # the same seconds, unrounded
        secs = {
            k: round(v, 3)
            for k, v in json.loads((out / "result.json").read_text())["seconds"].items()
        }
    drift = json.loads((out / "drift.json").read_text())
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pred = pq.read_table(out / "predictions.parquet", columns=["prediction"])["prediction"]
    total, steps = secs.pop("total"), {k: v for k, v in secs.items() if k in STEPS}
    return {
        **res,
        "total_seconds": total,
        "imports_seconds": secs["imports"],
        "step_seconds": steps,
        "framework_seconds": round(total - sum(steps.values()), 3),
        "holdout_auc": ast.literal_eval(auc),
        "drift_share": drift["share"],
        "drifted": {k: v["drifted"] for k, v in drift["columns"].items()},
        "drift_values": {k: v["value"] for k, v in drift["columns"].items()},
        "prediction_rows": len(pred),
        "prediction_sum": round(float(pc.sum(pred).as_py()), 3),
    }


RESULT_KEYS = ("holdout_auc", "drift_share", "drifted", "drift_values", "prediction_rows")
RESULT_KEYS += ("prediction_sum",)


def _results(res: dict[str, Any]) -> dict[str, Any]:
    return {k: res.get(k) for k in RESULT_KEYS}


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 2) if vals else None


def _ok(res: dict[str, Any]) -> bool:
    return res.get("returncode") == 0 and "holdout_auc" in res


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """Medians, ratios and whether every run computed the same as the bare pipeline.

    ``framework_seconds`` is a run's total less its steps' own computation (imports,
    ZenML's client, store, artifacts and logs; for bare, its imports): unlike the wall
    time it hardly moves with the load of a shared machine, which falls on the
    computation (``train`` above all)."""
    cold = [r for r in res["cold"] if _ok(r)]
    bare = [r for r in res["bare"] if _ok(r)]
    rerun = res["cached"]
    out: dict[str, Any] = {
        "cold_runs": len(cold),
        "bare_runs": len(bare),
        "zenml_cold_wall_median": _median([r["wall_seconds"] for r in cold]),
        "zenml_cold_total_median": _median([r["total_seconds"] for r in cold]),
        "zenml_framework_median": _median([r.get("framework_seconds") for r in cold]),
        "zenml_imports_median": _median([r["imports_seconds"] for r in cold]),
        "zenml_in_steps_median": _median([r.get("in_steps_seconds") for r in cold]),
        "zenml_outside_steps_median": _median([r.get("outside_steps_seconds") for r in cold]),
        "bare_imports_median": _median([r["imports_seconds"] for r in bare]),
        "zenml_setup_median": _median([r["setup"]["wall_seconds"] for r in cold]),
        "zenml_cached_rerun_wall": rerun.get("wall_seconds"),
        "zenml_cached_rerun_total": rerun.get("total_seconds"),
        "bare_wall_median": _median([r["wall_seconds"] for r in bare]),
        "bare_total_median": _median([r["total_seconds"] for r in bare]),
        "bare_framework_median": _median([r["framework_seconds"] for r in bare]),
        "step_seconds": {
            s: {
                "zenml_step": _median([r["step_seconds"].get(s) for r in cold]),
                "zenml_body": _median([r["compute_seconds"].get(s) for r in cold]),
                "bare": _median([r["step_seconds"].get(s) for r in bare]),
            }
            for s in STEPS
        },
    }
    pairs = list(zip(bare, cold, strict=False))
    ratios = [round(z["wall_seconds"] / b["wall_seconds"], 3) for b, z in pairs]
    out["paired_wall_ratios"] = ratios
    out["wall_ratio"] = round(statistics.median(ratios), 3) if ratios else None
    if out["bare_wall_median"] and out["zenml_cold_wall_median"]:
        out["ratio_of_medians"] = round(out["zenml_cold_wall_median"] / out["bare_wall_median"], 3)
    added = [z.get("framework_seconds", 0) - b["framework_seconds"] for b, z in pairs]
    out["zenml_added_seconds_median"] = _median(added)
    runs = [*cold, *([rerun] if _ok(rerun) else [])]
    ref = _results(bare[0]) if bare else (_results(runs[0]) if runs else None)
    out["reference"] = "bare" if bare else "zenml"
    out["identical_results"] = bool(runs) and all(_results(r) == ref for r in [*bare, *runs])
    out["mismatches"] = [
        {k: r.get(k) for k in RESULT_KEYS if r.get(k) != (ref or {}).get(k)}
        for r in [*bare, *runs]
        if _results(r) != ref
    ]
    return out


def run_zenml(work: Path, py: Path, rounds: int, *, bare: bool = True) -> dict[str, Any]:
    """``rounds`` cold ZenML runs (``run_once``), alternating with the bare pipeline
    unless ``bare`` is false, then the cached pair (``run_cached``)."""
    venv = py.parents[1]
    res: dict[str, Any] = {
        "requirements": str(REQUIREMENTS.relative_to(REPO)),
        "venv": json.loads((venv / INSTALLED).read_text()) if (venv / INSTALLED).is_file() else {},
        "cold": [],
        "bare": [],
        "cached": {},
    }
    for i in range(rounds):
        if bare:
            res["bare"].append(_bare(work, i))
            _say(f"bare {i}", res["bare"][-1])
        res["cold"].append(run_once(work, py, f"cold-{i}"))
        _say(f"zenml cold {i}", res["cold"][-1])
    res["cached"] = run_cached(work, py)
    _say("zenml cached (populate)", res["cached"]["populate"])
    _say("zenml cached re-run", res["cached"])
    res["summary"] = summarise(res)
    return res


def _say(what: str, r: dict[str, Any]) -> None:
    if r.get("returncode") != 0:
        print(f"  {what}: FAILED (exit {r.get('returncode')}), {r.get('log')}", flush=True)
        return
    print(
        f"  {what}: wall {r['wall_seconds']}s, in-process total {r.get('total_seconds')}s, "
        f"auc {r.get('holdout_auc')}, load {r.get('load_1m')}",
        flush=True,
    )


def _s(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def markdown_lines(res: dict[str, Any] | None) -> list[str]:
    """The ZenML peer's section of ``results.md``."""
    if not res or "summary" not in res:
        return []
    s, v = res["summary"], res.get("venv") or {}
    lines = [
        "",
        "## Peer: ZenML",
        "",
        f"`bench/bare_pipeline.py` as a ZenML {v.get('zenml_version', '')} pipeline "
        "(`bench/zenml_pipeline.py`): default stack (local orchestrator, local artifact "
        "store, default materializers, sqlite store), in its own venv from "
        f"`{res['requirements']}` ({v.get('packages', '?')} pinned packages; uv install "
        f"{_s(v.get('install_seconds'))} s). Every run a fresh process; a cold run starts "
        "from an initialised, empty store (creating it: "
        f"{_s(s['zenml_setup_median'])} s, untimed), the cached re-run from the store of "
        f"one cached run. {s['cold_runs']} cold runs, alternating with {s['bare_runs']} "
        "bare runs. Same results as bare (AUCs, drift values and decisions, prediction "
        f"sum): {s['identical_results']}. `bench/peers.py`.",
        "",
        "| | bare, median s | ZenML cold, median s | ZenML cached re-run, s | ratio |",
        "|---|---|---|---|---|",
        f"| process wall | {_s(s['bare_wall_median'])} | {_s(s['zenml_cold_wall_median'])} "
        f"| {_s(s['zenml_cached_rerun_wall'])} | {_s(s.get('wall_ratio'))} "
        f"(per round: {s['paired_wall_ratios']}) |",
        f"| in-process total | {_s(s['bare_total_median'])} "
        f"| {_s(s['zenml_cold_total_median'])} | {_s(s['zenml_cached_rerun_total'])} | |",
        f"| total less the steps' computation | {_s(s['bare_framework_median'])} "
        f"| {_s(s['zenml_framework_median'])} | | ZenML adds "
        f"{_s(s['zenml_added_seconds_median'])} s (per round, median) |",
        "",
        "| step | bare, median s | ZenML step run, median s | ZenML step body, median s |",
        "|---|---|---|---|",
    ]
    for name, t in s["step_seconds"].items():
        lines.append(
            f"| {name} | {_s(t['bare'])} | {_s(t['zenml_step'])} | {_s(t['zenml_body'])} |"
        )
    lines.append(
        "\nZenML's part of a cold run (medians): its process's imports "
        f"{_s(s['zenml_imports_median'])} s (bare's: {_s(s['bare_imports_median'])} s), "
        f"the step runs beyond their bodies (artifacts, logs, records) "
        f"{_s(s['zenml_in_steps_median'])} s, the rest of the pipeline call (compilation, "
        f"snapshot, run records) {_s(s['zenml_outside_steps_median'])} s. The computation "
        "(`train` above all) moves with the load of a shared machine; these hardly do."
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mlops-bench"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-bare", action="store_true", help="ZenML runs only")
    a = ap.parse_args(argv)
    work = a.work.resolve()
    t0 = time.perf_counter()
    py = ensure_venv(work)
    print(f"ZenML venv: {py} ({time.perf_counter() - t0:.1f}s)", flush=True)
    res = run_zenml(work, py, a.rounds, bare=not a.no_bare)
    (work / "peers" / "zenml-results.json").write_text(json.dumps(res, indent=1))
    print("\n".join(markdown_lines(res)))
    return 0 if res["summary"]["identical_results"] else 1


if __name__ == "__main__":
    sys.exit(main())
