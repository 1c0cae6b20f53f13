"""The online predictor: the canary's stable split, the XGBoost fast path, and answers.

Models are small XGBoost classifiers trained here on a slice of real January flights,
the way ``train`` fits them (contract matrix, learned and capped categories).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops import models
from mlops.config import Candidate, Params, Serve
from mlops.predictor import SHADOW, Arms, Model, Predictor, in_canary, key_text
from mlops.registry import Loaded
from mlops.request_schema import RequestError, Row
from tests.conftest import REPO

# ---------------------------------------------------------------------------------------
# in_canary


def keys(n: int) -> list[str]:
    return [f"UA-{i}-2013-07-01 10:00:00+00:00" for i in range(n)]


def test_the_canary_share_is_close_to_the_setting_over_many_keys():
    ks = keys(10_000)
    for share in (0.05, 0.3, 0.5):
        got = sum(in_canary(k, share) for k in ks) / len(ks)
        assert got == pytest.approx(share, abs=0.02), share
    assert not any(in_canary(k, 0) for k in ks)
    assert all(in_canary(k, 1) for k in ks)


def test_raising_the_share_only_adds_keys_to_the_canary():
    ks = keys(2_000)
    small = {k for k in ks if in_canary(k, 0.1)}
    large = {k for k in ks if in_canary(k, 0.3)}
    assert small and small < large


def test_a_key_gets_the_same_arm_in_every_process():
    # given the arms of 200 keys in this process
    ks = keys(200)
    here = "".join("1" if in_canary(k, 0.3) else "0" for k in ks)
    # when another process with another hash seed decides them
    code = (
        "from mlops.predictor import in_canary\n"
        f"ks = [f'UA-{{i}}-2013-07-01 10:00:00+00:00' for i in range({len(ks)})]\n"
        "print(''.join('1' if in_canary(k, 0.3) else '0' for k in ks))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    # then they are the same
    assert out.stdout.strip() == here


def test_a_key_of_several_columns_is_one_text():
    assert key_text({"a": 1, "b": "x"}, ["a", "b"]) != key_text({"a": "1x", "b": ""}, ["a", "b"])
    assert key_text({"a": 1, "b": "x"}, ["b", "a"]) == "x\x1f1"


# ---------------------------------------------------------------------------------------
# the fast paths: XGBoost and HistGradientBoosting from a float matrix

HGB = "sklearn_hist_gradient_boosting"


def fit(
    train: pd.DataFrame, params: Params, max_categories: int, kind: str = "xgboost", **hyper: Any
) -> Loaded:
    """A small classifier fitted as ``train`` fits one, loaded as the registry does."""
    c = params.contract
    train = train[train[c.target].notna()]
    raw = models.matrix(train, c)
    cats, _ = models.learn_categories(raw, max_categories)
    est = models.build(Candidate(name="x", kind=kind, params=hyper), c, seed=0)
    est.fit(models.fit_input(models.align_categories(raw, cats), kind), models.target(train, c))
    flavor = "xgboost" if kind == "xgboost" else "sklearn"
    return Loaded(est, "flight_delay", "1", "run", flavor, cats, c.feature_names, 0.4)


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a request carries them: None where a value is missing."""
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in df.to_dict("records")]


HYPER = {"xgboost": {"n_estimators": 30, "max_depth": 4}, HGB: {"max_iter": 30}}


@pytest.mark.parametrize("kind", list(HYPER))
@pytest.mark.parametrize("max_categories", [5, 250], ids=["capped", "uncapped"])
def test_the_fast_path_predicts_exactly_what_batch_scoring_predicts(
    tmp_project, months, max_categories: int, kind: str
):
    # given a model fitted on January, with its category lists capped or not
    params, _ = tmp_project
    loaded = fit(months["2013-01"], params, max_categories, kind, **HYPER[kind])
    if max_categories == 5:
        assert models.is_capped(loaded.categories["dest"])
    # and February's rows with unseen destinations, missing categories and missing numbers
    feb = months["2013-02"].copy()
    feb.loc[0, "dest"] = "ZZZ"
    feb.loc[1, ["carrier", "origin", "dest"]] = None
    feb.loc[2, ["temp", "pressure", "seats"]] = np.nan
    # when they are predicted from the float matrix and as a batch frame
    model = Model.of(loaded, "champion", "classification")
    assert model.encode is not None
    fast = model.predict(records(feb), params)
    batch = loaded.predict(feb, params.contract)
    # then every probability is the same number
    np.testing.assert_array_equal(fast, batch)
    assert fast.dtype == np.float64 and len(fast) == len(feb)


# ---------------------------------------------------------------------------------------
# answers


class Store:
    """What the online store holds for a month: each key's features, None for unknown keys."""

    def __init__(self, df: pd.DataFrame, params: Params) -> None:
        self.names = params.contract.feature_names
        self.rows = {r["flight_id"]: r for r in records(df)}
        self.reads: list[list[dict[str, Any]]] = []

    def __call__(self, entity_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        self.reads.append(entity_rows)
        got = [self.rows.get(e["flight_id"], {}) for e in entity_rows]
        return {n: [g.get(n) for g in got] for n in self.names}


@pytest.fixture
def served(tmp_project, months):
    """Champion v1 and challenger v2, both fitted on January; February in the store."""
    params, st = tmp_project
    jan, feb = months["2013-01"], months["2013-02"]
    v1 = fit(jan, params, 250, n_estimators=30, max_depth=4)
    v2 = replace(fit(jan, params, 250, HGB, max_iter=10), version="2")
    task = params.contract.task
    arms = Arms(Model.of(v1, "champion", task), Model.of(v2, "challenger", task))

    def predictor(**serve: Any) -> Predictor:
        p = params.model_copy(update={"serve": Serve(**serve)})
        pred = Predictor(p, st, reader=Store(feb, p))
        pred.arms = arms
        return pred

    return predictor, feb, v1, v2


def rows_of(pred: Predictor, body: Any) -> list[Row]:
    return pred.schema.parse(body)


def test_a_canary_answers_the_keys_the_hash_picks_with_its_own_version(served):
    # given a challenger answering half the keys
    predictor, feb, v1, v2 = served
    pred = predictor(canary_share=0.5)
    ks = feb["flight_id"].head(40).tolist()
    # when forty keys are answered in one request
    out = pred.predict(rows_of(pred, {"rows": [{"flight_id": k} for k in ks]}), "r-1")
    # then each key is answered, in order, by the arm the hash picks
    assert [p["flight_id"] for p in out.predictions] == ks
    arms = [p["arm"] for p in out.predictions]
    assert arms == ["challenger" if in_canary(k, 0.5) else "champion" for k in ks]
    assert {"champion", "challenger"} == set(arms)
    # and with that arm's version and model
    rows = feb.head(40)
    want = {"champion": v1.predict(rows, pred.params.contract)}
    want["challenger"] = v2.predict(rows, pred.params.contract)
    for i, p in enumerate(out.predictions):
        assert p["model_version"] == {"champion": "1", "challenger": "2"}[p["arm"]]
        assert p["prediction"] == want[p["arm"]][i]
        assert p["predicted_label"] == int(p["prediction"] >= 0.4)
    # and one log record per row, with its request id and the features it used
    assert len(out.records) == 40 and out.store_reads == 40
    assert {r["request_id"] for r in out.records} == {"r-1"}
    rec = {r["flight_id"]: r for r in out.records}
    assert rec[ks[0]]["distance"] == feb.loc[0, "distance"]
    assert all(r["event_ts"].tzinfo is not None for r in out.records)


def test_a_shadow_challenger_scores_every_row_and_answers_none(served):
    predictor, feb, _, v2 = served
    pred = predictor(shadow=True)
    ks = feb["flight_id"].head(10).tolist()
    out = pred.predict(rows_of(pred, {"rows": [{"flight_id": k} for k in ks]}), "r-2")
    assert {p["arm"] for p in out.predictions} == {"champion"}
    shadow = [r for r in out.records if r["arm"] == SHADOW]
    assert [r["flight_id"] for r in shadow] == ks
    assert {r["model_version"] for r in shadow} == {"2"}
    assert [r["prediction"] for r in shadow] == list(v2.predict(feb.head(10), pred.params.contract))
    assert len(out.records) == 20


def test_without_a_challenger_the_champion_answers_every_key(served):
    predictor, feb, _, _ = served
    pred = predictor(canary_share=1.0)
    assert pred.arms is not None
    pred.arms = Arms(pred.arms.champion)
    out = pred.predict(rows_of(pred, {"flight_id": feb.loc[0, "flight_id"]}), "r-3")
    assert [p["arm"] for p in out.predictions] == ["champion"]


def test_sent_features_win_over_the_store_and_a_complete_row_reads_nothing(served):
    # given a key whose stored temperature is known
    predictor, feb, v1, _ = served
    pred = predictor()
    row = records(feb.head(1))[0]
    # when the row is sent with another temperature, and then with every feature
    hot = pred.predict(rows_of(pred, {"flight_id": row["flight_id"], "temp": 100.0}), "r-4")
    full = {k: row[k] for k in ["flight_id", *pred.params.contract.feature_names]}
    whole = pred.predict(rows_of(pred, full), "r-5")
    # then the sent value is used and logged, and a complete row needs no store read
    assert hot.records[0]["temp"] == 100.0
    assert hot.records[0]["distance"] == row["distance"]
    assert whole.store_reads == 0 and hot.store_reads == 1
    assert whole.predictions[0]["prediction"] == v1.predict(feb.head(1), pred.params.contract)[0]


def test_a_key_the_store_lacks_names_each_required_feature(served):
    predictor, feb, _, _ = served
    pred = predictor()
    body = {"rows": [{"flight_id": feb.loc[0, "flight_id"]}, {"flight_id": "unknown"}]}
    with pytest.raises(RequestError) as exc:
        pred.predict(rows_of(pred, body), "r-6")
    errors = exc.value.errors
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["rows", 1, "sched_hour"], "missing_feature"),
        (["rows", 1, "distance"], "missing_feature"),
    ]
    assert "flight_id='unknown'" in errors[0]["msg"]
    assert errors[0]["rule"] == "contract: int, >= 0, <= 23, not null"
    # a nullable feature the store lacks is not an error
    given = {"flight_id": "unknown", "sched_hour": 5, "distance": 1.0}
    out = pred.predict(rows_of(pred, given), "r-7")
    assert out.predictions[0]["flight_id"] == "unknown" and out.records[0]["temp"] is None
