"""evaluate: score the new candidate and the current champion on the same holdout.

The holdout is the most recent ``train.holdout_partitions`` partitions of the training
window, retrieved through Feast like the training set. Results are written as tags on
the candidate version and to ``state/evaluate.json`` for ``promote``.
"""

from __future__ import annotations

import time
from typing import TypedDict

from mlops import features, io, models, tags
from mlops.config import Params, Settings
from mlops.registry import CHAMPION, connect


class Scored(TypedDict):
    """One version's metrics on the holdout."""

    version: str
    metrics: dict[str, float]


class Evaluation(TypedDict):
    """Candidate and champion on the same holdout (also ``state/evaluate.json``)."""

    model_name: str
    metric: str
    holdout_partitions: list[str]
    rows: int
    candidate: Scored
    champion: Scored | None
    champion_at_evaluation: str | None


def run(params: Params, st: Settings, version: str | None = None) -> Evaluation:
    """Evaluate ``version`` (default: the one ``train`` registered last) against champion."""
    t0 = time.perf_counter()
    name = params.model_name
    if version is None:
        state = st.state_dir / "train.json"
        if not state.is_file():
            raise FileNotFoundError(f"{state}: no trained candidate; run `mlops train` first")
        fix = "Re-run `mlops train` (or the train task); it rewrites it."
        version = str(io.read_json(state, fix=fix)["version"])
    parts = params.train.holdout
    df = features.training_frame(params, st, parts, stage="evaluate")
    c = params.contract
    y = models.target(df, c)
    reg = connect(st)
    cand = models.metrics(y, reg.load(name, version).predict(df, c), c.task)
    champ_mv = reg.version_by_alias(name, CHAMPION)
    champ: Scored | None = None
    if champ_mv is not None and str(champ_mv.version) != str(version):
        pred = reg.load(name, champ_mv.version).predict(df, c)
        champ = Scored(version=str(champ_mv.version), metrics=models.metrics(y, pred, c.task))
    metric = params.gate_metric
    cl = reg.client
    cand_value = cand.get(metric, float("nan"))
    cl.set_model_version_tag(name, version, tags.evaluation(metric), f"{cand_value:.6f}")
    cl.set_model_version_tag(name, version, tags.EVAL_HOLDOUT, ",".join(parts))
    if champ is not None:
        cl.set_model_version_tag(name, version, tags.EVAL_CHAMPION_VERSION, champ["version"])
        cl.set_model_version_tag(
            name,
            version,
            tags.champion_evaluation(metric),
            f"{champ['metrics'].get(metric, float('nan')):.6f}",
        )
    result = Evaluation(
        model_name=name,
        metric=metric,
        holdout_partitions=parts,
        rows=len(df),
        candidate=Scored(version=str(version), metrics=cand),
        champion=champ,
        champion_at_evaluation=None if champ_mv is None else str(champ_mv.version),
    )
    io.write_json(st.state_dir / "evaluate.json", result)
    vs = (
        f"champion v{champ['version']} {champ['metrics'].get(metric, float('nan')):.4f}"
        if champ
        else "no champion yet"
    )
    print(
        f"evaluate: {name} v{version} {metric} {cand_value:.4f} vs {vs} "
        f"on {len(df):,} holdout rows ({','.join(parts)}) in {time.perf_counter() - t0:.1f}s"
    )
    return result
