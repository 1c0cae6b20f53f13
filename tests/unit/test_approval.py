"""approval: the pure rules (what blocks a promotion, where an approval stands)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlops import approval

NOW = datetime(2013, 9, 2, 12, tzinfo=UTC)


# --------------------------------------------------------------------------- promotion policy
@pytest.mark.parametrize(
    ("version_tags", "blocked_by"),
    [
        ({"mlops.gate.decision": "passed", "mlops.approval.status": "auto"}, None),
        ({"mlops.gate.decision": "passed", "mlops.approval.status": "approved"}, None),
        (
            {"mlops.gate.decision": "passed", "mlops.approval.status": "pending"},
            "waiting for approval",
        ),
        ({"mlops.gate.decision": "passed", "mlops.approval.status": "expired"}, "expired"),
        (
            {
                "mlops.gate.decision": "failed",
                "mlops.gate.reasons": "roc_auc 0.6 >= floor 0.65: no",
            },
            "roc_auc 0.6 >= floor 0.65: no",
        ),
        (
            {"mlops.gate.decision": "failed", "mlops.approval.status": "approved"},
            "failed the promotion gate",
        ),  # approved without a recorded override
        (
            {
                "mlops.gate.decision": "failed",
                "mlops.approval.status": "approved",
                "mlops.approval.override": "gate failed overridden by ann",
            },
            None,
        ),
        ({}, "no promotion gate result"),
        (
            {
                "mlops.gate.decision": "passed",
                "mlops.approval.status": "rejected",
                "mlops.approval.by": "bob",
            },
            "rejected by bob",
        ),
    ],
)
def test_blockers_name_what_stops_a_promotion(version_tags, blocked_by) -> None:
    # given the tags on a version / when asked what blocks it
    out = approval.blockers(version_tags)
    # then exactly the expected rule speaks up
    if blocked_by is None:
        assert out == []
    else:
        assert any(blocked_by in b for b in out), out


# --------------------------------------------------------------------------- outcome
def decision(**kw) -> dict:
    """The training DAG's promotion decision, as the approval sensor receives it."""
    return {"promote": True, "approval": "manual", "at": NOW.isoformat(), **kw}


@pytest.mark.parametrize(
    ("dec", "status", "after", "expected"),
    [
        (decision(approval="auto"), None, 0, "not_required"),
        (decision(promote=False), None, 0, "not_required"),
        (decision(), "pending", 1, None),
        (decision(), "approved", 1, "approved"),
        (decision(), "rejected", 1, "rejected"),
        (decision(), "pending", 72, "expired"),
        (decision(), "approved", 100, "approved"),
    ],
)
def test_approval_outcome(dec, status, after, expected) -> None:
    now = NOW + timedelta(hours=after)
    since = datetime.fromisoformat(dec["at"])
    got = approval.outcome(dec["promote"], dec["approval"], status, since, now, timedelta(hours=72))
    assert got == expected
    assert got is None or isinstance(got, approval.Outcome)
