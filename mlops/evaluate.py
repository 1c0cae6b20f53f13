"""evaluate: score the new candidate and the current champion on the same holdout.

The holdout is the most recent ``train.holdout_partitions`` partitions of the training
window, retrieved through Feast like the training set. Results are written as tags on
the candidate version and to ``state/evaluate.json`` for ``promote``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mlops import io, models
from mlops.config import Params, Settings

if TYPE_CHECKING:
    import pandas as pd

    from mlops.registry import Loaded


def holdout_partitions(params: Params) -> list[str]:
    return sorted(params.train.partitions)[-params.train.holdout_partitions :]


def score_version(loaded: Loaded, df: pd.DataFrame, params: Params) -> dict[str, float]:
    """Pure core: a loaded model's metrics on a labelled frame."""
    c = params.contract
    x = models.align_categories(models.matrix(df, c), loaded.categories)
    kind = "xgboost" if loaded.flavor == "xgboost" else "sklearn"
    pred = models.predict(loaded.model, models.fit_input(x, kind), c.task)
    return models.metrics(models.target(df, c), pred, c.task)


def run(params: Params, st: Settings, version: str | None = None) -> dict[str, Any]:
    """Evaluate ``version`` (default: the one ``train`` registered last) against champion."""
    from mlops import materialize
    from mlops.registry import CHAMPION, client, load, version_by_alias

    t0 = time.perf_counter()
    name = params.model_name
    if version is None:
        state = st.state_dir / "train.json"
        if not state.is_file():
            raise FileNotFoundError(f"{state}: no trained candidate; run `mlops train` first")
        version = str(io.read_json(state)["version"])
    parts = holdout_partitions(params)
    df = materialize.training_frame(params, st, parts)
    cand = score_version(load(st, name, version), df, params)
    champ_mv = version_by_alias(st, name, CHAMPION)
    champ: dict[str, Any] | None = None
    if champ_mv is not None and str(champ_mv.version) != str(version):
        champ = {"version": str(champ_mv.version),
                 "metrics": score_version(load(st, name, champ_mv.version), df, params)}
    metric = params.gate_metric
    cl = client(st)
    cand_value = cand.get(metric, float("nan"))
    cl.set_model_version_tag(name, version, f"mlops.eval.{metric}", f"{cand_value:.6f}")
    cl.set_model_version_tag(name, version, "mlops.eval.holdout", ",".join(parts))
    if champ is not None:
        cl.set_model_version_tag(name, version, "mlops.eval.champion_version", champ["version"])
        cl.set_model_version_tag(
            name, version, f"mlops.eval.champion_{metric}",
            f"{champ['metrics'].get(metric, float('nan')):.6f}")
    result = {"model_name": name, "metric": metric, "holdout_partitions": parts,
              "rows": len(df), "candidate": {"version": str(version), "metrics": cand},
              "champion": champ}
    io.write_json(st.state_dir / "evaluate.json", result)
    vs = (f"champion v{champ['version']} {champ['metrics'].get(metric, float('nan')):.4f}"
          if champ else "no champion yet")
    print(f"evaluate: {name} v{version} {metric} {cand.get(metric, float('nan')):.4f} vs {vs} "
          f"on {len(df):,} holdout rows ({','.join(parts)}) in {time.perf_counter() - t0:.1f}s")
    return result
