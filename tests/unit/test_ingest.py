"""ingest: partitions cut from the real source, written once, tracked and pushed by DVC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlops import ingest, io, partitions
from mlops.config import load_params, settings
from mlops.source import load
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, REPO


def test_split_keeps_contract_columns_and_only_wanted_partitions() -> None:
    params = load_params(FLIGHTS)
    df = load(params.source, REPO)
    parts = ingest.split_partitions(df, params.contract, "event_ts", "month", ["2013-02"])
    feb = parts["2013-02"]
    assert list(feb.columns) == params.contract.columns
    assert feb["event_ts"].min() >= pd.Timestamp("2013-02-01", tz="UTC")
    assert feb["event_ts"].max() < pd.Timestamp("2013-03-01", tz="UTC")
    assert feb["flight_id"].is_unique
    # leaking columns never reach a partition
    assert not {"dep_delay", "arr_delay", "air_time", "dep_time", "arr_time"} & set(feb.columns)


def test_malformed_partition_id_is_refused() -> None:
    params = load_params(FLIGHTS)
    with pytest.raises(ValueError, match="not a partition id"):
        ingest.split_partitions(
            pd.DataFrame({"event_ts": []}), params.contract, "event_ts", "month", ["2013-13-99-1"]
        )


def test_run_tracks_pushes_and_is_idempotent(project) -> None:
    # given a fresh project, when two weeks are ingested twice
    params_path = project(overrides=FLIGHTS_SMALL)
    params, st = load_params(params_path), settings(params_path)
    first = ingest.run(params, st, ["2013-W02", "2013-W03"])
    second = ingest.run(params, st, ["2013-W02", "2013-W03"])
    # then the same bytes and hashes come out, tracked by DVC and in the remote
    assert first == second
    for pid, entry in first.items():
        path = partitions.file(st.raw_dir, pid)
        assert entry["md5"] == io.md5(path)
        assert path.with_name(path.name + ".dvc").is_file()
        remote = st.root / ".dvcstore" / "files" / "md5" / entry["md5"][:2] / entry["md5"][2:]
        assert remote.is_file()
    assert io.read_json(st.state_dir / "ingest.json").keys() == {"2013-W02", "2013-W03"}
    dvc = str(Path(sys.executable).with_name("dvc"))
    status = subprocess.run(
        [dvc, "status", "data/raw/2013-W02.parquet.dvc"],
        cwd=st.root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "up to date" in status.stdout.lower()


def test_split_into_days_gives_each_day_its_rows_once() -> None:
    # given a month of real flights and the day partitions of its first week, one day empty
    params = load_params(FLIGHTS)
    df = load(params.source, REPO)
    df = df[df["event_ts"] < pd.Timestamp("2013-02-01", tz="UTC")]
    days = [f"2013-01-0{d}" for d in range(1, 8)] + ["2014-01-01"]

    # when split
    parts = ingest.split_partitions(df, params.contract, "event_ts", "day", days)

    # then each day holds exactly the rows of its interval, sorted, and the empty one is empty
    for pid in days:
        start, end = partitions.interval(pid)
        want = df[(df["event_ts"] >= start) & (df["event_ts"] < end)]
        assert len(parts[pid]) == len(want)
        assert set(parts[pid]["flight_id"]) == set(want["flight_id"])
        assert parts[pid]["event_ts"].is_monotonic_increasing
        assert list(parts[pid].index) == list(range(len(want)))
    assert (
        parts["2014-01-01"].empty and list(parts["2014-01-01"].columns) == params.contract.columns
    )


def test_manifest_keeps_every_version_of_a_partition() -> None:
    from mlops import provenance

    # given a partition ingested once, then the same bytes again, then corrected bytes
    first = {"md5": "a" * 32, "rows": 3, "at": "t0"}
    entries = provenance.updated({}, "2013-01", first)
    entries = provenance.updated(entries, "2013-01", {**first, "at": "t1"})
    entries = provenance.updated(entries, "2013-01", {"md5": "b" * 32, "rows": 4, "at": "t2"})

    # then the same bytes kept the time of their first ingest, and the corrected version
    # is current with the earlier one in its history, replaced when the new one came
    versions = provenance.versions(entries["2013-01"])
    assert [(v["md5"][0], v["at"], v.get("until")) for v in versions] == [
        ("a", "t0", "t2"),
        ("b", "t2", None),
    ]
    assert provenance.current(None, "2013-01", entries) == "b" * 32  # type: ignore[arg-type]
    assert provenance.find(entries, "a" * 32) == [("2013-01", versions[0])]


def test_a_replay_withholds_the_target_of_partitions_after_the_training_window(
    project, capsys
) -> None:
    # given a replay that withholds outcomes after the training weeks (W02-W04)
    params_path = project(overrides={**FLIGHTS_SMALL, "labels": {"withhold": True}})
    params, st = load_params(params_path), settings(params_path)

    # when the last training week and the week after it are ingested
    ingest.run(params, st, ["2013-W04", "2013-W05"])

    # then the training week keeps its target and the later one is written without it
    c = params.contract
    trained = pd.read_parquet(partitions.file(st.raw_dir, "2013-W04"))
    withheld = pd.read_parquet(partitions.file(st.raw_dir, "2013-W05"))
    assert list(trained.columns) == c.columns
    assert list(withheld.columns) == [col for col in c.columns if col != c.target]
    assert len(withheld) > 1000 and withheld[c.feature_names].notna().any().all()
    assert "target 'is_delayed' withheld from 2013-W05" in capsys.readouterr().out
