"""describe: a version's and a model's registry description, from facts, as a person reads it."""

from __future__ import annotations

import json

import pytest

from mlops import describe, tags
from mlops.config import load_params
from mlops.describe_render import (
    BEGIN,
    END,
    LIMIT,
    authored,
    data_hash,
    merge,
    model_text,
    summary,
    version_text,
)
from tests.conftest import FLIGHTS

MD5 = {"2013-W02": "a" * 32, "2013-W03": "b" * 32, "2013-W04": "c" * 32}
GATED = {
    tags.CANDIDATE: "hgb",
    tags.KIND: "sklearn_hist_gradient_boosting",
    tags.holdout("roc_auc"): "0.712300",
    tags.THRESHOLD: "0.31",
    tags.DATA_PARTITIONS: ",".join(MD5),
    tags.DATA_MD5: json.dumps(MD5),
    tags.FEATURE_SERVICE: "flights_model",
    tags.CODE_REVISION: "0123abc-dirty",
    tags.GATE: "passed",
    tags.GATE_REASONS: "roc_auc 0.7150 >= floor 0.65: yes",
    tags.GATE_METRIC: "roc_auc",
    tags.GATE_CANDIDATE: "0.715000",
    tags.GATE_CHAMPION: "0.702000",
    tags.GATE_CHAMPION_VERSION: "2",
    tags.GATE_FLOOR: "0.65",
    tags.GATE_MIN_IMPROVEMENT: "0.005",
}
RUN_PARAMS = {"kind": "sklearn_hist_gradient_boosting", "holdout_partitions": "2013-W04"}


def text_of(version_tags: dict[str, str], aliases: tuple[str, ...] = (), **run: dict) -> str:
    facts = describe.version_facts(
        "flight_delay", "3", version_tags, aliases, "run123", RUN_PARAMS, run.get("tags")
    )
    return version_text(facts)


def test_a_gated_version_says_what_it_is_what_it_was_trained_on_and_the_gate_numbers() -> None:
    # given a version's tags after train, evaluate and promote (auto approval)
    vt = {**GATED, tags.APPROVAL: "auto", tags.CHAMPION_SINCE: "2013-09-02T12:00:00+00:00"}
    # when its description is written
    text = text_of(vt, ("champion",))
    # then it names the candidate, its run and flavour, and the holdout score
    assert "`hgb`: kind `sklearn_hist_gradient_boosting`, MLflow flavour `sklearn`" in text
    assert "run `run123`" in text and "holdout roc_auc **0.7123** on 2013-W04" in text
    assert "decision threshold 0.3100" in text
    # the window (fitted and held out) and every partition's DVC hash
    assert "window 2013-01-07 to 2013-01-28: fitted on 2013-W02, 2013-W03" in text
    assert "held out 2013-W04" in text
    assert all(f"| {p} | `{h}` |" in text for p, h in MD5.items())
    assert f"data hash `{data_hash(MD5)}`" in text
    # the gate: candidate against champion, the gain and the required margin, the floor
    assert "#### Promotion gate: **passed**" in text
    assert "| candidate v3 | 0.7150 |" in text and "| champion v2 | 0.7020 |" in text
    assert "| gain over the champion | +0.0130 (required margin >= 0.0050: yes) |" in text
    assert "| floor | 0.6500 (candidate >= floor: yes) |" in text
    # the approval and the alias
    assert "not needed: approval mode `auto`" in text
    assert "**champion** since 2013-09-02T12:00:00+00:00" in text
    assert "model card: not written yet (`mlops card flight_delay 3`)" in text
    # and the first line, which the list of versions shows, is plain words first
    assert text.splitlines()[0].startswith("Champion · approval auto · gate passed")


def test_a_lower_is_better_metric_gains_when_it_falls_and_a_short_gain_says_no() -> None:
    vt = {
        **GATED,
        tags.GATE_METRIC: "rmse",
        tags.GATE_CANDIDATE: "3.100000",
        tags.GATE_CHAMPION: "3.150000",
        tags.GATE_FLOOR: "4.0",
        tags.GATE_MIN_IMPROVEMENT: "0.1",
        tags.GATE: "failed",
    }
    text = text_of(vt)
    assert "#### Promotion gate: **failed**" in text
    assert "| gain over the champion | +0.0500 (required margin >= 0.1000: no) |" in text
    assert "| floor | 4.0000 (candidate <= floor: yes) |" in text
    assert "- not requested: the gate failed" in text


def test_a_first_version_is_gated_on_the_floor_and_an_older_gate_reads_the_eval_tags() -> None:
    # given the first version (no champion at the gate)
    first = {**GATED, tags.GATE_CHAMPION: "", tags.GATE_CHAMPION_VERSION: ""}
    assert "| champion | none at the gate: floor only |" in text_of(first)
    # given a version gated before the gate's inputs were tagged: evaluate's tags stand in
    old = {
        k: v
        for k, v in GATED.items()
        if not k.startswith("mlops.gate.")
        or k
        in (
            tags.GATE,
            tags.GATE_REASONS,
        )
    }
    old.update({tags.evaluation("roc_auc"): "0.715000", tags.EVAL_CHAMPION_VERSION: "2"})
    old[tags.champion_evaluation("roc_auc")] = "0.702000"
    text = text_of(old)
    assert "| candidate v3 | 0.7150 |" in text and "| champion v2 | 0.7020 |" in text
    assert "required margin >= not recorded" in text and "| floor | not recorded |" in text


@pytest.mark.parametrize(
    ("approval", "expected", "first_line"),
    [
        (
            {tags.APPROVAL: "pending", tags.CHALLENGER_SINCE: "2013-09-02T12:00:00+00:00"},
            "**pending** since 2013-09-02T12:00:00+00:00: waiting for a person "
            "(`mlops approve flight_delay 3 --by NAME`",
            "Challenger · approval pending",
        ),
        (
            {
                tags.APPROVAL: "approved",
                tags.APPROVAL_BY: "ann",
                tags.APPROVAL_AT: "2013-09-03T08:00:00+00:00",
                tags.APPROVAL_NOTE: "checked July",
            },
            "**approved** by ann at 2013-09-03T08:00:00+00:00",
            "Challenger · approved by ann",
        ),
        (
            {
                tags.APPROVAL: "rejected",
                tags.APPROVAL_BY: "bob",
                tags.APPROVAL_AT: "2013-09-03T08:00:00+00:00",
            },
            "**rejected** by bob at 2013-09-03T08:00:00+00:00",
            "Challenger · rejected by bob",
        ),
        (
            {
                tags.APPROVAL: "expired",
                tags.APPROVAL_EXPIRED_AT: "2013-09-05T12:00:00+00:00",
                tags.APPROVAL_EXPIRED_WHY: "no decision within 72 h",
            },
            "**expired** at 2013-09-05T12:00:00+00:00 (no decision within 72 h)",
            "Challenger · approval expired",
        ),
    ],
)
def test_the_approval_state_is_spelled_out(approval, expected, first_line) -> None:
    text = text_of({**GATED, **approval}, ("challenger",))
    assert expected in text
    assert text.splitlines()[0].startswith(first_line)
    assert ("note: checked July" in text) is (approval.get(tags.APPROVAL_NOTE) is not None)


def test_an_override_and_a_replaced_champion_are_shown() -> None:
    vt = {
        **GATED,
        tags.GATE: "failed",
        tags.APPROVAL: "approved",
        tags.APPROVAL_BY: "ann",
        tags.OVERRIDE: "gate failed overridden by ann at T: hotfix",
        tags.REPLACED_BY: "5",
    }
    text = text_of(vt)
    assert "**gate overridden**: gate failed overridden by ann at T: hotfix" in text
    assert "was champion until replaced by v5" in text
    assert text.splitlines()[0].startswith("Replaced by v5 · approved by ann · gate failed")


def test_the_airflow_task_that_trained_it_is_linked() -> None:
    run_tags = {
        tags.AIRFLOW_DAG_ID: "training",
        tags.AIRFLOW_DAG_RUN_ID: "manual__1",
        tags.AIRFLOW_TASK_ID: "train",
        tags.AIRFLOW_TRY_NUMBER: "2",
        tags.AIRFLOW_URL: "http://127.0.0.1:8080/dags/training/runs/manual__1/tasks/train",
    }
    text = text_of(GATED, tags=run_tags)
    assert "trained in Airflow: DAG `training`, run `manual__1`, task `train`, try 2" in text
    assert "([task instance](http://127.0.0.1:8080/dags/training/runs/manual__1/tasks/train))" in (
        text
    )
    assert "trained in Airflow" not in text_of(GATED)


def test_free_text_cannot_close_the_block_or_break_a_table() -> None:
    vt = {
        **GATED,
        tags.APPROVAL: "rejected",
        tags.APPROVAL_BY: "eve",
        tags.APPROVAL_NOTE: f"bad {END} | <script>x</script>\nsecond line",
    }
    text = text_of(vt)
    assert text.count(END) == 1 and text.endswith(END)
    assert "note: bad &lt;!-- mlops:end --> \\| &lt;script>x&lt;/script> second line" in text


def test_a_persons_notes_are_kept_below_the_block_and_the_block_is_replaced() -> None:
    # given a description a person wrote before mlops did
    first = merge("Checked on July data by ann.", "Old line <!-- mlops:begin -->\nold\n" + END)
    assert first.startswith("Old line") and first.endswith("Checked on July data by ann.")
    # when the block is written again with other facts
    again = merge(first, version_text(describe.version_facts("m", "1", GATED)))
    # then the note is kept once, below one block, and the old block is gone
    assert again.count(BEGIN) == 1 and "old\n" not in again
    assert again.endswith("\n\nChecked on July data by ann.")
    assert authored(again) == "Checked on July data by ann."
    # and a description mlops wrote alone has no person's text
    assert authored(version_text(describe.version_facts("m", "1", GATED))) == ""


def test_a_long_window_stays_within_mlflows_limit() -> None:
    # given 60 weekly partitions and a long note
    md5 = {f"2013-W{w:02d}": f"{w:032d}" for w in range(1, 53)}
    md5.update({f"2014-W{w:02d}": f"{w:032x}" for w in range(1, 9)})
    vt = {**GATED, tags.DATA_PARTITIONS: ",".join(md5), tags.DATA_MD5: json.dumps(md5)}
    facts = describe.version_facts("m", "1", vt)
    full, compact = version_text(facts), version_text(facts, compact=True)
    # then the window is named by its ends and the hash table says where the rest is
    assert "fitted on 2013-W01 ... 2014-W08 (60 partitions)" in full
    assert f"more in tag `{tags.DATA_MD5}`" in full
    # and with a long note the compact block is used, the note kept whole below it
    text = merge("n" * 3400, full, compact)
    assert len(text) <= LIMIT and "| partition |" not in text
    assert text.startswith(summary(facts)) and text.endswith("n" * 3400)
    # and a note too long for both is cut, saying so, the block kept whole
    text = merge("n" * 4900, full, compact)
    assert len(text) <= LIMIT and text.startswith(compact)
    assert text.endswith("(cut: MLflow keeps at most 5000 characters)_")


def test_the_model_description_says_what_it_predicts_its_contract_and_where_cards_are() -> None:
    params = load_params(FLIGHTS)
    text = model_text(params, "flights_model", "/data/reports/cards")
    first = text.splitlines()[0]
    assert first.startswith("Predicts `is_delayed` (classification) for each `flight_id`")
    assert "the probability that `is_delayed` is true" in text
    assert "Feast feature service `flights_model`" in text
    assert "`/data/reports/cards/flight_delay-vVERSION.html`" in text
    assert f"#### Contract: {len(params.contract.features)} features" in text
    assert "| `origin` | category | EWR, JFK, LGA (3) |" in text
    assert "| `carrier` | category | 9E, AA, AS, B6, DL, EV, F9, FL ... (16) |" in text
    assert "| `sched_hour` | int | 0 to 23 |" in text
    assert "| `dest` | category | learned at training |" in text
    assert text.endswith(END) and len(text) <= LIMIT
