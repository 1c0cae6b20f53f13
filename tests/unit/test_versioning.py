"""versioning: DVC tracks many files in one call, quietly, and reads their hashes back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mlops import io, versioning


def test_track_many_files_in_one_call(project, capfd) -> None:
    # given 30 small files in a fresh project (git, DVC and a local remote)
    root = project().parent
    files = []
    for i in range(30):
        path = root / "data" / "raw" / f"2013-01-{i + 1:02d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"x": [i]}), path)
        files.append(path)
    before = {p: p.read_bytes() for p in files}

    # when tracked and pushed in one call
    hashes = versioning.track(root, files, push=True)

    # then each has its pointer and hash, the files are unchanged, the remote holds them
    for p in files:
        assert hashes[str(p)] == io.md5(p) == versioning.content_hash(p)
        assert p.read_bytes() == before[p]
        remote = root / ".dvcstore" / "files" / "md5" / hashes[str(p)][:2] / hashes[str(p)][2:]
        assert remote.is_file()
    dvc = str(Path(sys.executable).with_name("dvc"))
    status = subprocess.run([dvc, "status"], cwd=root, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout.lower()
    # and DVC's "git add" hint, naming every file, is not printed
    out, err = capfd.readouterr()
    assert "git add" not in out + err
