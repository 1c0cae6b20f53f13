"""params.yaml validation: valid files load; each invalid file fails naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.cli import main
from mlops.config import ConfigError, load_params, settings

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parent
VALID = [REPO / "params.yaml", REPO / "examples/seattle_weather/params.yaml",
         *sorted((HERE / "configs/valid").glob("*.yaml"))]
INVALID = sorted((HERE / "configs/invalid").glob("*.yaml"))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_configs_load(path: Path) -> None:
    params = load_params(path)
    assert params.contract.target in params.contract.columns
    assert params.gate_metric


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_config_names_the_key(path: Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect-error: ").strip()
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_cli_fails_before_any_work_on_invalid_config(tmp_path: Path, capsys) -> None:
    # given an invalid config, when any stage runs, then it exits 2 naming the key
    bad = HERE / "configs/invalid/unknown_key.yaml"
    code = main(["--params", str(bad), "ingest"])
    assert code == 2
    assert "train.epochs: unknown key" in capsys.readouterr().err
    assert not (bad.parent / "data").exists()


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
