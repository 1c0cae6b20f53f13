"""The production profile's data folder: on storage every worker mounts, outside the
project's checkout, versioned by a DVC repository of its own that pushes to a remote
every worker reaches (``python -m mlops.production dvc-init``, run by ``airflow-init``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from mlops.cli import main
from mlops.config import settings
from tests.conftest import FLIGHTS_SMALL

WEEK = "2013-W03"


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    dvc = str(Path(sys.executable).with_name("dvc"))
    return subprocess.run([dvc, *args], cwd=cwd, capture_output=True, text=True)


def test_shared_data_folder_is_versioned_and_pushed_to_the_shared_remote(
    project, tmp_path, monkeypatch
) -> None:
    # given a checkout of the project and a shared mount holding the data and the remote
    params_path = project(overrides=FLIGHTS_SMALL)
    shared = tmp_path / "shared"
    env = {
        "MLOPS_PARAMS": str(params_path),
        "MLOPS_DATA_ROOT": str(shared / "data"),
        "MLOPS_ALLOW_PATHS_OUTSIDE_ROOT": "1",
        "MLOPS_DVC_REMOTE": str(shared / "dvc-remote"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    # when the init job runs (twice: it is idempotent) and a partition is ingested
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "mlops.production", "dvc-init"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
    assert main(["--params", str(params_path), "ingest", "--partitions", WEEK]) == 0

    # then the partition is tracked in the shared folder's own repository (no git there)
    data = settings(params_path).data_root
    assert data == shared / "data"
    pointer = data / "raw" / f"{WEEK}.parquet.dvc"
    md5 = yaml.safe_load(pointer.read_text())["outs"][0]["md5"]
    config = (data / ".dvc" / "config").read_text()
    assert "no_scm = True" in config and str(shared / "dvc-remote") in config
    # and pushed: the remote holds its content
    assert (shared / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]).is_file()

    # when a worker without that cache or file pulls it from the remote
    (data / "raw" / f"{WEEK}.parquet").unlink()
    shutil.rmtree(data / ".dvc" / "cache")
    pulled = _dvc("pull", str(pointer), cwd=data)

    # then the same content comes back
    assert pulled.returncode == 0, pulled.stderr
    status = _dvc("status", str(pointer), cwd=data)
    assert status.returncode == 0 and "changed" not in status.stdout
    assert (data / "raw" / f"{WEEK}.parquet").stat().st_size > 0
    # and nothing was written into the checkout's own data folder
    assert not (params_path.parent / "data" / "raw").exists()


def test_dvc_init_without_a_remote_names_the_variable(project, tmp_path) -> None:
    params_path = project(overrides=FLIGHTS_SMALL)
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_DVC_REMOTE"}
    env.update(
        {
            "MLOPS_PARAMS": str(params_path),
            "MLOPS_DATA_ROOT": str(tmp_path / "shared" / "data"),
            "MLOPS_ALLOW_PATHS_OUTSIDE_ROOT": "1",
        }
    )
    out = subprocess.run(
        [sys.executable, "-m", "mlops.production", "dvc-init"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "MLOPS_DVC_REMOTE" in out.stderr + out.stdout
