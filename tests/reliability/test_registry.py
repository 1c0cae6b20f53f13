"""The registry and its audit history under hostile operators: a promotion killed with SIGKILL
at any instant, `@champion` moved in the MLflow UI, a gate written while a person overrides,
and a champion whose model files were deleted.

Each test works on its own registered model, whose versions are made from the shared
project's champion (its model files, or a copy of them), so the project's own champion,
aliases and history are never touched.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops import approval, audit, governance, tags
from mlops.registry import CHALLENGER, CHAMPION, Registry, connect
from tests.reliability.conftest import Project

pytestmark = pytest.mark.integration
AREA = "Registry and governance under operators"
KILLED = -signal.SIGKILL


@dataclass
class Model:
    """A registered model of the test's own, beside the project's."""

    name: str
    proj: Project

    @property
    def reg(self) -> Registry:
        return connect(self.proj.st)

    def add(self, source: str | None = None, gate: bool = True) -> str:
        """A new version from the project champion's model files (or ``source``)."""
        c = self.reg.client
        champ = c.get_model_version_by_alias(self.proj.params.model_name, CHAMPION)
        mv = c.create_model_version(self.name, source or champ.source, champ.run_id)
        if gate:
            c.set_model_version_tag(self.name, mv.version, tags.GATE, "passed")
            c.set_model_version_tag(self.name, mv.version, tags.APPROVAL, "auto")
        return str(mv.version)

    def alias(self, alias: str = CHAMPION) -> str | None:
        return self.reg.alias_version(self.name, alias)

    def history(self) -> list[audit.Event]:
        return audit.history(self.reg, self.name)

    def cli(self, *args: str) -> int:
        return self.proj.cli(*args)


@pytest.fixture
def model(proj: Project, request: pytest.FixtureRequest) -> Iterator[Model]:
    """A fresh registered model named after the test, removed (with its audit) afterwards."""
    name = "reg-" + request.node.name.replace("[", "-").replace("]", "")[:50]
    c = connect(proj.st).client
    c.create_registered_model(name)
    yield Model(name, proj)
    c.delete_registered_model(name)
    exp = c.get_experiment_by_name(audit.experiment(name))
    if exp is not None:
        c.delete_experiment(exp.experiment_id)


def moves(events: list[audit.Event]) -> list[tuple[str, str, str, str]]:
    return [(e["action"], e["alias"], e["from_version"], e["to_version"]) for e in events]


def test_promotion_killed_after_the_alias_moved(model: Model) -> None:
    """Case: `mlops promote MODEL v3 --override` killed (SIGKILL) just after it moved
    `@champion` to v3, before its audit event was complete (v1, then v2 were champions; v3
    was the challenger).
    Behaviour: the move was recorded as a pending intent before the alias moved; the next
    governance command (here `mlops rollback`) completes it, noting the interruption, drops
    the challenger as the promotion would have, and rolls back to v2, the real previous
    champion; the history stays one chain ending at the alias
    """
    v1, v2, v3 = model.add(), model.add(), model.add()
    for v in (v1, v2):
        assert model.cli("promote", model.name, v, "--by", "ann", "--reason", "setup") == 0
    governance.apply_gate(model.reg, model.name, v3, True, ["ok"], "manual")
    assert model.alias(CHALLENGER) == v3

    # when a promotion of v3 is killed as soon as the champion alias moved
    res = model.proj.stage(
        *("promote", model.name, v3, "--by", "eve", "--reason", "chaos", "--override"),
        fault="audit.after_alias:champion",
    )

    # then the alias is on v3 and the history holds who and why, as an unfinished intent
    assert res.returncode == KILLED, res.stderr[-2000:]
    assert model.alias() == v3
    intent = model.history()[0]
    assert (intent["state"], intent["actor"], intent["to_version"]) == ("pending", "eve", v3)
    assert "chaos" in intent["reason"]

    # when the next governance command runs
    assert model.cli("rollback", model.name, "--by", "ann") == 0

    # then the interrupted promotion was completed, not taken for an outside move, the
    # challenger it made champion was dropped, and the rollback went to v2, not v1
    events = model.history()
    assert moves(events[:3]) == [
        ("rollback", CHAMPION, v3, v2),
        ("promote", CHALLENGER, v3, ""),
        ("promote", CHAMPION, v2, v3),
    ]
    assert events[2]["state"] == "done"
    assert "completed at the next governance command" in events[2]["note"]
    assert "external" not in {e["action"] for e in events}
    assert model.alias() == v2 and model.alias(CHALLENGER) is None
    assert audit.check_history(events, v2) == []


def test_promotion_killed_before_the_alias_moved(model: Model, capsys) -> None:
    """Case: `mlops promote MODEL v3 --override` killed (SIGKILL) after recording its intent,
    before moving `@champion`.
    Behaviour: the champion is unchanged; the next governance command (here `mlops status`)
    marks the intent abandoned, so the history is consistent, v3 never counts as a former
    champion (`rollback --to 3` is refused) and rollback goes to v1
    """
    v1, v2, v3 = model.add(), model.add(), model.add()
    for v in (v1, v2):
        assert model.cli("promote", model.name, v, "--by", "ann", "--reason", "setup") == 0

    # when a promotion of v3 is killed between its record and the alias move
    res = model.proj.stage(
        *("promote", model.name, v3, "--by", "eve", "--reason", "chaos", "--override"),
        fault="audit.after_intent:champion",
    )
    assert res.returncode == KILLED, res.stderr[-2000:]
    assert model.alias() == v2 and model.history()[0]["state"] == "pending"

    # when status runs next
    capsys.readouterr()
    assert model.cli("status", model.name, "--json") == 0
    row = json.loads(capsys.readouterr().out)[0]

    # then status shows a consistent v2 and the intent is abandoned, with a note
    assert row["champion"]["version"] == v2 and row["problems"] == []
    events = model.history()
    assert events[0]["state"] == "abandoned" and events[0]["to_version"] == v3
    assert "abandoned at the next governance command" in events[0]["note"]
    assert audit.check_history(events, v2) == []
    assert model.cli("rollback", model.name, "--to", v3, "--by", "ann") == 1
    assert model.cli("rollback", model.name, "--by", "ann") == 0
    assert model.alias() == v1


def test_champion_moved_in_the_mlflow_ui_then_rollback(model: Model) -> None:
    """Case: `@champion` moved outside mlops (MLflow UI or API, v1 -> v3) after v2 then v1
    were promoted, then `mlops rollback`.
    Behaviour: the outside move is recorded (actor unknown) before the target is chosen, so
    the rollback returns to v1, the version that held the alias before v3, not v2
    """
    v1, v2, v3 = model.add(), model.add(), model.add()
    for v in (v2, v1):
        assert model.cli("promote", model.name, v, "--by", "ann", "--reason", "setup") == 0

    # when the alias is moved as the MLflow UI does, and rollback runs
    model.reg.client.set_registered_model_alias(model.name, CHAMPION, v3)
    assert model.cli("rollback", model.name, "--by", "ann") == 0

    # then the move is on record and the rollback undid it
    events = model.history()
    assert moves(events[:2]) == [("rollback", CHAMPION, v3, v1), ("external", CHAMPION, v1, v3)]
    assert events[1]["actor"] == "unknown (outside mlops)"
    assert model.alias() == v1
    assert audit.check_history(events, v1) == []


def test_promotion_killed_before_it_dropped_the_challenger(model: Model) -> None:
    """Case: `mlops promote MODEL v2` of the challenger killed (SIGKILL) after its champion
    move was recorded, before it dropped `@challenger` (left on the new champion).
    Behaviour: the next governance command (here `mlops status`) drops the challenger, records
    it and tags the versions as the promotion would have; status shows no challenger and no
    problem
    """
    v1, v2 = model.add(), model.add()
    assert model.cli("promote", model.name, v1, "--by", "ann", "--reason", "setup") == 0
    governance.apply_gate(model.reg, model.name, v2, True, ["ok"], "manual")

    # when the promotion of the challenger is killed between its two moves
    res = model.proj.stage(
        *("promote", model.name, v2, "--by", "eve", "--reason", "ok", "--override"),
        fault="audit.after_champion",
    )
    assert res.returncode == KILLED, res.stderr[-2000:]
    assert model.alias() == v2 and model.alias(CHALLENGER) == v2

    # when the next governance command runs
    (row,) = governance.status(model.reg, model.name)

    # then the challenger that won is dropped and recorded, as the promotion would have
    events = model.history()
    assert moves(events[:2]) == [("promote", CHALLENGER, v2, ""), ("promote", CHAMPION, v1, v2)]
    assert model.alias(CHALLENGER) is None and row["challenger"] is None
    assert row["problems"] == [] and audit.check_history(events, v2) == []
    version_tags = model.reg.client.get_model_version(model.name, v1).tags
    assert version_tags[tags.REPLACED_BY] == v2


def _slow_gate(reg: Registry, started: threading.Event) -> None:
    """Make this registry handle's gate write slow, as over a busy tracking server."""
    real = reg.client.set_model_version_tag

    def slow(name: str, version: str, key: str, value: str) -> None:
        if key == tags.GATE:
            started.set()
            time.sleep(1.0)
        real(name, version, key, value)

    reg.client.set_model_version_tag = slow  # type: ignore[method-assign]


@pytest.mark.parametrize("who", ["approve", "promote"])
def test_override_while_the_gate_is_being_written(model: Model, who: str) -> None:
    """Case: `mlops approve --override` or `mlops promote --override` of a version while the
    pipeline's `promote` stage is still writing that version's gate (approval mode manual).
    Behaviour: the gate is written inside the registry lock, so the override waits for it
    and reads the gate just written: the approval is recorded as an ordinary one (no
    "gate missing" override) and the promotion's override names only what still blocked it
    """
    v = model.add(gate=False)
    gate_reg, started, errors = connect(model.proj.st), threading.Event(), []
    _slow_gate(gate_reg, started)

    def gate() -> None:
        try:
            governance.apply_gate(gate_reg, model.name, v, True, ["auc ok"], "manual")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    # when the gate is being written and a person overrides at that moment
    t = threading.Thread(target=gate)
    t.start()
    assert started.wait(30)
    if who == "approve":
        out = approval.decide(model.reg, model.name, v, True, "eve", "urgent", override=True)
    else:
        out = governance.promote(model.reg, model.name, v, "eve", "urgent", override=True)
    t.join(60)

    # then the person's action saw the gate
    assert errors == []
    vtags = model.reg.client.get_model_version(model.name, v).tags
    assert vtags[tags.GATE] == "passed"
    if who == "approve":
        assert out["override"] is False and tags.OVERRIDE not in vtags
        assert vtags[tags.APPROVAL] == "approved"
    else:
        assert "no promotion gate result" not in out["reason"]
        assert "waiting for approval" in out["reason"] and model.alias() == v
    assert audit.check_history(model.history(), model.alias()) == []


def test_audit_times_follow_the_order_of_events(model: Model) -> None:
    """Case: an approval made while another alias move holds the registry lock for a while.
    Behaviour: every audit time is taken inside the lock, so ordering the history by time
    and by sequence number agree
    """
    v1, v2 = model.add(), model.add()
    held = threading.Event()

    def slow_move() -> None:
        with audit.registry_lock(model.proj.st, model.name):
            held.set()
            time.sleep(1.5)
            audit.move_champion(connect(model.proj.st), model.name, v1, "slow", by="dag")

    # when an approval starts while the slow move holds the lock
    t = threading.Thread(target=slow_move)
    t.start()
    assert held.wait(30)
    approval.decide(model.reg, model.name, v2, True, "eve", "looks good")
    t.join(60)

    # then the approval comes after the move, in time as in sequence
    events = model.history()[::-1]
    assert [e["action"] for e in events] == ["promote", "approve"]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    approved_at = model.reg.client.get_model_version(model.name, v2).tags[tags.APPROVAL_AT]
    assert approved_at == events[1]["at"]


def test_status_of_a_champion_whose_model_files_are_gone(
    model: Model, tmp_path: Path, capsys
) -> None:
    """Case: the champion's model files are deleted from the artifact store (a cleanup job, a
    lost disk), the registry still pointing at them.
    Behaviour: `mlops status` lists a problem naming the version and the missing location
    and suggests `mlops rollback` (the artifacts are listed, not loaded)
    """
    import mlflow

    champ = model.reg.client.get_model_version_by_alias(model.proj.params.model_name, CHAMPION)
    copy = Path(mlflow.artifacts.download_artifacts(champ.source, dst_path=str(tmp_path / "m")))
    v1 = model.add(source=copy.as_uri())
    assert model.cli("promote", model.name, v1, "--by", "ann", "--reason", "setup") == 0
    assert governance.status(model.reg, model.name)[0]["problems"] == []

    # when the version's files are deleted
    shutil.rmtree(copy)

    # then status says so and what to do
    capsys.readouterr()
    assert model.cli("status", model.name, "--json") == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["champion"]["version"] == v1
    [problem] = row["problems"]
    assert f"champion v{v1}: artifacts are missing at" in problem
    assert str(copy) in problem and f"run `mlops rollback {model.name}`" in problem


def _open_at(uri: str, params: str, start: float) -> str:
    """In a fresh process: open the registry on ``uri`` at ``start``, list its models."""
    import mlflow  # noqa: F401 - imported before the start, so every process opens at once

    from mlops.config import settings

    st = settings(Path(params), env={"MLFLOW_TRACKING_URI": uri})
    time.sleep(max(0.0, start - time.time()))
    reg = connect(st)
    return str(len(reg.client.search_registered_models()))


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Case: several processes open a SQLite registry that does not exist yet, at once
    (`mlops run`'s worker and its parent, parallel tasks on a fresh project).
    Behaviour: they open it one at a time under `mlflow.db.lock`, so MLflow creates and
    migrates its tables once; every process opens it and sees the same registry."""
    # given a SQLite store that does not exist yet, and four processes about to open it
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tests.conftest import FLIGHTS, make_project

    params = str(make_project(tmp_path / "proj", FLIGHTS, None))
    uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=ctx) as pool:
        start = time.time() + 15  # past every process's imports (four on two cores)
        futures = [pool.submit(_open_at, uri, params, start) for _ in range(4)]
        # when they all open it at the same moment (each creates the tables if missing)
        results = [f.result(timeout=180) for f in futures]
    # then every one opened it and sees the same empty registry; the lock sits beside it
    assert results == ["0"] * 4
    assert (tmp_path / "shared" / "mlflow.db.lock").is_file()
