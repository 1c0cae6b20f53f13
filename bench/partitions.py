"""Many small partitions against the same rows in few: ingest, validate, materialize.

    python -m bench.run --stages partitions

One real source goes through ``ingest``, ``validate`` and ``materialize`` twice, each time
in a fresh project and a fresh interpreter: cut into day partitions, then into year
partitions (the same rows). Per source and stage: seconds for each, and their ratio
(days / years). Sources: the Seattle weather of 2012-2015 (1,461 days of one row, 4
years) and the 2013 flights (365 days of about 920 rows, one year; the demo's null
tolerances are set for months, and 70 of its days miss more weather than they allow, so
nulls are allowed on both sides here: the same suite, less one expectation per column).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

STAGES = ("ingest", "validate", "materialize")
# source -> (params.yaml, first and last day, first and last year, nulls allowed)
SOURCES = {
    "seattle": ("examples/seattle_weather/params.yaml", "2012-01-01", "2015-12-31", "2012", "2015"),
    "flights": ("params.yaml", "2013-01-01", "2013-12-31", "2013", "2013"),
}
ALLOW_NULLS = {"flights"}


def overrides(base: Path, freq: str, first: str, last: str, nulls: bool) -> dict[str, Any]:
    """What the bench changes in the source's params.yaml: the partition, no DVC push, a
    row-count floor a day of one row passes, all rows online, train/score partitions of
    that kind (and nulls allowed, for the flights)."""
    import yaml

    contract: dict[str, Any] = {"min_rows": 1}
    if nulls:
        features = yaml.safe_load(base.read_text())["contract"]["features"]
        contract["features"] = [{**f, "max_null_fraction": 1.0} for f in features]
    return {
        "ingest": {"partition": freq, "push": False},
        "contract": contract,
        # every partition's rows online, on both sides (with "latest" only the last day's)
        "materialize": {"online": "all"},
        "train": {"partitions": [first, last], "holdout_partitions": 1},
        "score": {"partitions": [last]},
    }


def measure(source: str, freq: str, root: Path) -> dict[str, Any]:
    """One source and partition size through the three stages in this interpreter."""
    import os

    from bench import ENV
    from tests.conftest import REPO, make_project

    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    base, d0, d1, y0, y1 = SOURCES[source]
    first, last = (d0, d1) if freq == "day" else (y0, y1)
    shutil.rmtree(root, ignore_errors=True)
    params_path = make_project(
        root, REPO / base, overrides(REPO / base, freq, first, last, source in ALLOW_NULLS)
    )

    import feast  # noqa: F401 - imports are not what is measured
    import great_expectations  # noqa: F401
    from dvc.repo import Repo  # noqa: F401

    from mlops import ingest, materialize, partitions, validate
    from mlops.config import load_params, settings

    p, st = load_params(params_path), settings(params_path)
    pids = partitions.span(first, last, freq)
    out: dict[str, Any] = {"source": source, "partition": freq, "partitions": len(pids)}
    for stage, fn in zip(STAGES, (ingest.run, validate.run, materialize.run), strict=True):
        t0 = time.perf_counter()
        res = fn(p, st, pids)
        out[stage] = round(time.perf_counter() - t0, 2)
        if stage == "ingest":
            out["rows"] = sum(r["rows"] for r in res.values())
    return out


def run_partitions(work: Path) -> dict[str, Any]:
    """Each source cut into days and into years, each run in a fresh interpreter."""
    from bench.run import PY, REPO, spawn_json

    results: dict[str, Any] = {}
    for source in SOURCES:
        sides = {}
        for freq in ("day", "year"):
            root = work / "partitions" / f"{source}-{freq}"
            cmd = [PY, "-m", "bench.partitions", source, freq, str(root)]
            res = spawn_json(cmd, work / "logs" / f"partitions-{source}-{freq}.log", cwd=REPO)
            sides[freq] = res
            shown = ", ".join(f"{s} {res.get(s)}s" for s in STAGES)
            print(f"  {source} by {freq}: {res.get('partitions')} partitions, {shown}", flush=True)
        day, year = sides["day"], sides["year"]
        ratio = {
            s: round(day[s] / year[s], 2) if day.get(s) and year.get(s) else None for s in STAGES
        }
        total = [sum(x.get(s) or 0 for s in STAGES) for x in (day, year)]
        ratio["total"] = round(total[0] / total[1], 2) if total[1] else None
        results[source] = {"day": day, "year": year, "ratio": ratio}
    return results


if __name__ == "__main__":
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    src, partition, folder = sys.argv[1:]
    print("\n" + json.dumps(measure(src, partition, Path(folder))))
