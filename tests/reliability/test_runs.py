"""MLflow runs and registrations: a killed stage leaves no run RUNNING for ever, and a rerun
on the same input reuses what the first run made instead of adding another.

Kills are real SIGKILLs at fault points (``mlops.faults``): inside a candidate's run while
its model is PENDING (``train.model_pending``), inside a monitor run
(``monitor.run_started``).
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from mlops import io, partitions, provenance, tags
from mlops.registry import connect
from tests.reliability.conftest import SCORED, Project, digest
from tests.reliability.test_kill import _fast_params

pytestmark = pytest.mark.integration
AREA = "MLflow runs and registrations"
KILLED = -signal.SIGKILL


def _runs(proj: Project, stage: str, status: str | None = None, **where: str) -> list[Any]:
    reg = connect(proj.st)
    exp = reg.experiment_id(proj.params.model_name)
    found = [tags.search(tags.STAGE, stage), *(tags.search(k, v) for k, v in where.items())]
    if status:
        found.append(f"attributes.status = '{status}'")
    return list(reg.client.search_runs([exp], " and ".join(found), max_results=1000))


def _models_of(proj: Project, run_id: str) -> list[Any]:
    reg = connect(proj.st)
    exp = reg.experiment_id(proj.params.model_name)
    return list(reg.client.search_logged_models([exp], f"source_run_id = '{run_id}'"))


def test_train_killed_while_logging_a_model_is_closed_on_the_next_start(proj: Project) -> None:
    """Case: `train` killed (SIGKILL) inside a candidate's MLflow run, its model PENDING.
    Behaviour: no version is registered and `state/train.json` is unchanged; the next `train`
    closes the run as KILLED (tagged `mlops.interrupted` with why) and marks its model FAILED
    before training, then registers the version; no train run is left RUNNING
    """
    fast = _fast_params(proj, trees=22)
    st = proj.st
    known, state_before = proj.versions(), (st.state_dir / "train.json").read_text()
    running_before = {r.info.run_id for r in _runs(proj, "train", "RUNNING")}

    # when a training is killed while its candidate's model is being logged
    res = proj.stage("train", fault="train.model_pending", params=fast)

    # then its run is left RUNNING with a PENDING model, and nothing was registered
    assert res.returncode == KILLED, res.stderr[-2000:]
    (zombie,) = {r.info.run_id for r in _runs(proj, "train", "RUNNING")} - running_before
    (model,) = _models_of(proj, zombie)
    assert str(model.status) == "PENDING"
    assert proj.versions() == known
    assert (st.state_dir / "train.json").read_text() == state_before

    # when train starts again
    assert proj.cli("train", params=fast) == 0

    # then the zombie is closed as killed, its model failed, and the training is done
    run = connect(st).client.get_run(zombie)
    assert run.info.status == "KILLED" and run.data.tags[tags.INTERRUPTED] == "true"
    assert "killed" in run.data.tags[tags.INTERRUPTED_WHY]
    (model,) = _models_of(proj, zombie)
    assert str(model.status) == "FAILED"
    assert not _runs(proj, "train", "RUNNING")
    result = io.read_json(st.state_dir / "train.json")
    assert set(proj.versions()) - set(known) == {result["version"]}
    assert result["run_id"] != zombie


def test_train_on_identical_data_gives_back_the_version_and_new_params_a_new_one(
    proj: Project,
) -> None:
    """Case: `train` rerun on identical data, params and code (a retried task, a second `dvc
    repro`), then with one hyper-parameter changed.
    Behaviour: the rerun registers no version and logs no run: it gives back the version the
    same inputs made (its fingerprint tag), whatever the gate made of it, and `state/train.json`
    names it as the first run wrote it; changed params register a new version
    """
    first_params, changed = _fast_params(proj, trees=23), _fast_params(proj, trees=24)
    st = proj.st
    champion = proj.champion()

    # given a training
    assert proj.cli("train", params=first_params) == 0
    first = io.read_json(st.state_dir / "train.json")
    versions, train_runs = proj.versions(), len(_runs(proj, "train"))

    # when it is run again on the same data, params and code
    assert proj.cli("train", params=first_params) == 0

    # then the same version comes back, with the same summary, and nothing new is logged
    assert io.read_json(st.state_dir / "train.json") == first
    assert proj.versions() == versions and len(_runs(proj, "train")) == train_runs
    assert proj.champion() == champion

    # when one hyper-parameter changes
    assert proj.cli("train", params=changed) == 0

    # then that is another model: a new version
    second = io.read_json(st.state_dir / "train.json")
    assert second["version"] not in versions
    assert set(proj.versions()) - set(versions) == {second["version"]}


def _scored_as_now(proj: Project) -> dict[str, Any]:
    """The prediction sidecar of SCORED, recording the partition's current raw md5.

    ``score`` records ``input_md5`` itself (issue #13 item 2); on a tree where it does not
    yet, the shared project's sidecar is completed here as score would write it.
    """
    st = proj.st
    sidecar = partitions.file(st.predictions_dir, SCORED).with_suffix(".json")
    meta = io.read_json(sidecar)
    if "input_md5" not in meta:
        meta["input_md5"] = provenance.current(st, SCORED)
        io.write_json(sidecar, meta)
    return dict(meta)


def test_monitor_killed_is_closed_and_reruns_keep_one_run_per_input(proj: Project) -> None:
    """Case: `monitor` killed (SIGKILL) inside its MLflow run, then rerun, and rerun again on
    the same predictions.
    Behaviour: the next `monitor` closes the interrupted run as KILLED (tagged
    `mlops.interrupted`); the partition has one finished monitor run per model version and
    input md5, which each rerun reuses; `drift.json` records the model version and input md5
    """
    meta = _scored_as_now(proj)
    key = {
        tags.PARTITION: SCORED,
        tags.MODEL_VERSION: meta["model_version"],
        tags.INPUT_MD5: meta["input_md5"],
    }
    assert proj.cli("monitor", "--partitions", SCORED) == 0
    (done,) = _runs(proj, "monitor", "FINISHED", **key)

    # when monitor is killed inside its run
    res = proj.stage("monitor", "--partitions", SCORED, fault=f"monitor.run_started:{SCORED}")

    # then the run is left RUNNING
    assert res.returncode == KILLED, res.stderr[-2000:]
    (zombie,) = _runs(proj, "monitor", "RUNNING", **{tags.PARTITION: SCORED})

    # when it is rerun, twice
    assert proj.cli("monitor", "--partitions", SCORED) == 0
    (after_one,) = _runs(proj, "monitor", "FINISHED", **key)
    assert proj.cli("monitor", "--partitions", SCORED) == 0

    # then the interrupted run is closed as killed, and one finished run describes this input
    run = connect(proj.st).client.get_run(zombie.info.run_id)
    assert run.info.status == "KILLED" and run.data.tags[tags.INTERRUPTED] == "true"
    assert not _runs(proj, "monitor", "RUNNING", **{tags.PARTITION: SCORED})
    (again,) = _runs(proj, "monitor", "FINISHED", **key)
    assert again.info.run_id == after_one.info.run_id
    assert done.info.run_id in {zombie.info.run_id, again.info.run_id}
    drift = io.read_json(proj.st.reports_dir / SCORED / "drift.json")
    assert drift["model_version"] == meta["model_version"]
    assert drift["input_md5"] == meta["input_md5"]


def test_monitor_refuses_predictions_made_from_an_older_version(proj: Project, capsys) -> None:
    """Case: the predictions of a partition were made from an earlier version of its raw data
    (re-ingested since), as their sidecar's `input_md5` says.
    Behaviour: `monitor` exits 1 naming the predictions file, both versions and `mlops score
    --partitions <partition>` to re-run; the drift report and the monitor runs are unchanged
    """
    meta = _scored_as_now(proj)
    st = proj.st
    sidecar = partitions.file(st.predictions_dir, SCORED).with_suffix(".json")
    report = digest(st.reports_dir / SCORED / "drift.json")
    runs_before = len(_runs(proj, "monitor", **{tags.PARTITION: SCORED}))
    try:
        io.write_json(sidecar, {**meta, "input_md5": "0" * 32})
        capsys.readouterr()

        # when monitor is asked for it
        code = proj.cli("monitor", "--partitions", SCORED)

        # then it refuses, naming the file, the versions and what to re-run
        err = capsys.readouterr().err
        assert code == 1
        assert str(partitions.file(st.predictions_dir, SCORED)) in err
        assert "0" * 32 in err and meta["input_md5"] in err
        assert f"mlops score --partitions {SCORED}" in err
        assert digest(st.reports_dir / SCORED / "drift.json") == report
        assert len(_runs(proj, "monitor", **{tags.PARTITION: SCORED})) == runs_before
    finally:
        io.write_json(sidecar, meta)
