"""ownership: a data root serves one model and one Feast project; another is refused."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops import io, ownership
from mlops.config import ConfigError, Params, Settings, load_params, settings
from tests.unit.conftest import ENV, REPO


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Factory: ``write(name, model_name=..., project=...)`` -> (params, settings)."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    base = yaml.safe_load((REPO / "params.yaml").read_text())

    def factory(
        name: str, model_name: str | None = None, project: str | None = None
    ) -> tuple[Params, Settings]:
        raw = dict(base)
        if model_name:
            raw["model_name"] = model_name
        if project:
            raw["materialize"] = {**raw["materialize"], "project": project}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return load_params(path), settings(path)

    return factory


def test_first_stage_records_the_owner_and_the_same_model_may_use_other_params(write) -> None:
    # given a fresh data root and a second params file for the same model and project
    params, st = write("params.yaml")
    fast, fast_st = write("params_fast.yaml")
    assert fast_st.data_root == st.data_root

    # when both claim it
    first = ownership.claim(params, st)
    second = ownership.claim(fast, fast_st)

    # then the owner is recorded once, naming the first params file, and both may run
    recorded = json.loads((st.state_dir / "owner.json").read_text())
    assert recorded == first == second
    assert recorded["model_name"] == params.model_name
    assert recorded["project"] == params.materialize.project
    assert recorded["params"] == str(st.params_path)


@pytest.mark.parametrize(
    "other", [{"model_name": "other_model"}, {"project": "other_project"}], ids=lambda o: str(*o)
)
def test_another_model_or_project_is_refused_naming_owner_and_fix(
    write, other: dict[str, str]
) -> None:
    # given a data root owned by the flights model
    params, st = write("params.yaml")
    ownership.claim(params, st)
    before = (st.state_dir / "owner.json").read_text()

    # when params that differ only in the model name (or the Feast project) claim it
    o_params, o_st = write("other.yaml", **other)
    with pytest.raises(ConfigError) as err:
        ownership.claim(o_params, o_st)

    # then the message names the data root, the owner, the owning params and the fix
    msg = str(err.value)
    assert f"data root {st.data_root} belongs to model {params.model_name!r}" in msg
    assert f"Feast project {params.materialize.project!r}" in msg
    assert f"params {st.params_path}" in msg and str(o_st.params_path) in msg
    assert "Set MLOPS_DATA_ROOT to another folder" in msg
    # and the owner record is untouched
    assert (st.state_dir / "owner.json").read_text() == before


def test_another_data_root_is_the_fix(write, monkeypatch: pytest.MonkeyPatch) -> None:
    params, st = write("params.yaml")
    ownership.claim(params, st)

    # when the other model gets a data root of its own
    monkeypatch.setenv("MLOPS_DATA_ROOT", "data_other")
    o_params, o_st = write("other.yaml", model_name="other_model")
    mine = ownership.claim(o_params, o_st)

    # then it runs there and both roots keep their own owner
    assert o_st.data_root != st.data_root
    assert mine["model_name"] == "other_model"
    assert io.read_json(st.state_dir / "owner.json")["model_name"] == params.model_name


def test_a_root_used_before_owners_were_recorded_is_owned_by_the_model_that_trained_there(
    write,
) -> None:
    # given a data root whose state/train.json was written by the flights model
    params, st = write("params.yaml")
    io.write_json(st.state_dir / "train.json", {"model_name": params.model_name, "version": "3"})

    # when another model claims it, it is refused naming train.json
    o_params, o_st = write("other.yaml", model_name="other_model")
    with pytest.raises(ConfigError, match=r"it trained there, see .*train\.json"):
        ownership.claim(o_params, o_st)
    assert not (st.state_dir / "owner.json").exists()

    # and the model that trained there adopts it
    assert ownership.claim(params, st)["model_name"] == params.model_name
    assert (st.state_dir / "owner.json").is_file()


@pytest.mark.parametrize("text", ['{"model_name": "flights"', '["flights"]', "{}"])
def test_a_damaged_owner_record_names_the_file(write, text: str) -> None:
    params, st = write("params.yaml")
    (st.state_dir).mkdir(parents=True)
    (st.state_dir / "owner.json").write_text(text)
    with pytest.raises(io.DamagedState) as err:
        ownership.claim(params, st)
    assert str(st.state_dir / "owner.json") in str(err.value)
    assert "Remove it" in str(err.value)


def test_two_models_claiming_a_new_root_at_once_one_wins(write) -> None:
    # given two models starting on the same fresh data root at the same moment
    claims = [write("params.yaml"), write("other.yaml", model_name="other_model")]
    results: list[Any] = []
    gate = threading.Barrier(len(claims))

    def run(params: Params, st: Settings) -> None:
        gate.wait()
        try:
            results.append(ownership.claim(params, st))
        except ConfigError as exc:
            results.append(exc)

    threads = [threading.Thread(target=run, args=c) for c in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    # then exactly one owns it, and the other is refused
    won = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, ConfigError)]
    assert len(won) == 1 and len(refused) == 1, results
    st = claims[0][1]
    assert io.read_json(st.state_dir / "owner.json")["model_name"] == won[0]["model_name"]
