"""A bad batch fails validate clearly, lands in quarantine, and changes nothing else."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from mlops import io
from mlops.cli import main
from mlops.config import load_params, settings
from mlops.registry import CHAMPION, connect
from tests.conftest import FLIGHTS_SMALL
from tests.helpers import record_raw, run_ok

pytestmark = pytest.mark.integration

BAD_WEEK = "2013-W29"


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One project, trained and scored once, shared by the bad-batch cases."""
    from tests.conftest import FLIGHTS, make_project

    params_path = make_project(tmp_path_factory.mktemp("bad") / "proj", FLIGHTS, FLIGHTS_SMALL)
    run_ok("--params", str(params_path), "run")
    return params_path


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("missing_column", "temp"),
        ("wrong_type", "distance"),
        ("null_keys", "flight_id"),
    ],
)
def test_bad_batch_is_quarantined_and_nothing_else_changes(trained, capsys, fault, needle):
    params_path = trained
    params, st = load_params(params_path), settings(params_path)
    champ_before = connect(st).version_by_alias(params.model_name, CHAMPION).version
    preds_before = _digest(st.predictions_dir)
    online_before = hashlib.md5((st.data_root / "feast/online.db").read_bytes()).hexdigest()

    # given a new week ingested for real, then damaged as a bad upstream would
    assert main(["--params", str(params_path), "ingest", "--partitions", BAD_WEEK]) == 0
    raw = st.raw_dir / f"{BAD_WEEK}.parquet"
    df = pd.read_parquet(raw)
    if fault == "missing_column":
        df = df.drop(columns=["temp"])
    elif fault == "wrong_type":
        df["distance"] = df["distance"].astype(str) + " miles"
    elif fault == "null_keys":
        df.loc[df.index[:5], "flight_id"] = None
    io.write_parquet(raw, df)
    record_raw(st, BAD_WEEK)  # as delivered: validate refuses raw files changed after ingest
    capsys.readouterr()

    # when validate runs on it
    code = main(["--params", str(params_path), "validate", "--partitions", BAD_WEEK])

    # then it fails with a message naming the file and the column
    err = capsys.readouterr().err
    assert code == 1
    assert f"{BAD_WEEK}.parquet" in err and needle in err
    # and the batch sits in quarantine with its validation result
    q = st.quarantine_dir / BAD_WEEK
    assert (q / f"{BAD_WEEK}.parquet").is_file()
    report = json.loads((q / "validation.json").read_text())
    assert report["success"] is False
    assert not raw.exists()
    assert not (st.validated_dir / f"{BAD_WEEK}.parquet").exists()
    # and nothing downstream can use it
    assert main(["--params", str(params_path), "materialize", "--partitions", BAD_WEEK]) == 1
    # and the champion, the predictions and the online store are unchanged
    assert connect(st).version_by_alias(params.model_name, CHAMPION).version == champ_before
    assert _digest(st.predictions_dir) == preds_before
    assert hashlib.md5((st.data_root / "feast/online.db").read_bytes()).hexdigest() == (
        online_before
    )
