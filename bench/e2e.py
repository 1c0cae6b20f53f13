"""The demo end to end, side by side in one run: the same work four ways.

- ``bare``: ``bench/bare_pipeline.py``, the computations with no framework;
- ``mlops run``: the framework in one process, on a fresh demo project;
- ``dvc repro``: the same stages cold from ``dvc.yaml``, one process per stage, on a
  fresh demo project;
- ``zenml`` (with ``--peers``): the bare computations as a ZenML pipeline on its default
  stack, in its own virtual environment (``bench/peers.py``, ``bench/zenml_pipeline.py``).

Rounds alternate the four (the order rotates every round), each in a fresh process, so a
load change on the shared machine falls on all of them; the median of the rounds is
reported, with every round kept in ``results.json``. After the rounds: a no-op ``dvc
repro`` (nothing changed) beside ZenML's cached re-run, and the CLI's start-up from cold
processes (``mlops --help`` and ``mlops status`` on the last project). Each stage of
``mlops run`` is set against its section of the bare script, and the outputs are
compared: the holdout ROC AUC of each candidate and the features found drifted.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

from bench.run import ENV, PY, _ratio, project, spawn

STAGE_START = re.compile(r"^Running stage '(\w+)'")
# mlops stage -> the bare script's section doing the same computation
BARE_SECTION = {"ingest": "ingest", "validate": "validate", "train": "train"}
BARE_SECTION |= {"score": "score", "monitor": "monitor"}
CLI_RUNS = 5
ORDER = ("ingest", "validate", "materialize", "train", "evaluate", "promote", "score")
ORDER += ("monitor", "label")


def _in_order(stages: dict[str, Any]) -> list[tuple[str, Any]]:
    """The stages in pipeline order (results.json stores its keys sorted)."""
    return sorted(stages.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 99)


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.median(got), 2) if got else None


def outputs(root: Path) -> dict[str, Any]:
    """What the framework's run decided: holdout AUC per candidate, drifted features."""
    data = root / "data"
    out: dict[str, Any] = {}
    train = data / "state" / "train.json"
    if train.is_file():
        holdout = json.loads(train.read_text()).get("holdout") or {}
        out["auc"] = {k: v.get("roc_auc") for k, v in holdout.items()}
    drift = next(iter(sorted((data / "reports").glob("*/drift.json"))), None)
    if drift is not None:
        d = json.loads(drift.read_text())
        out["drifted"] = sorted(k for k, v in d["columns"].items() if v.get("drifted"))  # features
        out["share"] = d.get("share")
    return out


def _bare(work: Path, r: int) -> dict[str, Any]:
    out = work / "e2e" / f"bare-{r}"
    res = spawn([PY, "-m", "bench.bare_pipeline", str(out)], work / "logs" / f"e2e-bare-{r}.log")
    done = out / "result.json"
    if done.is_file():
        got = json.loads(done.read_text())
        res |= {"seconds": got["seconds"], "outputs": {k: got[k] for k in ("auc", "drifted")}}
    return res


def _mlops(work: Path, r: int) -> dict[str, Any]:
    root = work / "e2e" / f"run-{r}"
    project(root, "demo", work)
    mlops = str(Path(PY).with_name("mlops"))
    cmd = [mlops, "--params", str(root / "params.yaml"), "run"]
    res = spawn(cmd, work / "logs" / f"e2e-run-{r}.log", cwd=root)
    run_json = root / "data" / "state" / "run.json"
    if run_json.is_file():
        res["seconds"] = json.loads(run_json.read_text()).get("seconds")
    return {**res, "outputs": outputs(root), "root": str(root)}


def _repro(work: Path, r: int) -> dict[str, Any]:
    from mlops import stages

    root = work / "e2e" / f"repro-{r}"
    project(root, "demo", work)
    stages.write(root)
    log = work / "logs" / f"e2e-repro-{r}.log"
    return {**timed_repro(root, log), "outputs": outputs(root), "root": str(root)}


def timed_repro(root: Path, log: Path) -> dict[str, Any]:
    """``dvc repro`` in ``root``; each stage's seconds from its "Running stage" line to
    the next one (its process, its imports and DVC's own bookkeeping of it)."""
    import os
    import subprocess
    import time

    dvc = str(Path(PY).with_name("dvc"))
    env = {**os.environ, **ENV, "PATH": f"{Path(PY).parent}:{os.environ.get('PATH', '')}"}
    t0 = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [dvc, "repro"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            m = STAGE_START.match(line)
            if m:
                marks.append((m.group(1), time.perf_counter()))
        code = proc.wait()
    end = time.perf_counter()
    ends = [t for _, t in marks[1:]] + [end] if marks else []  # no stage ran: no marks
    seconds = {v: round(e - t, 2) for (v, t), e in zip(marks, ends, strict=True)}
    return {
        "wall_seconds": round(end - t0, 2),
        "returncode": code,
        "log": str(log),
        "seconds": seconds,
        "load_1m": [round(os.getloadavg()[0], 2)],
    }


def _zenml(work: Path, r: int, py: Path) -> dict[str, Any]:
    from bench.peers import run_once

    return run_once(work, py, f"cold-{r}")


def _cli(root: Path, work: Path) -> dict[str, Any]:
    """Cold start-up of the CLI: ``mlops --help``, and ``mlops status`` on a project."""
    mlops = str(Path(PY).with_name("mlops"))
    out: dict[str, Any] = {}
    status = [mlops, "--params", str(root / "params.yaml"), "status"]
    cmds = {"help": [mlops, "--help"], "status": status}
    for name, cmd in cmds.items():
        logs = [work / "logs" / f"e2e-cli-{name}-{i}.log" for i in range(CLI_RUNS)]
        runs = [spawn(cmd, log, cwd=root) for log in logs]
        out[name] = {
            "median_seconds": _median([x["wall_seconds"] for x in runs]),
            "seconds": [x["wall_seconds"] for x in runs],
            "returncodes": [x["returncode"] for x in runs],
        }
    return out


def run(work: Path, rounds: int = 3, peers: bool = False) -> dict[str, Any]:
    """``rounds`` interleaved rounds of every way, then the no-op runs and the CLI."""
    zen_py = None
    if peers:
        from bench.peers import ensure_venv

        zen_py = ensure_venv(work)
    ways: dict[str, Any] = {"bare": _bare, "mlops_run": _mlops, "dvc_repro": _repro}
    if zen_py is not None:
        ways["zenml"] = lambda w, r: _zenml(w, r, zen_py)
    names = list(ways)
    got: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            res = ways[name](work, r)
            got[name].append(res)
            ok = "" if res.get("returncode") == 0 else f" FAILED (see {res.get('log')})"
            print(f"  round {r + 1}: {name} {res.get('wall_seconds')}s{ok}", flush=True)
    res: dict[str, Any] = {"rounds": rounds, "runs": got}
    # After the rounds nothing may lose them: each later measure records its own error.
    last = Path(got["dvc_repro"][-1]["root"])
    after = {"dvc_repro_noop": lambda: timed_repro(last, work / "logs" / "e2e-repro-noop.log")}
    if zen_py is not None:
        from bench.peers import run_cached

        after["zenml_cached"] = lambda: run_cached(work, zen_py)
    after["cli"] = lambda: _cli(Path(got["mlops_run"][-1]["root"]), work)
    for key, measure in after.items():
        try:
            res[key] = measure()
        except Exception as exc:  # noqa: BLE001 - reported in results.json, rounds kept
            res[key] = {"error": repr(exc)}
    return summarise(res)


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """Medians, ratios to bare, per-stage ratios and whether the outputs agree."""
    runs = res["runs"]
    med = {n: _median([x.get("wall_seconds") for x in rs]) for n, rs in runs.items()}
    ok = {n: all(x.get("returncode") == 0 for x in rs) for n, rs in runs.items()}
    bare = med.get("bare")
    res["median_seconds"], res["ok"] = med, ok
    res["ratio_to_bare"] = {n: _ratio(v, bare) for n, v in med.items()}
    res["repro_to_run"] = _ratio(med.get("dvc_repro"), med.get("mlops_run"))
    stages: dict[str, dict[str, Any]] = {}
    for verb in (runs["mlops_run"][0].get("seconds") or {}) if runs["mlops_run"] else ():
        mine = _median([(x.get("seconds") or {}).get(verb) for x in runs["mlops_run"]])
        cold = _median([(x.get("seconds") or {}).get(verb) for x in runs["dvc_repro"]])
        section = BARE_SECTION.get(verb)
        base = _median([(x.get("seconds") or {}).get(section) for x in runs["bare"]])
        stages[verb] = {"bare": base if section else None, "mlops_run": mine, "dvc_repro": cold}
        stages[verb]["ratio"] = _ratio(mine, base) if section else None
    res["stages"] = stages
    ref = runs["bare"][0].get("outputs") if runs["bare"] else None
    agree = {}
    for n, rs in runs.items():
        got = [x.get("outputs") for x in rs]
        agree[n] = bool(ref) and all(_same(ref, g) for g in got)
    res["outputs_agree"], res["outputs"] = agree, ref
    return res


def _same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Same drifted features, and each candidate's holdout AUC equal to 6 decimals."""
    if not a or not b or a.get("drifted") != b.get("drifted"):
        return False
    auc_a, auc_b = a.get("auc") or {}, b.get("auc") or {}
    return set(auc_a) == set(auc_b) and all(round(auc_a[k], 6) == round(auc_b[k], 6) for k in auc_a)


def rows(res: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The target rows of results.md."""
    if not res or "median_seconds" not in res:
        return []
    med, q, agree = res["median_seconds"], res["ratio_to_bare"], res["outputs_agree"]
    n = res["rounds"]
    fails = [k for k, v in res["ok"].items() if not v]
    failed = f"; FAILED: {fails}" if fails else ""
    same = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in agree.items())
    base = f"median of {n} interleaved rounds; outputs equal to bare's: {same}{failed}"
    out: list[tuple[Any, ...]] = []
    run, zen = q.get("mlops_run"), q.get("zenml")
    note = f"bare {med.get('bare')}s, `mlops run` {med.get('mlops_run')}s ({run}x)"
    if zen is not None:
        note += f", ZenML {med.get('zenml')}s ({zen}x)"
        target = "demo `mlops run` / bare below ZenML's / bare (same run)"
        met = run is not None and run < zen and all(agree.values()) and not fails
        out.append((target, "demo", run, met, f"{note}; {base}"))
    else:
        out.append(
            (
                "demo `mlops run` / bare (no peer run; `make bench-peers`)",
                "demo",
                run,
                None,
                f"{note}; {base}",
            )
        )
    rr = res.get("repro_to_run")
    out.append(
        (
            "cold `dvc repro` <= 1.3x `mlops run`",
            "demo",
            rr,
            rr is not None and rr <= 1.3,
            f"dvc repro {med.get('dvc_repro')}s ({q.get('dvc_repro')}x bare) vs mlops run "
            f"{med.get('mlops_run')}s; {base}",
        )
    )
    noop = (res.get("dvc_repro_noop") or {}).get("wall_seconds")
    cached = (res.get("zenml_cached") or {}).get("wall_seconds")
    note = f"no-op `dvc repro` {noop}s"
    note += f"; ZenML's cached re-run {cached}s" if cached is not None else ""
    out.append(
        ("re-run with nothing changed (seconds; no target; reported)", "demo", noop, None, note)
    )
    cli = res.get("cli") or {}
    for name, limit in (("help", 0.5), ("status", 1.5)):
        c = cli.get(name) or {}
        v = c.get("median_seconds")
        codes = set(c.get("returncodes") or [])
        out.append(
            (
                f"`mlops {'--help' if name == 'help' else name}` cold < {limit} s",
                "demo",
                v,
                v is not None and v < limit and codes == {0},
                f"median of {len(c.get('seconds') or [])}: {c.get('seconds')}; exit codes {codes}",
            )
        )
    for verb, s in _in_order(res.get("stages", {})):
        if s["ratio"] is None:
            continue
        out.append(
            (
                f"stage {verb}: `mlops run` / bare (no target; reported)",
                "demo",
                s["ratio"],
                None,
                f"bare {s['bare']}s, mlops run {s['mlops_run']}s, dvc repro {s['dvc_repro']}s",
            )
        )
    return out


def markdown_lines(res: dict[str, Any] | None) -> list[str]:
    """The demo section of results.md: each way's seconds and every stage's ratio."""
    if not res or "median_seconds" not in res:
        return []
    med, q = res["median_seconds"], res["ratio_to_bare"]
    lines = [
        "",
        "## Demo end to end",
        "",
        "| way | median seconds | / bare | rounds (s) |",
        "|---|---|---|---|",
    ]
    for n, rs in res["runs"].items():
        each = ", ".join(str(x.get("wall_seconds")) for x in rs)
        lines.append(f"| {n} | {med.get(n)} | {q.get(n)} | {each} |")
    lines += [
        "",
        "| stage | bare (s) | `mlops run` (s) | / bare | `dvc repro` (s) |",
        "|---|---|---|---|---|",
    ]
    for verb, s in _in_order(res.get("stages", {})):
        lines.append(
            f"| {verb} | {s['bare'] if s['bare'] is not None else '-'} | {s['mlops_run']} | "
            f"{s['ratio'] if s['ratio'] is not None else '-'} | {s['dvc_repro']} |"
        )
    return lines
