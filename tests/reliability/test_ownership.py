"""A data root serves one model and one Feast project: another one's params are refused."""

from __future__ import annotations

import pytest
import yaml

from mlops import io
from tests.reliability.conftest import Project

pytestmark = pytest.mark.integration
AREA = "Shared data roots"
OTHER = "params_other_model.yaml"


def _other_model(proj: Project) -> str:
    """The project's params with only ``model_name`` changed."""
    raw = yaml.safe_load(proj.params_path.read_text())
    raw["model_name"] = f"{raw['model_name']}_other"
    (proj.root / OTHER).write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw["model_name"]


def test_second_model_on_the_same_data_root_is_refused(proj: Project, capsys) -> None:
    """Case: a second params.yaml that differs only in `model_name` runs `train`, `score` and
    `evaluate` on the same data folder.
    Behaviour: each is refused before it reads or writes anything (exit 2), naming the data
    root, the model and params file that own it (`state/owner.json`) and the fix (another
    `MLOPS_DATA_ROOT`); the first model's predictions, state and registry are unchanged
    """
    from mlops.registry import connect

    # given the trained and scored project, and params for another model on its data root
    other = _other_model(proj)
    st = proj.st
    before = proj.snapshot()
    state = {p.name: p.read_text() for p in st.state_dir.glob("*.json")}

    # when the other model's stages run there
    for verb in ("train", "score", "evaluate"):
        capsys.readouterr()
        code = proj.cli(verb, params=OTHER)

        # then each is refused, naming the data root, its owner and the fix
        err = capsys.readouterr().err
        assert code == 2, (verb, err)
        assert f"data root {st.data_root} belongs to model {proj.params.model_name!r}" in err
        assert str(proj.root / "params.yaml") in err and str(proj.root / OTHER) in err
        assert "Set MLOPS_DATA_ROOT to another folder" in err

    # and nothing of the first model changed; the other model was never registered
    assert proj.snapshot() == before
    assert {p.name: p.read_text() for p in st.state_dir.glob("*.json")} == state
    owner = io.read_json(st.state_dir / "owner.json")
    assert owner["model_name"] == proj.params.model_name
    assert not connect(st).client.search_registered_models(f"name='{other}'")


def test_second_model_is_refused_by_the_airflow_tasks(proj: Project, monkeypatch) -> None:
    """Case: an Airflow deployment whose `MLOPS_PARAMS` names another model runs on a data
    folder the first model owns.
    Behaviour: its first task fails at once (`AirflowFailException`, no retries) with the
    same message naming the data root, the owner and `MLOPS_DATA_ROOT`
    """
    from tests.dags.airflow_env import configure

    configure()
    from airflow.sdk.exceptions import AirflowFailException

    from mlops.airflow import tasks

    _other_model(proj)
    monkeypatch.setenv("MLOPS_PARAMS", str(proj.root / OTHER))
    with pytest.raises(AirflowFailException) as err:
        tasks.partitions_of(None, None, ["2013-W28"])
    msg = str(err.value)
    assert f"data root {proj.st.data_root} belongs to model {proj.params.model_name!r}" in msg
    assert "Set MLOPS_DATA_ROOT to another folder" in msg
