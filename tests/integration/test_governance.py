"""Governance on a real MLflow registry (SQLite in a temporary folder).

Versions are registered directly (no training) so that each rule is tested on its own:
approvals, refusals, manual promotion, rollback, the audit history, clear errors, the
race between promotions and what a reader of ``@champion`` sees during a move.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from mlops import approval, audit, governance, tags
from mlops.cli import main
from mlops.config import Settings, settings
from mlops.registry import CHALLENGER, CHAMPION, RegistryError, connect
from tests.conftest import FLIGHTS, REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("gov")
    shutil.copy(FLIGHTS, root / "params.yaml")
    return settings(root / "params.yaml").model_copy(
        update={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}
    )


@pytest.fixture
def model(st: Settings, request: pytest.FixtureRequest) -> str:
    """A fresh registered model per test, named after it."""
    name = request.node.name.replace("[", "_").replace("]", "")[:60]
    connect(st).client.create_registered_model(name)
    return name


@pytest.fixture
def cli(
    st: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run ``mlops`` in-process against the test store; return (code, stdout, stderr)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", st.tracking_uri)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--params", str(st.params_path), *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def add_version(
    st: Settings,
    model: str,
    gate: str | None = "passed",
    status: str | None = "auto",
    auc: float = 0.7,
) -> str:
    """Register a version the way train/evaluate/promote leave it."""
    reg = connect(st)
    c = reg.client
    exp = reg.experiment_id(model)
    run = c.create_run(exp, tags={"mlops.stage": "train", "mlops.candidate": "hgb"})
    c.log_metric(run.info.run_id, "holdout_roc_auc", auc)
    c.set_terminated(run.info.run_id)
    mv = c.create_model_version(model, f"runs:/{run.info.run_id}/model", run.info.run_id)
    values = {
        "mlops.data.partitions": "2013-W02,2013-W03",
        "mlops.data.md5": '{"2013-W02": "aa", "2013-W03": "bb"}',
        "mlops.eval.roc_auc": f"{auc:.6f}",
    }
    if gate:
        values[tags.GATE] = gate
        values[tags.GATE_REASONS] = f"roc_auc {auc:.4f} >= floor 0.65: " + (
            "yes" if gate == "passed" else "no"
        )
    if status:
        values[tags.APPROVAL] = status
    for k, v in values.items():
        c.set_model_version_tag(model, mv.version, k, v)
    return str(mv.version)


def tags_of(st: Settings, model: str, version: str) -> dict[str, str]:
    return dict(connect(st).client.get_model_version(model, version).tags)


def champion(st: Settings, model: str) -> str | None:
    mv = connect(st).version_by_alias(model, CHAMPION)
    return None if mv is None else str(mv.version)


# --------------------------------------------------------------------------- approvals
def test_approve_records_who_when_why_and_refuses_a_gate_failure(st, model, cli) -> None:
    good = add_version(st, model, status="pending")
    bad = add_version(st, model, gate="failed", status=None, auc=0.6)

    # when a person approves the good version
    code, out, _ = cli("approve", model, good, "--by", "ann", "--note", "looks right")
    # then who, when and why are tags on the version, and the history has the decision
    t = tags_of(st, model, good)
    assert code == 0 and "approved by ann" in out
    assert (t["mlops.approval.status"], t["mlops.approval.by"], t["mlops.approval.note"]) == (
        "approved",
        "ann",
        "looks right",
    )
    assert t["mlops.approval.at"].startswith("20")
    assert audit.history(st, model)[0]["action"] == "approve"

    # when the gate-failed version is approved without --override, it is refused with reasons
    code, _, err = cli("approve", model, bad, "--by", "ann")
    assert code == 1 and "did not pass the promotion gate" in err and "roc_auc 0.6000" in err
    assert "mlops.approval.status" not in tags_of(st, model, bad)
    # and --override needs a note
    code, _, err = cli("approve", model, bad, "--by", "ann", "--override")
    assert code == 1 and "--override needs --note" in err
    # with both, it is approved and the override is recorded on the version and in history
    code, out, _ = cli("approve", model, bad, "--by", "ann", "--override", "--note", "hotfix")
    assert code == 0 and "OVERRIDDEN" in out
    assert "overridden by ann" in tags_of(st, model, bad)["mlops.approval.override"]
    assert audit.history(st, model)[0]["override"] == "true"


def test_reject_drops_the_challenger_and_refuses_the_champion(st, model, cli) -> None:
    champ = add_version(st, model)
    audit.move_champion(st, model, champ, "first", by="gate")
    cand = add_version(st, model, status=None)
    governance.apply_gate(st, model, cand, True, ["ok"], "manual")
    assert connect(st).version_by_alias(model, CHALLENGER).version == int(cand)

    code, _, _ = cli("reject", model, cand, "--by", "bob", "--note", "bias on EV")
    assert code == 0
    assert connect(st).version_by_alias(model, CHALLENGER) is None
    last = audit.history(st, model)[0]
    assert (last["action"], last["alias"], last["from_version"], last["actor"]) == (
        "reject",
        "challenger",
        cand,
        "bob",
    )
    # a rejected version cannot be promoted without an override
    code, _, err = cli("promote", model, cand)
    assert code == 1 and "rejected by bob" in err
    # the champion cannot be rejected
    code, _, err = cli("reject", model, champ, "--by", "bob")
    assert code == 1 and "is the champion; roll it back first" in err


def test_an_expired_request_drops_the_challenger_and_blocks_promotion(st, model) -> None:
    v1 = add_version(st, model, status=None)
    governance.apply_gate(st, model, v1, True, ["ok"], "manual")
    out = approval.expire(st, model, v1, "no decision within 72 h")
    assert "expired" in out and connect(st).version_by_alias(model, CHALLENGER) is None
    assert tags_of(st, model, v1)["mlops.approval.status"] == "expired"
    last = audit.history(st, model)[0]
    assert (last["action"], last["alias"], last["from_version"]) == ("expire", "challenger", v1)
    with pytest.raises(approval.Refused, match="expired"):
        governance.promote(st, model, v1)
    # an approval after all still lets it through
    approval.decide(st, model, v1, True, by="ann")
    assert approval.complete(st, model, v1) == f"champion -> v{v1}"


# --------------------------------------------------------------------------- promote & rollback
def test_promote_rollback_and_history_newest_first(st, model, cli, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_ACTOR", "carol")
    v1, v2, v3 = (add_version(st, model) for _ in range(3))
    for v in (v1, v2, v3):
        code, out, _ = cli("promote", model, v, "--reason", f"ship {v}")
        assert code == 0, out
    assert champion(st, model) == v3
    # promoting the champion again moves nothing and records nothing
    n = len(audit.history(st, model))
    code, out, _ = cli("promote", model, v3)
    assert code == 0 and "already champion" in out and len(audit.history(st, model)) == n

    # rollback without --to returns to the previous champion, then to the one before
    code, out, _ = cli("rollback", model, "--by", "dave", "--reason", "latency")
    assert code == 0 and champion(st, model) == v2 and f"v{v3} -> v{v2}" in out
    code, _, _ = cli("rollback", model)
    assert champion(st, model) == v1
    # v1 had no champion before it
    code, _, err = cli("rollback", model)
    assert code == 1 and "no previous champion" in err
    # --to a former champion works; --to a version that never was is refused
    code, _, _ = cli("rollback", model, "--to", v3)
    assert code == 0 and champion(st, model) == v3
    v4 = add_version(st, model)
    code, _, err = cli("rollback", model, "--to", v4)
    assert code == 1 and "never been champion" in err and f"mlops promote {model} {v4}" in err

    # the history is newest first with actor, time, from, to and reason
    hist = [e for e in audit.history(st, model) if e["alias"] == CHAMPION]
    assert [(e["action"], e["from_version"], e["to_version"]) for e in hist] == [
        ("rollback", v1, v3),
        ("rollback", v2, v1),
        ("rollback", v3, v2),
        ("promote", v2, v3),
        ("promote", v1, v2),
        ("promote", "", v1),
    ]
    assert hist[3]["actor"] == "carol" and hist[3]["reason"] == f"ship {v3}"
    assert hist[2]["actor"] == "dave" and hist[2]["reason"] == "latency"
    assert all(e["at"].startswith("20") for e in hist)
    assert audit.check_history(audit.history(st, model), champion(st, model)) == []
    code, out, _ = cli("history", model)
    lines = out.strip().splitlines()
    assert f"rollback   champion: v{v1} -> v{v3}" in lines[0] and "promote" in lines[-1]


def test_promote_refuses_pending_and_gate_failed_versions_unless_overridden(st, model, cli) -> None:
    pending = add_version(st, model, status="pending")
    failed = add_version(st, model, gate="failed", status=None)
    code, _, err = cli("promote", model, pending)
    assert code == 1 and "waiting for approval" in err
    code, _, err = cli("promote", model, failed)
    assert code == 1 and "failed the promotion gate" in err
    code, _, err = cli("promote", model, failed, "--override")
    assert code == 1 and "--override needs --reason" in err
    assert champion(st, model) is None
    code, _, _ = cli("promote", model, failed, "--override", "--reason", "incident 42")
    assert code == 0 and champion(st, model) == failed
    last = audit.history(st, model)[0]
    assert last["override"] == "true" and "incident 42" in last["reason"]
    assert "failed the promotion gate" in last["reason"]


def test_promote_with_one_argument_is_an_error(st, model, cli) -> None:
    code, _, err = cli("promote", model)
    assert code == 2 and "give both MODEL and VERSION" in err


# --------------------------------------------------------------------------- clear errors
def test_errors_name_the_unknown_model_version_or_owner(st, model, cli) -> None:
    add_version(st, model)
    other = f"{model}_other"
    connect(st).client.create_registered_model(other)
    for _ in range(3):
        add_version(st, other)
    code, _, err = cli("promote", "no_such_model", "1")
    assert code == 1 and "'no_such_model' is not registered" in err and model in err
    code, _, err = cli("promote", model, "7")
    assert code == 1 and f"{model!r} has no version 7 (its versions are 1)" in err
    code, _, err = cli("approve", model, "3", "--by", "ann")
    assert code == 1 and f"version 3 belongs to {other!r}" in err
    code, _, err = cli("promote", model, "latest")
    assert code == 1 and "not a version number" in err
    code, _, err = cli("rollback", model)
    assert code == 1 and "has no champion to roll back from" in err
    with pytest.raises(RegistryError, match="not registered"):
        governance.status(st, "no_such_model")
    # v-prefixed versions are accepted
    assert str(connect(st).resolve_version(model, "v1").version) == "1"


# --------------------------------------------------------------------------- status
def test_status_shows_champion_challenger_metrics_approval_data_and_since(st, model, cli) -> None:
    v1 = add_version(st, model, auc=0.71)
    audit.move_champion(st, model, v1, "first", by="gate")
    v2 = add_version(st, model, status=None, auc=0.74)
    governance.apply_gate(st, model, v2, True, ["ok"], "manual")

    rows = governance.status(st, model)
    (r,) = rows
    assert r["champion"]["version"] == v1 and r["challenger"]["version"] == v2
    assert r["champion"]["holdout_metrics"]["roc_auc"] == pytest.approx(0.71)
    assert r["challenger"]["approval"] == "pending"
    assert r["champion"]["partitions"] == ["2013-W02", "2013-W03"]
    assert r["champion"]["since"] == audit.history(st, model)[-1]["at"]
    assert r["history_problems"] == []
    code, out, _ = cli("status", model)
    assert code == 0
    assert f"@champion   v{v1}" in out and f"@challenger v{v2}" in out
    assert "roc_auc 0.7100" in out and "approval pending" in out
    assert "2013-W02, 2013-W03 (md5 2013-W02 aa, 2013-W03 bb)" in out


def test_an_alias_moved_outside_mlops_is_recorded_at_the_next_move(st, model) -> None:
    v1, v2, v3 = (add_version(st, model) for _ in range(3))
    governance.promote(st, model, v1, by="ann")
    connect(st).client.set_registered_model_alias(model, CHAMPION, v2)  # e.g. in the MLflow UI
    assert audit.check_history(audit.history(st, model), v2) != []
    governance.promote(st, model, v3, by="ann")
    events = audit.history(st, model)
    assert [e["action"] for e in events[:2]] == ["promote", "external"]
    assert audit.check_history(events, v3) == []


def test_a_failed_audit_write_puts_the_alias_back(st, model, monkeypatch) -> None:
    v1, v2 = add_version(st, model), add_version(st, model)
    governance.promote(st, model, v1, by="ann")

    def broken(*a, **k):
        raise RegistryError("audit store down")

    monkeypatch.setattr(audit, "record", broken)
    with pytest.raises(RegistryError, match="audit store down"):
        governance.promote(st, model, v2, by="ann")
    assert champion(st, model) == v1


def test_a_failed_alias_move_abandons_its_intent(st, model) -> None:
    # given a champion, and a registry that refuses the next alias write
    v1, v2 = add_version(st, model), add_version(st, model)
    governance.promote(st, model, v1, by="ann")
    reg = connect(st)

    def refuse(*a, **k):
        raise RegistryError("registry read-only")

    reg.client.set_registered_model_alias = refuse  # type: ignore[method-assign]
    # when a promotion's alias move fails after its intent was written
    with pytest.raises(RegistryError, match="read-only"):
        governance.promote(reg, model, v2, by="ann")
    # then the alias is unchanged and the intent is on record as abandoned, not as a move
    events = audit.history(st, model)
    assert champion(st, model) == v1
    assert (events[0]["state"], events[0]["to_version"]) == ("abandoned", v2)
    assert audit.check_history(events, v1) == []
    assert not audit.was_champion(events, v2)


# --------------------------------------------------------------------------- concurrency
def test_racing_promotions_leave_history_consistent_with_the_alias(st, model) -> None:
    # given six promotable versions and six threads released at once
    versions = [add_version(st, model) for _ in range(6)]
    start = threading.Barrier(len(versions))
    errors: list[BaseException] = []

    def go(v: str) -> None:
        start.wait()
        try:
            governance.promote(st, model, v, by=f"thread-{v}")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # then every move is recorded once, in one chain that ends at the alias
    assert errors == []
    events = audit.history(st, model)
    assert sorted(int(e["seq"]) for e in events) == list(range(1, len(versions) + 1))
    assert sorted(e["to_version"] for e in events) == sorted(versions)
    assert audit.check_history(events, champion(st, model)) == []


RACER = """
import sys, time
from pathlib import Path
from mlops import governance
from mlops.config import settings
params, model, me, others, *versions = sys.argv[1:]
st = settings(params)
Path(me).touch()
while not all(Path(o).exists() for o in others.split(",")):
    time.sleep(0.01)
for v in versions:
    governance.promote(st, model, v, by=Path(me).name)
"""


def test_racing_promotions_from_separate_processes(st, model, tmp_path) -> None:
    # given two processes (a DAG task and a person, say) that start promoting at once
    versions = [add_version(st, model) for _ in range(4)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": st.tracking_uri, "PYTHONPATH": str(REPO)}
    ready = [tmp_path / "proc-a", tmp_path / "proc-b"]
    orders = [versions, versions[::-1]]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER,
                str(st.params_path),
                model,
                str(me),
                ",".join(str(o) for o in ready),
                *order,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me, order in zip(ready, orders, strict=True)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # then the history, read back by this process, is one chain ending at the alias
    events = audit.history(st, model)
    assert {e["actor"] for e in events} == {"proc-a", "proc-b"}
    assert sorted(int(e["seq"]) for e in events) == list(range(1, len(events) + 1))
    assert audit.check_history(events, champion(st, model)) == []


def test_readers_of_champion_see_old_or_new_never_nothing(st, model) -> None:
    # given a champion and readers resolving @champion in a loop
    v1, v2 = add_version(st, model), add_version(st, model)
    audit.move_champion(st, model, v1, "start", by="test")
    seen: list[str | None] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(champion(st, model))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for r in readers:
        r.start()
    # when the champion moves back and forth many times
    for i in range(8):
        audit.move_champion(st, model, v2 if i % 2 == 0 else v1, f"flip {i}", by="test")
    stop.set()
    for r in readers:
        r.join(30)
    # then every read found a champion, and only ever v1 or v2
    assert errors == [] and len(seen) > 10
    assert set(seen) <= {v1, v2} and None not in seen
    assert audit.check_history(audit.history(st, model), champion(st, model)) == []
