"""The bare serving baseline: FastAPI, Feast's online read and the XGBoost booster.

    python -m bench.bare_serve SPEC.json STORE PORT     # STORE: a key of spec["online"]

What a team would write without mlops: a pydantic model of the request (the entity key
only), the feature service's latest values from ``FeatureStore.get_online_features``,
the booster's ``inplace_predict`` on a float matrix of category codes, and the version's
decision threshold. No contract validation, prediction log, metrics, request ids, API
key, body limit, timeout or alias following. ``bench.serve`` writes the spec (model file,
categories and threshold of the champion, the Feast registry and online stores) and
checks that this app's answers equal those of ``mlops serve`` for the same keys.
No ``mlops`` code is imported here.
"""

# No ``from __future__ import annotations``: FastAPI reads the request model of the
# route from its annotation, a class made at runtime.
import json
import sys
from pathlib import Path
from typing import Any

NAN = float("nan")


def encoder(spec: dict[str, Any]) -> Any:
    """Feature values by name to the booster's float matrix, in the model's order.

    A category becomes its position in the learned list; an unknown one the ``other``
    code of a capped list, else missing (what batch scoring does).
    """
    import numpy as np

    names = spec["features"]
    codes = {k: {v: float(i) for i, v in enumerate(c)} for k, c in spec["categories"].items()}
    fallback = {k: float(len(spec["categories"][k]) - 1) for k in spec["capped"]}

    def encode(values: dict[str, list[Any]], n: int) -> Any:
        x = np.empty((n, len(names)), dtype=np.float64)
        for j, name in enumerate(names):
            col = values[name]
            if name in codes:
                known, other = codes[name], fallback.get(name, NAN)
                x[:, j] = [NAN if v is None else known.get(v, other) for v in col]
            else:
                x[:, j] = [NAN if v is None else v for v in col]
        return x

    return encode


def store(spec: dict[str, Any], online: str) -> Any:
    """The project's FeatureStore on the online store ``online`` of the spec."""
    from feast import FeatureStore, RepoConfig

    config = RepoConfig(
        project=spec["project"],
        provider="local",
        registry=spec["registry"],
        online_store=spec["online"][online],
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=spec["repo_path"],
    )
    return FeatureStore(config=config)


def build(spec: dict[str, Any], online: str) -> Any:
    """The FastAPI app: ``POST /predict`` with one row ``{<key>: value}``, ``GET /health``."""
    import xgboost as xgb
    from fastapi import FastAPI
    from pydantic import create_model

    fs = store(spec, online)
    service = fs.get_feature_service(spec["service"])
    booster = xgb.Booster()
    booster.load_model(spec["model"])
    encode, key, cut = encoder(spec), spec["key"], spec["threshold"]
    row_model: Any = create_model("Row", **{key: (str, ...)})
    app = FastAPI(title="bare serving baseline")

    @app.post("/predict")
    def predict(row: row_model) -> dict[str, Any]:  # type: ignore[valid-type]
        entity = {key: getattr(row, key)}
        values = fs.get_online_features(features=service, entity_rows=[entity]).to_dict()
        p = float(booster.inplace_predict(encode(values, 1))[0])
        return {"predictions": [{**entity, "prediction": p, "predicted_label": int(p >= cut)}]}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "alive"}

    return app


def main(argv: list[str]) -> int:
    """Serve on 127.0.0.1 with the options ``mlops serve`` gives uvicorn (one worker)."""
    import uvicorn

    spec_path, online, port = argv
    spec = json.loads(Path(spec_path).read_text())
    app = build(spec, online)
    uvicorn.run(app, host="127.0.0.1", port=int(port), access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
