"""lineage_records: the DVC cache of a project, wherever its DVC repository sits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from mlops import io, partitions
from mlops.config import Settings, settings
from mlops.lineage_records import current_md5, dvc_cache_file
from mlops.versioning import track
from tests.conftest import FLIGHTS

DVC = str(Path(sys.executable).with_name("dvc"))


def _dvc_repo(root: Path) -> None:
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=root, check=True)


def _project_with_a_tracked_partition(root: Path) -> tuple[Settings, str]:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(FLIGHTS, root / "params.yaml")
    st = settings(root / "params.yaml", env={})
    raw = partitions.file(st.raw_dir, "2013-01")
    io.write_parquet(raw, pd.DataFrame({"flight_id": ["a", "b"], "x": [1.0, 2.0]}))
    md5 = track(st.root, [raw], push=False)[str(raw)]
    return st, md5


def test_a_project_in_a_sub_folder_finds_the_cache_of_the_dvc_repo_above_it(
    tmp_path: Path,
) -> None:
    # given a DVC repository whose project lives in examples/demo/, with a tracked partition
    _dvc_repo(tmp_path / "repo")
    st, md5 = _project_with_a_tracked_partition(tmp_path / "repo" / "examples" / "demo")
    assert not (st.root / ".dvc").exists()
    # when lineage looks the partition's content up in the DVC cache
    cached = dvc_cache_file(st, md5)
    # then it is found in the repository's cache, above the project
    assert cached.is_file()
    assert cached.is_relative_to(tmp_path / "repo" / ".dvc" / "cache")
    assert io.md5(cached) == md5 == current_md5(st, "2013-01")


def test_a_project_that_is_the_dvc_repo_finds_its_own_cache(tmp_path: Path) -> None:
    # given a project that is its own DVC repository
    _dvc_repo(tmp_path / "proj")
    st, md5 = _project_with_a_tracked_partition(tmp_path / "proj")
    # then its partition is in its own cache, and an unknown hash is not
    assert dvc_cache_file(st, md5).is_relative_to(st.root / ".dvc" / "cache")
    assert dvc_cache_file(st, md5).is_file()
    assert not dvc_cache_file(st, "0" * 32).is_file()


def test_outside_any_dvc_repository_nothing_is_in_the_cache(tmp_path: Path) -> None:
    # given a project folder that no DVC repository holds
    (tmp_path / "loose").mkdir()
    shutil.copy(FLIGHTS, tmp_path / "loose" / "params.yaml")
    st = settings(tmp_path / "loose" / "params.yaml", env={})
    # then the lookup answers "not cached" instead of failing
    assert not dvc_cache_file(st, "4396c36e8000f9e172f7d14ffac78bcb").is_file()


def test_a_sidecar_that_describes_other_bytes_is_flagged(tmp_path: Path) -> None:
    from mlops.lineage_records import prediction_record

    # given a prediction file and its sidecar, written together
    path = tmp_path / "2013-01.parquet"
    rows = pd.DataFrame({"flight_id": ["a"], "model_name": ["m"], "model_version": ["1"]})
    io.write_parquet(path, rows)
    meta = {"partition": "2013-01", "model_name": "m", "model_version": "1", "md5": io.md5(path)}
    io.write_json(path.with_suffix(".json"), meta)
    assert prediction_record(path)["problems"] == []

    # when the file is replaced and its sidecar is not (a kill between the two writes)
    io.write_parquet(path, rows.assign(flight_id=["b"]))

    # then the record says the sidecar describes other bytes and what to do
    (problem,) = prediction_record(path)["problems"]
    assert f"describes other bytes (md5 {meta['md5']})" in problem and "re-run score" in problem


def test_a_validated_copy_changed_after_validation_is_not_covered(tmp_path: Path) -> None:
    from mlops.lineage_records import validation_record

    # given a partition validated from raw version A, its validated copy recorded
    shutil.copy(FLIGHTS, tmp_path / "params.yaml")
    st = settings(tmp_path / "params.yaml", env={})
    validated = partitions.file(st.validated_dir, "2013-01")
    io.write_parquet(validated, pd.DataFrame({"x": [1.0]}))
    summary = {"success": True, "md5": "a" * 32, "validated_md5": io.md5(validated)}
    io.write_json(st.state_dir / "validation" / "2013-01.json", summary)
    assert validation_record(st, "2013-01", "a" * 32)["covers_trained_data"] is True
    assert validation_record(st, "2013-01", "b" * 32)["covers_trained_data"] is False

    # when the validated copy is changed afterwards
    io.write_parquet(validated, pd.DataFrame({"x": [2.0]}))

    # then the validation on record no longer covers the data
    record = validation_record(st, "2013-01", "a" * 32)
    assert record["covers_trained_data"] is False and record["validated_copy_changed"] is True
