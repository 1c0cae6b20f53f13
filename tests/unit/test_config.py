"""params.yaml validation: valid files load; each invalid case fails naming its key.

The cases are ``tests/configs/invalid.yaml`` and ``valid.yaml``: the project's own
params.yaml plus a one-key override, written under ``tmp_path`` by ``tests/configs/cases.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops.cli import main
from mlops.config import ConfigError, load_params, settings
from tests.configs.cases import (
    BASE,
    REPO,
    Case,
    case,
    delete_path,
    get_path,
    invalid_cases,
    set_path,
    valid_cases,
)

VALID = [BASE, REPO / "examples/seattle_weather/params.yaml"]


@pytest.mark.parametrize("path", VALID, ids=lambda p: str(p.relative_to(REPO)))
def test_valid_configs_load(path: Path) -> None:
    params = load_params(path)
    assert params.contract.target in params.contract.columns
    assert params.gate_metric


@pytest.mark.parametrize("c", valid_cases(), ids=lambda c: c.name)
def test_valid_overrides_load(tmp_path: Path, c: Case) -> None:
    params = load_params(c.write(tmp_path))
    assert params.contract.target in params.contract.columns
    assert params.gate_metric
    loaded = params.model_dump(by_alias=True)
    for path, value in c.set.items():
        assert get_path(loaded, path) == value, path


@pytest.mark.parametrize("c", invalid_cases(), ids=lambda c: c.name)
def test_invalid_config_names_the_key(tmp_path: Path, c: Case) -> None:
    path = c.write(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    msg = str(err.value)
    assert c.error in msg
    assert str(path) in msg
    # broken in one place: exactly one error, under the file's heading
    assert msg.splitlines()[0] == f"{path}: invalid configuration"
    assert len(msg.splitlines()) == 2, msg


def test_case_paths_address_keys_and_list_items() -> None:
    doc = {"train": {"candidates": [{"kind": "a"}, {"kind": "b"}]}, "f": [1, 2]}
    set_path(doc, "train.candidates.1.kind", "xgboost")
    set_path(doc, "train.epochs", 3)
    set_path(doc, "f.-", 3)
    delete_path(doc, "f.0")
    assert doc == {
        "train": {"candidates": [{"kind": "a"}, {"kind": "xgboost"}], "epochs": 3},
        "f": [2, 3],
    }
    assert get_path(doc, "train.candidates.0.kind") == "a"
    # a path that misses the base fails instead of testing something else
    for bad in ("trian.epochs", "train.candidates.2.kind", "train.candidates.x", "f.0.x", "a..b"):
        with pytest.raises(KeyError):
            set_path(doc, bad, 1)
    with pytest.raises(KeyError):
        delete_path(doc, "train.seed")


def test_every_case_changes_the_base() -> None:
    # the base is params.yaml as it is now: an override it already holds tests nothing
    base = yaml.safe_load(BASE.read_text())
    for c in [*invalid_cases(), *valid_cases()]:
        assert c.apply(base) != base, c.name


def test_cli_fails_before_any_work_on_invalid_config(tmp_path: Path, capsys) -> None:
    # given an invalid config alone in its folder, when any stage runs,
    # then it exits 2 naming the key and creates nothing beside it
    c = case("unknown_key")
    bad = c.write(tmp_path)
    code = main(["--params", str(bad), "ingest"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.epochs: unknown key" in err
    assert c.error in err and str(bad) in err
    assert not (bad.parent / "data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_environment_overrides_locations(tmp_path: Path, monkeypatch) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("x: 1\n")
    monkeypatch.setenv("MLOPS_DATA_ROOT", "elsewhere/data")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://mlflow@db/mlflow")
    st = settings(params)
    assert st.data_root == (tmp_path / "elsewhere/data").resolve()
    assert st.tracking_uri == "postgresql://mlflow@db/mlflow"


def test_data_root_cannot_escape_the_project(tmp_path: Path, monkeypatch) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("x: 1\n")
    monkeypatch.setenv("MLOPS_DATA_ROOT", "../../etc")
    with pytest.raises(ConfigError, match="outside the project root"):
        settings(params)
    monkeypatch.setenv("MLOPS_ALLOW_PATHS_OUTSIDE_ROOT", "1")
    assert settings(params).data_root == (tmp_path / "../../etc").resolve()


def _base(**changes) -> dict:
    raw = yaml.safe_load(BASE.read_text())
    for path, value in changes.items():
        set_path(raw, path, value)
    return raw


def test_partition_ranges_expand_to_lists() -> None:
    from mlops.config import Params

    given = Params.model_validate(
        _base(**{"train.partitions": {"from": "2013-02", "to": "2013-04"}})
    )
    assert given.train.partitions == ["2013-02", "2013-03", "2013-04"]
    # `last` without `to`: the window ends just before the first scored partition
    before = Params.model_validate(_base(**{"train.partitions": {"last": 3}}))
    assert before.train.partitions == ["2013-04", "2013-05", "2013-06"]
    yearly = Params.model_validate(
        _base(
            **{
                "ingest.partition": "year",
                "train.partitions": {"last": 2},
                "train.holdout_partitions": 1,
                "score.partitions": {"from": "2009", "to": "2010"},
            }
        )
    )
    assert (yearly.train.partitions, yearly.score.partitions) == (
        ["2007", "2008"],
        ["2009", "2010"],
    )
    assert yearly.train.holdout == ["2008"]


def test_schedule_defaults_follow_the_partitions() -> None:
    from mlops.config import Params

    demo = load_params(BASE)
    assert (demo.scoring_cron, demo.scoring_start) == ("0 0 1 * *", "2013-07-01")
    assert demo.schedule.end == "2013-12-31"
    quarterly = Params.model_validate(
        _base(
            **{
                "ingest.partition": "quarter",
                "train.partitions": {"from": "2012-Q1", "to": "2012-Q4"},
                "score.partitions": [],
                "schedule": {"training": None},
            }
        )
    )
    # nothing to score named: the schedule starts after the training window
    assert (quarterly.scoring_cron, quarterly.scoring_start) == ("0 0 1 */3 *", "2013-01-01")
    assert quarterly.schedule.training is None


def test_loading_params_imports_no_pandas(tmp_path: Path) -> None:
    """DAG files load params.yaml when parsed: ranges must not pull in pandas."""
    import subprocess
    import sys

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_base(**{"train.partitions": {"last": 6}})))
    code = (
        "import sys; from mlops.config import load_params; "
        f"p = load_params({str(path)!r}); assert len(p.train.partitions) == 6; "
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
