"""io: the one file-lock mechanism and retries with back-off (fast: no long sleeps)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from mlops import io


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in another thread; return its result or the exception it raised."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            out.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "the other thread is still waiting for the lock"
    return out[0]


def take(path: Path, wait: float | None = 0, busy=None) -> str:
    with io.file_lock(path, wait=wait, busy=busy):
        return "held"


# --------------------------------------------------------------------------- file_lock
def test_lock_is_reentrant_within_a_thread(tmp_path) -> None:
    lock = tmp_path / "locks" / "x.lock"
    with io.file_lock(lock), io.file_lock(lock, wait=0), io.file_lock(lock):
        # the holder's pid is in the file while it is held
        assert lock.read_text() == str(os.getpid())
    assert lock.read_text() == ""


def test_another_thread_is_refused_at_once_naming_the_holder(tmp_path) -> None:
    lock = tmp_path / "x.lock"
    with io.file_lock(lock):
        t0 = time.monotonic()
        err = in_thread(lambda: take(lock, wait=0))
        assert time.monotonic() - t0 < 0.5
        assert isinstance(err, io.Busy)
        assert str(err) == f"{lock}: held by process {os.getpid()}; re-run when it ends"
        # and the refusal can be told in the caller's own words
        err = in_thread(lambda: take(lock, busy=lambda holder: KeyError(f"busy {holder}")))
        assert isinstance(err, KeyError) and str(os.getpid()) in str(err)


def test_a_waiting_holder_gives_up_after_its_wait(tmp_path) -> None:
    lock = tmp_path / "x.lock"
    with io.file_lock(lock):
        t0 = time.monotonic()
        err = in_thread(lambda: take(lock, wait=0.15))
        waited = time.monotonic() - t0
    assert isinstance(err, io.Busy) and str(os.getpid()) in str(err)
    assert 0.15 <= waited < 2


def test_a_waiting_holder_gets_the_lock_once_it_is_released(tmp_path) -> None:
    lock = tmp_path / "x.lock"
    released = threading.Event()

    def hold() -> None:
        with io.file_lock(lock):
            released.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    while not lock.is_file() or not lock.read_text():
        time.sleep(0.01)
    assert isinstance(in_thread(lambda: take(lock, wait=0)), io.Busy)
    threading.Timer(0.05, released.set).start()
    assert in_thread(lambda: take(lock, wait=2)) == "held"
    holder.join(5)


def test_lock_is_released_after_the_block_even_on_error(tmp_path) -> None:
    lock = tmp_path / "x.lock"
    with pytest.raises(RuntimeError, match="boom"), io.file_lock(lock):
        raise RuntimeError("boom")
    assert in_thread(lambda: take(lock, wait=0)) == "held"
    with io.file_lock(lock):
        pass
    assert in_thread(lambda: take(lock, wait=0)) == "held"


# --------------------------------------------------------------------------- retry
class Flaky:
    """Fails with ``errors`` in turn, then returns "ok"; counts its calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


def test_transient_errors_are_retried_with_doubling_waits() -> None:
    fn = Flaky(ConnectionError("down"), ConnectionError("still down"), ConnectionError("x"))
    waits: list[float] = []

    out = io.retry(
        fn,
        transient,
        attempts=4,
        delay=0.01,
        max_delay=0.02,
        on_retry=lambda exc, d: waits.append(d),
    )

    assert out == "ok" and fn.calls == 4
    assert waits == [0.01, 0.02, 0.02]


def test_retries_stop_after_the_attempts_with_the_last_error() -> None:
    fn = Flaky(ConnectionError("1"), ConnectionError("2"), ConnectionError("3"))
    with pytest.raises(ConnectionError, match="^2$"):
        io.retry(fn, transient, attempts=2, delay=0)
    assert fn.calls == 2


def test_an_error_that_is_not_transient_is_raised_at_once() -> None:
    fn = Flaky(ValueError("bad input"))
    waits: list[float] = []
    with pytest.raises(ValueError, match="bad input"):
        io.retry(fn, transient, attempts=5, delay=0, on_retry=lambda exc, d: waits.append(d))
    assert fn.calls == 1 and waits == []


def test_retries_stop_once_the_wait_has_passed() -> None:
    fn = Flaky(*[ConnectionError(str(i)) for i in range(1000)])
    t0 = time.monotonic()
    with pytest.raises(ConnectionError):
        io.retry(fn, transient, wait_s=0.15, delay=0.05, max_delay=0.05)
    waited = time.monotonic() - t0
    assert 0.15 <= waited < 1.0
    assert 2 <= fn.calls <= 6


# --------------------------------------------------------------------------- one_to_one
def test_rows_sharing_a_key_are_refused_naming_where_keys_count_and_examples() -> None:
    # given rows where ('a', 1) appears twice and ('c', 2) three times
    df = pd.DataFrame({"k": ["a", "b", "a", "c", "c", "c", "d"], "t": [1, 1, 1, 2, 2, 2, 2]})

    # when checked as a DataFrame and as an Arrow table, then both are refused alike
    for rows in (df, pa.Table.from_pandas(df)):
        with pytest.raises(io.DuplicateKeys) as err:
            io.one_to_one(rows, ["k", "t"], "score 2013-01: feature file f.parquet", "fix it")
        msg = str(err.value)
        assert msg.startswith("score 2013-01: feature file f.parquet: 5 rows share 2 value(s)")
        assert "['k', 't']" in msg and "('a', 1), ('c', 2)" in msg and msg.endswith("fix it")
    # and a single key is shown bare
    assert io.duplicate_keys(df, ["k"]) == (5, 2, ["'a'", "'c'"])


def test_unique_keys_pass_and_missing_keys_count_as_equal() -> None:
    # given unique keys, then nothing is raised
    io.one_to_one(pd.DataFrame({"k": [1, 2, 3]}), ["k"], "x", "y")
    # given two missing keys, then they are one shared key
    assert io.duplicate_keys(pd.DataFrame({"k": [None, "a", None]}), ["k"])[:2] == (2, 1)


def test_link_puts_the_same_bytes_in_place_whole_and_replaces(tmp_path: Path) -> None:
    # given a complete file and a target holding older bytes
    src = tmp_path / "new.parquet"
    src.write_bytes(b"new bytes")
    target = tmp_path / "archive" / "v2" / "x.parquet"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old")

    # when it is linked into place
    assert io.link(src, target) == target

    # then the target holds the same bytes (one file on disk) and no temporary is left
    assert target.read_bytes() == b"new bytes"
    assert os.stat(target).st_ino == os.stat(src).st_ino
    assert not list(target.parent.glob(".*.tmp"))
    # and replacing the source later (an atomic rename) leaves the linked copy as it was
    io.write_text(src, "newer")
    assert target.read_bytes() == b"new bytes"
