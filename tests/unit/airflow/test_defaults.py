"""The DAGs' calendar, read from params.yaml's ``schedule`` group: values and errors.

No Airflow is imported here: ``defaults.calendar`` runs while a DAG file is parsed and
must stay light, which the last test checks in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops.airflow import defaults
from mlops.config import ConfigError
from tests.conftest import FLIGHTS, REPO, merge


def params_file(folder: Path, overrides: dict[str, Any]) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(FLIGHTS.read_text()), overrides)))
    return path


def test_the_demo_calendar_is_its_params_schedule() -> None:
    # given the repo's params.yaml (monthly, 2013-01..06 trained, 2013-07 scored)
    cal = defaults.calendar(REPO / "params.yaml")
    # then the scoring replay is monthly from July to the end of 2013, training quarterly
    assert cal == defaults.Calendar(
        training_cron="0 3 1 */3 *",
        training_start=datetime(2013, 1, 1, tzinfo=UTC),
        scoring_cron="0 0 1 * *",
        scoring_start=datetime(2013, 7, 1, tzinfo=UTC),
        scoring_end=datetime(2013, 12, 31, tzinfo=UTC),
        source=(REPO / "params.yaml").resolve(),
    )


def test_a_quarterly_project_without_score_partitions_starts_after_its_window(
    tmp_path,
) -> None:
    # given quarters, no score partitions, no schedule dates and Airflow's preset name
    path = params_file(
        tmp_path,
        {
            "ingest": {"partition": "quarter"},
            "train": {"partitions": {"from": "2019-Q1", "to": "2020-Q4"}},
            "score": {"partitions": []},
            "schedule": {"training": "@quarterly", "end": None},
        },
    )
    cal = defaults.calendar(path)
    # then scoring starts with the quarter after the window, one run per quarter
    assert (cal.scoring_cron, cal.scoring_start, cal.scoring_end) == (
        "0 0 1 */3 *",
        datetime(2021, 1, 1, tzinfo=UTC),
        None,
    )
    assert (cal.training_cron, cal.training_start) == (
        "@quarterly",
        datetime(2019, 1, 1, tzinfo=UTC),
    )


def test_schedule_dates_with_an_offset_are_read_in_utc(tmp_path) -> None:
    path = params_file(
        tmp_path, {"schedule": {"start": "2013-07-01T02:00:00+02:00", "end": "2013-09-30"}}
    )
    cal = defaults.calendar(path)
    assert cal.scoring_start == datetime(2013, 7, 1, tzinfo=UTC)
    assert cal.scoring_end == datetime(2013, 9, 30, tzinfo=UTC)


def test_the_params_file_is_the_one_mlops_params_names(tmp_path, monkeypatch) -> None:
    # given MLOPS_PARAMS at a yearly project, and no path passed
    path = params_file(
        tmp_path,
        {
            "ingest": {"partition": "year"},
            "train": {"partitions": ["2016", "2017", "2018"]},
            "score": {"partitions": ["2019"]},
            "schedule": {"training": None, "end": None},
        },
    )
    monkeypatch.setenv("MLOPS_PARAMS", str(path))
    cal = defaults.calendar()
    # then that project's calendar is read
    assert cal.source == path.resolve()
    assert (cal.scoring_cron, cal.scoring_start) == ("0 0 1 1 *", datetime(2019, 1, 1, tzinfo=UTC))
    assert cal.training_cron is None


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"schedule": {"scoring": "monthly"}}, ["schedule.scoring 'monthly'", "five fields"]),
        (
            {"schedule": {"training": "0 25 * * *"}},
            ["schedule.training '0 25 * * *'", "null: only drift breaches"],
        ),
        ({"schedule": {"end": "soon"}}, ["schedule.end 'soon' is not a date", "MLOPS_PARAMS"]),
    ],
)
def test_a_bad_schedule_names_the_file_and_the_key(tmp_path, overrides, words) -> None:
    path = params_file(tmp_path, overrides)
    with pytest.raises(ConfigError) as err:
        defaults.calendar(path)
    message = str(err.value)
    assert str(path.resolve()) in message
    for word in words:
        assert word in message, message


def test_an_end_before_the_start_is_refused_naming_both(tmp_path) -> None:
    # given the demo's end (2013-12-31) and a start moved past it
    path = params_file(tmp_path, {"schedule": {"start": "2100-01-01"}})
    with pytest.raises(ConfigError, match=r"schedule\.end 2013-12-31 is before .*2100-01-01"):
        defaults.calendar(path)
    # and the default start, the first score partition, is named when it is the one
    path = params_file(tmp_path, {"schedule": {"end": "2013-06-30"}})
    with pytest.raises(ConfigError, match="2013-07-01 \\(the first score partition\\)"):
        defaults.calendar(path)


def test_a_missing_params_file_is_named_by_its_absolute_path(tmp_path, monkeypatch) -> None:
    # given a relative MLOPS_PARAMS that names no file (the DAG processor's cwd is not ours)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPS_PARAMS", "proj/params.yaml")
    with pytest.raises(ConfigError) as err:
        defaults.calendar()
    # then the message says which file it looked for, and which variable names it
    assert f"{tmp_path.resolve()}/proj/params.yaml: configuration file not found" in str(err.value)
    assert "MLOPS_PARAMS" in str(err.value)


PROBE = """
import json, sys, time
t = time.perf_counter()
from mlops.airflow import defaults
defaults.calendar(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t,
                  "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_reading_the_calendar_imports_neither_pandas_nor_airflow(record_property) -> None:
    # given a fresh interpreter, when the calendar is read
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "params.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    # then only YAML, pydantic and the standard library were needed
    heavy = {"pandas", "numpy", "airflow", "mlflow", "feast", "great_expectations", "sklearn"}
    assert heavy & set(probe["modules"]) == set()
    record_property("calendar_cold_s", round(probe["seconds"], 4))
