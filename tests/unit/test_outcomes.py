"""The label store layer: the merge rule, key hashes and reading the store back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlops import io, outcomes
from mlops.arrivals import frame_keys
from mlops.outcomes import NO_TIME, Conflict, LabelError, Outcomes, merge

DAY = 86_400 * 10**9


def _rows(keys: list[int], target: list[int], days: list[int] | None = None, origin: int = 0):
    t = np.full(len(keys), NO_TIME) if days is None else np.array(days, "int64") * DAY
    return Outcomes(
        np.array(keys, "uint64"),
        np.array(target, "int8"),
        t.astype("int64"),
        np.full(len(keys), origin, "int16"),
    )


def _as_dict(o: Outcomes) -> dict[int, tuple[int, int]]:
    return {int(h): (int(y), int(t)) for h, y, t in zip(o.hash, o.target, o.known_at, strict=True)}


def test_batches_merged_one_after_another_equal_one_batch() -> None:
    # given outcomes of 200 keys, every fifth corrected a day later, in random order
    rng = np.random.default_rng(7)
    keys = np.r_[np.arange(200), np.arange(0, 200, 5)]
    days = np.r_[np.zeros(200, int), np.ones(40, int)]
    target = (keys % 3 == 0).astype(int) ^ days
    order = rng.permutation(len(keys))
    keys, days, target = keys[order], days[order], target[order]
    whole = _rows(list(keys), list(target), list(days))

    # when they are merged at once, and in three batches one after another
    at_once, _ = merge(None, whole)
    store = None
    for part in np.array_split(np.arange(len(keys)), 3):
        batch = _rows(list(keys[part]), list(target[part]), list(days[part]))
        store, _ = merge(store, batch)

    # then both give the same store, with the latest outcome of each key
    assert store is not None
    assert _as_dict(store) == _as_dict(at_once)
    assert len(at_once) == 200
    assert all(at_once.hash[1:] > at_once.hash[:-1])  # hash order
    corrected = _as_dict(at_once)[5]
    assert corrected == ((5 % 3 == 0) ^ 1, DAY)


def test_merging_what_is_stored_again_changes_nothing() -> None:
    # given a store
    stored, _ = merge(None, _rows([3, 1, 2], [1, 0, 1], [1, 1, 2]))

    # when the same outcomes arrive again
    again, stats = merge(stored, _rows([1, 2, 3], [0, 1, 1], [1, 2, 1], origin=1))

    # then the store is the same and nothing counts as new or changed
    assert _as_dict(again) == _as_dict(stored)
    assert (stats.new, stats.changed, stats.duplicates) == (0, 0, 0)


def test_the_latest_known_outcome_wins_whichever_batch_brings_it() -> None:
    # given a key labelled 1 on day 1 and 0 on day 2
    early, late = _rows([9], [1], [1]), _rows([9], [0], [2], origin=1)

    # when the late one arrives after the early one, or before it
    forward, stats = merge(merge(None, early)[0], late)
    backward, back_stats = merge(merge(None, late)[0], early)

    # then the day-2 outcome is kept both times; only the first replaces a stored outcome
    assert _as_dict(forward) == _as_dict(backward) == {9: (0, 2 * DAY)}
    assert (stats.new, stats.changed) == (0, 1)
    assert (back_stats.new, back_stats.changed) == (0, 0)


def test_identical_rows_collapse_and_are_counted() -> None:
    # given a batch holding one key three times with one outcome, and two other keys
    batch = _rows([4, 4, 4, 5, 6], [1, 1, 1, 0, 0])

    # when it is merged into a store that already knows key 6
    out, stats = merge(merge(None, _rows([6], [0]))[0], batch)

    # then each key is kept once, two rows were collapsed, two keys are new
    assert _as_dict(out) == {4: (1, NO_TIME), 5: (0, NO_TIME), 6: (0, NO_TIME)}
    assert (stats.duplicates, stats.new, stats.changed) == (2, 2, 0)


def test_different_outcomes_known_at_the_same_time_conflict() -> None:
    # given one key with outcomes 0 and 1 and no time for either (from files 0 and 2)
    batch = concat_rows(_rows([8, 1], [0, 1]), _rows([8], [1], origin=2))

    # when merged, then it is a conflict naming the key's hash, both values and origins
    with pytest.raises(Conflict) as err:
        merge(None, batch)
    assert err.value.key_hash == 8
    assert sorted(err.value.values) == [0, 1] and sorted(err.value.origins) == [0, 2]

    # and a stored outcome contradicted at the same time is one too (origin -1: the store)
    stored, _ = merge(None, _rows([8], [0], [3], origin=-1))
    with pytest.raises(Conflict) as err:
        merge(stored, _rows([8], [1], [3]))
    assert -1 in err.value.origins


def concat_rows(*parts: Outcomes) -> Outcomes:
    return outcomes.concat(list(parts), "classification")


def test_key_hashes_agree_however_the_labels_file_stored_the_keys() -> None:
    # given predictions keyed by text, and labels whose keys were read as numbers
    preds = pa.table({"k": pa.array(["101", "102", "7"])})
    labels = pd.DataFrame({"k": [7, 101, 102]})

    # when both are hashed
    from_preds = outcomes.key_hash(outcomes.arrow_keys(preds, ["k"]))
    from_labels = outcomes.key_hash(frame_keys(labels, {"k": "string"}, "labels.csv"))

    # then the same keys give the same hashes
    assert sorted(from_preds.tolist()) == sorted(from_labels.tolist())
    assert from_preds[2] == from_labels[0]


def test_key_hash_of_several_keys_depends_on_their_order() -> None:
    # given two rows that swap their two key values
    a, b = np.array(["x", "y"], dtype=object), np.array(["y", "x"], dtype=object)

    # then their hashes differ, and equal rows hash alike
    h = outcomes.key_hash([a, b])
    assert h[0] != h[1]
    assert outcomes.key_hash([a[:1], b[:1]])[0] == h[0]


def test_rows_sharing_a_hash_but_not_their_keys_are_found() -> None:
    # given a batch where two different keys were given one hash, and a true duplicate
    h = np.array([5, 5, 7, 7], "uint64")
    keys = [np.array(["a", "b", "c", "c"], dtype=object)]

    # then only the colliding pair is reported
    assert outcomes.shared_hash_keys(h, keys).tolist() == [1]


def test_the_store_reads_back_as_its_hashes_outcomes_and_times(tmp_project) -> None:
    # given a store file written with a known and an unknown time
    p, st = tmp_project
    c = p.contract
    when = pd.Timestamp("2013-01-05", tz="UTC")
    df = pd.DataFrame(
        {
            "flight_id": ["a", "b"],
            c.target: np.array([1, 0], "int8"),
            "known_at": pd.Series([when, None], dtype="datetime64[ns, UTC]"),
        }
    )
    io.write_parquet(outcomes.path(st, "2013-01"), df)

    # when it is read back
    got = outcomes.stored(st, c, "2013-01", batch_rows=1)

    # then each row's hash, outcome and time are there, in store order
    assert got is not None
    want = outcomes.key_hash([np.array(["a", "b"], dtype=object)])
    assert got.hash.tolist() == want.tolist()
    assert got.target.tolist() == [1, 0]
    assert got.known_at.tolist() == [when.value, NO_TIME]
    assert outcomes.read(st, c, "2013-01")[c.target].tolist() == [1, 0]


def test_a_damaged_store_is_named(tmp_project) -> None:
    # given a truncated store file
    p, st = tmp_project
    target = outcomes.path(st, "2013-01")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"PAR1 not really")

    # then reading it names the file and what to do
    with pytest.raises(LabelError, match="label store of 2013-01 cannot be read"):
        outcomes.stored(st, p.contract, "2013-01", batch_rows=10)
    assert outcomes.stored(st, p.contract, "2013-02", batch_rows=10) is None
