"""train's fingerprint: the same data, params and code name one version; any change another.

Also the run hygiene under it (``mlops.runs``) on a real MLflow store: a run left RUNNING
by a killed stage is closed as KILLED with its PENDING model FAILED, and finished runs and
fingerprinted versions are found again by their tags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops import registry, runs, tags
from mlops.config import Params, load_params, settings
from tests.conftest import FLIGHTS

DATA = {
    "2013-W02": {"raw": "a" * 32, "validated": "b" * 32, "features": "c" * 32},
    "2013-W03": {"raw": "d" * 32, "validated": "e" * 32, "features": "f" * 32},
}
CODE = {"mlops/train.py": "c" * 32, "xgboost": "3.2.0"}


def _params(tmp_path: Path, change: dict[str, Any] | None = None) -> Params:
    raw = yaml.safe_load(FLIGHTS.read_text())
    for dotted, value in (change or {}).items():
        *path, last = dotted.split(".")
        node = raw
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    out = tmp_path / f"params_{len(list(tmp_path.glob('params_*')))}.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(out)


def _fp(params: Params, data: dict[str, Any] = DATA, code: dict[str, str] = CODE) -> str | None:
    inputs = runs.training_inputs(params, data, code)
    return None if inputs is None else runs.fingerprint(inputs)


def test_same_inputs_give_the_same_fingerprint_whatever_the_order(tmp_path: Path) -> None:
    # given the same params read twice and the same hashes in another order
    a, b = _params(tmp_path), _params(tmp_path)
    reordered = {p: dict(reversed(list(f.items()))) for p, f in reversed(list(DATA.items()))}
    # then the fingerprint is one value, a sha256
    assert _fp(a) == _fp(b, reordered) and len(_fp(a) or "") == 64


@pytest.mark.parametrize(
    "change",
    [
        {"train.seed": 7},
        {"train.max_categories": 17},
        {"train.candidates": [{"name": "x", "kind": "xgboost", "params": {"max_depth": 2}}]},
        {"materialize.project": "other_project"},
        {"train.threshold": {"rule": "recall", "value": 0.8}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_param_that_changes_the_fit_changes_the_fingerprint(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    assert _fp(_params(tmp_path, change)) != _fp(_params(tmp_path))


def test_the_threshold_rule_and_its_value_each_name_another_version(tmp_path: Path) -> None:
    # given the threshold's settings, which train reads with the whole train group
    from mlops import stages

    assert "train" in stages.PARAMS["train"]
    recall = {"rule": "recall", "value": 0.8}
    prints = {
        _fp(_params(tmp_path, {"train.threshold": t}))
        for t in (
            recall,
            {**recall, "rule": "precision"},
            {**recall, "value": 0.7},
            {"rule": "best_f1"},
        )
    }
    # then each rule and value has its own fingerprint: a changed rule retrains
    assert len(prints) == 4 and None not in prints


@pytest.mark.parametrize(
    "change",
    [
        {"promote.floor": 0.51},
        {"monitor.drift_share": 0.9},
        {"score.chunk_rows": 1234},
        # validate's settings reach the fit only through the validated files, hashed as data
        {"validate.max_duplicate_keys": 5},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_param_train_does_not_read_keeps_the_fingerprint(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    assert _fp(_params(tmp_path, change)) == _fp(_params(tmp_path))


def test_changed_data_or_code_changes_the_fingerprint_and_unknown_data_has_none(
    tmp_path: Path,
) -> None:
    p = _params(tmp_path)
    for file in ("raw", "validated", "features"):
        assert _fp(p, {**DATA, "2013-W03": {**DATA["2013-W03"], file: "0" * 32}}) != _fp(p)
    assert _fp(p, code={**CODE, "xgboost": "3.3.0"}) != _fp(p)
    # a partition never ingested, or a file missing: nothing to recognise the data by
    assert _fp(p, {**DATA, "2013-W03": {**DATA["2013-W03"], "raw": "unknown"}}) is None
    assert _fp(p, {**DATA, "2013-W03": {**DATA["2013-W03"], "features": None}}) is None
    assert _fp(p, {}) is None


def test_the_code_identity_covers_the_modules_that_fit_and_not_the_cli() -> None:
    code = runs.code_identity()
    assert {"mlops/train.py", "mlops/models.py", "mlops/features.py"} <= set(code)
    assert "mlops/cli.py" not in code and "xgboost" in code
    assert code == runs.code_identity()  # stable between two calls


@pytest.fixture
def reg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> registry.Registry:
    for var in ("MLFLOW_TRACKING_URI", "MLOPS_PROJECT_ROOT", "MLOPS_DATA_ROOT", "MLOPS_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    pp = tmp_path / "params.yaml"
    pp.write_text(FLIGHTS.read_text())
    return registry.connect(settings(pp))


def test_runs_left_running_are_closed_as_killed_with_their_pending_models_failed(
    reg: registry.Registry,
) -> None:
    # given a train run left RUNNING with a PENDING model (as a SIGKILL mid-upload leaves
    # them), a finished train run, and a RUNNING monitor run
    c, exp = reg.client, reg.experiment_id("m")
    zombie = c.create_run(exp, tags={tags.STAGE: "train"}).info.run_id
    pending = c.create_logged_model(exp, source_run_id=zombie, name="model").model_id
    done = c.create_run(exp, tags={tags.STAGE: "train"}).info.run_id
    c.set_terminated(done, "FINISHED")
    other = c.create_run(exp, tags={tags.STAGE: "monitor", tags.PARTITION: "2013-W28"})

    # when train's next start closes what its stage left open
    closed = runs.close_interrupted(reg, exp, "train")

    # then only the train zombie is closed: KILLED, tagged why, its model FAILED
    assert closed == [zombie]
    run = c.get_run(zombie)
    assert run.info.status == "KILLED" and run.data.tags[tags.INTERRUPTED] == "true"
    assert "killed" in run.data.tags[tags.INTERRUPTED_WHY]
    assert str(c.get_logged_model(pending).status) == "FAILED"
    assert c.get_run(done).info.status == "FINISHED"
    assert c.get_run(other.info.run_id).info.status == "RUNNING"
    # and a second start finds nothing more to close
    assert runs.close_interrupted(reg, exp, "train") == []
    # and monitor closes its own only for the partition it holds the lock of
    assert runs.close_interrupted(reg, exp, "monitor", {tags.PARTITION: "2013-W29"}) == []
    key = {tags.PARTITION: "2013-W28"}
    assert runs.close_interrupted(reg, exp, "monitor", key) == [other.info.run_id]


def test_finished_runs_and_fingerprinted_versions_are_found_by_their_tags(
    reg: registry.Registry,
) -> None:
    c, exp = reg.client, reg.experiment_id("m")
    key = {tags.PARTITION: "2013-W28", tags.MODEL_VERSION: "1", tags.INPUT_MD5: "e" * 32}
    assert runs.find_run(reg, exp, "monitor", key) is None
    first = c.create_run(exp, tags={tags.STAGE: "monitor", **key}).info.run_id
    assert runs.find_run(reg, exp, "monitor", key) is None  # still RUNNING: not reused
    c.set_terminated(first, "FINISHED")
    assert runs.find_run(reg, exp, "monitor", key) == first
    assert runs.find_run(reg, exp, "monitor", {**key, tags.INPUT_MD5: "f" * 32}) is None

    assert runs.find_version(reg, "m", "0" * 64) is None  # no such model yet
    c.create_registered_model("m")
    for fp in ("1" * 64, "2" * 64):
        c.create_model_version(
            "m", f"runs:/{first}/model", run_id=first, tags={tags.FINGERPRINT: fp}
        )
    assert str(runs.find_version(reg, "m", "2" * 64).version) == "2"
    assert runs.find_version(reg, "m", "3" * 64) is None
