"""audit: the pure checks of a model's alias history (consistency, rollback targets)."""

from __future__ import annotations

from mlops import audit


def ev(seq: int, action: str, frm: str, to: str, alias: str = "champion") -> dict[str, str]:
    return {
        "seq": str(seq),
        "action": action,
        "alias": alias,
        "from_version": frm,
        "to_version": to,
    }


def test_consistent_history_has_no_problems() -> None:
    events = [ev(3, "rollback", "2", "1"), ev(2, "promote", "1", "2"), ev(1, "promote", "", "1")]
    assert audit.check_history(events, "1") == []


def test_history_that_skips_a_move_or_disagrees_with_the_alias_is_flagged() -> None:
    # given two moves that both start from v1 (a lost update) and an alias elsewhere
    events = [ev(3, "promote", "1", "3"), ev(2, "promote", "1", "2"), ev(1, "promote", "", "1")]
    problems = audit.check_history(events, "2")
    assert any("#3 moves champion from v1 but #2 left it at v2" in p for p in problems)
    assert any("alias points at v2" in p for p in problems)


def test_decisions_without_alias_do_not_count_as_moves() -> None:
    events = [
        {"seq": "2", "action": "approve", "alias": "", "version": "5"},
        ev(1, "promote", "", "1"),
    ]
    assert audit.check_history(events, "1") == []


def test_previous_champion_walks_back_through_rollbacks() -> None:
    # given v1 -> v2 -> v3, then a rollback to v2
    events = [
        ev(3, "rollback", "3", "2"),
        ev(2, "promote", "2", "3"),
        ev(1, "promote", "1", "2"),
        ev(0, "promote", "", "1"),
    ]
    # when rolling back again, then it goes to v1 (not back to the withdrawn v3)
    assert audit.previous_champion(events, "2") == "1"
    # and with only the first move recorded there is nothing before it
    assert audit.previous_champion([ev(0, "promote", "", "1")], "1") is None


def test_a_version_promoted_again_after_a_rollback_is_a_rollback_target() -> None:
    events = [
        ev(4, "promote", "2", "3"),
        ev(3, "promote", "1", "2"),
        ev(2, "rollback", "2", "1"),
        ev(1, "promote", "1", "2"),
    ]
    assert audit.previous_champion(events, "3") == "2"


def test_challenger_moves_are_ignored_by_rollback() -> None:
    events = [ev(2, "challenger", "", "7", alias="challenger"), ev(1, "promote", "4", "5")]
    assert audit.previous_champion(events, "5") == "4"


def intent(seq: int, frm: str, to: str, state: str = "pending", alias: str = "champion"):
    return {**ev(seq, "promote", frm, to, alias), "state": state, "run_id": f"r{seq}"}


def test_an_interrupted_move_is_done_only_when_its_alias_moved() -> None:
    # given a promotion v2 -> v3 killed after writing its intent
    pending = intent(3, "2", "3")
    events = [pending, ev(2, "promote", "1", "2"), ev(1, "promote", "", "1")]
    # then it is done when the alias is on v3, abandoned when still on v2 (or elsewhere)
    assert audit.settle(pending, events, "3") == audit.DONE
    assert audit.settle(pending, events, "2") == audit.ABANDONED
    assert audit.settle(pending, events, "7") == audit.ABANDONED
    # and a removal (challenger dropped) is done when the alias is gone
    drop = intent(4, "3", "", alias="challenger")
    assert audit.settle(drop, [drop, *events], None) == audit.DONE
    assert audit.settle(drop, [drop, *events], "3") == audit.ABANDONED


def test_an_intent_killed_while_written_or_overtaken_is_abandoned() -> None:
    # an intent without seq was killed inside record(), before its move could start
    unnumbered = {**intent(0, "2", "3"), "seq": ""}
    assert audit.settle(unnumbered, [unnumbered], "3") == audit.ABANDONED
    # a later recorded move of the same alias means this one is not what the alias shows
    old = intent(2, "1", "3")
    events = [ev(4, "external", "1", "3"), old, ev(1, "promote", "", "1")]
    assert audit.settle(old, events, "3") == audit.ABANDONED


def test_abandoned_and_pending_intents_are_not_moves() -> None:
    # given v1 -> v2, then a promotion to v3 that never moved the alias
    events = [
        intent(4, "2", "5"),
        intent(3, "2", "3", state="abandoned"),
        {**ev(2, "promote", "1", "2"), "state": "done"},
        ev(1, "promote", "", "1"),
    ]
    # then the history is consistent with the champion v2, v3 was never champion,
    # and a rollback from v2 goes to v1
    assert [e["seq"] for e in audit.effective(events)] == ["2", "1"]
    assert audit.check_history(events, "2") == []
    assert not audit.was_champion(events, "3") and not audit.was_champion(events, "5")
    assert audit.was_champion(events, "1")
    assert audit.previous_champion(events, "2") == "1"


def test_previous_champion_is_who_held_the_alias_before_an_outside_move() -> None:
    # given v2 then v1 promoted, then @champion moved v1 -> v3 in the MLflow UI
    recorded = [ev(2, "promote", "2", "1"), ev(1, "promote", "", "2")]
    # then once the outside move is recorded, rollback goes to v1, the version it replaced
    assert audit.previous_champion([ev(3, "external", "1", "3"), *recorded], "3") == "1"
    # (from the history without it, it would be v2: why reconcile records it first)
    assert audit.previous_champion(recorded, "3") == "2"
