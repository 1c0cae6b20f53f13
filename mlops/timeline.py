"""timeline: every drift and performance report as a snapshot of a local Evidently workspace.

The workspace is ``<data_root>/timeline``; ``evidently ui`` (or ``mlops ui``) on it shows
one project per model, whose dashboard (:func:`dashboard`, defined here in code) plots
drift share, per-feature drift, prediction drift and realised performance by partition.
Each snapshot is stamped with its partition's start, so the x axis reads in data time,
and carries the partition, kind, model version and links (HTML report, MLflow run) as
metadata. A partition has one snapshot per kind: :func:`add` replaces an earlier one.

Snapshots are written with the workspace's own file layer (``LocalState``) rather than
``Workspace``, whose constructor parses every snapshot of every project. Which snapshot
holds which partition is kept in a small index beside them, rebuilt from the snapshots'
metadata whenever it misses one (a write killed before the index was updated).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mlops import io, partitions

if TYPE_CHECKING:
    from mlops.config import Params, Settings

KINDS = ("drift", "performance")
PORT = 8001
PREDICTION = "prediction"
FOLDER = "timeline"
INDEX = "mlops-index.json"
LOCK_WAIT_S = 120.0
SHARE_METRIC = "FeatureDriftShare"
# The UI draws 350 px high charts whose legend holds about ten lines.
PANEL_LINES = 8
_NAMESPACE = uuid.UUID("5b0f5f0e-4d7a-4a43-9a39-0c6f1f3f6d2e")
# Evidently's names of the realised metrics the dashboard plots, by mlops metric name;
# average_precision has no Evidently metric, so ROC AUC stands in for it.
_CLASSIFICATION = {"roc_auc": ("RocAuc", "ROC AUC"), "log_loss": ("LogLoss", "log loss")}
_REGRESSION = {
    "rmse": ("RMSE", "RMSE"),
    "mae": ("MAE", "MAE"),
    "r2": ("R2Score", "R2"),
}


def folder(st: Settings) -> Path:
    """The Evidently workspace folder: ``<data_root>/timeline``."""
    return st.data_root / FOLDER


def project_id(params: Params) -> uuid.UUID:
    """The workspace project of ``params``' model: the same id in every process."""
    return uuid.uuid5(_NAMESPACE, f"{params.project}/{params.model_name}")


def url(
    params: Params, snapshot_id: str | None = None, host: str = "127.0.0.1", port: int = PORT
) -> str:
    """The timeline page (the project's dashboard) in ``mlops ui``; one report's with its id."""
    page = f"http://{host}:{port}/projects/{project_id(params)}"
    return f"{page}/reports/{snapshot_id}" if snapshot_id else page


@functools.cache
def _share_types() -> tuple[Any, Any]:
    """The drift-share metric and its calculation, defined once Evidently is imported."""
    from evidently.core.metric_types import CountCalculation, CountMetric, TestStatus
    from evidently.metrics import ValueDrift

    class FeatureDriftShare(CountMetric):
        """Count and share of features that drifted: the monitor's own drift share.

        Reads the result of each feature's ``ValueDrift`` (computed once, shared with the
        report's own metric) and counts a failed drift test; ``untested_drifted`` are
        features decided without a test (a side that is all null).
        """

        features: list[str]
        drifts: list[ValueDrift]
        untested_drifted: list[str] = []

    # The annotations are strings (``from __future__``) naming this function's locals.
    FeatureDriftShare.update_forward_refs(ValueDrift=ValueDrift)

    class FeatureDriftShareCalculation(CountCalculation[FeatureDriftShare]):
        def calculate(self, context: Any, _current: Any, _reference: Any) -> Any:
            m = self.metric
            drifted = set(m.untested_drifted)
            for metric in m.drifts:
                result = context.calculate_metric(metric.to_calculation())
                if not result.tests:
                    # Without its test a ValueDrift does not say whether it drifted.
                    raise ValueError(
                        "FeatureDriftShare reads each ValueDrift's drift test: run the "
                        "report with include_tests=True"
                    )
                if any(t.status == TestStatus.FAIL for t in result.tests):
                    drifted.add(metric.column)
            count = len(drifted & set(m.features))
            return self.result(count, count / len(m.features) if m.features else 0.0)

        def display_name(self) -> str:
            return "Drifted features"

    return FeatureDriftShare, FeatureDriftShareCalculation


def drift_share(
    features: Sequence[str], drifts: Mapping[str, Any], untested_drifted: Iterable[str] = ()
) -> Any:
    """The metric that puts the drift share into a drift report's snapshot.

    Add it to the same ``Report`` as the features' ``ValueDrift`` metrics (``drifts``, by
    column): it reuses their results, so it costs no second drift computation, and it
    counts a feature as drifted exactly when its drift test failed. Its tests are off:
    ``monitor.is_breach`` decides.
    """
    metric, _ = _share_types()
    return metric(
        features=list(features),
        drifts=[drifts[c] for c in features if c in drifts],
        untested_drifted=[c for c in untested_drifted if c in features],
        tests=[],
        share_tests=[],
    )


class Line(NamedTuple):
    """One line of a panel: the metric (and its labels) of the snapshots of one kind."""

    legend: str
    metric: str
    labels: dict[str, str]
    kind: str


class Panel(NamedTuple):
    """One panel of the dashboard."""

    title: str
    subtitle: str
    size: str
    lines: list[Line]


def _drift_line(column: str, legend: str | None = None) -> Line:
    return Line(legend or column, "ValueDrift", {"column": column}, "drift")


def _chunks(items: list[str], most: int) -> list[list[str]]:
    """``items`` in as few, as even, runs of at most ``most`` as can be."""
    n = -(-len(items) // most)
    size = -(-len(items) // n) if n else 0
    return [items[i : i + size] for i in range(0, len(items), size)] if n else []


def panels(params: Params) -> list[Panel]:
    """The dashboard's panels, in order: what each plots, from which kind of snapshot."""
    c, cfg = params.contract, params.monitor
    out = [
        Panel(
            "Share of drifted features",
            f"Features whose drift test failed; a breach from {cfg.drift_share:.0%} "
            "(monitor.drift_share)",
            "half",
            [Line("drifted features", SHARE_METRIC, {"value_type": "share"}, "drift")],
        ),
        Panel(
            "Prediction drift",
            "Drift score of the prediction and, once outcomes are known, of the target",
            "half",
            [_drift_line(PREDICTION), _drift_line(c.target, f"target ({c.target})")],
        ),
    ]
    if c.task == "classification":
        first = _CLASSIFICATION.get(params.gate_metric, _CLASSIFICATION["roc_auc"])
        names = [first, ("Accuracy", "accuracy")]
    else:
        companion = "mae" if params.gate_metric == "rmse" else "rmse"
        names = [_REGRESSION[params.gate_metric], _REGRESSION[companion]]
    # MAE comes as a mean and a standard deviation; the panel plots the mean.
    realised = [
        Line(legend, name, {"value_type": "mean"} if name == "MAE" else {}, "performance")
        for name, legend in names
    ]
    out.append(
        Panel(
            "Realised performance",
            "Evidently's metrics of each partition's labelled predictions (mlops label); "
            f"the breach is decided on {params.gate_metric} (performance.json)",
            "full",
            realised,
        )
    )
    kinds = {
        "numbers": ([f.name for f in c.features if f.dtype in ("float", "int")], "numerical"),
        "categories": (
            [f.name for f in c.features if f.dtype not in ("float", "int")],
            "categorical",
        ),
    }
    for what, (names_, key) in kinds.items():
        method = getattr(cfg, f"{key}_method")
        threshold = getattr(cfg, f"{key}_threshold")
        runs = _chunks(names_, PANEL_LINES)
        for i, run in enumerate(runs):
            part = f" ({i + 1} of {len(runs)})" if len(runs) > 1 else ""
            out.append(
                Panel(
                    f"Feature drift: {what}{part}",
                    f"{method} per feature; drifted from {threshold:g}",
                    "half",
                    [_drift_line(f) for f in run],
                )
            )
    return out


def dashboard(params: Params) -> Any:
    """The project's dashboard: the same model (ids included) for the same params."""
    from evidently.sdk.models import DashboardModel, DashboardPanelPlot, PanelMetric

    pid = project_id(params)
    plots = [
        DashboardPanelPlot(
            id=uuid.uuid5(pid, p.title),
            title=p.title,
            subtitle=p.subtitle,
            size=p.size,
            values=[
                PanelMetric(
                    legend=line.legend,
                    metric=line.metric,
                    metric_labels=line.labels,
                    metadata={"kind": line.kind},
                )
                for line in p.lines
            ],
            plot_params={"plot_type": "line"},
        )
        for p in panels(params)
    ]
    return DashboardModel(tabs=[], panels=plots)


def _lock(st: Settings) -> Any:
    """One writer of the workspace at a time; monitors of other partitions wait their turn."""
    return io.file_lock(st.state_dir / "locks" / "timeline.lock", wait=LOCK_WAIT_S)


def _open(params: Params, st: Settings) -> tuple[Any, uuid.UUID]:
    """The workspace's file layer and the project id, the project and dashboard saved."""
    from evidently.sdk.models import ProjectModel
    from evidently.ui.storage.local.base import SNAPSHOTS_DIR_NAME, LocalState

    pid = project_id(params)
    (folder(st) / str(pid) / SNAPSHOTS_DIR_NAME).mkdir(parents=True, exist_ok=True)
    state = LocalState(str(folder(st)))
    wanted = ProjectModel(
        id=pid,
        name=f"{params.project} / {params.model_name}",
        description="Drift (mlops monitor) and realised performance (mlops label) by partition",
    )
    try:
        saved = state.read_project(pid)
    except FileNotFoundError:
        saved = None
    if saved is None or (saved.name, saved.description) != (wanted.name, wanted.description):
        state.write_project(wanted)
    board = dashboard(params)
    # Rewritten only when the definition changed: the UI reads the file on every request.
    if state.read_dashboard(pid) != board:
        state.write_dashboard(pid, board)
    return state, pid


def _stamped(
    snapshot: Any, partition: str, kind: str, links: Mapping[str, str], version: str
) -> Any:
    """The snapshot's model, dated at the partition's start and labelled with its origin."""
    model = snapshot.to_snapshot_model()
    # Naive UTC, as Evidently stamps its own snapshots: the UI compares them with naive times.
    start = partitions.sort_key(partition).replace(tzinfo=None)
    meta = {"partition": partition, "kind": kind, "model_version": str(version)}
    meta.update({k: str(v) for k, v in links.items() if k not in meta})
    return model.copy(
        update={
            "name": f"{kind} {partition}",
            "timestamp": start,
            "metadata": meta,
            "tags": [kind, partition, f"v{version}"],
        }
    )


def _index_path(st: Settings, pid: uuid.UUID) -> Path:
    return folder(st) / str(pid) / INDEX


def _read_index(st: Settings, pid: uuid.UUID) -> dict[str, Any]:
    """Snapshot id -> ``[partition, kind]`` (None: a snapshot mlops did not add)."""
    try:
        found = io.read_json(_index_path(st, pid), missing={})
    except io.DamagedState:
        found = {}  # rebuilt from the snapshots' own metadata
    return found if isinstance(found, dict) else {}


def _tidy(
    state: Any, st: Settings, pid: uuid.UUID, known: dict[str, Any], keep: str | None = None
) -> None:
    """Leave one snapshot per (partition, kind) and write the index of what is left.

    A snapshot missing from ``known`` (its writer was killed before the index) is read for
    its metadata. Of two of the same partition and kind, ``keep`` stays, else the newer
    (ids are time-ordered UUIDv7). A file that does not parse, a write killed half-way,
    is set aside as ``<id>.json.broken``: Evidently's UI refuses to start on it.
    """
    from evidently.ui.storage.local.base import SNAPSHOTS_DIR_NAME

    present = {str(s) for s in state.list_snapshots(pid)}
    index = {s: k for s, k in known.items() if s in present}
    for sid in sorted(present - index.keys()):
        try:
            meta = state.read_snapshot(pid, sid).metadata
        except ValueError:  # JSON and validation errors alike
            path = folder(st) / str(pid) / SNAPSHOTS_DIR_NAME / f"{sid}.json"
            path.rename(path.with_name(f"{path.name}.broken"))
            continue
        key = [meta.get("partition"), meta.get("kind")]
        index[sid] = key if all(isinstance(k, str) for k in key) else None
    order = sorted(index, key=lambda s: (s == keep, uuid.UUID(s).int))
    winner: dict[tuple[str, str], str] = {}
    for sid in order:
        key = index[sid]
        if key is None:
            continue
        older = winner.get((key[0], key[1]))
        if older is not None:
            state.delete_snapshot(pid, older)
            del index[older]
        winner[(key[0], key[1])] = sid
    io.write_json(_index_path(st, pid), index)


def prepare(params: Params, st: Settings) -> Path:
    """Make the workspace, project and dashboard; tidy the snapshots. Returns the folder."""
    with _lock(st):
        state, pid = _open(params, st)
        _tidy(state, st, pid, _read_index(st, pid))
    return folder(st)


def add(
    params: Params,
    st: Settings,
    snapshot: Any,
    partition: str,
    kind: str,
    links: Mapping[str, str],
    model_version: str,
) -> str:
    """Add a report's Evidently snapshot to the timeline as ``partition``'s ``kind``.

    Replaces the partition's earlier snapshot of that kind; ``links`` (the HTML report,
    the MLflow run) go into its metadata. Datasets are never stored. Safe beside other
    processes adding theirs: they take turns, each waiting up to ``LOCK_WAIT_S``.

    Returns:
        The snapshot's id (``url(params, id)`` is its page in ``mlops ui``).
    """
    from evidently.legacy.core import new_id

    partitions.check(partition)
    if kind not in KINDS:
        raise ValueError(f"timeline: kind {kind!r} is not one of {', '.join(KINDS)}")
    model = _stamped(snapshot, partition, kind, links, model_version)
    with _lock(st):
        state, pid = _open(params, st)
        known = _read_index(st, pid)
        sid = str(new_id())
        state.write_snapshot(pid, sid, model)
        _tidy(state, st, pid, {**known, sid: [partition, kind]}, keep=sid)
    return sid


def snapshots(params: Params, st: Settings) -> dict[tuple[str, str], str]:
    """The timeline's snapshot ids by (partition, kind)."""
    known = _read_index(st, project_id(params))
    return {(k[0], k[1]): sid for sid, k in known.items() if k is not None}


def links_text(links: Mapping[str, str]) -> str:
    """Links on one line, for a log: ``report <uri> | mlflow_run <url> | timeline <url>``."""
    return " | ".join(f"{name} {href}" for name, href in links.items())


def with_links(page: str, links: Mapping[str, str]) -> str:
    """``page`` (an Evidently report) with a line of links at the top of its body.

    For the per-partition HTML: ``{"timeline": url(params), "MLflow run": ...}``.
    """
    from html import escape

    items = " &middot; ".join(
        f'{escape(name)}: <a href="{escape(href, quote=True)}">{escape(href)}</a>'
        for name, href in links.items()
    )
    return at_top(page, f'<nav style="font: 14px sans-serif; padding: 8px 16px">{items}</nav>')


def at_top(page: str, fragment: str) -> str:
    """``page`` with ``fragment`` first in its body (before the page when it has none)."""
    head, sep, rest = page.partition("<body")
    if not sep:
        return fragment + page
    tag, close, body = rest.partition(">")
    return f"{head}{sep}{tag}{close}{fragment}{body}"
