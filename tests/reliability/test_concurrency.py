"""Two runs of the same stage on the same partition at once: the second is refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import pytest

from mlops import partitions
from tests.conftest import REPO
from tests.reliability.conftest import SCORED, Project, digest, digests

pytestmark = pytest.mark.integration
AREA = "Concurrent runs"

HOLD_STAGE_LOCK = """
import sys, time
from pathlib import Path
from mlops import io
with io.exclusive(Path(sys.argv[1]), sys.argv[2], [sys.argv[3]]):
    print("held", flush=True)
    time.sleep(600)
"""


@contextmanager
def running_elsewhere(proj: Project, stage: str, key: str) -> Iterator[subprocess.Popen]:
    """Another process that is running ``stage`` on ``key`` (it holds the stage's lock)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_STAGE_LOCK, str(proj.st.state_dir / "locks"), stage, key],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_second_score_of_same_partition_is_refused(proj: Project, capsys) -> None:
    """Case: Two `score` runs for the same partition at once (e.g. a manual run beside the
    DAG's).
    Behaviour: the second exits 1 at once naming the other process and the lock, before any
    work; the predictions are written once; a lock held by a killed process is released by
    the kernel, so the next run goes ahead
    """
    st = proj.st
    target = partitions.file(st.predictions_dir, SCORED)
    before, mtime = digest(target), target.stat().st_mtime_ns

    with running_elsewhere(proj, "score", SCORED) as other:
        capsys.readouterr()
        # when a second score of the same partition starts
        code = proj.cli("score", "--partitions", SCORED)

        # then it is refused, naming the other run; nothing was written
        err = capsys.readouterr().err
        assert code == 1
        assert f"score {SCORED}: already running in process {other.pid}" in err
        assert "refused so nothing is written twice" in err
        assert digest(target) == before and target.stat().st_mtime_ns == mtime

    # when the other run has gone (killed), the next run proceeds and writes the same result
    assert proj.cli("score", "--partitions", SCORED) == 0
    assert digest(target) == before
    assert not pd.read_parquet(target).duplicated(proj.params.contract.entity_keys).any()


@pytest.mark.parametrize(
    ("stage", "args"),
    [
        ("ingest", ["--partitions", SCORED]),
        ("validate", ["--partitions", SCORED]),
        ("materialize", ["--partitions", SCORED]),
    ],
)
def test_second_data_stage_on_same_partition_is_refused(
    proj: Project, capsys, stage: str, args: list[str]
) -> None:
    """Case: Two `ingest`, `validate` or `materialize` runs for the same partition at once.
    Behaviour: the second exits 1 at once naming the other process; raw, validated, feature
    and online data are unchanged
    """
    st = proj.st
    before = {"raw": digests(st.raw_dir), "snapshot": proj.snapshot()}

    with running_elsewhere(proj, stage, SCORED) as other:
        capsys.readouterr()
        code = proj.cli(stage, *args)
        err = capsys.readouterr().err

    assert code == 1
    assert f"{stage} {SCORED}: already running in process {other.pid}" in err
    assert {"raw": digests(st.raw_dir), "snapshot": proj.snapshot()} == before


def test_second_train_of_same_model_is_refused(proj: Project, capsys) -> None:
    """Case: Two `train` runs of the same model at once.
    Behaviour: the second exits 1 at once; no second version is registered
    """
    versions = proj.versions()
    with running_elsewhere(proj, "train", proj.params.model_name) as other:
        capsys.readouterr()
        code = proj.cli("train")
        err = capsys.readouterr().err

    assert code == 1
    assert f"train {proj.params.model_name}: already running in process {other.pid}" in err
    assert proj.versions() == versions
