"""The approval of a candidate model: Airflow's Required Actions page, the registry, the CLI.

A candidate that passed the gate with ``promote.approval: manual`` waits as
``challenger``. The ``approval`` task is Airflow's own human-in-the-loop operator: the
approver sees the candidate, its gate result and the links to its model card and MLflow
version on the Required Actions page, and approves or rejects it there. While it waits
(deferred: no worker slot held), its trigger also watches the version's
``mlops.approval.status`` tag, so a decision made with ``mlops approve|reject`` or in the
MLflow UI ends the wait too, and is written back as the Required Action's response.

Every way ends in the same record: an Airflow response is recorded with
``mlops.approval.decide`` (tags on the version, an event in ``mlops history``, who and
why), exactly as the CLI records it; ``apply_approval`` then moves the champion. No
decision within ``promote.approval_timeout_hours`` of the gate: the request expires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.providers.standard.triggers.hitl import HITLTrigger
from airflow.sdk import Param
from airflow.triggers.base import TriggerEvent

from mlops.airflow.defaults import DEFAULT_ARGS
from mlops.airflow.door import _call, _skip
from mlops.config import Params, Settings

log = logging.getLogger(__name__)
APPROVE, REJECT = ApprovalOperator.APPROVE, ApprovalOperator.REJECT
NOTE = "note"
NOTE_PARAM = Param(
    None,
    type=["null", "string"],
    title="Note",
    description="Why you approve or reject: kept in the audit history (mlops history).",
)
# After the request's own timeout, how long the deferral may outlive it before Airflow
# fails the task: the trigger answers "expired" first.
GRACE = timedelta(hours=1)
TASK_TIMEOUT: timedelta = DEFAULT_ARGS["execution_timeout"]  # type: ignore[assignment]


@dataclass(frozen=True)
class Request:
    """What the approver is asked, or the outcome when nobody needs to be asked.

    Attributes:
        outcome: Set when the version was already decided (``approved``/``rejected``)
            before the request was shown: nothing to wait for.
        subject: The Required Action's headline.
        body: Markdown: the gate's numbers, the links, the other ways to decide.
        until: When the request expires.
        params_path: The project's params.yaml, for the trigger's registry checks.
    """

    outcome: str | None
    subject: str = ""
    body: str = ""
    until: datetime | None = None
    params_path: str = ""


def body(decision: dict[str, Any], until: datetime, card: str | None) -> str:
    """Pure: the Required Action's Markdown for one promotion decision."""
    name, version = decision["model_name"], str(decision["version"])
    metric, cand = decision.get("metric"), decision.get("candidate")
    champ, prev = decision.get("champion"), decision.get("champion_version")
    lines = [
        f"**{name} v{version}** passed the promotion gate and waits as `challenger`.",
        "",
        f"- Gate: {'; '.join(decision.get('reasons') or [decision['outcome']])}",
    ]
    if metric and cand is not None:
        against = f"champion v{prev}: {champ:.4f}" if prev and champ is not None else "no champion"
        lines.append(f"- Holdout {metric}: candidate {cand:.4f}, {against}")
    if decision.get("window"):
        lines.append(f"- Training window: {', '.join(decision['window'])}")
    links = dict(decision.get("links") or {})
    names = {"model_version": "MLflow version", "mlflow_run": "MLflow run", "timeline": "Timeline"}
    shown = [f"[{names.get(k, k)}]({v})" for k, v in links.items()]
    lines.append(f"- Links: {' · '.join(shown)}" if shown else "- Links: none recorded")
    lines.append(
        f"- Model card: {card} (also among the MLflow run's artifacts)"
        if card
        else "- Model card: not built (`mlops card` builds it)"
    )
    lines += [
        "",
        f"Approve makes v{version} `champion`; Reject keeps "
        + (f"v{prev}" if prev else "the current champion")
        + f". Without a decision the request expires at {until:%Y-%m-%d %H:%M} UTC.",
        f"The same decision can be made with `mlops approve {name} {version} --by <you>` "
        "(or `mlops reject`), or with the tag `mlops.approval.status` in the MLflow UI; "
        "it ends this request too.",
    ]
    return "\n".join(lines)


def request(decision: dict[str, Any]) -> Request:
    """Build the approval request of ``decision``; skip when no approval is needed."""
    from mlops import approval, card
    from mlops.config import params_path

    if not decision["promote"] or decision["approval"] != "manual":
        _skip(f"no approval needed: {decision['outcome']}")
    name, version = decision["model_name"], str(decision["version"])

    def ask(p: Params, st: Settings) -> Request:
        status = approval.status(st, name, version)
        if status in approval.DECIDED:
            return Request(outcome=str(status))
        try:
            page = card.run(p, st, name, version)["html_path"]
        except Exception as exc:  # noqa: BLE001 - the request is shown without its card
            log.warning("approval: the model card of %s v%s was not built: %s", name, version, exc)
            page = None
        until = datetime.fromisoformat(decision["at"]) + timedelta(
            hours=p.promote.approval_timeout_hours
        )
        return Request(
            outcome=None,
            subject=f"Make {name} v{version} the champion?",
            body=body(decision, until, page),
            until=until,
            params_path=str(params_path().resolve()),
        )

    return _call(ask)


def respond(decision: dict[str, Any], event: dict[str, Any]) -> str:
    """Record the response the request got; return the outcome for ``apply_approval``.

    A person's response on the Required Actions page is recorded with
    ``approval.decide`` (who is the Airflow user), unless the registry was decided
    meanwhile: the registry's decision stands. A decision the trigger saw in the registry
    is already recorded. A request nobody answered in time has expired.
    """
    from mlops import approval

    if "error" in event:
        if event.get("error_type") == "timeout":
            return approval.Outcome.EXPIRED.value
        raise RuntimeError(f"approval request failed: {event['error']}")
    name, version = decision["model_name"], str(decision["version"])
    approve = event["chosen_options"][0] == APPROVE
    user = event.get("responded_by_user")
    note = str((event.get("params_input") or {}).get(NOTE) or "").strip()

    def act(_p: Params, st: Settings) -> str:
        status = approval.status(st, name, version)
        if status in approval.DECIDED:
            if user is not None:
                log.warning(
                    "%s v%s was already %s in the registry; the Airflow response of %s is "
                    "not applied",
                    name,
                    version,
                    status,
                    user["name"],
                )
            return str(status)
        verb = "approved" if approve else "rejected"
        by = user["name"] if user else "unknown (Airflow)"
        approval.decide(
            st, name, version, approve, by=by, note=note or f"{verb} on Airflow's Required Actions"
        )
        log.info("%s v%s %s by %s in Airflow", name, version, verb, by)
        return verb

    return _call(act, "approval")


class ApprovalTrigger(HITLTrigger):
    """Waits for the Required Action's response, or for a decision in the registry.

    A decision made with the CLI or in the MLflow UI is written back as the Required
    Action's response (with who decided in its note), so Airflow shows it as answered.
    """

    def __init__(self, *, model_name: str, version: str, params_path: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.model_name, self.version, self.params_path = model_name, str(version), params_path

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Serialize the trigger: HITLTrigger's arguments and the version it watches."""
        _, kwargs = super().serialize()
        extra = {"model_name": self.model_name, "version": self.version}
        return f"{__name__}.ApprovalTrigger", {**kwargs, **extra, "params_path": self.params_path}

    def _registry(self) -> tuple[str, str] | None:
        """The version's decision in the registry (status, who and why), if there is one."""
        from mlops import approval, tags
        from mlops.config import settings
        from mlops.registry import connect

        vt = connect(settings(self.params_path)).get_version(self.model_name, self.version).tags
        if vt.get(tags.APPROVAL) not in approval.DECIDED:
            return None
        by, why = vt.get(tags.APPROVAL_BY) or approval.UNKNOWN_UI, vt.get(tags.APPROVAL_NOTE)
        return vt[tags.APPROVAL], f"{vt[tags.APPROVAL]} in the registry by {by}" + (
            f": {why}" if why else ""
        )

    def _answer(self, status: str, note: str) -> TriggerEvent | None:
        """Write the registry's decision as the response; None if a person answered first."""
        from airflow.sdk.execution_time.hitl import update_hitl_detail_response

        chosen = [APPROVE if status == "approved" else REJECT]
        try:
            resp = update_hitl_detail_response(
                ti_id=self.ti_id, chosen_options=chosen, params_input={NOTE: note}
            )
        except Exception as exc:  # noqa: BLE001 - answered in Airflow meanwhile: read that
            self.log.info("approval: the request was answered meanwhile (%s)", exc)
            return None
        return TriggerEvent(
            {
                "chosen_options": chosen,
                "params_input": {NOTE: note},
                "responded_at": getattr(resp, "responded_at", None) or datetime.now(UTC),
                "responded_by_user": None,
                "timedout": False,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Loop until a response, a registry decision or the timeout."""
        from airflow.sdk.timezone import utcnow
        from asgiref.sync import sync_to_async

        while True:
            if self.timeout_datetime and self.timeout_datetime < utcnow():
                try:
                    yield await self._handle_timeout()
                except AttributeError:  # no HITL record to read (see below)
                    yield TriggerEvent({"error": "no decision in time", "error_type": "timeout"})
                return
            try:
                event = await self._handle_response()
            except AttributeError:
                # Reading the record gave None: ``dag.test()``'s in-process supervisor
                # answers no HITL request; the registry is still watched.
                event = None
            if event is not None:
                yield event
                return
            try:
                decided = await sync_to_async(self._registry)()
            except Exception as exc:  # noqa: BLE001 - a registry outage: ask again later
                self.log.warning("approval: the registry could not be read: %s", exc)
                decided = None
            if decided is not None:
                answered = await sync_to_async(self._answer)(*decided)
                if answered is not None:
                    yield answered
                    return
            await asyncio.sleep(self.poke_interval)


class Approval(HITLOperator):
    """The ``approval`` task: a Required Action with Approve and Reject, and a note."""

    template_fields = (*HITLOperator.template_fields, "decision")

    def __init__(self, *, decision: Any, poke_interval: float, **kwargs: Any) -> None:
        kwargs.pop("params", None)  # the DAG's run parameters: not the approver's form
        super().__init__(
            subject="Approval of a candidate model",
            options=[APPROVE, REJECT],
            params={NOTE: NOTE_PARAM},
            execution_timeout=None,
            **kwargs,
        )
        # Passed as None above so that HITLOperator does not take it for the response
        # timeout; it bounds each of execute and execute_complete, not the wait between.
        self.execution_timeout = TASK_TIMEOUT
        self.decision = decision
        self.poke_interval = poke_interval

    def execute(self, context: Any) -> Any:
        """Show the request on the Required Actions page and wait, deferred."""
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        asked = request(self.decision)
        if asked.outcome is not None:
            log.info("approval already decided in the registry: %s", asked.outcome)
            return asked.outcome
        assert asked.until is not None
        self.subject, self.body = asked.subject, asked.body
        ti_id = context["task_instance"].id
        upsert_hitl_detail(
            ti_id=ti_id,
            options=self.options,
            subject=self.subject,
            body=self.body,
            defaults=None,
            multiple=False,
            params=self.serialized_params,
            assigned_users=self.assigned_users,
        )
        log.info(
            "%s v%s waits for approval on Airflow's Required Actions page (or `mlops approve`, "
            "or the MLflow tag mlops.approval.status) until %s",
            self.decision["model_name"],
            self.decision["version"],
            asked.until.isoformat(),
        )
        self.defer(
            trigger=ApprovalTrigger(
                ti_id=ti_id,
                options=self.options,
                params=self.serialized_params,
                defaults=None,
                multiple=False,
                timeout_datetime=asked.until,
                poke_interval=self.poke_interval,
                model_name=self.decision["model_name"],
                version=str(self.decision["version"]),
                params_path=asked.params_path,
            ),
            method_name="execute_complete",
            timeout=max(asked.until - datetime.now(UTC), timedelta(0)) + GRACE,
        )
        return None  # not reached: defer raises

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:  # noqa: ARG002
        """Record the response and return the outcome (approved, rejected or expired)."""
        return respond(self.decision, event)
