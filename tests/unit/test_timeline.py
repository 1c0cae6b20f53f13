"""timeline: real Evidently reports of small synthetic partitions in a local workspace.

The dashboard's panels are resolved the way Evidently's UI resolves them: its own
in-memory data storage over the workspace folder computes each panel's series.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops import drift, partitions, timeline, ui
from mlops.config import ConfigError, Params, Settings, load_params, settings

REPO = Path(__file__).resolve().parents[2]
WEEKS = ["2013-W02", "2013-W03", "2013-W04"]
ROWS = 300


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Params, Settings]:
    for var in ("MLOPS_PARAMS", "MLOPS_PROJECT_ROOT", "MLOPS_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return load_params(tmp_path / "params.yaml"), settings(tmp_path / "params.yaml")


def frame(params: Params, shift: float, seed: int, rows: int = ROWS) -> pd.DataFrame:
    """Rows of the contract's features, a probability and a 0/1 target; ``shift`` moves them."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for f in params.contract.features:
        if f.dtype == "category":
            cats = f.categories or ["a", "b", "c"]
            weights = np.ones(len(cats))
            weights[0] += 4 * shift
            data[f.name] = pd.Categorical(rng.choice(cats, rows, p=weights / weights.sum()))
        elif f.dtype == "int":
            data[f.name] = rng.integers(0, 24, rows)
        else:
            data[f.name] = rng.normal(3 * shift, 1, rows)
    df = pd.DataFrame(data)
    df["prediction"] = np.clip(rng.uniform(0, 1, rows) + shift / 4, 0, 1)
    df[params.contract.target] = (rng.uniform(0, 1, rows) < df["prediction"]).astype("int64")
    return df


def drift_snapshot(params: Params, reference: pd.DataFrame, current: pd.DataFrame) -> Any:
    """A drift report as monitor builds one: a ValueDrift per column and the drift share."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    c, cfg = params.contract, params.monitor
    numeric = [f.name for f in c.features if f.dtype in ("float", "int")] + ["prediction"]
    categorical = [f.name for f in c.features if f.dtype == "category"] + [c.target]
    drifts = {
        col: ValueDrift(
            column=col,
            method=cfg.numerical_method if col in numeric else cfg.categorical_method,
            threshold=cfg.numerical_threshold if col in numeric else cfg.categorical_threshold,
        )
        for col in numeric + categorical
    }
    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=categorical,
        text_columns=[],
        datetime_columns=[],
        list_columns=[],
        unknown_columns=[],
    )
    report = Report(
        [*drifts.values(), timeline.drift_share(c.feature_names, drifts)], include_tests=True
    )
    return report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


def performance_snapshot(params: Params, labelled: pd.DataFrame) -> Any:
    """Evidently's classification preset on labelled predictions, as label builds it."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    target = params.contract.target
    task = BinaryClassification(target=target, prediction_probas="prediction", pos_label=1)
    definition = DataDefinition(
        numerical_columns=["prediction"],
        categorical_columns=[target],
        classification=[task],
        text_columns=[],
        datetime_columns=[],
        list_columns=[],
        unknown_columns=[],
    )
    report = Report([ClassificationPreset(probas_threshold=0.5)], include_tests=False)
    return report.run(Dataset.from_pandas(labelled, data_definition=definition), None)


@pytest.fixture(scope="module")
def reports() -> dict[str, Any]:
    """Drift and performance snapshots of three weeks drifting further each week."""
    params = load_params(REPO / "params.yaml")
    reference = frame(params, 0.0, seed=0)
    out: dict[str, Any] = {"reference": reference}
    for i, week in enumerate(WEEKS):
        current = frame(params, 0.3 * i, seed=i + 1)
        cols = [params.contract.target, "prediction"]
        out[week] = {
            "current": current,
            "drift": drift_snapshot(params, reference, current),
            "performance": performance_snapshot(params, current[cols]),
        }
    return out


def links(week: str) -> dict[str, str]:
    return {"report": f"file:///data/reports/{week}/drift.html", "mlflow_run": f"run-{week}"}


def add_all(params: Params, st: Settings, reports: dict[str, Any], kinds=("drift",)) -> dict:
    return {
        (week, kind): timeline.add(params, st, reports[week][kind], week, kind, links(week), "3")
        for week in WEEKS
        for kind in kinds
    }


def workspace(params: Params, st: Settings) -> Any:
    from evidently.ui.storage.local.base import LocalState

    return LocalState(str(timeline.folder(st)))


def stored(params: Params, st: Settings) -> list[str]:
    pid = timeline.project_id(params)
    return sorted(str(s) for s in workspace(params, st).list_snapshots(pid))


def resolve(params: Params, st: Settings) -> dict[str, list[dict[str, Any]]]:
    """Each saved panel's lines as Evidently's UI computes them: legend, partitions, values."""
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local.base import InMemoryDataStorage

    pid = timeline.project_id(params)
    board = workspace(params, st).read_dashboard(pid)
    data = InMemoryDataStorage(str(timeline.folder(st)))
    out: dict[str, list[dict[str, Any]]] = {}
    for panel in board.panels:
        filters = [
            SeriesFilter(
                tags=v.tags, metadata=v.metadata, metric=v.metric, metric_labels=v.metric_labels
            )
            for v in panel.values
        ]
        got = asyncio.run(data.get_data_series(pid, filters, None, None))
        weeks = [s.metadata["partition"] for s in got.sources]
        out[panel.title] = [
            {"legend": panel.values[s.filter_index].legend, "weeks": weeks, "values": s.values}
            for s in got.series
        ]
    return out


def failed_drift_tests(snapshot: Any, features: list[str]) -> int:
    from evidently.core.metric_types import TestStatus

    count = 0
    for result in snapshot.metric_results.values():
        params = result.metric_value_location.metric.params
        if params["type"].endswith(":ValueDrift") and params["column"] in features:
            count += any(t.status == TestStatus.FAIL for t in result.tests)
    return count


def test_each_partition_adds_one_snapshot_dated_at_its_start(proj, reports) -> None:
    params, st = proj
    # when three weeks' drift reports are added
    ids = add_all(params, st, reports)
    # then the workspace holds three snapshots, each dated at its week's start (UTC),
    # labelled with its partition, kind, model version and links, and without data
    assert stored(params, st) == sorted(ids.values())
    pid = timeline.project_id(params)
    for (week, kind), sid in ids.items():
        snap = workspace(params, st).read_snapshot(pid, sid)
        assert snap.timestamp == partitions.sort_key(week).replace(tzinfo=None)
        assert snap.metadata == {
            "partition": week,
            "kind": kind,
            "model_version": "3",
            **links(week),
        }
        assert kind in snap.tags and week in snap.tags
    assert not list(timeline.folder(st).rglob("*.parquet"))
    assert timeline.snapshots(params, st) == ids
    # and the project is the model's, under an id every process derives alike
    project = workspace(params, st).read_project(pid)
    assert project.name == f"{params.project} / {params.model_name}"
    assert timeline.url(params, port=8123) == f"http://127.0.0.1:8123/projects/{pid}"


def test_a_rerun_replaces_the_partitions_snapshot_of_that_kind(proj, reports) -> None:
    params, st = proj
    ids = add_all(params, st, reports)
    # when the middle week is monitored again, and then labelled
    again = timeline.add(params, st, reports["2013-W03"]["drift"], "2013-W03", "drift", {}, "4")
    perf = timeline.add(
        params, st, reports["2013-W03"]["performance"], "2013-W03", "performance", {}, "4"
    )
    # then the rerun took the old snapshot's place, and the other kind stands beside it
    expected = {**ids, ("2013-W03", "drift"): again, ("2013-W03", "performance"): perf}
    assert timeline.snapshots(params, st) == expected
    assert stored(params, st) == sorted(expected.values())
    pid = timeline.project_id(params)
    assert workspace(params, st).read_snapshot(pid, again).metadata["model_version"] == "4"


def test_the_dashboards_panels_resolve_to_one_point_per_partition(proj, reports) -> None:
    params, st = proj
    # given three weeks, each with its drift and its performance snapshot
    add_all(params, st, reports, kinds=("drift", "performance"))
    # when Evidently's data storage computes every panel of the saved dashboard
    panels = resolve(params, st)
    # then each panel is there, and each of its lines has a value for every week
    assert list(panels) == [p.title for p in timeline.panels(params)]
    for panel in timeline.panels(params):
        lines = panels[panel.title]
        assert sorted(x["legend"] for x in lines) == sorted(x.legend for x in panel.lines)
        for line in lines:
            assert line["weeks"] == WEEKS, (panel.title, line)
            assert all(isinstance(v, float) for v in line["values"]), (panel.title, line)
    # and the drift share is the share of features whose drift test failed, rising
    features = params.contract.feature_names
    (share,) = panels["Share of drifted features"]
    expected = [failed_drift_tests(reports[w]["drift"], features) / len(features) for w in WEEKS]
    assert share["values"] == pytest.approx(expected)
    assert expected[0] < expected[-1]
    # and every feature of the contract has its own drift line
    lines = [x["legend"] for t, ls in panels.items() if t.startswith("Feature drift") for x in ls]
    assert sorted(lines) == sorted(features)
    assert all(len(p.lines) <= timeline.PANEL_LINES for p in timeline.panels(params))


# Evidently's column statistics divide by the row count of a column that is all null.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_the_drift_share_metric_equals_the_monitors_share(proj, reports) -> None:
    params, _ = proj
    c = params.contract
    reference = reports["reference"]
    # given a week in which one feature is all null on the current side
    current = reports["2013-W04"]["current"].assign(temp=np.nan)
    # when monitor's comparison and the timeline's metric run on the same frames
    summary, snapshot = drift.evaluate(reference, current, c, params.monitor)
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    cfg = params.monitor
    numeric = [f.name for f in c.features if f.dtype in ("float", "int")]
    checked = [f for f in c.feature_names if f != "temp"]
    drifts = {
        col: ValueDrift(
            column=col,
            method=cfg.numerical_method if col in numeric else cfg.categorical_method,
            threshold=cfg.numerical_threshold if col in numeric else cfg.categorical_threshold,
        )
        for col in checked
    }
    metric = timeline.drift_share(c.feature_names, drifts, untested_drifted=["temp"])
    definition = DataDefinition(
        numerical_columns=[n for n in numeric if n != "temp"],
        categorical_columns=[f.name for f in c.features if f.dtype == "category"],
        text_columns=[],
        datetime_columns=[],
        list_columns=[],
        unknown_columns=[],
    )
    ours = Report([*drifts.values(), metric], include_tests=True).run(
        Dataset.from_pandas(current[checked], data_definition=definition),
        Dataset.from_pandas(reference[checked], data_definition=definition),
    )
    result = ours.metric_results[metric.metric_id]
    # then both count the same features, the emptied one included
    assert summary["columns"]["temp"]["drifted"] is True
    assert result.count.value == summary["drifted_features"]
    assert result.share.value == pytest.approx(summary["share"])


def test_a_snapshot_left_by_a_killed_write_is_set_aside(proj, reports) -> None:
    from evidently.legacy.core import new_id
    from evidently.ui.service.storage.local.base import LocalState as ServiceState

    params, st = proj
    ids = add_all(params, st, reports)
    pid = timeline.project_id(params)
    snapshots = timeline.folder(st) / str(pid) / "snapshots"
    # given a write killed half-way (not indexed) and one killed after it finished
    # (a second W02 the index does not know)
    torn = snapshots / f"{new_id()}.json"
    torn.write_text('{"report": {"items": [')
    twin = str(new_id())
    shutil.copy(snapshots / f"{ids[('2013-W02', 'drift')]}.json", snapshots / f"{twin}.json")
    # when the timeline is opened again
    timeline.prepare(params, st)
    # then the torn file is set aside, the newer W02 kept, the older one gone
    assert not torn.exists() and torn.with_name(torn.name + ".broken").is_file()
    assert timeline.snapshots(params, st) == {**ids, ("2013-W02", "drift"): twin}
    assert len(stored(params, st)) == len(WEEKS)
    # and Evidently's UI loads the workspace (it refuses to start on a torn snapshot)
    state = ServiceState.load(str(timeline.folder(st)), None)
    assert len(state.snapshots[pid]) == len(WEEKS)


def test_a_lost_index_is_rebuilt_from_the_snapshots(proj, reports) -> None:
    params, st = proj
    ids = add_all(params, st, reports)
    index = timeline.folder(st) / str(timeline.project_id(params)) / timeline.INDEX
    # given an index damaged by hand
    index.write_text("{not json")
    # when the next report arrives
    sid = timeline.add(params, st, reports["2013-W04"]["drift"], "2013-W04", "drift", {}, "3")
    # then the index is whole again and the rerun still replaced its week
    assert timeline.snapshots(params, st) == {**ids, ("2013-W04", "drift"): sid}
    assert json.loads(index.read_text())[sid] == ["2013-W04", "drift"]
    assert len(stored(params, st)) == len(WEEKS)


def test_writers_at_the_same_time_take_turns(proj, reports) -> None:
    params, st = proj
    timeline.prepare(params, st)
    errors: list[BaseException] = []

    def add(week: str) -> None:
        try:
            timeline.add(params, st, reports[week]["drift"], week, "drift", {}, "3")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    # when three monitors add their weeks at once
    threads = [threading.Thread(target=add, args=(w,)) for w in WEEKS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # then every week landed and the index knows each of them
    assert errors == []
    assert sorted(w for w, _ in timeline.snapshots(params, st)) == WEEKS
    assert len(stored(params, st)) == len(WEEKS)


def test_the_dashboard_is_saved_once_and_follows_the_params(proj, reports, tmp_path) -> None:
    params, st = proj
    pid = timeline.project_id(params)
    timeline.prepare(params, st)
    path = timeline.folder(st) / str(pid) / "dashboard.json"
    first = path.stat().st_mtime_ns
    # when a report is added with the same params
    timeline.add(params, st, reports["2013-W02"]["drift"], "2013-W02", "drift", {}, "3")
    # then the dashboard file is not rewritten (the UI reads it on every request)
    assert path.stat().st_mtime_ns == first
    assert timeline.dashboard(params) == timeline.dashboard(params)
    # when the breach policy changes, the panel saying it follows
    raw = (st.params_path).read_text().replace("drift_share: 0.3", "drift_share: 0.5")
    (st.params_path).write_text(raw)
    changed = load_params(st.params_path)
    timeline.prepare(changed, st)
    board = workspace(changed, st).read_dashboard(pid)
    assert "50%" in board.panels[0].subtitle
    assert [p.id for p in board.panels] == [p.id for p in timeline.dashboard(params).panels]


def test_an_unknown_kind_or_partition_is_refused(proj, reports) -> None:
    params, st = proj
    with pytest.raises(ValueError, match="kind 'quality'"):
        timeline.add(params, st, reports["2013-W02"]["drift"], "2013-W02", "quality", {}, "3")
    with pytest.raises(ValueError, match="not a partition id"):
        timeline.add(params, st, reports["2013-W02"]["drift"], "../x", "drift", {}, "3")
    assert not timeline.folder(st).exists()


def test_the_report_page_gets_its_links() -> None:
    page = "<html><head></head><body class='x'><div>report</div></body></html>"
    out = timeline.with_links(page, {"timeline": "http://127.0.0.1:8001/projects/p"})
    assert out.startswith("<html><head></head><body class='x'><nav")
    assert 'href="http://127.0.0.1:8001/projects/p"' in out and out.endswith("</html>")


def test_ui_refuses_a_public_interface_without_a_write_secret(proj, monkeypatch) -> None:
    params, st = proj
    monkeypatch.delenv("EVIDENTLY_SECRET", raising=False)
    with pytest.raises(ConfigError, match="EVIDENTLY_SECRET"):
        ui.app(params, st, host="0.0.0.0")
    # and on loopback it builds the service over the prepared workspace
    assert ui.app(params, st, host="127.0.0.1") is not None
    assert (timeline.folder(st) / str(timeline.project_id(params)) / "dashboard.json").is_file()


def test_ui_names_a_port_that_is_taken() -> None:
    # given a port another server listens on
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # then the UI names it rather than starting
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            ui._check_free("127.0.0.1", port)
    # and once it is closed, the port is free
    ui._check_free("127.0.0.1", port)


def test_snapshot_ids_are_time_ordered() -> None:
    # the newer of two snapshots of one partition is the larger id (UUIDv7)
    from evidently.legacy.core import new_id

    first, second = new_id(), new_id()
    assert uuid.UUID(str(first)).int < uuid.UUID(str(second)).int


def test_the_uis_web_assets_ship_with_the_installed_package() -> None:
    # given Evidently's UI page, as the service sends it
    import evidently.ui.service.api.static as static

    assets = Path(static.BASE_PATH)
    page = (assets / "index.html").read_text()
    # then every script and style it loads is a local file of the package, none remote
    local = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert local and all((assets / ref.lstrip("/")).is_file() for ref in local)
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', page)
