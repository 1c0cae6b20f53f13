"""promote: the promotion gate, then the alias moves it allows.

``gate.should_promote`` decides, purely, from the evaluation: an absolute floor on the gate
metric and, when a champion exists, a minimum improvement over it. Only then are aliases
moved: ``champion`` directly in approval mode ``auto``; in mode ``manual`` the candidate
becomes ``challenger`` with a pending-approval tag and waits for a person.
"""

from __future__ import annotations

import time
from typing import Any, NotRequired, TypedDict

from mlops import alerts, describe, governance, io, observe, tags, timeline
from mlops.config import Params, Promote, Settings
from mlops.gate import Decision, decide, gate_metrics
from mlops.registry import CHAMPION, Registry, connect


def gate_tags(ev: dict[str, Any], gate: Promote) -> dict[str, str]:
    """Pure: what the gate compares, as version tags: the metric, both values, the settings.

    From the evaluation ``should_promote`` decides on, so the version's description shows
    the numbers behind the decision even after a later evaluation rewrites ``mlops.eval.*``.
    """
    metric, champ = ev["metric"], ev.get("champion")
    value = ev["candidate"]["metrics"].get(metric)
    out = {
        tags.GATE_METRIC: metric,
        tags.GATE_CANDIDATE: "nan" if value is None else f"{value:.6f}",
        tags.GATE_FLOOR: repr(gate.floor),
        tags.GATE_MIN_IMPROVEMENT: repr(gate.min_improvement),
        tags.GATE_CHAMPION: "",
        tags.GATE_CHAMPION_VERSION: "",
    }
    if champ:
        base = champ["metrics"].get(metric)
        out[tags.GATE_CHAMPION] = "nan" if base is None else f"{base:.6f}"
        out[tags.GATE_CHAMPION_VERSION] = str(champ["version"])
    return out


def _record_inputs(reg: Registry, name: str, version: str, values: dict[str, str]) -> None:
    def write() -> None:
        for k, v in values.items():
            reg.client.set_model_version_tag(name, version, k, v)

    reg.retry(write, f"record the gate's inputs on {name} v{version}")


class Promotion(TypedDict):
    """What ``promote`` decided and did (also ``state/promote.json``)."""

    model_name: str
    version: str
    promote: bool
    reasons: list[str]
    approval: str
    outcome: str
    links: NotRequired[dict[str, str]]


def _observe(ev: dict[str, Any], decision: Decision, version: str, held: Any, how: str) -> None:
    """The gate's metrics and decision, and the champion it leaves."""
    metric = ev["metric"]
    for role, side in (("candidate", ev["candidate"]), ("champion", ev["champion"])):
        if side:
            value = side["metrics"].get(metric)
            observe.gauge(
                "mlops_model_metric", value, role=role, metric=metric, version=side["version"]
            )
    gate = decision.promote or held == version
    observe.gauge("mlops_promotion_gate_passed", observe.flag(gate), version=version)
    observe.gauge("mlops_promotion_decision", observe.flag(decision.promote), version=version)
    observe.champion(version if decision.promote and how == "auto" else held)


def run(params: Params, st: Settings) -> Promotion:
    """Apply the gate to the last evaluation and move aliases as the decision allows."""
    t0 = time.perf_counter()
    state = st.state_dir / "evaluate.json"
    if not state.is_file():
        raise FileNotFoundError(f"{state}: no evaluation; run `mlops evaluate` first")
    ev = io.read_json(state)
    name, version = ev["model_name"], str(ev["candidate"]["version"])
    reg = connect(st)
    held = reg.retry(lambda: reg.alias_version(name, CHAMPION), f"resolve {name}@{CHAMPION}")
    was = ev.get("champion_at_evaluation", held)  # older evaluations did not record it
    if was == version:
        # train gave back the champion (same data, params and code): its gate stands.
        decision = Decision(False, [f"v{version} is already {CHAMPION}; its gate is not re-run"])
        outcome = f"champion v{version} (unchanged)"
    else:
        decision = decide(ev, params.promote)
        _record_inputs(reg, name, version, gate_tags(ev, params.promote))
        outcome = governance.apply_gate(
            reg, name, version, decision.promote, decision.reasons, params.promote.approval
        )
        if decision.promote and params.promote.approval == "auto" and held == version:
            # A rerun after a promote killed once the alias had moved: the same decision,
            # and the move it made is the one this evaluation's champion gave way to.
            outcome = f"champion v{was} -> v{version}" if was else f"champion -> v{version}"
    result = Promotion(
        model_name=name,
        version=version,
        promote=decision.promote,
        reasons=decision.reasons,
        approval=params.promote.approval,
        outcome=outcome,
    )
    describe.refresh(reg, name, version)
    io.write_json(st.state_dir / "promote.json", result)
    io.write_json(st.data_root / "metrics" / "promote.json", gate_metrics(ev, decision.promote))
    _observe(ev, decision, version, held, params.promote.approval)
    verdict = "PASSED" if decision.promote else "FAILED" if was != version else "not re-run"
    print(
        f"promote: {name} v{version} gate {verdict} "
        f"({'; '.join(decision.reasons)}) -> {outcome} in {time.perf_counter() - t0:.1f}s"
    )
    run_id = reg.get_version(name, version).run_id
    result["links"] = {
        "model_version": alerts.version_link(st.tracking_uri, name, version),
        **({"mlflow_run": alerts.run_link(st.tracking_uri, run_id)} if run_id else {}),
        "timeline": timeline.url(params),
    }
    print(f"promote: {name} v{version} {timeline.links_text(result['links'])}")
    return result
