"""The prediction log of mlops serve: buffered, written off the request path, one file per
flush and partition, nothing lost on close or when a write fails; and its summary."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from mlops import io, outcomes, traffic
from mlops.config import Serve

KEYS = {"flight_id": "string"}


def recs(df: pd.DataFrame, params, arm: str = "champion", version: str = "1", rid: str = "r"):
    """Log records of ``df``'s rows, as the predictor makes them."""
    c = params.contract
    now = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i, r in enumerate(df.to_dict("records")):
        rec: dict[str, Any] = {k: r[k] for k in [*c.entity_keys, c.timestamp, *c.feature_names]}
        rec = {k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in rec.items()}
        p = (i % 10) / 10
        rec.update(
            prediction=p,
            predicted_label=int(p >= 0.5),
            model_name="flight_delay",
            model_version=version,
            arm=arm,
            request_id=f"{rid}-{i}",
            served_at=now,
            latency_ms=float(i + 1),
        )
        out.append(rec)
    return out


def log_of(tmp_project, start: bool = False, **serve: Any) -> traffic.Log:
    params, st = tmp_project
    p = params.model_copy(update={"serve": Serve(**serve)})
    return traffic.Log(p, st, KEYS, start=start)


def wait(cond, what: str) -> None:
    deadline = time.monotonic() + 30
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_flush_writes_one_file_per_partition_with_the_contracts_types(tmp_project, months):
    # given rows of January and February appended to the log
    params, st = tmp_project
    log = log_of(tmp_project)
    jan, feb = recs(months["2013-01"].head(7), params), recs(months["2013-02"].head(5), params)
    log.append(jan + feb)
    assert log.pending == 12 and traffic.files(st) == []
    # when it is flushed
    assert log.flush() == 12
    # then each partition has one file holding its rows, typed by the contract
    assert [f.parent.name for f in traffic.files(st)] == ["2013-01", "2013-02"]
    assert log.pending == 0 and log.written == 12
    got = traffic.read(st, "2013-01")
    assert got["request_id"].tolist() == [r["request_id"] for r in jan]
    assert got["flight_id"].tolist() == months["2013-01"]["flight_id"].head(7).tolist()
    assert str(got["event_ts"].dtype) == "datetime64[us, UTC]"
    assert str(got["predicted_label"].dtype) == "int8"
    assert str(got["sched_hour"].dtype) == "int64" and str(got["temp"].dtype) == "float64"
    assert len(traffic.read(st)) == 12
    # and a second flush with nothing queued writes nothing
    assert log.flush() == 0 and len(traffic.files(st)) == 2


def test_close_writes_what_is_still_queued(tmp_project, months):
    # given a running log that would wait an hour before writing
    params, st = tmp_project
    log = log_of(tmp_project, start=True, log_flush_seconds=3600, log_flush_rows=10_000)
    rows = recs(months["2013-01"].head(9), params)
    log.append(rows)
    # when the server closes it
    written = log.close()
    # then every row is on disk and the writer has stopped
    assert written == 9 and log.pending == 0
    assert sorted(traffic.read(st)["request_id"]) == sorted(r["request_id"] for r in rows)
    assert not log._thread.is_alive()


def test_the_writer_wakes_when_enough_rows_wait(tmp_project, months):
    params, st = tmp_project
    log = log_of(tmp_project, start=True, log_flush_seconds=3600, log_flush_rows=5)
    try:
        # when fewer rows than serve.log_flush_rows wait, then five
        log.append(recs(months["2013-01"].head(4), params))
        assert log.written == 0
        log.append(recs(months["2013-01"].iloc[4:5], params, rid="s"))
        # then the writer writes them without being asked
        wait(lambda: log.written == 5, "the writer did not write five waiting rows")
        assert len(traffic.read(st)) == 5
    finally:
        log.close()


def test_a_failed_write_keeps_the_rows_for_the_next_flush(tmp_project, months):
    # given a partition folder that cannot be created (a file stands in its place)
    params, st = tmp_project
    blocker = st.served_dir / "2013-01"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    log = log_of(tmp_project)
    rows = recs(months["2013-01"].head(6), params)
    log.append(rows)
    # when a flush fails
    with pytest.raises(OSError):
        log.flush()
    # then nothing was written and every row is still queued, with later ones after them
    assert log.pending == 6 and log.written == 0 and traffic.files(st) == []
    later = recs(months["2013-01"].iloc[6:8], params, rid="later")
    log.append(later)
    # when the folder can be made again, then the next flush writes them all, once
    blocker.unlink()
    assert log.flush() == 8
    got = traffic.read(st)
    assert got["request_id"].tolist() == [r["request_id"] for r in rows + later]


def test_the_background_writer_survives_a_failed_write(tmp_project, months, caplog):
    # given a running log whose partition folder is blocked
    params, st = tmp_project
    blocker = st.served_dir / "2013-01"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    log = log_of(tmp_project, start=True, log_flush_seconds=0.05)
    try:
        with caplog.at_level(logging.ERROR, logger="mlops.traffic"):
            log.append(recs(months["2013-01"].head(3), params))
            # when its writes fail
            wait(lambda: "write to" in caplog.text, "no failed write was logged")
        assert log.pending == 3 and log.written == 0
        # then it keeps trying, and writes the rows once the folder can be made
        blocker.unlink()
        wait(lambda: log.written == 3, "the writer stopped after a failed write")
        assert log._thread.is_alive()
    finally:
        log.close()
    assert len(traffic.read(st)) == 3


def test_the_summary_tells_each_arm_apart_with_its_realised_performance(tmp_project, months):
    # given champion and challenger rows, shadow scores, and outcomes for January's keys
    params, st = tmp_project
    jan = months["2013-01"].head(40)
    jan = jan[jan["is_delayed"].notna()].head(30)
    log = log_of(tmp_project)
    log.append(recs(jan.head(20), params, "champion", "1", "a"))
    log.append(recs(jan.tail(10), params, "challenger", "2", "b"))
    log.append(recs(jan, params, "shadow", "2", "c"))
    log.flush()
    store = pd.DataFrame(
        {
            "flight_id": jan["flight_id"].head(25).to_numpy(),
            "is_delayed": jan["is_delayed"].head(25).astype("int8").to_numpy(),
            outcomes.KNOWN_AT: pd.Timestamp("2013-02-15", tz="UTC"),
        }
    )
    io.write_parquet(outcomes.path(st, "2013-01"), store)
    # when the log is summarised
    out = traffic.summary(params, st)
    # then answered rows exclude shadow scores, and each arm has its rows and versions
    assert out["rows"] == 30 and out["files"] == 1
    arms = out["arms"]
    assert {a: (d["rows"], d["versions"]) for a, d in arms.items()} == {
        "champion": (20, {"1": 20}),
        "challenger": (10, {"2": 10}),
        "shadow": (30, {"2": 30}),
    }
    assert arms["champion"]["latency_ms"] == {"p50": 10.5, "p99": pytest.approx(19.81)}
    # and the labelled rows of each arm, with metrics over exactly those rows
    assert (arms["champion"]["labelled"], arms["challenger"]["labelled"]) == (20, 5)
    champ = arms["champion"]["performance"]
    assert champ["rows"] == 20
    from sklearn.metrics import precision_score, roc_auc_score

    y = jan["is_delayed"].head(20).astype(int).to_numpy()
    p = [(i % 10) / 10 for i in range(20)]
    assert 0 < y.sum() < len(y)  # both classes, so the ranking metrics are defined
    assert champ["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert champ["precision"] == pytest.approx(precision_score(y, [int(x >= 0.5) for x in p]))


def test_an_empty_log_summarises_to_nothing(tmp_project):
    params, st = tmp_project
    assert traffic.summary(params, st) == {"rows": 0, "arms": {}, "files": 0}
    assert traffic.read(st).empty and traffic.age(st) == "never"
