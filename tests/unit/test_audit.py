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
