"""retrain: retraining plans (cooldown, bursts, the sliding window) and breach bookkeeping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from mlops import retrain

# --------------------------------------------------------------------------- plan_retrain
NOW = datetime(2013, 9, 2, 12, tzinfo=UTC)
DAY = timedelta(hours=24)
WINDOW = ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05", "2013-06"]


def breach(pid: str, i: int = 1) -> dict:
    return {"id": i, "timestamp": NOW, "partition": pid, "reasons": ["drift"]}


def test_scheduled_run_without_breaches_trains_the_configured_window() -> None:
    p = retrain.plan_retrain([], None, NOW, DAY, WINDOW, "month")
    assert p.run and p.partitions == WINDOW and p.handled == [] and p.skipped == []


def test_triggered_run_whose_breaches_were_already_handled_does_nothing() -> None:
    p = retrain.plan_retrain([], None, NOW, DAY, WINDOW, "month", triggered=True)
    assert not p.run and "already handled" in p.reason


def test_breach_slides_the_window_to_end_at_the_breached_partition() -> None:
    p = retrain.plan_retrain([breach("2013-08")], None, NOW, DAY, WINDOW, "month")
    assert p.run
    assert p.partitions == ["2013-03", "2013-04", "2013-05", "2013-06", "2013-07", "2013-08"]
    assert p.handled == ["2013-08"] and "2013-08" in p.reason


def test_breach_inside_the_configured_window_keeps_it() -> None:
    p = retrain.plan_retrain([breach("2013-02")], None, NOW, DAY, WINDOW, "month")
    assert p.run and p.partitions == WINDOW and p.handled == ["2013-02"]


def test_burst_of_breaches_gives_one_retrain_on_the_newest() -> None:
    burst = [breach("2013-07", 1), breach("2013-09", 3), breach("2013-08", 2)]
    p = retrain.plan_retrain(burst, None, NOW, DAY, WINDOW, "month")
    assert p.run and p.partitions[-1] == "2013-09" and len(p.partitions) == len(WINDOW)
    assert p.handled == ["2013-07", "2013-08", "2013-09"] and p.skipped == []


def test_breaches_inside_the_cooldown_are_skipped_with_the_reason() -> None:
    last = NOW - timedelta(hours=3)
    p = retrain.plan_retrain(
        [breach("2013-08"), breach("2013-09", 2)], last, NOW, DAY, WINDOW, "month"
    )
    assert not p.run and p.partitions == []
    assert p.skipped == ["2013-08", "2013-09"] and p.handled == []
    assert p.reason.startswith("cooldown") and "21:00:00 of the 24 h cooldown" in p.reason
    assert "2013-08, 2013-09" in p.reason


def test_breach_after_the_cooldown_retrains_again() -> None:
    p = retrain.plan_retrain([breach("2013-10")], NOW - DAY, NOW, DAY, WINDOW, "month")
    assert p.run and p.partitions[-1] == "2013-10"


def test_weekly_window_crosses_the_year() -> None:
    p = retrain.plan_retrain(
        [breach("2014-W01")], None, NOW, DAY, ["2013-W02", "2013-W03", "2013-W04"], "week"
    )
    assert p.partitions == ["2013-W51", "2013-W52", "2014-W01"]


def test_event_without_partition_retrains_the_configured_window() -> None:
    p = retrain.plan_retrain([{"id": 9, "timestamp": NOW}], None, NOW, DAY, WINDOW, "month")
    assert p.run and p.partitions == WINDOW and "without a partition" in p.reason


# --------------------------------------------------------------------------- bookkeeping
def test_unhandled_events_are_those_after_the_watermark_or_new_at_it() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        {"id": 5, "timestamp": t0 + timedelta(seconds=2)},
        {"id": 1, "timestamp": t0 - timedelta(seconds=1)},
        {"id": 3, "timestamp": t0},
        {"id": 4, "timestamp": t0},
    ]
    assert retrain.unhandled(events, None, []) == sorted(
        events, key=lambda e: (e["timestamp"], e["id"])
    )
    new = retrain.unhandled(events, t0.isoformat(), [3])
    assert [e["id"] for e in new] == [4, 5]


def test_unhandled_survives_a_reset_airflow_db() -> None:
    # ids start again at 1 after `airflow db reset`; timestamps keep moving forward
    mark = datetime(2026, 1, 1, tzinfo=UTC)
    later = [{"id": 1, "timestamp": mark + timedelta(days=1)}]
    assert retrain.unhandled(later, mark.isoformat(), [57]) == later


def test_performance_breach_slides_the_window_and_says_so() -> None:
    # given a breach that came from realised performance on August's outcomes
    event = {**breach("2013-08"), "kind": "performance"}
    # when the plan is made with every partition labelled
    p = retrain.plan_retrain([event], None, NOW, DAY, WINDOW, "month", labelled=lambda _p: True)
    # then it retrains on the window ending at August and names the kind of breach
    assert p.run and p.partitions[-1] == "2013-08"
    assert p.reason.startswith("performance breach on 2013-08")


def test_drift_breach_on_an_unlabelled_partition_ends_the_window_at_the_labelled_one() -> None:
    # given drift on September, whose outcomes have not arrived; August's have
    labelled = {"2013-07", "2013-08"}.__contains__
    # when the plan is made
    p = retrain.plan_retrain(
        [breach("2013-09")], None, NOW, DAY, WINDOW, "month", labelled=labelled
    )
    # then the window ends at August (a window ending at September could not be trained)
    assert p.run and p.partitions[-1] == "2013-08" and p.handled == ["2013-09"]
    assert "outcomes have arrived up to 2013-08, not for 2013-09" in p.reason


def test_drift_breach_without_new_outcomes_waits_for_them() -> None:
    # given drift on July, no outcome after June, and a last retrain on the configured window
    labelled = set(WINDOW).__contains__
    # when the plan is made
    p = retrain.plan_retrain(
        [breach("2013-07")], None, NOW, DAY, WINDOW, "month", labelled=labelled, last_window=WINDOW
    )
    # then nothing is retrained (the same window would give the same model); the breach is
    # handled and the reason says what the retrain waits for
    assert not p.run and p.handled == ["2013-07"] and p.skipped == []
    assert "no outcomes newer than the last retrain's window 2013-01..2013-06" in p.reason


def test_breach_event_extra_is_small_and_json() -> None:
    extra = retrain.breach_event(
        {
            "partition": "2013-07",
            "reasons": ["6/14 features drifted"],
            "report": "/r/2013-07/drift.html",
            "model_version": "3",
            "breach": True,
        }
    )
    assert extra == {
        "partition": "2013-07",
        "kind": "drift",
        "reasons": ["6/14 features drifted"],
        "report": "/r/2013-07/drift.html",
        "model_version": "3",
    }
    json.dumps(extra)


# --------------------------------------------------------------------------- lost state
def _history(t0: datetime) -> list[dict]:
    return [
        {"id": 7, "timestamp": t0 + timedelta(hours=2), "partition": "2013-09"},
        {"id": 3, "timestamp": t0, "partition": "2013-07"},
        {"id": 4, "timestamp": t0, "partition": "2013-08"},
    ]


def test_a_lost_state_is_rebuilt_from_the_events_never_as_no_cooldown() -> None:
    # given a breach history whose newest event (an hour old) triggered this run
    t0 = NOW - timedelta(hours=3)
    events = _history(t0)
    # when the state is rebuilt from it
    state = retrain.rebuild_state(events, pending_since=t0 + timedelta(hours=2))
    # then the events earlier runs took count as handled, the cooldown runs from them
    assert state["watermark"] == t0.isoformat() and sorted(state["ids_at_watermark"]) == [3, 4]
    assert state["last_retrain"] == t0.isoformat()
    new = retrain.unhandled(events, state["watermark"], state["ids_at_watermark"])
    assert [e["id"] for e in new] == [7]
    last = datetime.fromisoformat(state["last_retrain"])
    inside = retrain.plan_retrain(new, last, NOW, DAY, WINDOW, "month")
    assert not inside.run and inside.skipped == ["2013-09"] and "cooldown" in inside.reason
    # and once the cooldown has passed, only the newest breach is retrained on
    after = retrain.plan_retrain(new, last, last + DAY, DAY, WINDOW, "month")
    assert after.run and after.handled == ["2013-09"]


def test_a_lost_state_of_a_run_no_event_triggered_takes_every_event_as_handled() -> None:
    events = _history(NOW - timedelta(hours=3))
    state = retrain.rebuild_state(events, pending_since=None)
    assert state["ids_at_watermark"] == [7] and state["last_retrain"] == state["watermark"]
    assert retrain.unhandled(events, state["watermark"], state["ids_at_watermark"]) == []


def test_a_lost_state_without_events_rebuilds_nothing() -> None:
    assert retrain.rebuild_state([], pending_since=None) == {"decisions": {}}
    # the first breach ever triggered this run: nothing was handled, no cooldown applies
    (one,) = _history(NOW)[:1]
    assert retrain.rebuild_state([one], pending_since=one["timestamp"]) == {"decisions": {}}


def test_breach_inside_the_labelled_window_still_retrains_on_it() -> None:
    # given a drift breach on a week of the configured window, whose outcomes are known
    labelled = set(WINDOW).__contains__
    # when the plan is made with the configured window as the last one
    p = retrain.plan_retrain(
        [breach("2013-05")], None, NOW, DAY, WINDOW, "month", labelled=labelled, last_window=WINDOW
    )
    # then it retrains on that window (nothing is missing to wait for)
    assert p.run and p.partitions == WINDOW and p.handled == ["2013-05"]
