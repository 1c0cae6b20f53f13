"""A service the pipeline depends on is down, slow or locked: bounded retries with back-off,
then one clear error, and no half-done state."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlops import features, materialize, partitions
from tests.reliability.conftest import (
    CSV_WEEK,
    MATERIALIZE_WEEK,
    SCORED,
    Project,
    csv_params,
    digest,
    digests,
    quiet_env,
)
from tests.reliability.test_bad_input import write_csv_source

pytestmark = pytest.mark.integration
AREA = "Services down"
SECRET = "s3cr3t-pw"
# Our own retries (registry.retry, materialize) and MLflow's HTTP client, kept short.
FAST_RETRIES = {
    "MLOPS_RETRY_ATTEMPTS": "3",
    "MLOPS_RETRY_DELAY_S": "0.2",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "1",
}


class Endpoint:
    """A TCP port that counts connections and then resets them (down) or never answers
    (slow)."""

    def __init__(self, mode: str) -> None:
        self.mode, self.connections, self._held = mode, 0, []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.mode == "down":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                self._held.append(conn)

    def close(self) -> None:
        self._sock.close()
        for c in self._held:
            c.close()


@pytest.fixture
def endpoint(request) -> Iterator[Endpoint]:
    ep = Endpoint(request.param)
    yield ep
    ep.close()


def _tracking(ep: Endpoint) -> str:
    return f"http://mlops:{SECRET}@127.0.0.1:{ep.port}"


@pytest.mark.parametrize("endpoint", ["down"], indirect=True)
def test_mlflow_down_during_train(proj: Project, capsys, monkeypatch, endpoint) -> None:
    """Case: The MLflow tracking server is down while `train` logs and registers.
    Behaviour: each call is retried with back-off, then `train` exits 1 with `MLflow create
    experiment failed after 3 tries` and the server address (password masked); no version is
    registered, no alias moves, `state/train.json` is unchanged
    """
    from tests.reliability.test_kill import _fast_params

    fast = _fast_params(proj)
    st = proj.st
    versions, champion = proj.versions(), proj.champion()
    train_state = (st.state_dir / "train.json").read_text()
    capsys.readouterr()

    # when train runs against a tracking server that resets every connection
    t0 = time.monotonic()
    with quiet_env(monkeypatch, MLFLOW_TRACKING_URI=_tracking(endpoint), **FAST_RETRIES):
        code = proj.cli("train", params=fast)
    elapsed = time.monotonic() - t0

    # then it retried, then failed clearly, without leaking the password
    err = capsys.readouterr().err
    assert code == 1
    assert "error: train: MLflow create experiment failed after 3 tries with back-off" in err
    assert f"127.0.0.1:{endpoint.port}" in err and SECRET not in err
    assert endpoint.connections >= 3
    assert elapsed < 120
    # and the real registry and the state are untouched
    assert proj.versions() == versions and proj.champion() == champion
    assert (st.state_dir / "train.json").read_text() == train_state


@pytest.mark.parametrize("endpoint", ["slow"], indirect=True)
def test_mlflow_slow_during_score(proj: Project, capsys, monkeypatch, endpoint) -> None:
    """Case: The MLflow tracking server accepts connections but never answers during `score`.
    Behaviour: each request times out (`MLFLOW_HTTP_REQUEST_TIMEOUT`) and is retried with
    back-off, then `score` exits 1 naming the champion lookup; the previous predictions are
    intact
    """
    st = proj.st
    before = digests(st.predictions_dir)
    capsys.readouterr()

    # when score runs against a server that never answers
    with quiet_env(monkeypatch, MLFLOW_TRACKING_URI=_tracking(endpoint), **FAST_RETRIES):
        code = proj.cli("score", "--partitions", SCORED)

    # then it gave up after bounded retries, saying what it was doing
    err = capsys.readouterr().err
    assert code == 1
    assert "MLflow resolve flight_delay@champion failed after 3 tries with back-off" in err
    assert "timed out" in err.lower() and SECRET not in err
    assert endpoint.connections >= 3
    assert digests(st.predictions_dir) == before


@pytest.mark.parametrize("endpoint", ["down"], indirect=True)
def test_mlflow_down_during_promote(proj: Project, capsys, monkeypatch, endpoint) -> None:
    """Case: The MLflow tracking server is down during `promote`.
    Behaviour: MLflow's client retries the request, then `promote` exits 1 naming the failed
    API call; no alias is set or moved
    """
    versions, champion = proj.versions(), proj.champion()
    capsys.readouterr()

    # when the gate tries to record its decision and move aliases
    with quiet_env(monkeypatch, MLFLOW_TRACKING_URI=_tracking(endpoint), **FAST_RETRIES):
        code = proj.cli("promote")

    # then it fails clearly after retrying, and no alias moved
    err = capsys.readouterr().err
    assert code == 1
    assert "error: promote:" in err and "API request to" in err
    assert f"127.0.0.1:{endpoint.port}" in err and SECRET not in err
    assert endpoint.connections >= 2
    assert proj.versions() == versions and proj.champion() == champion


@pytest.mark.parametrize("endpoint", ["down"], indirect=True)
def test_online_store_down_during_materialize(proj: Project, capsys, monkeypatch, endpoint) -> None:
    """Case: The Feast online store (Redis) is unreachable during `materialize`.
    Behaviour: the load is retried with back-off, then `materialize` exits 1 naming the store
    (password masked) and saying the offline features are complete; the offline file is whole
    and serves training; rerunning once the store is back loads it
    """
    params, st = proj.params, proj.st
    feature_file = partitions.file(features.source_dir(params, st), MATERIALIZE_WEEK)
    sqlite_online = digest(st.data_root / "feast" / "online.db")
    capsys.readouterr()

    # when materialize runs with the online store at a port that resets connections
    with quiet_env(
        monkeypatch,
        MLOPS_FEAST_ONLINE=f"redis://:{SECRET}@127.0.0.1:{endpoint.port}/0",
        MLOPS_RETRY_ATTEMPTS="2",
        MLOPS_RETRY_DELAY_S="0.2",
    ):
        code = proj.cli("materialize", "--partitions", MATERIALIZE_WEEK)

    # then it retried and failed clearly
    err = capsys.readouterr().err
    assert code == 1
    assert f"online store redis 127.0.0.1:{endpoint.port} unavailable after 2 tries" in err
    assert "offline features of 2013-W27" in err and SECRET not in err
    assert endpoint.connections >= 2
    # and the offline side is whole and consistent
    validated = pd.read_parquet(partitions.file(st.validated_dir, MATERIALIZE_WEEK))
    expected = materialize.feature_rows(validated, params.contract, {"flight_id": "string"})
    pd.testing.assert_frame_equal(pd.read_parquet(feature_file), expected, check_dtype=False)
    assert digest(st.data_root / "feast" / "online.db") == sqlite_online
    # when the store is back, the rerun loads it
    assert proj.cli("materialize", "--partitions", MATERIALIZE_WEEK) == 0
    served = features.online_features(
        params, st, validated[params.contract.entity_keys].head(20).to_dict("records")
    )
    assert served["temp"].notna().any()


HOLD_DVC_LOCK = """
import sys, time
from dvc.repo import Repo
repo = Repo(sys.argv[1])
repo.lock.lock()
print("held", flush=True)
time.sleep(600)
"""


def _cache_consistent(root: Path) -> list[str]:
    """Pointers whose cached copy is missing or differs (DVC 3 cache layout)."""
    import yaml

    bad = []
    for pointer in sorted((root / "data" / "raw").glob("*.dvc")):
        md5 = yaml.safe_load(pointer.read_text())["outs"][0]["md5"]
        cached = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        if digest(cached) != md5:
            bad.append(pointer.name)
    return bad


def test_dvc_lock_held_by_another_process(proj: Project, capsys, monkeypatch) -> None:
    """Case: DVC's repository lock is held by another process during `ingest`.
    Behaviour: `ingest` waits up to `MLOPS_DVC_LOCK_WAIT_S` with back-off, then exits 1 naming
    the lock; the lock is never forced and every pointer still matches the cache; the rerun
    succeeds once the lock is free
    """
    params = csv_params(proj, write_csv_source(proj, "dvclock"))
    pointer = proj.st.raw_dir / f"{CSV_WEEK}.parquet.dvc"
    pointer_before = pointer.read_text()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_DVC_LOCK, str(proj.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        # given another process holding DVC's lock
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        capsys.readouterr()

        # when ingest needs DVC
        t0 = time.monotonic()
        with quiet_env(monkeypatch, MLOPS_DVC_LOCK_WAIT_S="1"):
            code = proj.cli("ingest", "--partitions", CSV_WEEK, params=params)
        elapsed = time.monotonic() - t0

        # then it waited a bounded time and failed clearly, forcing nothing
        err = capsys.readouterr().err
        assert code == 1
        assert ".dvc/tmp/lock: DVC repository lock held by another process" in err
        assert "MLOPS_DVC_LOCK_WAIT_S" in err
        assert elapsed < 60
        assert holder.poll() is None  # the holder was left alone
        assert pointer.read_text() == pointer_before
        assert _cache_consistent(proj.root) == []
    finally:
        holder.kill()
        holder.wait()

    # when the lock is free, the rerun succeeds and the cache stays consistent
    assert proj.cli("ingest", "--partitions", CSV_WEEK, params=params) == 0
    assert _cache_consistent(proj.root) == []
