"""The cost of pushing stage metrics: stage runs with and without a Pushgateway, and the push.

    python -m bench.run --stages observe

A project of its own under ``<work>/observe``: the bench's real 2013 data scaled to
``ROWS`` rows per side (``project`` in ``bench/run.py``), made ready as a user
would (``mlops materialize``, ``train``, ``evaluate``, ``promote``, ``score``) and kept
for the next run. A real Pushgateway (Debian's ``prometheus-pushgateway``) runs on a free
loopback port while the stage is measured, and is stopped after.

- ``python -m mlops validate|monitor|score --partitions 2013-07``, each in a fresh process
  as a user runs it, with ``MLOPS_PUSHGATEWAY_URL`` pointing at the gateway and without.
  One untimed run of each first, then ``REPEAT`` rounds, interleaved (the order within a
  pair alternates); every run's wall time and CPU time (user + system) are kept. The
  machine may be shared, so the ratio is per round (two adjacent runs) and its median is
  the result; the ratio of the medians and the CPU-time ratio are kept too.
- The same stages once with the gateway down (a loopback port nobody listens on): each
  must exit 0 with the warning and keep its group; the next run with the gateway up
  (``score``) must push what was kept and leave nothing pending.
- ``observe.stage`` around a body that records monitor's gauges for ``FEATURES`` features,
  in one process (``python -m bench.observe push ARGS``), ``SAMPLES`` times per mode,
  interleaved: no gateway configured, gateway up, gateway down (connection refused: the
  warning and the pending write). Milliseconds, and as a share of each stage's run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

URL_ENV = "MLOPS_PUSHGATEWAY_URL"  # mlops.observe.ENV, not imported: this side stays light
ROWS = 100_000  # per side: the training window and the scored month
PARTITION = "2013-07"
TRAIN = [f"2013-{m:02d}" for m in range(1, 7)]
VERBS = ("validate", "monitor", "score")
REPEAT = 5  # rounds of with / without per stage
FEATURES = 20  # drift features recorded by the in-process body (the demo's monitor has 14)
SAMPLES = 200  # in-process pushes per mode, after WARMUP
WARMUP = 10
TARGET = 1.02
# Port 1 on loopback: nobody listens (connection refused), and no other run's free port
# can be it, so nothing pushed "down" can reach another gateway.
DOWN = "http://127.0.0.1:1"
WARNING = "did not take the push"  # mlops.observe's warning when the gateway is down
GATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")


# --------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def pushgateway(log: Path) -> Iterator[str]:
    """A Pushgateway on a free loopback port, ready; stopped on exit."""
    if GATEWAY is None:
        raise RuntimeError("prometheus-pushgateway is not installed")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        # Debian's default persists to /var/lib/prometheus, shared by every gateway started
        # without the flag: an empty file name keeps this one's series in memory only.
        cmd = [GATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the Pushgateway did not start; see {log}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def gateway_env(url: str | None) -> Iterator[None]:
    """``MLOPS_PUSHGATEWAY_URL`` set to ``url`` (unset for ``None``) for the processes spawned."""
    old = os.environ.pop(URL_ENV, None)
    if url:
        os.environ[URL_ENV] = url
    try:
        yield
    finally:
        os.environ.pop(URL_ENV, None)
        if old is not None:
            os.environ[URL_ENV] = old


def cli(root: Path, *args: str) -> list[str]:
    from bench.run import PY

    return [PY, "-m", "mlops", "--params", str(root / "params.yaml"), *args]


def series(url: str) -> dict[str, int]:
    """``mlops_`` series the gateway holds, by stage label."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r'mlops_\w+\{.*\bstage="([^"]+)"', line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


def pending(root: Path) -> list[str]:
    """The gateway paths of the groups kept for the next push."""
    folder = root / "data" / "state" / "metrics" / "pending"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [json.loads(f.read_text()).get("path", f.name) for f in files]


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _ms_stats(values: list[float]) -> dict[str, Any]:
    s = sorted(values)
    at = (lambda q: round(s[min(len(s) - 1, int(q * len(s)))], 3)) if s else (lambda q: None)
    mean = round(statistics.fmean(s), 3) if s else None
    return {"median_ms": at(0.5), "p10_ms": at(0.1), "p90_ms": at(0.9), "mean_ms": mean}


# --------------------------------------------------------------------------- project
def prepare(work: Path) -> tuple[Path, dict[str, Any]]:
    """The scaled project with a champion and the scored partition (made once, then kept)."""
    from bench.run import prepare_base, project, spawn

    root = work / "observe"
    marker = root / "observe.json"
    spec = {"rows": ROWS, "seed": 2013, "jitter": 0.02, "partition": PARTITION}
    if marker.is_file() and json.loads(marker.read_text()).get("spec") == spec:
        return root, json.loads(marker.read_text())
    base = prepare_base(work)
    print(f"  observe: a project of {ROWS:,} rows per side, trained and scored", flush=True)
    t0 = time.perf_counter()
    made = project(root, str(ROWS), work, base)
    steps = [
        ("materialize", "--partitions", *TRAIN, PARTITION),
        ("train",),
        ("evaluate",),
        ("promote",),
        ("score", "--partitions", PARTITION),
    ]
    with gateway_env(None):
        for step in steps:
            res = spawn(cli(root, *step), work / "logs" / f"observe-prepare-{step[0]}.log", root)
            if res["returncode"] != 0:
                raise SystemExit(f"observe: `mlops {step[0]}` failed; see {res['log']}")
    info = {"spec": spec, **made, "prepare_seconds": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(info))
    return root, info


def _stage_seconds(log: Path, verb: str) -> float | None:
    """The stage's own time as it reports it (``<verb>: ... in 12.3s``)."""
    m = re.findall(rf"^{verb}: .* in ([0-9.]+)s\s*$", log.read_text(), re.M)
    return float(m[-1]) if m else None


def _spawn(cmd: list[str], log: Path, cwd: Path) -> dict[str, Any]:
    """Run ``cmd``: wall time and its CPU time (user + system, from wait4), exit code, load."""
    from bench.run import ENV

    log.parent.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    with log.open("w") as fh:
        t0 = time.perf_counter()
        env = {**os.environ, **ENV}
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    return {
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "returncode": os.waitstatus_to_exitcode(status),
        "log": str(log),
        # The machine may be shared: the load around a run says how far to trust it.
        "load_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def one_run(root: Path, work: Path, verb: str, url: str | None, tag: str) -> dict[str, Any]:
    log = work / "logs" / "observe" / f"{verb}-{tag}.log"
    with gateway_env(url):
        res = _spawn(cli(root, verb, "--partitions", PARTITION), log, root)
    res["stage_seconds"] = _stage_seconds(log, verb)
    res["warned"] = WARNING in log.read_text()
    return res


# --------------------------------------------------------------------------- measuring
def stage_runs(root: Path, work: Path, url: str) -> dict[str, Any]:
    """Every stage with and without the gateway, ``REPEAT`` interleaved rounds, after one
    untimed run of each (the first run of a stage in a project reads cold files)."""
    warm = {verb: one_run(root, work, verb, None, "warmup") for verb in VERBS}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        v: {"with": [], "without": []} for v in VERBS
    }
    for i in range(REPEAT):
        for verb in VERBS:
            order = ("with", "without") if i % 2 == 0 else ("without", "with")
            for mode in order:
                res = one_run(root, work, verb, url if mode == "with" else None, f"{mode}-{i}")
                runs[verb][mode].append(res)
            w, wo = (runs[verb][m][-1] for m in ("with", "without"))
            print(
                f"  round {i + 1}/{REPEAT} {verb}: with {w['wall_seconds']:.2f}s, without "
                f"{wo['wall_seconds']:.2f}s ({w['wall_seconds'] / wo['wall_seconds']:.3f}x)",
                flush=True,
            )
    out = {}
    for verb, modes in runs.items():
        w = [r["wall_seconds"] for r in modes["with"]]
        wo = [r["wall_seconds"] for r in modes["without"]]
        paired = [round(a / b, 4) for a, b in zip(w, wo, strict=True)]
        cpu_w = [r["cpu_seconds"] for r in modes["with"]]
        cpu_wo = [r["cpu_seconds"] for r in modes["without"]]
        cpu_paired = [round(a / b, 4) for a, b in zip(cpu_w, cpu_wo, strict=True)]
        own_w = [r["stage_seconds"] for r in modes["with"] if r["stage_seconds"] is not None]
        own_wo = [r["stage_seconds"] for r in modes["without"] if r["stage_seconds"] is not None]
        mw, mwo = _median(w), _median(wo)
        out[verb] = {
            "with_seconds": w,
            "without_seconds": wo,
            "paired_ratios": paired,
            "ratio": _median(paired),
            "median_with_seconds": mw,
            "median_without_seconds": mwo,
            "ratio_of_medians": round(mw / mwo, 4) if mw and mwo else None,
            # the least disturbed run of each, as ``bench.run --repeat`` keeps
            "ratio_of_fastest": round(min(w) / min(wo), 4),
            "cpu_with_seconds": cpu_w,
            "cpu_without_seconds": cpu_wo,
            "cpu_paired_ratios": cpu_paired,
            "cpu_ratio": _median(cpu_paired),
            "stage_seconds_with": own_w,
            "stage_seconds_without": own_wo,
            "returncodes": [r["returncode"] for r in modes["with"] + modes["without"]],
            "runs": modes,
            "warmup": warm[verb],
        }
    return out


def down_runs(root: Path, work: Path, url: str) -> dict[str, Any]:
    """Each stage once with the gateway down, then one run with it up that drains them."""
    down = DOWN
    before = pending(root)
    runs = {verb: one_run(root, work, verb, down, "gateway-down") for verb in VERBS}
    kept = pending(root)
    drain = one_run(root, work, "score", url, "after-down")
    left = pending(root)
    for verb, r in runs.items():
        print(
            f"  gateway down, {verb}: exit {r['returncode']}, warned {r['warned']}, "
            f"{r['wall_seconds']:.2f}s",
            flush=True,
        )
    print(f"  kept {len(kept)} group(s); after the next push {len(left)} left", flush=True)
    return {
        "runs": runs,
        "pending_before": before,
        "kept": kept,
        "drain": drain,
        "left_after_next_push": left,
        "ok": all(r["returncode"] == 0 and r["warned"] for r in runs.values())
        and len(kept) >= len(VERBS)
        and drain["returncode"] == 0
        and not left,
    }


def push_cost(root: Path, work: Path, url: str) -> dict[str, Any]:
    """``observe.stage`` around the monitor's gauges, in one fresh process (``push_main``)."""
    from bench.run import PY, spawn_json

    folder = work / "observe-push"
    shutil.rmtree(folder, ignore_errors=True)
    args = {
        "params": str(root / "params.yaml"),
        "up": url,
        "down": DOWN,
        "folder": str(folder),
    }
    cmd = [PY, "-m", "bench.observe", "push", json.dumps(args)]
    with gateway_env(None):
        res = spawn_json(cmd, work / "logs" / "observe-push.log")
    for mode in ("off", "up", "down"):
        m = (res.get("modes") or {}).get(mode) or {}
        print(f"  observe.stage, {mode}: median {m.get('median_ms')} ms", flush=True)
    return res


def run_observe(work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        root, info = prepare(work)
    except SystemExit as exc:
        return {"error": str(exc)}
    res: dict[str, Any] = {"rows": ROWS, "partition": PARTITION, "repeat": REPEAT}
    res["project"] = {"root": str(root), **info}
    version = subprocess.run([str(GATEWAY), "--version"], capture_output=True, text=True)
    res["pushgateway"] = (version.stdout or version.stderr).splitlines()[0]
    with pushgateway(work / "logs" / "observe-pushgateway.log") as url:
        res["stages"] = stage_runs(root, work, url)
        res["series_by_stage"] = series(url)
        res["down"] = down_runs(root, work, url)
        res["series_after_down"] = series(url)
        res["push"] = push_cost(root, work, url)
    modes = (res["push"].get("modes") or {}) if isinstance(res["push"], dict) else {}
    shares = {}
    for verb, s in res["stages"].items():
        wall, own = s["median_without_seconds"], _median(s["stage_seconds_without"])
        shares[verb] = {
            mode: {
                "of_run": _share(modes.get(mode, {}).get("median_ms"), wall),
                "of_stage_own_time": _share(modes.get(mode, {}).get("median_ms"), own),
            }
            for mode in ("up", "down")
        }
    res["push_share"] = shares
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def _share(ms: float | None, seconds: float | None) -> float | None:
    return round(ms / (seconds * 1000), 6) if ms is not None and seconds else None


# --------------------------------------------------------------------------- in-process
def push_main(args_json: str) -> int:
    """Time ``observe.stage`` around monitor's gauges: no gateway, gateway up, gateway down."""
    from mlops import logs, observe
    from mlops.config import load_params, settings

    a = json.loads(args_json)
    params_path, folder = Path(a["params"]), Path(a["folder"])
    p, st = load_params(params_path), settings(params_path)
    logs.setup(False)
    logs.to_file(folder / "mlops.log")
    urls = {"off": None, "up": a["up"], "down": a["down"]}
    # a state folder per mode, so their counters and kept groups never mix with the project's
    sts = {m: st.model_copy(update={"data_root": folder / m}) for m in urls}
    names = [*p.contract.feature_names, p.contract.target, "prediction"]
    names += [f"feature_{i}" for i in range(len(names), FEATURES)]
    names = names[:FEATURES]

    def body() -> None:
        tags = {"version": "1", "source": "batch"}
        for i, name in enumerate(names):
            observe.gauge(
                "mlops_drift_score", 0.01 * i, PARTITION, method="wasserstein", feature=name, **tags
            )
            observe.gauge(
                "mlops_feature_drifted", float(i % 3 == 0), PARTITION, feature=name, **tags
            )
        observe.gauge("mlops_drift_share", 0.35, PARTITION, **tags)
        observe.gauge("mlops_drifted_features", 7, PARTITION, **tags)
        observe.gauge("mlops_prediction_drift_score", 0.04, PARTITION, method="wasserstein", **tags)
        observe.gauge("mlops_prediction_drifted", 0.0, PARTITION, **tags)
        observe.gauge("mlops_drift_breach", 1.0, PARTITION, **tags)
        observe.rows(ROWS, None, PARTITION)

    times: dict[str, list[float]] = {m: [] for m in urls}
    recorded = 0
    for i in range(WARMUP + SAMPLES):
        for mode in urls if i % 2 == 0 else reversed(list(urls)):
            if urls[mode]:
                os.environ[URL_ENV] = str(urls[mode])
            else:
                os.environ.pop(URL_ENV, None)
            t0 = time.perf_counter()
            with observe.stage(p, sts[mode], "monitor", [PARTITION]) as run:
                body()
            dt = (time.perf_counter() - t0) * 1000
            if i >= WARMUP:
                times[mode].append(round(dt, 4))
            if run is not None:
                recorded = sum(len(v) for v in run.samples.values())
    os.environ.pop(URL_ENV, None)
    kept = sts["down"].state_dir / "metrics" / "pending"
    out = {
        "features": len(names),
        "samples_recorded": recorded,  # the gauges of the run; the push adds outcome series
        "pushes_per_mode": SAMPLES,
        "warmup": WARMUP,
        "modes": {m: {**_ms_stats(v), "samples_ms": v} for m, v in times.items()},
        "down_kept_groups": len(list(kept.glob("*.json"))) if kept.is_dir() else 0,
    }
    print("\n" + json.dumps(out))
    return 0


# --------------------------------------------------------------------------- report
def rows(res: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The target rows of the observe stage."""
    if not res:
        return []
    size = f"{ROWS // 1000}k"
    if "stages" not in res:
        note = f"not measured: {res.get('error', 'run the observe stage')}"[:300]
        return [("metrics push adds <= 2% to a stage's run", size, None, False, note)]
    out: list[tuple[Any, ...]] = []
    push = (res.get("push") or {}).get("modes") or {}
    up, down = (push.get(m, {}).get("median_ms") for m in ("up", "down"))
    for verb, s in res["stages"].items():
        share = res.get("push_share", {}).get(verb, {})
        note = (
            f"`python -m mlops {verb} --partitions {res['partition']}` with / without "
            f"MLOPS_PUSHGATEWAY_URL: median {s['median_with_seconds']}s / "
            f"{s['median_without_seconds']}s (ratio of medians {s['ratio_of_medians']}, of "
            f"the fastest runs {s.get('ratio_of_fastest')}); "
            f"per-round ratios {s['paired_ratios']}; CPU time ratio {s.get('cpu_ratio')} "
            f"(per round {s.get('cpu_paired_ratios')}); the push itself {up} ms "
            f"({_pct(share.get('up', {}).get('of_run'))} of the run, "
            f"{_pct(share.get('up', {}).get('of_stage_own_time'))} of the stage's own time)"
        )
        if any(rc != 0 for rc in s["returncodes"]):
            note = f"FAILED runs (exit codes {s['returncodes']}); " + note
        # What the push adds is measured where it happens (its median time against the run's);
        # whole runs with and without it differ by far more than that between any two runs.
        of_run = share.get("up", {}).get("of_run")
        q = None if of_run is None else round(1 + of_run, 4)
        met = q is not None and q <= TARGET and all(rc == 0 for rc in s["returncodes"])
        note = f"(run + push) / run; whole-run ratio {s['ratio']}: " + note
        target = f"metrics push adds <= 2% to `mlops {verb}` ((run + push) / run)"
        out.append((target, size, q, met, note))
    d = res.get("down") or {}
    codes = {v: r["returncode"] for v, r in (d.get("runs") or {}).items()}
    warned = {v: r["warned"] for v, r in (d.get("runs") or {}).items()}
    note = (
        f"gateway down (connection refused): exit codes {codes}, warning logged {warned}, "
        f"{len(d.get('kept') or [])} group(s) kept; the next run with the gateway up "
        f"(score, exit {(d.get('drain') or {}).get('returncode')}) left "
        f"{len(d.get('left_after_next_push') or [])} pending {d.get('left_after_next_push')}; "
        f"in-process a push with the gateway down costs {down} ms"
    )
    target = "a Pushgateway that is down never fails a stage; kept metrics go with the next push"
    out.append((target, size, f"exit {sorted(set(codes.values()))}", bool(d.get("ok")), note))
    off = push.get("off", {}).get("median_ms")
    note = (
        f"observe.stage around monitor's gauges ({res['push'].get('features')} features x 2 "
        f"+ 6, {res['push'].get('pushes_per_mode')} pushes per mode, interleaved): gateway up "
        f"median {up} ms (p90 {push.get('up', {}).get('p90_ms')}), down {down} ms (p90 "
        f"{push.get('down', {}).get('p90_ms')}), no gateway configured {off} ms"
    )
    target = "the push itself, gateway up (ms; no target; reported)"
    out.append((target, size, up, None, note))
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.3f}%"


def markdown_lines(res: dict[str, Any] | None) -> list[str]:
    """The metrics-push section of ``results.md``."""
    if not res or "stages" not in res:
        return []
    push = (res.get("push") or {}).get("modes") or {}
    lines = [
        "",
        "## Metrics push",
        "",
        f"`python -m mlops VERB --partitions {res['partition']}` on a project of "
        f"{res['rows']:,} rows per side, each run a fresh process, with "
        f"`MLOPS_PUSHGATEWAY_URL` at a real Pushgateway ({res.get('pushgateway')}, loopback) "
        f"and without; {res['repeat']} interleaved rounds. The ratio is the median of the "
        "per-round ratios (two adjacent runs). `bench/observe.py`.",
        "",
        "| stage | without, median s | with, median s | ratio (per round, median) "
        "| ratio of medians | per-round ratios | CPU time ratio (per round, median) "
        "| push share of the run (up / down) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for verb, s in res["stages"].items():
        share = res.get("push_share", {}).get(verb, {})
        lines.append(
            f"| {verb} | {s['median_without_seconds']} | {s['median_with_seconds']} | "
            f"{s['ratio']} | {s['ratio_of_medians']} | {s['paired_ratios']} | "
            f"{s.get('cpu_ratio')} | "
            f"{_pct(share.get('up', {}).get('of_run'))} / "
            f"{_pct(share.get('down', {}).get('of_run'))} |"
        )
    cells = {m: push.get(m, {}) for m in ("off", "up", "down")}
    lines += [
        "",
        "`observe.stage` in one process around monitor's gauges "
        f"({res['push'].get('features')} features): "
        + ", ".join(
            f"{name} median {c.get('median_ms')} ms (p90 {c.get('p90_ms')})"
            for name, c in (
                ("gateway up", cells["up"]),
                ("gateway down", cells["down"]),
                ("no gateway configured", cells["off"]),
            )
        )
        + ".",
    ]
    return lines


if __name__ == "__main__":
    verb, *rest = sys.argv[1:]
    if verb == "push":
        raise SystemExit(push_main(*rest))
    raise SystemExit(f"unknown verb {verb!r}: push")
