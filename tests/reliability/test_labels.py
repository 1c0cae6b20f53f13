"""Late labels on a real scored partition: bad outcome files are refused or counted, never
dropped silently, and a refused batch leaves the label store, its sidecar, the predictions
and the performance records as they were; batches end as one batch; a kill leaves the
store whole."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mlops import io, label, outcomes, partitions, performance_report, source
from mlops.config import Params, Settings, load_params, settings
from mlops.outcomes import LabelError
from tests.reliability.conftest import MATERIALIZE_WEEK, SCORED, Project, digest, digests

pytestmark = pytest.mark.integration
AREA = "Late labels"
KEY, TARGET = "flight_id", "is_delayed"
END = pd.Timestamp("2013-09-01", tz="UTC")


_TRUTH: dict[str, pd.DataFrame] = {}


def _truth(proj: Project) -> pd.DataFrame:
    """The scored week's real outcomes, each known three days after its flight.

    Read from the source (the week was ingested without them); cancelled flights have no
    outcome and are left out.
    """
    if SCORED not in _TRUTH:
        p = proj.params
        df = source.load(p.source, proj.root)
        week = df[partitions.ids(df["event_ts"], p.ingest.partition) == SCORED]
        week = week[week[TARGET].notna()]
        out = week[[KEY]].assign(**{TARGET: week[TARGET].astype(bool)})
        out["known_at"] = week["event_ts"] + pd.Timedelta(days=3)
        _TRUTH[SCORED] = out.reset_index(drop=True)
    return _TRUTH[SCORED].copy()


def _params(proj: Project, df: pd.DataFrame, name: str, **labels: Any) -> tuple[Params, Settings]:
    """A params file beside the project's whose labels.path is ``df`` written as ``name``."""
    rel = Path("labels_in") / name
    target = proj.root / rel
    target.parent.mkdir(exist_ok=True)
    if name.endswith(".csv"):
        df.to_csv(target, index=False)
    else:
        io.write_parquet(target, df)
    raw = yaml.safe_load(proj.params_path.read_text())
    raw["labels"] = {"path": str(rel), **labels}
    path = proj.root / f"params_labels_{Path(name).stem}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path), settings(path)


def _records(proj: Project) -> dict[str, Any]:
    """What a refused batch must not change: store, sidecar, predictions, performance."""
    st = proj.st
    html, summary = performance_report.paths(st, SCORED)
    assert summary.is_file()  # the earlier batch's record, that a refusal must leave alone
    return {
        "labels": digests(st.labels_dir),
        "predictions": digests(st.predictions_dir),
        "performance": (digest(html), digest(summary)),
    }


def _clear(st: Settings) -> None:
    for p in (outcomes.path(st, SCORED), outcomes.sidecar(st, SCORED)):
        p.unlink(missing_ok=True)


@pytest.fixture
def clean(proj: Project) -> Iterator[Project]:
    """The scored week with an empty label store, emptied again afterwards."""
    _clear(proj.st)
    yield proj
    _clear(proj.st)


def test_batches_end_as_one_batch_and_a_rerun_changes_nothing(clean: Project) -> None:
    """Case: The outcomes of a scored week arrive in two batches (by `known_at`), then
    `label` is run again with nothing new.
    Behaviour: the label store ends byte-identical to one batch of all of them, in
    prediction order, typed as the contract says; the rerun rewrites neither store nor
    sidecar; the realised performance is reported once outcomes exist
    """
    proj = clean
    truth = _truth(proj)
    p, st = _params(proj, truth, "week.parquet", known_at="known_at")
    store, side = outcomes.path(st, SCORED), outcomes.sidecar(st, SCORED)

    # given one batch of every outcome
    one = label.run(p, st, SCORED, as_of=END)
    whole = digest(store)
    preds = pd.read_parquet(partitions.file(st.predictions_dir, SCORED))
    assert one["predictions"] == len(preds) and one["unlabelled"] == len(preds) - len(truth)
    assert one["labelled"] == one["new"] == len(truth)
    assert one["performance"] is not None and Path(one["performance"]["json_path"]).is_file()

    # when the same outcomes arrive in two batches instead
    _clear(st)
    mid = truth["known_at"].sort_values().iloc[len(truth) // 2]
    first = label.run(p, st, SCORED, as_of=mid.to_pydatetime())
    second = label.run(p, st, SCORED, as_of=END)

    # then the first batch took only what was known by then, and the end is the same store
    assert 0 < first["labelled"] < len(truth) and first["known_later"] > 0
    assert second["new"] == len(truth) - first["labelled"] and second["labelled"] == len(truth)
    assert digest(store) == whole
    got = pd.read_parquet(store)
    assert got[KEY].tolist() == preds.loc[preds[KEY].isin(truth[KEY]), KEY].tolist()
    assert str(got[TARGET].dtype) == "int8" and str(got["known_at"].dtype) == "datetime64[ns, UTC]"
    expected = truth.set_index(KEY).loc[got[KEY], TARGET].astype("int8").tolist()
    assert got[TARGET].tolist() == expected
    assert [h["new"] for h in io.read_json(side)["history"]] == [first["labelled"], second["new"]]

    # when it is run again with nothing new
    before = digest(store), digest(side)
    again = label.run(p, st, SCORED, as_of=END)

    # then nothing changes
    assert (digest(store), digest(side)) == before
    assert again["new"] == 0 and again["labelled"] == len(truth)


@dataclass(frozen=True)
class Bad:
    id: str
    case: str
    behaviour: str
    damage: Callable[[pd.DataFrame], pd.DataFrame]
    error: str
    labels: tuple[tuple[str, str], ...] = ()
    file: str = "bad.parquet"


def _flip_one(df: pd.DataFrame) -> pd.DataFrame:
    row = df.head(1).assign(**{TARGET: ~df[TARGET].head(1)})
    return pd.concat([df, row], ignore_index=True)


REFUSED = (
    "refused naming the file, {what}; label store, sidecar, predictions and performance unchanged"
)
REFUSALS = [
    Bad(
        "conflicting_duplicates",
        "A labels file gives one key two different outcomes (no `known_at`)",
        REFUSED.format(what="the key and both outcomes"),
        _flip_one,
        "has conflicting outcomes [0, 1]",
    ),
    Bad(
        "conflict_at_same_time",
        "Two outcomes of one key known at the same time (`known_at` equal)",
        REFUSED.format(what="the key and both outcomes"),
        _flip_one,
        "has conflicting outcomes [0, 1] known at the same time",
        (("known_at", "known_at"),),
    ),
    Bad(
        "wrong_type",
        "Outcomes of the wrong type (`is_delayed` as 'yes'/'no' text, CSV)",
        REFUSED.format(what="the column and example values"),
        lambda d: d.assign(**{TARGET: d[TARGET].map({True: "yes", False: "no"})}),
        "outcome column 'is_delayed' holds",
        file="bad.csv",
    ),
    Bad(
        "outside_set",
        "Outcomes outside the contract's set (`is_delayed` = 2)",
        REFUSED.format(what="the column, the set and example values"),
        lambda d: d.assign(**{TARGET: d[TARGET].astype(int).where(d.index % 7 != 0, 2)}),
        "outside the contract's set {0, 1}",
    ),
    Bad(
        "missing_key_column",
        "The key column is missing from the labels file",
        REFUSED.format(what="the missing column and those it has"),
        lambda d: d.drop(columns=[KEY]),
        "lacks column(s) ['flight_id']",
    ),
    Bad(
        "missing_outcome_column",
        "The outcome column is missing from the labels file",
        REFUSED.format(what="the missing column and the setting"),
        lambda d: d.rename(columns={TARGET: "delayed"}),
        "lacks column(s) ['is_delayed']",
    ),
]


@pytest.fixture(scope="module")
def labelled(proj: Project) -> Iterator[Project]:
    """The scored week labelled with half of its outcomes (a good earlier batch)."""
    _clear(proj.st)
    half = _truth(proj).iloc[::2].drop(columns=["known_at"])
    p, st = _params(proj, half, "half.parquet")
    assert label.run(p, st, SCORED)["labelled"] == len(half)
    yield proj
    _clear(proj.st)


@pytest.mark.parametrize("bad", REFUSALS, ids=lambda b: b.id)
def test_a_bad_labels_batch_is_refused(labelled: Project, bad: Bad) -> None:
    """Cases: REFUSALS"""
    proj = labelled
    before = _records(proj)
    df = bad.damage(_truth(proj))
    if not bad.labels:
        df = df.drop(columns=["known_at"])
    p, st = _params(proj, df, bad.file, **dict(bad.labels))

    # when the bad batch is labelled
    with pytest.raises(LabelError) as err:
        label.run(p, st, SCORED, as_of=END)

    # then it is refused naming the file and what is wrong, and nothing changed
    msg = str(err.value)
    assert bad.error in msg, msg
    assert bad.file in msg, msg
    assert _records(proj) == before


def test_labels_for_a_partition_not_yet_scored_are_refused(labelled: Project) -> None:
    """Case: `label` on a partition that was validated and materialised but not scored.
    Behaviour: refused naming the partition and the command to run first; no label store
    is created for it and the scored week's records are unchanged
    """
    proj = labelled
    before = _records(proj)
    p, st = _params(proj, _truth(proj), "week.parquet")

    with pytest.raises(LabelError) as err:
        label.run(p, st, MATERIALIZE_WEEK)

    assert f"run `mlops score --partitions {MATERIALIZE_WEEK}` first" in str(err.value)
    assert not outcomes.path(st, MATERIALIZE_WEEK).exists()
    assert not outcomes.sidecar(st, MATERIALIZE_WEEK).exists()
    assert _records(proj) == before


def test_counted_skips_are_reported_not_dropped(clean: Project) -> None:
    """Case: A labels file holding keys that were never scored, identical duplicate rows
    and rows whose outcome is not known yet (null).
    Behaviour: the rest is joined; each kind is counted in the result and the sidecar
    (unknown keys with examples), and printed
    """
    proj = clean
    truth = _truth(proj).drop(columns=["known_at"])
    never = pd.DataFrame({KEY: [f"NEVER-SCORED-{i}" for i in range(3)], TARGET: True})
    pending = truth.head(4).assign(**{TARGET: None})
    df = pd.concat([truth.iloc[4:], truth.iloc[4:9], never, pending], ignore_index=True)
    p, st = _params(proj, df, "mixed.csv")

    out = label.run(p, st, SCORED)

    preds = pd.read_parquet(partitions.file(st.predictions_dir, SCORED), columns=[KEY])
    assert out["labelled"] == len(truth) - 4
    assert out["unlabelled"] == len(preds) - len(truth) + 4
    store = pd.read_parquet(outcomes.path(st, SCORED))
    assert set(store[KEY]) == set(truth[KEY].iloc[4:]) and not store[KEY].duplicated().any()
    assert out["unknown_keys"] == 3 and "'NEVER-SCORED-0'" in out["unknown_examples"]
    assert out["duplicates"] == 5 and out["not_known_yet"] == 4
    side = io.read_json(outcomes.sidecar(st, SCORED))
    assert (side["unknown_keys"], side["duplicates"], side["not_known_yet"]) == (3, 5, 4)


def test_label_killed_before_the_store_is_replaced(clean: Project) -> None:
    """Case: `label` killed (SIGKILL) with the new label store complete in its temporary
    file, before the rename.
    Behaviour: the earlier store and sidecar are untouched; the rerun writes what an
    uninterrupted run writes and removes the leftover
    """
    proj = clean
    truth = _truth(proj).drop(columns=["known_at"])
    p, st = _params(proj, truth.iloc[::2], "first.parquet")
    label.run(p, st, SCORED)
    store, side = outcomes.path(st, SCORED), outcomes.sidecar(st, SCORED)
    before = digest(store), digest(side)
    _params(proj, truth, "first.parquet")  # every outcome has arrived now

    # when label is killed just before its new store replaces the old one
    res = proj.stage(
        "label", "--partitions", SCORED, fault="label.before_store", params=p_name("first")
    )

    # then the earlier store is in place, with the killed writer's leftover beside it
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert (digest(store), digest(side)) == before
    assert list(store.parent.glob(f".{store.name}.*.tmp"))

    # when it is rerun, then it ends as one uninterrupted run over every outcome
    out = label.run(p, st, SCORED)
    assert out["labelled"] == len(truth) and out["new"] == len(truth) - len(truth.iloc[::2])
    assert not list(store.parent.glob(f".{store.name}.*.tmp"))
    rerun = digest(store)
    _clear(st)
    label.run(p, st, SCORED)
    assert digest(store) == rerun


def p_name(stem: str) -> str:
    return f"params_labels_{stem}.yaml"
