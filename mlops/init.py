"""``mlops init``: make a project folder from a data file, its configuration inferred.

``create`` reads the source, infers the plan (``mlops.infer``) and writes the folder:
``params.yaml`` (every guess a commented line), ``dvc.yaml`` (``mlops.stages``),
``feature_repo/`` and a ``.gitignore``, inside a DVC repository (the enclosing one, else
a new one). ``main`` then runs ``ingest`` and ``validate`` on the data, handed in by the
CLI (a verb is imported by the entry points only), and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlops import infer, io, partitions, stages
from mlops.config import ConfigError, Monitor, Params, Settings, load_params, settings
from mlops.infer import Guess, Plan
from mlops.source import SourceError, read_table, resolve

Verb = Callable[[Params, Settings, list[str]], object]
COMMENT_AT = 40
YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
CANDIDATES = """\
  candidates:                           # the demo's two: the better on the holdout is registered
    - name: hgb
      kind: sklearn_hist_gradient_boosting
      params: {max_iter: 200, learning_rate: 0.1, max_leaf_nodes: 31}
    - name: xgb
      kind: xgboost
      params: {n_estimators: 200, max_depth: 6, learning_rate: 0.1, subsample: 0.9}
"""
# The root feature_repo/features.py (tests/unit/test_init.py keeps them equal).
FEATURES_PY = '''\
"""Feast definitions for the Feast CLI (`feast apply`, `feast ui` run in this folder).

They are derived from the data contract in params.yaml ($MLOPS_PARAMS, else the project's
params.yaml beside this folder), as the pipeline derives them.
"""

from mlops.materialize import repo_objects

globals().update(repo_objects(__file__))
'''
FEATURE_STORE_YAML = """\
# For the Feast CLI (`feast apply`, `feast ui`) run inside this folder. The pipeline builds
# the same configuration in code from params.yaml and the environment (MLOPS_DATA_ROOT,
# MLOPS_FEAST_ONLINE); keep these paths in step with the data root if you move it.
project: {project}
provider: local
registry: ../data/feast/registry.db
online_store:
  type: sqlite
  path: ../data/feast/online.db
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""
GITIGNORE = """\
# made by the pipeline; data/raw/*.parquet are ignored by DVC's own data/raw/.gitignore
/data/*
!/data/raw/
/mlflow.db
/mlflow.db.lock
/mlartifacts/
/feature_repo/data/
/great_expectations/uncommitted/
"""


@dataclass
class Made:
    """What ``create`` wrote: the folder, its params file, the plan and what it did."""

    folder: Path
    params_path: Path
    plan: Plan
    notes: list[str]


# --------------------------------------------------------------------------- yaml text
def scalar(v: Any) -> str:
    """``v`` as a YAML scalar that loads back as the same value (strings quoted if need be)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))
    text = str(v)
    bare = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", text) and text.lower() not in YAML_WORDS
    return text if bare else json.dumps(text)


def flow(v: Any) -> str:
    """``v`` as YAML flow text: ``{a: 1, b: [x, y]}``."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{scalar(k)}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    return scalar(v)


def line(indent: int, key: str, value: Any, why: str = "") -> str:
    """One ``key: value`` line with its reason as a comment beside it."""
    text = f"{' ' * indent}{key}: {flow(value)}"
    return f"{text.ljust(COMMENT_AT - 1)} # {why}" if why else text


def _pids(g: Guess) -> Any:
    """A partition range ``{from, to}``, or the list when the partitions have gaps."""
    pids = list(g.value)
    freq = partitions.frequency(pids[0])
    if partitions.span(pids[0], pids[-1], freq) == pids:
        return {"from": pids[0], "to": pids[-1]}
    return pids


def render(
    plan: Plan, project: str, source: str, fmt: str, push: Guess, copied_from: str = ""
) -> str:
    """The text of ``params.yaml``: each inferred value commented with its reason."""
    g = plan.guess
    first, last = list(plan.counts)[0], list(plan.counts)[-1]
    end = partitions.interval(last)[1] - timedelta(days=1)
    out = [
        f"# Made by `mlops init` from {copied_from or source}: {sum(plan.counts.values()):,} rows, "
        f"{len(plan.counts)} {g['frequency'].value} partitions ({first} to {last}).",
        "# Every value below was inferred from the data; the comment beside it says why.",
        "# Change what you know better, then `mlops validate` checks the data again.",
        f"project: {project}",
        f"model_name: {project}_model",
        "",
        "# The data contract: validation, Feast, training and drift all derive from it.",
        "contract:",
        line(2, "entity_keys", g["keys"].value, g["keys"].why),
        line(2, "timestamp", plan.timestamp, "--timestamp"),
        line(2, "target", g["target"].value, g["target"].why),
        line(2, "task", g["task"].value, g["task"].why),
    ]
    if "target_range" in g:
        lo, hi = g["target_range"].value
        out += [line(2, "target_min", lo, g["target_range"].why), line(2, "target_max", hi)]
    out += [line(2, "min_rows", g["min_rows"].value, g["min_rows"].why), "  features:"]
    for f in plan.features:
        out += [f"    # {f.value['name']}: {f.why}", f"    - {flow(f.value)}"]
    if plan.left_out:
        out.append("  # Left out of the features:")
        out += [f"  #   {col}: {why}" for col, why in plan.left_out.items()]
    out += [
        "",
        "source:",
        line(2, "path", source, f"copied from {copied_from}" if copied_from else ""),
    ]
    out += [line(2, "format", fmt), line(2, "timestamp_column", plan.timestamp)]
    fmt_guess = g["timestamp_format"]
    if fmt_guess.value:
        out.append(line(2, "timestamp_format", fmt_guess.value, fmt_guess.why))
    else:
        out.append(f"  # timestamp_format: none, {fmt_guess.why}")
    out.append(line(2, "timezone", g["timezone"].value, g["timezone"].why))
    if plan.dropna:
        out.append(line(2, "dropna", plan.dropna, "rows without a target are dropped first"))
    derive = []
    if plan.key_derive:
        derive.append(("    - " + flow(plan.key_derive), "the same row, the same key, every run"))
    if plan.target_derive:
        positive = plan.target_derive["expr"].split("==")[1].strip()
        derive.append(("    - " + flow(plan.target_derive), f"{positive}: the positive class"))
    if derive:
        out.append("  derive:")
        out += [f"{text.ljust(COMMENT_AT - 1)} # {why}" for text, why in derive]
    out += [
        "",
        "ingest:",
        line(2, "partition", g["frequency"].value, g["frequency"].why),
        line(2, "push", push.value, push.why),
        "",
        "validate:",
        line(2, "max_duplicate_keys", 0, "any repeated key fails its partition"),
        line(2, "build_data_docs", True),
        "",
        "materialize:",
        line(2, "project", project, "the Feast project, as in feature_repo/"),
        line(2, "ttl_days", 3650),
        "",
        "train:",
        line(2, "partitions", _pids(g["train"]), g["train"].why),
        line(2, "holdout_partitions", g["holdout"].value, g["holdout"].why),
        line(2, "metric", g["metric"].value, g["metric"].why),
        line(2, "seed", 42),
        CANDIDATES.rstrip("\n"),
        "",
        "promote:",
        line(2, "floor", g["floor"].value, g["floor"].why),
        line(2, "min_improvement", plan.min_improvement, "gain over the champion to replace it"),
        line(2, "approval", "auto", "manual: a person approves each new champion"),
        "",
        "score:",
        line(2, "partitions", _pids(g["score"]), g["score"].why),
        "",
        "monitor:                              # the defaults (dvc.yaml lists these keys)",
        *(line(2, k, v) for k, v in Monitor().model_dump().items()),
        "",
        "schedule:                             # the Airflow DAGs' calendar",
        line(2, "training", "0 3 1 */3 *", "quarterly; null: only drift breaches retrain"),
        line(2, "end", str(end.date()), "the data ends here; null for a live feed"),
    ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the folder
def project_name(folder: Path) -> str:
    """A project name Feast and MLflow accept, from the folder's name."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", folder.resolve().name).strip("_") or "project"
    return name if name[0].isalpha() else f"p_{name}"


def place_source(source: str, folder: Path) -> tuple[str, Path, str]:
    """The source's path for params.yaml, its file or folder, and where it was copied from.

    ``pkg://`` paths stay as they are; a file or folder outside the project is copied
    into ``source/`` (params.yaml paths may not leave the project folder).
    """
    if source.startswith("pkg://"):
        return source, resolve(source, folder), ""
    given = Path(source).expanduser().resolve()
    if not given.exists():
        raise SourceError(f"--source {source}: no such file or folder")
    if given.is_relative_to(folder.resolve()):
        return given.relative_to(folder.resolve()).as_posix(), given, ""
    target = folder / "source" / given.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if given.is_dir():
        shutil.copytree(given, target, dirs_exist_ok=True)
    else:
        with io.atomic_path(target) as tmp:
            shutil.copyfile(given, tmp)
    return f"source/{given.name}", target, str(given)


def source_format(path: Path) -> str:
    """``parquet`` for a Parquet file or a folder of them, else ``csv``."""
    if path.is_dir():
        return "parquet" if any(path.rglob("*.parquet")) else "csv"
    return "parquet" if path.suffix == ".parquet" else "csv"


def dvc_repo(folder: Path) -> tuple[Path, str]:
    """The DVC repository of ``folder``, made if need be; and what was done.

    Inside a DVC repository: that one. Inside a git repository without DVC: ``dvc init
    --subdir`` in the folder. Elsewhere: ``git init`` and ``dvc init`` in the folder.
    """
    for d in (folder.resolve(), *folder.resolve().parents):
        if (d / ".dvc").is_dir():
            return d, f"uses the DVC repository at {d}"
    dvc = [str(Path(sys.executable).with_name("dvc")), "init", "-q"]
    git = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True
    )
    if git.returncode == 0:
        subprocess.run([*dvc, "--subdir"], cwd=folder, check=True, capture_output=True)
        return folder, f"dvc init --subdir (in the git repository {git.stdout.strip()})"
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True, capture_output=True)
    subprocess.run(dvc, cwd=folder, check=True, capture_output=True)
    return folder, "git init and dvc init (a new repository)"


def has_default_remote(repo: Path) -> bool:
    """Whether the DVC repository at ``repo`` has a default remote to push to."""
    from dvc.repo import Repo

    r = Repo(str(repo))
    try:
        return bool(r.config.get("core", {}).get("remote"))
    finally:
        r.close()


def create(a: argparse.Namespace) -> Made:
    """Write the project folder ``a.dir`` from the source ``a.source`` (see ``parser``).

    Raises:
        ConfigError: The folder already holds a project and ``--force`` is not given.
        infer.InferError: The data cannot be made into a project as asked.
        SourceError: The source cannot be read.
    """
    folder = Path(a.dir)
    if (folder / "params.yaml").exists() and not a.force:
        raise ConfigError(
            f"{folder}: already holds a project (params.yaml); give --force to write it again "
            "(the data folder is kept)"
        )
    if a.timestamp in a.key or a.target in [a.timestamp, *a.key]:
        raise ConfigError(
            f"--key {' '.join(a.key)} / --target {a.target} / --timestamp {a.timestamp}: the "
            "key, target and timestamp must be different columns (without --key each row "
            "gets a stable hash as its key)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    path_in_params, path, origin = place_source(a.source, folder)
    fmt = source_format(path)
    df = read_table(path, fmt)
    plan = infer.infer(df, a.target, a.timestamp, a.key, a.task, a.timestamp_format, a.timezone)
    repo, how = dvc_repo(folder)
    push = (
        Guess(True, "the DVC repository has a default remote")
        if has_default_remote(repo)
        else Guess(False, "no default DVC remote: `dvc remote add -d NAME URL`, then true")
    )
    project = project_name(folder)
    text = render(plan, project, path_in_params, fmt, push, origin)
    try:
        Params.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        raise ConfigError(f"{folder / 'params.yaml'}: the inferred configuration: {exc}") from exc
    io.write_text(folder / "params.yaml", text)
    io.write_text(folder / "feature_repo" / "features.py", FEATURES_PY)
    io.write_text(
        folder / "feature_repo" / "feature_store.yaml", FEATURE_STORE_YAML.format(project=project)
    )
    if not (folder / ".gitignore").exists() or a.force:
        io.write_text(folder / ".gitignore", GITIGNORE)
    stages.write(folder)
    notes = [f"DVC: {how}"]
    if origin:
        notes.append(f"copied the source {origin} into {folder / path_in_params}")
    return Made(folder, folder / "params.yaml", plan, notes)


# --------------------------------------------------------------------------- command
def parser() -> argparse.ArgumentParser:
    """The ``mlops init`` arguments."""
    ap = argparse.ArgumentParser(prog="mlops init", description=__doc__.splitlines()[0])
    ap.add_argument("dir", metavar="DIR", help="the project folder to make")
    ap.add_argument(
        "--source",
        required=True,
        help="CSV or Parquet file or folder, or pkg://package/path (copied into DIR/source/ "
        "when outside DIR)",
    )
    ap.add_argument("--target", required=True, help="the column to predict")
    ap.add_argument("--timestamp", required=True, help="the time column (partitions, joins)")
    ap.add_argument(
        "--key",
        nargs="+",
        default=[],
        metavar="COL",
        help="entity key column(s), unique per row (default: a stable hash of each row)",
    )
    ap.add_argument("--task", choices=["classification", "regression"], default=None)
    ap.add_argument("--timestamp-format", default=None, help='strptime format, e.g. "%%Y"')
    ap.add_argument("--timezone", default=None, help="zone of naive timestamps (default UTC)")
    ap.add_argument("--force", action="store_true", help="write over an existing project")
    return ap


def summary(made: Made, ingested: object) -> str:
    """The lines ``mlops init`` prints once the project is made and its data checked."""
    plan, g = made.plan, made.plan.guess
    pids = list(plan.counts)
    rows = sum(plan.counts.values())
    out = [
        f"init: {made.folder}: {rows:,} rows in {len(pids)} {g['frequency'].value} "
        f"partitions ({pids[0]} to {pids[-1]}), {g['task'].value} of {g['target'].value}",
        *(f"init: {n}" for n in made.notes),
        "init: contract (each line is commented in params.yaml):",
        f"  {', '.join(g['keys'].value)}: key; {plan.timestamp}: timestamp; "
        f"{g['target'].value}: target",
    ]
    for f in plan.features:
        spec = {k: v for k, v in f.value.items() if k != "name"}
        out.append(f"  {f.value['name']}: {flow(spec)}")
    out += [f"  warning: {w}" for w in plan.warnings]
    if isinstance(ingested, dict):
        out.append(f"init: ingested and validated {len(ingested)} partition(s)")
    params = made.params_path.resolve()
    out += [
        "next:",
        f"  cd {made.folder} && mlops run      # the whole pipeline",
        f"  cd {made.folder} && dvc repro      # the same, as DVC stages",
        f"  Airflow: run the repository's DAGs with MLOPS_PARAMS={params}",
    ]
    return "\n".join(out)


def main(argv: list[str], ingest: Verb, validate: Verb) -> int:
    """Run ``mlops init``; ``ingest`` and ``validate`` are the verbs' ``run`` functions.

    Returns the exit code: 2 when the arguments or data do not allow a project, 1 when the
    written project's data did not ingest or validate (the files stay, to be edited).
    """
    a = parser().parse_args(argv)
    try:
        made = create(a)
        params, st = load_params(made.params_path), settings(made.params_path)
    except (ConfigError, SourceError, infer.InferError) as exc:
        print(f"error: init: {exc}", file=sys.stderr)
        return 2
    pids = sorted(set(params.train.partitions) | set(params.score.partitions))
    try:
        ingested = ingest(params, st, pids)
        validate(params, st, pids)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, the files stay
        print(summary(made, None))
        print(
            f"error: init: wrote {made.params_path}, but its data did not pass: {exc}\n"
            f"  edit the lines of {made.params_path} named above, then "
            f"`cd {made.folder} && mlops validate`",
            file=sys.stderr,
        )
        return 1
    print(summary(made, ingested))
    return 0
