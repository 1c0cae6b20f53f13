"""ci: check a change against the model it would replace, before it merges.

``mlops ci report --base REF`` builds two copies of the repository in a scratch folder:
the base revision, and this one (``HEAD`` with the uncommitted changes to tracked files).
In each it runs the pipeline up to ``evaluate`` on the training window only, with this
revision's ``ci.overrides`` merged into the side's ``params.yaml`` (a smaller slice, for
example), both registering into one scratch MLflow registry, so that the base
revision's model is the scratch registry's ``champion`` when this revision's candidate is
evaluated: both are scored on this revision's holdout and the project's own gate
(``gate.decide``) decides. The project's data, registry, champion, DVC remote,
online store and Pushgateway are neither read nor written.

The report (``ci_report.render``) holds the decision with its reasons, the metrics side by
side, the gate metric per slice for both versions (the model card's slice table), and
``dvc params diff`` and ``dvc metrics diff`` against the base. It goes to ``--out``
(default ``data/ci/report.md``, with the stages' logs beside it), to standard output, and
is appended to ``$GITHUB_STEP_SUMMARY`` when that is set. The command fails (exit 1) when
the gate fails, so a pull request's check follows the gate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlops import ci_report, gate, io
from mlops.config import ConfigError, Params, Settings, load_params, settings
from mlops.registry import CHAMPION, connect
from mlops.stages import STAGES

# What each side runs, in order: the stages up to ``evaluate``. ``promote`` never runs, so
# no alias moves but the base's champion here.
SIDE_STAGES = STAGES[: STAGES.index("evaluate") + 1]
# The stages given the training window's partitions (not the score partitions too).
PARTITIONED = ("ingest", "validate", "materialize")
# Never reach the project's shared services from a check.
CLEARED = (
    "MLOPS_PARAMS",
    "MLOPS_PROJECT_ROOT",
    "MLOPS_DATA_ROOT",
    "MLOPS_DVC_REMOTE",
    "MLOPS_PUSHGATEWAY_URL",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
LOG_TAIL = 20


class GateFailed(RuntimeError):
    """The candidate of this revision does not pass the project's gate."""


class CheckError(RuntimeError):
    """A side of the check could not be built (a stage failed, a revision is unknown)."""


@dataclass(frozen=True)
class Side:
    """One revision checked out in the scratch folder."""

    name: str
    rev: str
    repo: Path
    project: Path

    @property
    def params_path(self) -> Path:
        """The side's ``params.yaml``."""
        return self.project / "params.yaml"


def _git(cwd: Path, *args: str, text_in: str | None = None) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, input=text_in, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise CheckError(f"git {' '.join(args)} (in {cwd}): {proc.stderr.strip()}")
    return proc.stdout


def _checkout(repo: Path, rev: str, dest: Path, changes: bool) -> None:
    """``rev`` as a detached worktree at ``dest``; with ``changes`` the uncommitted edits too."""
    _git(repo, "worktree", "add", "--detach", "--force", str(dest), rev)
    if changes:
        diff = _git(repo, "diff", "HEAD", "--binary")
        if diff.strip():
            _git(dest, "apply", "--whitespace=nowarn", "-", text_in=diff)


def merged(raw: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Pure: ``raw`` with ``over`` merged in; nested sections merge, other values replace."""
    out = dict(raw)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _isolate(side: Side, overrides: dict[str, Any]) -> Params:
    """The scratch copy's ``params.yaml``: the check's slice, never the project's DVC remote.

    Returns the side's params as its stages will read them.
    """
    raw = merged(yaml.safe_load(side.params_path.read_text()) or {}, overrides)
    if isinstance(raw.get("ingest"), dict):
        raw["ingest"] = {**raw["ingest"], "push": False}
    else:
        raw["ingest"] = {"push": False}
    side.params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        return load_params(side.params_path)
    except ConfigError as exc:
        raise ConfigError(
            f"{side.name} revision {side.rev} with ci.overrides {overrides}: {exc}"
        ) from None


def side_env(scratch: Path, code: Path | None, base: dict[str, str]) -> dict[str, str]:
    """Pure: the environment of a side's stages.

    The scratch registry, a local online store, no shared remote or Pushgateway, and the
    side's own ``mlops`` code when ``code`` is set.
    """
    env = {k: v for k, v in base.items() if k not in CLEARED}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
    env["MLOPS_FEAST_ONLINE"] = "sqlite"
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), base.get("PYTHONPATH", "")) if p)
    return env


def _stage(side: Side, verb: str, env: dict[str, str], logs: Path, parts: list[str]) -> None:
    """``mlops VERB`` in the side's project; the data stages on the training window only."""
    t0 = time.perf_counter()
    args = ["--partitions", *parts] if verb in PARTITIONED else []
    proc = subprocess.run(
        [sys.executable, "-m", "mlops", verb, *args],
        cwd=side.project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    log = logs / f"{side.name}-{verb}.log"
    io.write_text(log, io.redact(proc.stdout + proc.stderr))
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-LOG_TAIL:])
        raise CheckError(
            f"{side.name} revision {side.rev}: `mlops {verb}` failed (exit {proc.returncode}); "
            f"log {log}:\n{io.redact(tail)}"
        )
    print(f"ci: {side.name} {verb} in {time.perf_counter() - t0:.1f}s")


def _read(side: Side, what: str) -> dict[str, Any]:
    return dict(io.read_json(side.project / "data" / "state" / f"{what}.json", missing={}))


def _dvc(project: Path, *args: str) -> str:
    dvc = str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([dvc, *args], cwd=project, capture_output=True, text=True, check=False)
    out = (proc.stdout or proc.stderr).strip()
    return out if proc.returncode == 0 else f"`dvc {' '.join(args)}` failed: {out}"


def _commit_metrics(side: Side) -> str | None:
    """The base side's metrics as a scratch commit on its detached worktree.

    So that ``dvc metrics diff`` compares them; None when the base wrote none.
    """
    files = [p for p in ("data/metrics", "data/plots") if (side.project / p).is_dir()]
    if not files:
        return None
    _git(side.project, "add", "-f", "--", *files)
    _git(
        side.project,
        "-c",
        "user.name=mlops ci",
        "-c",
        "user.email=ci@mlops.invalid",
        "commit",
        "-q",
        "--no-verify",
        "-m",
        f"mlops ci: metrics of {side.rev}",
    )
    return _git(side.project, "rev-parse", "HEAD").strip()


def slices(params: Params, st: Settings, versions: dict[str, str]) -> dict[str, Any]:
    """The gate metric per slice of the holdout for each of ``versions`` (role -> version)."""
    from mlops import card, models, training_data

    c = params.contract
    df = training_data.training_frame(params, st, params.train.holdout, stage="evaluate")
    y = models.target(df, c)
    reg = connect(st)
    out: dict[str, Any] = {}
    for role, version in versions.items():
        loaded = reg.load(params.model_name, version)
        pred = loaded.predict(df, c)
        out[role] = card.slice_metrics(
            df, y, pred, card.slice_columns(c), c.task, threshold=loaded.threshold
        )
    return out


def _cleanup(repo: Path, scratch: Path) -> None:
    """Remove the scratch worktrees and folder; never raises."""
    for name in ("base", "head"):
        if (scratch / name).exists():
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(scratch / name)],
                cwd=repo,
                capture_output=True,
                check=False,
            )
    shutil.rmtree(scratch, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True, check=False)


def report(st: Settings, base: str, out: Path | None = None) -> dict[str, Any]:
    """Check this revision against ``base``; write and print the report; raise on a failed gate.

    Returns the check (``ci_report.render``'s input).
    """
    t0 = time.perf_counter()
    repo = Path(_git(st.root, "rev-parse", "--show-toplevel").strip())
    rel = st.root.resolve().relative_to(repo.resolve())
    base_sha = _git(repo, "rev-parse", "--verify", f"{base}^{{commit}}").strip()
    head_sha = _git(repo, "rev-parse", "HEAD").strip()
    out = out or st.data_root / "ci" / "report.md"
    logs = out.parent
    scratch = Path(tempfile.mkdtemp(prefix="mlops-ci-"))
    code_inside = Path(__file__).resolve().parent.parent
    in_repo = code_inside.is_relative_to(repo.resolve())
    sides = {
        "base": Side("base", base, scratch / "base", scratch / "base" / rel),
        "head": Side("head", "this revision", scratch / "head", scratch / "head" / rel),
    }
    try:
        for side, rev, changes in (("head", "HEAD", True), ("base", base_sha, False)):
            _checkout(repo, rev, sides[side].repo, changes)
            if not sides[side].params_path.is_file():
                raise CheckError(f"{side} revision {sides[side].rev}: no {rel / 'params.yaml'}")
        # this revision's slice for both: the change under review says how it is checked
        over = load_params(sides["head"].params_path).ci.overrides
        side_params = {name: _isolate(side, over) for name, side in sides.items()}
        env = {
            name: side_env(scratch, sides[name].repo if in_repo else None, dict(os.environ))
            for name in sides
        }
        for verb in SIDE_STAGES:
            _stage(sides["base"], verb, env["base"], logs, side_params["base"].train.partitions)
        base_version = str(_read(sides["base"], "train")["version"])
        metrics_rev = _commit_metrics(sides["base"])
        head_params = side_params["head"]
        head_st = settings(sides["head"].params_path, env=env["head"])
        if side_params["base"].model_name == head_params.model_name:
            # the base's version is the champion the candidate is evaluated against
            reg = connect(head_st)
            reg.client.set_registered_model_alias(head_params.model_name, CHAMPION, base_version)
        for verb in SIDE_STAGES:
            _stage(sides["head"], verb, env["head"], logs, head_params.train.partitions)
        ev = _read(sides["head"], "evaluate")
        champ = ev.get("champion")
        decision = gate.decide(ev, head_params.promote)
        versions = {"candidate": str(ev["candidate"]["version"])}
        if champ:
            versions["base"] = str(champ["version"])
        check = {
            "model_name": head_params.model_name,
            "base": base,
            "base_sha": base_sha,
            "head_sha": head_sha,
            "base_version": base_version,
            "evaluation": ev,
            "promote": decision.promote,
            "reasons": decision.reasons,
            "gain": gate.gain_of(ev),
            "gate": head_params.promote.model_dump(),
            "slices": slices(head_params, head_st, versions),
            "params_diff": _dvc(st.root, "params", "diff", base_sha, "--md"),
            # the scratch commit of the base's metrics is shown as the base
            "metrics_diff": _dvc(
                sides["head"].project, "metrics", "diff", metrics_rev, "--md"
            ).replace(metrics_rev, base_sha)
            if metrics_rev
            else "the base revision wrote no metrics files (its dvc.yaml declares none)",
            "seconds": round(time.perf_counter() - t0, 1),
        }
    finally:
        _cleanup(repo, scratch)
    text = ci_report.render(check)
    io.write_text(out, text)
    io.write_json(out.with_suffix(".json"), check)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    print(f"ci: report -> {out} in {check['seconds']:.1f}s")
    if not decision.promote:
        raise GateFailed(f"gate failed: {'; '.join(decision.reasons)} (report {out})")
    return check
