"""The registry's descriptions, on a real local MLflow registry, after train, promote, approve.

One module-scoped project trains v1 inside the environment of an Airflow task (promoted
in approval mode auto), then v2 with other hyper-parameters, which the gate passes in
mode manual and a person approves, also inside an Airflow task; the champion is then
rolled back. The descriptions are read at each step, as the MLflow UI shows them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mlops import (
    approval,
    audit,
    card,
    evaluate,
    governance,
    io,
    materialize,
    partitions,
    promote,
    runs,
    tags,
    train,
)
from mlops.config import load_params, settings
from mlops.describe_render import BEGIN, authored
from mlops.ingest import split_partitions
from mlops.registry import CHALLENGER, connect
from mlops.source import load
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, REPO, make_project, merge

pytestmark = pytest.mark.integration

MODEL = "flight_delay"
BASE_URL = "http://127.0.0.1:8080"
HGB = {"name": "hgb", "kind": "sklearn_hist_gradient_boosting", "params": {"max_iter": 30}}
OVERRIDES = merge(FLIGHTS_SMALL, {"train": {"candidates": [HGB]}, "promote": {"floor": 0.55}})
NOTE = "Checked on the July weeks by ann: delays at EWR look right."


def task_env(mp: pytest.MonkeyPatch, dag: str, task: str, attempt: str) -> None:
    """The environment Airflow's task runner gives a task's process."""
    mp.setenv("AIRFLOW_CTX_DAG_ID", dag)
    mp.setenv("AIRFLOW_CTX_DAG_RUN_ID", f"manual__2013-09-01T03:00:00+00:00-{dag}")
    mp.setenv("AIRFLOW_CTX_TASK_ID", task)
    mp.setenv("AIRFLOW_CTX_TRY_NUMBER", attempt)
    mp.setenv(runs.BASE_URL_ENV, BASE_URL)


def no_task(mp: pytest.MonkeyPatch) -> None:
    for var in (*runs.AIRFLOW_ENV, runs.BASE_URL_ENV):
        mp.delenv(var, raising=False)


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLOPS_PARAMS", "MLOPS_DATA_ROOT", "MLOPS_PROJECT_ROOT"):
            mp.delenv(var, raising=False)
        no_task(mp)
        pp = make_project(tmp_path_factory.mktemp("describe") / "proj", FLIGHTS, OVERRIDES)
        params, st = load_params(pp), settings(pp)
        weeks = params.train.partitions
        rows = load(params.source, REPO)
        ts = params.source.timestamp_column
        for week, df in split_partitions(rows, params.contract, ts, "week", weeks).items():
            io.write_parquet(partitions.file(st.validated_dir, week), df)
        materialize.run(params, st, weeks)
        reg = connect(st)

        def text(version: str) -> str:
            return str(reg.client.get_model_version(MODEL, version).description)

        # v1, trained in the second try of an Airflow task, becomes champion (mode auto)
        task_env(mp, "training", "train", "2")
        v1 = train.run(params, st)["version"]
        no_task(mp)
        trained_v1 = text(v1)
        evaluate.run(params, st)
        promote.run(params, st)

        # v2: other hyper-parameters; the gate passes it in mode manual (a lenient margin)
        hgb = {**HGB, "params": {"max_iter": 60}}
        second = load_params(pp).model_copy(
            update={
                "train": params.train.model_copy(
                    update={"candidates": [params.train.candidates[0].model_copy(update=hgb)]}
                ),
                "promote": params.promote.model_copy(
                    update={"approval": "manual", "min_improvement": -0.5}
                ),
            }
        )
        v2 = train.run(second, st)["version"]
        ev = evaluate.run(second, st)
        promote.run(second, st)
        pending = text(v2)
        # a person adds a note under the block in the MLflow UI
        reg.client.update_model_version(MODEL, v2, f"{pending}\n\n{NOTE}")

        # the approval is decided and completed in the training DAG's approval task
        task_env(mp, "training", "approval", "1")
        approval.decide(st, MODEL, v2, True, "ann", "looks right")
        approval.complete(st, MODEL, v2)
        no_task(mp)
        approved = {v: text(v) for v in (v1, v2)}
        version_tags = dict(reg.client.get_model_version(MODEL, v2).tags)
        history = audit.history(st, MODEL)

        governance.rollback(st, MODEL, by="bob", reason="July looks worse")
        rolled = {v: text(v) for v in (v1, v2)}
        yield {
            "params": params,
            "st": st,
            "reg": reg,
            "v1": v1,
            "v2": v2,
            "ev": ev,
            "trained_v1": trained_v1,
            "pending": pending,
            "approved": approved,
            "rolled": rolled,
            "tags": version_tags,
            "history": history,
            "model": str(reg.client.get_registered_model(MODEL).description),
        }


def test_the_approved_version_holds_the_gate_numbers_and_who_approved_it(flow) -> None:
    v1, v2, ev = flow["v1"], flow["v2"], flow["ev"]
    cand = ev["candidate"]["metrics"]["roc_auc"]
    champ = ev["champion"]["metrics"]["roc_auc"]
    assert ev["champion"]["version"] == v1
    text = flow["approved"][v2]
    # then its description shows the gate's numbers as promote compared them
    assert "#### Promotion gate: **passed**" in text
    assert f"| candidate v{v2} | {cand:.4f} |" in text
    assert f"| champion v{v1} | {champ:.4f} |" in text
    assert (
        f"| gain over the champion | {cand - champ:+.4f} (required margin >= -0.5000: yes) |"
        in (text)
    )
    assert f"| floor | 0.5500 (candidate >= floor: {'yes' if cand >= 0.55 else 'no'}) |" in text
    # and who approved it, when, and why; and that it is champion now
    at = flow["tags"][tags.APPROVAL_AT]
    assert f"**approved** by ann at {at}" in text and "- note: looks right" in text
    assert text.startswith(f"Champion · approved by ann · gate passed · `roc_auc` {cand:.4f}")
    assert f"**champion** since {flow['tags'][tags.CHAMPION_SINCE]}" in text
    # and what it is and was trained on
    kind = "kind `sklearn_hist_gradient_boosting`, MLflow flavour `sklearn` (skops)"
    assert f"`hgb`: {kind}, run `{flow['tags'][tags.RUN_ID]}`" in text
    assert "fitted on 2013-W02, 2013-W03; held out 2013-W04" in text
    hashes = json.loads(flow["tags"][tags.DATA_MD5])
    assert sorted(hashes) == params_weeks(flow) and all(f"`{h}`" in text for h in hashes.values())
    # and the person's note is still there, once, below the one block
    assert text.endswith(f"\n\n{NOTE}") and text.count(BEGIN) == 1


def params_weeks(flow: dict[str, Any]) -> list[str]:
    return sorted(flow["params"].train.partitions)


def test_the_pending_version_said_it_waited_and_the_old_champion_says_it_was_replaced(
    flow,
) -> None:
    v1, v2 = flow["v1"], flow["v2"]
    # while it waited, v2 was the challenger with a pending approval
    assert flow["pending"].startswith("Challenger · approval pending · gate passed")
    assert f"(`mlops approve {MODEL} {v2} --by NAME`" in flow["pending"]
    # v1 was gated on the floor alone (no champion then), approved automatically
    v1_text = flow["approved"][v1]
    assert v1_text.startswith(f"Replaced by v{v2} · approval auto · gate passed")
    assert "| champion | none at the gate: floor only |" in v1_text
    assert f"was champion until replaced by v{v2}" in v1_text
    # and when trained it said the gate had not run yet
    assert "#### Promotion gate: not run yet" in flow["trained_v1"]
    # after the rollback, each says where it stands now
    assert flow["rolled"][v1].startswith("Champion · approval auto")
    assert flow["rolled"][v2].startswith(f"Replaced by v{v1} · approved by ann")
    assert flow["rolled"][v2].endswith(NOTE)


def test_runs_started_in_an_airflow_task_name_it(flow) -> None:
    reg, v1, v2 = flow["reg"], flow["v1"], flow["v2"]
    c = reg.client
    # given v1 trained in try 2 of the training DAG's train task, v2 outside Airflow
    r1 = c.get_run(c.get_model_version(MODEL, v1).run_id).data.tags
    r2 = c.get_run(c.get_model_version(MODEL, v2).run_id).data.tags
    # then v1's run names the DAG, its run, the task and the try, and links the task
    assert (r1[tags.AIRFLOW_DAG_ID], r1[tags.AIRFLOW_TASK_ID], r1[tags.AIRFLOW_TRY_NUMBER]) == (
        "training",
        "train",
        "2",
    )
    assert r1[tags.AIRFLOW_DAG_RUN_ID] == "manual__2013-09-01T03:00:00+00:00-training"
    assert r1[tags.AIRFLOW_URL] == (
        f"{BASE_URL}/dags/training/runs/manual__2013-09-01T03%3A00%3A00%2B00%3A00-training"
        "/tasks/train?try_number=2"
    )
    assert not any(k.startswith(tags.AIRFLOW_PREFIX) for k in r2)
    # and v1's description says so, with the link
    assert "trained in Airflow: DAG `training`" in flow["approved"][v1]
    assert f"([task instance]({r1[tags.AIRFLOW_URL]}))" in flow["approved"][v1]
    # and the approval recorded in the audit history names its task too
    decided = next(e for e in flow["history"] if e["action"] == "approve")
    event = c.get_run(decided["run_id"]).data.tags
    assert (event[tags.AIRFLOW_TASK_ID], event[tags.AIRFLOW_TRY_NUMBER]) == ("approval", "1")


def test_the_model_says_what_it_predicts_and_the_card_keeps_a_persons_intended_use(
    flow,
) -> None:
    params, st, reg, v2 = flow["params"], flow["st"], flow["reg"], flow["v2"]
    text = flow["model"]
    # the registered model's description: target, task, contract, where the cards are
    assert text.startswith("Predicts `is_delayed` (classification) for each `flight_id`")
    assert all(f"| `{f.name}` | {f.dtype} |" in text for f in params.contract.features)
    assert f"`{st.reports_dir / 'cards'}/{MODEL}-vVERSION.html`" in text
    assert authored(text) == ""
    # given a person's intended use written below it, when v2's card is written
    reg.client.update_registered_model(MODEL, f"{text}\n\nFor the delay desk only.")
    out = card.run(params, st, MODEL, v2)
    # then the card takes the person's words, not mlops's block
    assert out["intended_use"] == "For the delay desk only."
    # and v2's description links the card the version's tag points at
    mv = reg.client.get_model_version(MODEL, v2)
    assert f"- model card: `{mv.tags[tags.CARD]}`" in str(mv.description)


def test_expiry_and_rejection_are_written_where_a_person_reads(flow) -> None:
    st, reg, v1 = flow["st"], flow["reg"], flow["v1"]
    c = reg.client
    src = c.get_model_version(MODEL, v1)

    lineage = (tags.CANDIDATE, tags.KIND, tags.DATA_PARTITIONS, tags.DATA_MD5, tags.RUN_ID)

    def candidate() -> str:
        kept = {k: v for k, v in src.tags.items() if k in lineage}
        mv = c.create_model_version(MODEL, src.source, src.run_id, tags=kept)
        version = str(mv.version)
        governance.apply_gate(st, MODEL, version, True, ["roc_auc ok"], "manual")
        assert reg.alias_version(MODEL, CHALLENGER) == version
        return version

    # when a request expires
    late = candidate()
    approval.expire(st, MODEL, late, "no decision within 72 h")
    text = str(c.get_model_version(MODEL, late).description)
    at = c.get_model_version(MODEL, late).tags[tags.APPROVAL_EXPIRED_AT]
    assert text.startswith("No alias · approval expired")
    assert f"**expired** at {at} (no decision within 72 h)" in text
    # when another is rejected
    bad = candidate()
    approval.decide(st, MODEL, bad, False, "bob", "worse on EWR")
    text = str(c.get_model_version(MODEL, bad).description)
    assert text.startswith("No alias · rejected by bob")
    assert "**rejected** by bob at" in text and "- note: worse on EWR" in text
