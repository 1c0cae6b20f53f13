"""The disk fills up while predictions are written: a clear error, the previous file intact."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys

import pytest

from mlops import io, partitions, score
from mlops.registry import CHAMPION, connect
from tests.conftest import REPO
from tests.helpers import predict_chunks, scoring_frame
from tests.reliability.conftest import SCORED, Project, digest, digests

pytestmark = pytest.mark.integration
AREA = "Disk full"

# Runs inside a private mount namespace: the predictions folder becomes a tmpfs holding the
# current files plus 32 KiB, then `score` runs through the CLI.
SMALL_DISK = """
import hashlib, json, subprocess, sys
from pathlib import Path
params, folder, partition = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
saved = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
size = sum(len(b) for b in saved.values()) + 32 * 1024
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
for name, data in saved.items():
    (folder / name).write_bytes(data)
from mlops.cli import main
code = main(["--params", str(params), "score", "--partitions", partition])
print(json.dumps({"code": code, "files": {p.name: hashlib.md5(p.read_bytes()).hexdigest()
                                          for p in folder.iterdir()}}))
"""


def _userns_mount_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=4k tmpfs /mnt",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _userns_mount_works(), reason="needs unprivileged mount namespaces")
def test_disk_full_while_scoring(proj: Project) -> None:
    """Case: The disk fills up while `score` writes predictions (a 32 KiB tmpfs).
    Behaviour: `score` exits 1 with `<file>: cannot write, the disk is full ... the previous
    file is unchanged`; the previous predictions and their metadata are intact and no
    temporary file is left
    """
    st = proj.st
    before = digests(st.predictions_dir)
    target = partitions.file(st.predictions_dir, SCORED)

    # when score runs with only 32 KiB free where predictions go
    res = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            sys.executable,
            "-c",
            SMALL_DISK,
            str(proj.params_path),
            str(st.predictions_dir),
            SCORED,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )

    # then it failed clearly and the small disk holds exactly the previous files
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["code"] == 1
    assert f"error: score: {target}: cannot write, the disk is full" in res.stderr
    assert "No space left on device" in res.stderr
    assert "the previous file is unchanged" in res.stderr
    assert out["files"] == before


def test_file_size_limit_while_writing_predictions(proj: Project) -> None:
    """Case: The file-size limit (`RLIMIT_FSIZE`, as a quota would) is hit while writing
    predictions.
    Behaviour: the writer raises `DiskFull` naming the file; the previous predictions are intact
    and the temporary file is removed
    """
    params, st = proj.params, proj.st
    reg = connect(st)
    mv = reg.version_by_alias(params.model_name, CHAMPION)
    loaded = reg.load(params.model_name, mv.version)
    df = scoring_frame(params, st, [SCORED])
    target = partitions.file(st.predictions_dir, SCORED)
    before = digest(target)

    # when the predictions are written under a 16 KiB file-size limit (Python ignores
    # SIGXFSZ, so the write fails with EFBIG instead of killing the process)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
    try:
        with pytest.raises(io.DiskFull) as err:
            score.write_predictions(target, predict_chunks(df, loaded, params, 1000))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    # then the error names the file and the previous file is intact
    assert str(target) in str(err.value) and "previous file is unchanged" in str(err.value)
    assert digest(target) == before
    assert not list(st.predictions_dir.glob(f".{target.name}.*.tmp"))
