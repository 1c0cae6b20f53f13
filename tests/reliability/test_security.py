"""Security basics: no pickles, no secrets, no paths outside the data root."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops.cli import main
from mlops.io import redact
from mlops.models import SKOPS_TRUSTED
from tests.conftest import REPO
from tests.reliability.conftest import Project, digests

AREA = "Security"
PACKAGE = REPO / "mlops"
# Modules and calls that deserialise arbitrary Python objects (run code on load).
UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "cloudpickle",
    "dill",
    "joblib",
    "shelve",
    "marshal",
}
UNSAFE_CALLS = {"read_pickle", "load_pickle", "pyfunc.load_model", "torch.load"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def unsafe_loads(source: str) -> list[str]:
    """Imports of pickle-like modules and calls that load pickles, with line numbers."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            allow_pickle = any(
                k.arg == "allow_pickle" and getattr(k.value, "value", False) for k in node.keywords
            )
            if any(name == c or name.endswith("." + c) for c in UNSAFE_CALLS) or allow_pickle:
                found.append(f"line {node.lineno}: {name}(...)")
            continue
        else:
            continue
        found += [f"line {node.lineno}: import {n}" for n in names if n in UNSAFE_MODULES]
    return found


def test_scanner_sees_pickle_loads() -> None:
    """Self-check: the pickle scanner reports `import pickle`, `from joblib import load`,
    `pd.read_pickle` and `np.load(..., allow_pickle=True)`."""
    src = (
        "import pickle\nfrom joblib import load\nimport pandas as pd\nimport numpy as np\n"
        "pd.read_pickle('x')\nnp.load('x', allow_pickle=True)\n"
    )
    assert len(unsafe_loads(src)) == 4


def test_no_code_loads_pickles() -> None:
    """Case: Code that could deserialise a pickle (`pickle`, `joblib`, `cloudpickle`, `dill`,
    `read_pickle`, MLflow pyfunc loading).
    Behaviour: none in `mlops/` or `dags/`: models load through XGBoost's own format or skops
    with an explicit list of trusted types
    """
    offenders = {}
    for path in sorted([*PACKAGE.rglob("*.py"), *(REPO / "dags").rglob("*.py")]):
        found = unsafe_loads(path.read_text())
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert offenders == {}


@pytest.mark.integration
def test_registered_models_are_not_pickles(proj: Project) -> None:
    """Case: A registered model stored in a format whose loading runs code.
    Behaviour: every registered version is XGBoost UBJ or skops (trusted types limited to
    `models.SKOPS_TRUSTED`); no `.pkl`, `.pickle` or `.joblib` file among the artifacts
    """
    from mlops.registry import connect

    st = proj.st
    reg = connect(st)
    c = reg.client
    versions = c.search_model_versions(f"name='{proj.params.model_name}'")
    assert versions
    for mv in versions:
        source = reg.get_version(proj.params.model_name, mv.version).source
        run_models = [
            p
            for p in (st.artifacts_dir / "models").glob("*/artifacts/MLmodel")
            if p.parent.parent.name in source
        ]
        (mlmodel,) = run_models
        flavors = yaml.safe_load(mlmodel.read_text())["flavors"]
        if "xgboost" in flavors:
            assert flavors["xgboost"]["data"].endswith(".ubj")
        else:
            assert flavors["sklearn"]["serialization_format"] == "skops"
            assert set(flavors["sklearn"]["skops_trusted_types"]) <= set(SKOPS_TRUSTED)
    pickles = [p for ext in ("pkl", "pickle", "joblib") for p in st.artifacts_dir.rglob(f"*.{ext}")]
    assert pickles == []


SECRET_PATTERNS = {
    "password assignment": re.compile(
        r"""(?i)(password|passwd|pwd|secret|api[_-]?key|access[_-]?key|token)["']?\s*[:=]\s*"""
        r"""["'][^"'\s$<{][^"'\s]{5,}["']"""
    ),
    "credentials in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"$<{]{4,}@"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}
# Placeholders documentation may show; anything else that matches is treated as a secret.
PLACEHOLDERS = re.compile(r"(?i)example|changeme|placeholder|your[_-]|<|\*\*\*|xxx|s3cr3t-pw")


def _repo_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [REPO / line for line in out.splitlines() if (REPO / line).is_file()]


def find_secrets(text: str) -> list[str]:
    hits = []
    for what, pattern in SECRET_PATTERNS.items():
        for m in pattern.finditer(text):
            if not PLACEHOLDERS.search(m.group(0)):
                hits.append(f"{what}: {m.group(0)[:60]}")
    return hits


def test_secret_scanner_sees_secrets() -> None:
    """Self-check: the secret scanner reports a password literal, credentials in a URL, an AWS
    key and a private key, and not a placeholder."""
    # assembled at run time, so this file itself holds no secret-looking literal
    text = (
        'db_password = "'
        + "hunter2" * 2
        + '"\nurl: postgresql://app:'
        + "Tr0ub4dor"
        + "@db/x\n"
        + "AKIA"
        + "ABCDEFGHIJKLMNOP\n"
        + "-----BEGIN RSA "
        + "PRIVATE KEY"
        + '-----\npassword: "'
        + 'changeme-example"\n'
    )
    assert len(find_secrets(text)) == 4


def test_no_secrets_in_the_repository() -> None:
    """Case: A password, token, key or credential-bearing URL committed to the repository.
    Behaviour: none in any tracked or untracked-but-not-ignored file; connections come from the
    environment (`MLFLOW_TRACKING_URI`, `MLOPS_FEAST_ONLINE`) or Airflow connections
    """
    hits = {}
    for path in _repo_files():
        if path.suffix in {".parquet", ".png", ".db", ".zip", ".gz", ".ubj", ".skops"}:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        found = find_secrets(text)
        if found:
            hits[str(path.relative_to(REPO))] = found
    assert hits == {}


@pytest.mark.integration
def test_no_secrets_in_mlflow_params_or_tags(proj: Project) -> None:
    """Case: A credential ending up in MLflow run params or tags (e.g. a tracking URI with a
    password).
    Behaviour: no run param or tag of the project holds a password-like value or a URL with
    credentials
    """
    from mlops.registry import connect

    c = connect(proj.st).client
    hits = []
    for exp in c.search_experiments():
        for run in c.search_runs([exp.experiment_id]):
            for k, v in {**run.data.params, **run.data.tags}.items():
                hits += [f"{run.info.run_id} {k}: {h}" for h in find_secrets(f'{k}: "{v}"')]
    assert hits == []


@pytest.mark.parametrize("variable", ["MLOPS_DATA_ROOT", "MLOPS_FEAST_REPO"])
@pytest.mark.parametrize("value", ["../outside", "/etc", "data/../../outside"])
def test_locations_cannot_leave_the_project(
    tmp_path: Path, capsys, monkeypatch, variable: str, value: str
) -> None:
    """Case: A location from the environment points outside the project (`..`, an absolute path
    elsewhere).
    Behaviour: every command exits 2 naming the variable and the resolved path before any
    work, unless `MLOPS_ALLOW_PATHS_OUTSIDE_ROOT=1`
    """
    project = tmp_path / "proj"
    project.mkdir()
    params = project / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    monkeypatch.setenv(variable, value)

    code = main(["--params", str(params), "ingest", "--partitions", "2013-01"])

    err = capsys.readouterr().err
    assert code == 2
    assert f"{variable}={value!r}" in err and "outside the project root" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["params.yaml", "proj"]


def test_symlinked_data_root_cannot_leave_the_project(tmp_path: Path, capsys) -> None:
    """Case: The data folder is a symbolic link to a place outside the project.
    Behaviour: the link is resolved and refused like `..` (exit 2)
    """
    project, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "data").symlink_to(elsewhere)
    params = project / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())

    code = main(["--params", str(params), "validate", "--partitions", "2013-01"])

    assert code == 2
    assert "outside the project root" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("verb", ["ingest", "validate", "materialize", "score", "monitor"])
@pytest.mark.parametrize(
    "partition", ["../../../escaped", "2013-01-05/../../../escaped", "/tmp/escaped"]
)
@pytest.mark.integration
def test_partition_ids_cannot_name_paths(proj: Project, capsys, verb: str, partition: str) -> None:
    """Case: A partition id from the CLI or a DAG that is really a path (`../../x`,
    `2013-01-05/../../x`, `/tmp/x`).
    Behaviour: every stage exits 1 with `is not a partition id` before reading or writing
    anything
    """
    st = proj.st
    folders = (st.raw_dir, st.validated_dir, st.predictions_dir)
    before = {d.name: digests(d) for d in folders}
    outside = sorted(p.name for p in proj.root.parent.iterdir())

    code = proj.cli(verb, "--partitions", partition)

    err = capsys.readouterr().err
    assert code == 1
    assert f"partition {partition!r} is not a partition id" in err
    assert {d.name: digests(d) for d in folders} == before
    assert sorted(p.name for p in proj.root.parent.iterdir()) == outside


# --------------------------------------------------------------------------- credentials
SECRET = "s3cr3t-pw"  # a placeholder the repository scanner accepts
# Each service the pipeline reaches, with its password where an operator would put it.
CREDENTIALS = {
    "MLFLOW_TRACKING_URI": f"http://mlops:{SECRET}-mlflow@127.0.0.1:9/",
    "MLFLOW_TRACKING_PASSWORD": f"{SECRET}-basic",
    "MLFLOW_TRACKING_TOKEN": f"{SECRET}-token",
    "AWS_SECRET_ACCESS_KEY": f"{SECRET}-aws",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql://airflow:{SECRET}-pg@db/airflow",
    "AIRFLOW__CELERY__BROKER_URL": f"redis://:{SECRET}-broker@redis:6379/0",
    "MLOPS_FEAST_ONLINE": f"redis://:{SECRET}%21online@redis:6379/1",
}
# MLflow's own retries kept short: the tracking server is a closed port.
UNREACHABLE = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "1",
    "MLOPS_RETRY_ATTEMPTS": "1",
}


def test_a_secret_quoted_without_its_url_is_masked(monkeypatch) -> None:
    """Case: An error quotes a password, token or key bare, without the URL or `password=` that
    would give it away (e.g. a driver echoing the password it was given).
    Behaviour: every secret the environment holds is masked wherever it appears: the value of
    each `*_PASSWORD`, `*_TOKEN`, `*_SECRET`, `*_KEY` variable and the password of every
    connection URL (`MLFLOW_TRACKING_URI`, `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`,
    `AIRFLOW__CELERY__BROKER_URL`, `MLOPS_FEAST_ONLINE`, ...), as written and URL-decoded
    """
    # given the services' credentials in the environment
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "/run/pw.json")
    bare = [
        f"{SECRET}-mlflow",
        f"{SECRET}-basic",
        f"{SECRET}-token",
        f"{SECRET}-aws",
        f"{SECRET}-pg",
        f"{SECRET}-broker",
        f"{SECRET}!online",
        f"{SECRET}%21online",
    ]
    # when messages quote each one bare, and the URLs whole
    text = "; ".join([*(f"auth failed for {s!r}" for s in bare), *CREDENTIALS.values()])
    masked = redact(text)
    # then none is left, and what is not secret is
    assert SECRET not in masked
    assert masked.count("***") >= len(bare) + 4
    assert "127.0.0.1:9" in masked and "redis:6379/1" in masked and "db/airflow" in masked
    assert redact("written to /run/pw.json") == "written to /run/pw.json"


def _unreachable_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "proj"
    project.mkdir()
    params = project / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
    return params, {**env, **CREDENTIALS, **UNREACHABLE, "PYTHONPATH": str(REPO)}


@pytest.mark.parametrize("verbose", [False, True], ids=["plain", "verbose"])
def test_cli_errors_never_show_a_credential(tmp_path: Path, verbose: bool) -> None:
    """Case: `mlops status` (plain and `-v`) while the tracking server, reached through a URL with
    a password, is down: the error's traceback and its chained causes quote that URL.
    Behaviour: exit 1 naming the server (`http://***@127.0.0.1:9`); `-v` prints the whole
    traceback with every chained cause, credentials masked; no secret in stdout, stderr or
    the log file
    """
    params, env = _unreachable_env(tmp_path)
    args = ["--params", str(params), *(["-v"] if verbose else []), "status"]

    out = subprocess.run(
        [sys.executable, "-m", "mlops", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    logs = [p.read_text() for p in (params.parent / "data").rglob("*.log")]
    assert out.returncode == 1, out.stderr
    assert "error: status:" in out.stderr and "http://***@127.0.0.1:9" in out.stderr
    if verbose:
        assert "Traceback (most recent call last)" in out.stderr
    for where, text in [("stdout", out.stdout), ("stderr", out.stderr), *enumerate(logs)]:
        assert SECRET not in text, where


AIRFLOW_TASK = """
import logging

from airflow.sdk import dag, task


@dag(schedule=None, dag_id="reach_mlflow")
def reach_mlflow():
    @task(retries=0)
    def search():
        from mlops.airflow import door
        from mlops.registry import connect

        def stage(params, st):
            logging.getLogger("mlflow.store").warning("connecting to %s", st.tracking_uri)
            reg = connect(st)
            return reg.retry(reg.client.search_registered_models, "search models")

        return door._call(stage)

    search()


reach_mlflow()
"""


@pytest.mark.integration
def test_airflow_task_log_never_shows_a_credential(tmp_path: Path) -> None:
    """Case: An Airflow task fails reaching a tracking server whose URL holds a password; the
    adapter used to chain the original error (`from exc`), so the task log's traceback quoted
    the URL.
    Behaviour: the task fails at once with the masked message (`http://***@`); the adapter logs
    the traceback masked and raises `from None`; library log lines in the task log are masked
    too; no secret anywhere in the task's output or log files
    """
    from tests.integration.airflow_stack import dags_test

    params, env = _unreachable_env(tmp_path)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "reach_mlflow.py").write_text(AIRFLOW_TASK)
    # (Airflow's own metadata DB and broker stay those of the throwaway home)
    extra = {
        k: v
        for k, v in env.items()
        if k in {*CREDENTIALS, *UNREACHABLE} and not k.startswith("AIRFLOW")
    }

    out, text = dags_test(dags, params, tmp_path / "airflow", "reach_mlflow", extra)

    assert out.returncode != 0, text[-3000:]
    assert "AirflowFailException: MLflow search models failed" in text, text[-3000:]
    assert "connecting to http://***@127.0.0.1:9/" in text
    assert SECRET not in text


def test_failed_candidate_run_never_records_a_credential(tmp_path: Path, monkeypatch) -> None:
    """Case: A candidate fails to train with an error that quotes a credential (its run note,
    tags and `error.txt` are written to MLflow, which everyone with UI access reads).
    Behaviour: the FAILED run's tags, params and `error.txt` hold the message with the
    credential masked
    """
    from mlops import models, train
    from mlops.config import load_params, settings
    from mlops.registry import connect

    params_path = tmp_path / "params.yaml"
    params_path.write_text((REPO / "params.yaml").read_text())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", f"{SECRET}-basic")
    params, st = load_params(params_path), settings(params_path)
    reg = connect(st)
    exp_id = reg.client.create_experiment("train-failures")
    failed = models.Failed(
        params.train.candidates[0],
        f"could not reach the store with password {SECRET}-basic",
        detail=f"Traceback ...\nConnectionError: http://mlops:{SECRET}-basic@store/",
    )

    rid = train.log_failure(failed, params, reg, exp_id, {})

    run = reg.client.get_run(rid)
    recorded = {**run.data.tags, **run.data.params}
    error_txt = Path(reg.client.download_artifacts(rid, "error.txt", str(tmp_path))).read_text()
    assert "could not reach the store" in recorded["mlflow.note.content"]
    assert SECRET not in str(recorded) and SECRET not in error_txt


def test_password_files_are_private_from_their_first_byte(tmp_path: Path, monkeypatch) -> None:
    """Case: the Airflow admin password file written by `make airflow`'s launcher was briefly
    readable by every user (written at the umask's mode, then chmod-ed to 0600).
    Behaviour: its temporary file is created 0600 before the password is written, the file
    stays 0600, and a second start keeps the same password
    """
    import stat

    from mlops.airflow import local

    modes: list[int] = []
    write = Path.write_text

    def observed(self: Path, *args, **kwargs) -> int:  # the mode while the secret is in it
        n = write(self, *args, **kwargs)
        modes.append(stat.S_IMODE(self.stat().st_mode))
        return n

    monkeypatch.setattr(Path, "write_text", observed)
    umask = os.umask(0o022)  # what a default login gives: files readable by all
    try:
        password, path = local.seed_password(tmp_path / "home")
    finally:
        os.umask(umask)

    assert password in path.read_text() and modes and set(modes) == {0o600}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local.seed_password(tmp_path / "home") == (password, path)
