"""Approvals through an MLflow tracking server, as the MLflow UI and the CLI make them.

The server runs as a subprocess on a free port (SQLite backend, local artifacts) and is
stopped with its whole process group. A person approving in the MLflow UI sets the tag
``mlops.approval.status`` on the version; here the same REST call the UI makes does it,
while a promotion waits for the decision in another thread.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mlops import approval, audit, governance, tags
from mlops.cli import main
from mlops.config import Settings, settings
from mlops.registry import connect
from tests.conftest import FLIGHTS

pytestmark = pytest.mark.integration
MODEL = "flight_delay"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server not healthy after 120 s")
            time.sleep(0.25)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def st(server: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("proj")
    shutil.copy(FLIGHTS, root / "params.yaml")
    s = settings(root / "params.yaml").model_copy(update={"tracking_uri": server})
    connect(s).client.create_registered_model(MODEL)
    return s


def rest(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One call to the MLflow REST API, as the UI makes it."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def ui_set_tag(url: str, version: str, key: str, value: str) -> None:
    rest(
        url,
        "POST",
        "model-versions/set-tag",
        {"name": MODEL, "version": version, "key": key, "value": value},
    )


def ui_champion(url: str) -> str:
    q = urllib.parse.urlencode({"name": MODEL, "alias": "champion"})
    return str(rest(url, "GET", f"registered-models/alias?{q}")["model_version"]["version"])


def add_version(st: Settings, gate: str = "passed", auc: float = 0.7) -> str:
    reg = connect(st)
    c = reg.client
    run = c.create_run(reg.experiment_id(MODEL), tags={"mlops.stage": "train"})
    c.log_metric(run.info.run_id, "holdout_roc_auc", auc)
    c.set_terminated(run.info.run_id)
    mv = c.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
    c.set_model_version_tag(MODEL, mv.version, tags.GATE, gate)
    verdict = "yes" if gate == "passed" else "no"
    c.set_model_version_tag(
        MODEL, mv.version, tags.GATE_REASONS, f"roc_auc {auc:.4f} >= floor 0.65: {verdict}"
    )
    return str(mv.version)


def promote_when_approved(
    st: Settings, model: str, version: str, timeout_s: float, poll_s: float = 10.0
) -> str:
    """Wait for the decision on a pending version, then act on it (``approval.complete``)."""
    deadline = time.monotonic() + timeout_s
    while approval.status(st, model, version) not in (
        approval.Status.APPROVED,
        approval.Status.REJECTED,
    ):
        if time.monotonic() >= deadline:
            return f"champion unchanged (no decision on v{version} within {timeout_s:.0f}s)"
        time.sleep(poll_s)
    return approval.complete(st, model, version)


def test_ui_approval_continues_a_waiting_promotion(server: str, st: Settings) -> None:
    # given a champion and a challenger that passed the gate in manual approval mode
    v1 = add_version(st)
    governance.apply_gate(st, MODEL, v1, True, ["ok"], "auto")
    v2 = add_version(st, auc=0.75)
    assert governance.apply_gate(st, MODEL, v2, True, ["ok"], "manual") == (
        f"challenger v{v2}, approval pending"
    )
    # and a promotion waiting for the decision
    result: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: result.update(
            out=promote_when_approved(st, MODEL, v2, timeout_s=60, poll_s=0.2)
        )
    )
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and ui_champion(server) == v1

    # when a person approves in the MLflow UI (the same REST calls)
    ui_set_tag(server, v2, "mlops.approval.by", "erin")
    ui_set_tag(server, v2, "mlops.approval.status", "approved")
    waiter.join(30)

    # then the promotion continues: v2 is champion, the challenger alias is gone
    assert result["out"] == f"champion v{v1} -> v{v2}"
    assert ui_champion(server) == v2
    mv = connect(st).client.get_model_version(MODEL, v2)
    assert "challenger" not in mv.aliases
    assert mv.tags["mlops.approval.at"].startswith("20")  # filled in: the UI did not set it
    # and the audit history, read through the REST API, names who approved
    exp = rest(server, "GET", f"experiments/get-by-name?experiment_name=audit/{MODEL}")
    runs = rest(
        server,
        "POST",
        "runs/search",
        {
            "experiment_ids": [exp["experiment"]["experiment_id"]],
            "order_by": ["metrics.seq DESC"],
            "max_results": 10,
        },
    )["runs"]
    newest = {t["key"]: t["value"] for t in runs[0]["data"]["tags"]}
    assert newest["audit.to_version"] == v2 or newest["audit.from_version"] == v2
    moves = [e for e in audit.history(st, MODEL) if e["alias"] == "champion"]
    assert (moves[0]["from_version"], moves[0]["to_version"], moves[0]["actor"]) == (v1, v2, "erin")
    assert moves[0]["reason"] == "approved by erin"


def test_ui_approval_cannot_skip_the_gate(server: str, st: Settings) -> None:
    before = ui_champion(server)
    bad = add_version(st, gate="failed", auc=0.5)
    ui_set_tag(server, bad, "mlops.approval.status", "approved")
    with pytest.raises(approval.Refused, match="failed the promotion gate"):
        approval.complete(st, MODEL, bad)
    assert ui_champion(server) == before
    assert (
        connect(st).client.get_model_version(MODEL, bad).tags["mlops.approval.by"]
        == approval.UNKNOWN_UI
    )


@pytest.fixture
def cli(
    server: str, st: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLOPS_ACTOR", "frank")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--params", str(st.params_path), *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_cli_approve_reject_override_and_rollback_through_the_server(server, st, cli) -> None:
    champ = ui_champion(server)
    failed = add_version(st, gate="failed", auc=0.6)
    code, _, err = cli("approve", MODEL, failed, "--by", "gina")
    assert code == 1 and "did not pass the promotion gate (roc_auc 0.6000" in err
    code, _, _ = cli("approve", MODEL, failed, "--by", "gina", "--override", "--note", "audit")
    assert code == 0
    assert (
        "overridden by gina"
        in connect(st).client.get_model_version(MODEL, failed).tags[tags.OVERRIDE]
    )

    pending = add_version(st, auc=0.8)
    governance.apply_gate(st, MODEL, pending, True, ["ok"], "manual")
    code, _, _ = cli("reject", MODEL, pending, "--by", "gina", "--note", "too slow")
    assert code == 0 and ui_champion(server) == champ
    assert audit.history(st, MODEL)[0]["action"] == "reject"

    again = add_version(st, auc=0.81)
    governance.apply_gate(st, MODEL, again, True, ["ok"], "manual")
    code, out, _ = cli("approve", MODEL, again, "--by", "gina", "--promote")
    assert code == 0 and f"champion v{champ} -> v{again}" in out
    assert ui_champion(server) == again
    code, out, _ = cli("rollback", MODEL, "--reason", "pager")
    assert code == 0 and ui_champion(server) == champ
    code, out, _ = cli("history", MODEL, "--limit", "1")
    assert f"rollback   champion: v{again} -> v{champ}  by frank  (pager)" in out
    code, out, _ = cli("status", MODEL)
    assert f"@champion   v{champ}" in out
    assert audit.check_history(audit.history(st, MODEL), champ) == []
