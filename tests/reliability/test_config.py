"""Invalid configuration fails before any work, naming the key at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.cli import main
from tests.configs.cases import Case, invalid_cases
from tests.reliability.conftest import MATERIALIZE_WEEK, Project, digests

AREA = "Configuration"


@pytest.mark.parametrize("verb", ["run", "ingest", "train", "score"])
@pytest.mark.parametrize("c", invalid_cases(), ids=lambda c: c.name)
def test_invalid_params_fail_before_any_work(tmp_path: Path, capsys, c: Case, verb: str) -> None:
    """Case: Invalid `params.yaml`: unknown key, wrong type, bad dtype or task, target also a
    feature, gate threshold out of range, metric unfit for the task, holdout too large.
    Behaviour: every command exits 2 naming the key (e.g. `train.epochs: unknown key`) before
    any folder, database or file is created
    """
    # given a project folder holding only an invalid params.yaml (the project's own, broken
    # in one place by a case of tests/configs/invalid.yaml)
    params = c.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]

    # when a command runs
    code = main(["--params", str(params), verb])

    # then it exits 2 naming the key, and created nothing
    err = capsys.readouterr().err
    assert code == 2
    assert c.error in err and str(params) in err
    assert f"error: {params}: invalid configuration" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.integration
def test_bad_online_store_setting_fails_before_any_work(proj: Project, capsys, monkeypatch) -> None:
    """Case: `MLOPS_FEAST_ONLINE` names no known online store.
    Behaviour: `materialize` exits 2 naming the variable and the accepted forms before writing
    any feature file
    """
    # given a validated week and a bad online-store setting
    monkeypatch.setenv("MLOPS_FEAST_ONLINE", "memcached://127.0.0.1:11211")
    before = digests(proj.st.features_dir / proj.params.materialize.project)

    # when materialize runs
    code = proj.cli("materialize", "--partitions", MATERIALIZE_WEEK)

    # then it exits 2 naming the setting; no feature file was written
    err = capsys.readouterr().err
    assert code == 2
    assert "MLOPS_FEAST_ONLINE='memcached://127.0.0.1:11211'" in err and "redis://" in err
    assert digests(proj.st.features_dir / proj.params.materialize.project) == before
