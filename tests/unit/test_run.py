"""run: the segments each process loads tools for, and the worker that runs every other one:
stages in order, its output passed on, its errors raised as they were, its death named."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from functools import partial
from pathlib import Path

import pytest

from mlops import run
from mlops.cli import STAGES
from mlops.config import ConfigError, Params, Settings, load_params, settings


def test_plan_cuts_where_a_stage_needs_a_new_tool_and_alternates_processes() -> None:
    segments = run.plan(STAGES)
    assert [s.stages for s in segments] == [
        ("ingest",),
        ("validate",),
        ("materialize",),
        ("train", "evaluate", "promote", "score"),
        ("monitor", "label"),
    ]
    assert [s.process for s in segments] == [run.LOCAL, run.WORKER] * 2 + [run.LOCAL]
    # each process loads a tool once: the worker has Feast before train, this process
    # loaded it for materialize and then only needs Evidently and MLflow
    assert [s.tools for s in segments] == [
        (),
        ("gx",),
        ("feast",),
        ("feast", "mlflow", "models"),
        ("evidently", "mlflow"),
    ]


def test_plan_keeps_stages_together_while_their_tools_are_loaded() -> None:
    tools = {"a": ("x",), "b": (), "c": ("x",), "d": ("y",), "e": ("x",)}
    segments = run.plan(list(tools), tools)
    assert [(s.process, s.stages, s.tools) for s in segments] == [
        (run.LOCAL, ("a", "b", "c"), ("x",)),
        (run.WORKER, ("d",), ("y",)),
        (run.LOCAL, ("e",), ()),
    ]


# the same segments as the stages' own tools, with light modules to load
LIGHT = {
    "gx": "csv",
    "feast": "json",
    "mlflow": "decimal",
    "models": "fractions",
    "evidently": "wave",
}
TOOLS = {v: tuple(LIGHT[t] for t in ts) for v, ts in run.TOOLS.items()}


def _pipeline(params: Params, st: Settings, commands: dict[str, run.Command]) -> dict[str, float]:
    return run.pipeline(params, st, commands, STAGES, tools=TOOLS)


def _record(verb: str, p: Params, st: Settings, ns: argparse.Namespace) -> None:
    print(f"{verb}: ran in {os.getpid()}")
    with (st.state_dir / "order.txt").open("a") as f:
        f.write(f"{verb} {os.getpid()}\n")


def _fail(verb: str, p: Params, st: Settings, ns: argparse.Namespace) -> None:
    raise ConfigError(f"{verb}: params.yaml: train.seed is wrong")


def _die(verb: str, p: Params, st: Settings, ns: argparse.Namespace) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _commands(**special: object) -> dict[str, run.Command]:
    out = {v: partial(_record, v) for v in STAGES}
    out.update({v: partial(fn, v) for v, fn in special.items()})  # type: ignore[arg-type]
    return out


@pytest.fixture
def ps(project) -> tuple[Params, Settings]:
    pp = project()
    st = settings(pp)
    st.state_dir.mkdir(parents=True, exist_ok=True)
    return load_params(pp), st


def _order(st: Settings) -> list[tuple[str, int]]:
    lines = (st.state_dir / "order.txt").read_text().splitlines()
    return [(v, int(pid)) for v, pid in (line.split() for line in lines)]


def test_stages_run_in_order_across_both_processes_with_the_output_here(
    ps: tuple[Params, Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    params, st = ps
    timings = _pipeline(params, st, _commands())
    assert list(timings) == STAGES
    order = _order(st)
    assert [v for v, _ in order] == STAGES
    pids = dict(order)
    here = os.getpid()
    assert [pids[v] == here for v in STAGES] == [
        s.process == run.LOCAL for s in run.plan(STAGES, TOOLS) for _ in s.stages
    ]
    assert run.plan(STAGES, TOOLS) == [
        run.Segment(s.process, s.stages, tuple(LIGHT[t] for t in s.tools)) for s in run.plan(STAGES)
    ]
    # the worker's prints reach this process's stdout, in order
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{v}: ran in {pids[v]}" for v in STAGES]


def test_a_worker_stage_error_is_raised_as_itself_and_stops_the_run(
    ps: tuple[Params, Settings],
) -> None:
    params, st = ps
    with pytest.raises(ConfigError, match="train: params.yaml: train.seed is wrong") as info:
        _pipeline(params, st, _commands(train=_fail))
    assert "Traceback" in str(info.value.__cause__)  # the worker's, for --verbose
    assert [v for v, _ in _order(st)] == ["ingest", "validate", "materialize"]


class _Rebuilt(Exception):
    """Pickles, but cannot be rebuilt from its args in the parent."""

    def __init__(self, table: str, column: str) -> None:
        super().__init__(f"{table}.{column} is bad")


class _Held(Exception):
    """Holds a lock, so it cannot be pickled at all."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def _odd(kind: str, verb: str, p: Params, st: Settings, ns: argparse.Namespace) -> None:
    raise _Rebuilt("flights", "temp") if kind == "rebuilt" else _Held("x")


@pytest.mark.parametrize(
    ("kind", "message"),
    [("rebuilt", "_Rebuilt: flights.temp is bad"), ("held", "_Held: x")],
    ids=["not-rebuilt", "not-pickled"],
)
def test_a_worker_error_that_cannot_travel_arrives_as_its_name_and_message(
    ps: tuple[Params, Settings], kind: str, message: str
) -> None:
    params, st = ps
    with pytest.raises(RuntimeError, match=f"^{message}$") as info:
        _pipeline(params, st, _commands(train=partial(_odd, kind)))
    assert type(info.value) is RuntimeError
    assert message.split(":")[0] in str(info.value.__cause__)  # the worker's traceback
    assert [v for v, _ in _order(st)] == ["ingest", "validate", "materialize"]


def test_a_worker_that_dies_names_its_stage(ps: tuple[Params, Settings]) -> None:
    params, st = ps
    with pytest.raises(run.WorkerDied, match=r"running validate ended \(exit code -9\)"):
        _pipeline(params, st, _commands(validate=_die))
    assert [v for v, _ in _order(st)] == ["ingest"]


def test_a_local_stage_error_stops_the_worker_too(ps: tuple[Params, Settings]) -> None:
    params, st = ps
    with pytest.raises(ConfigError, match="materialize"):
        _pipeline(params, st, _commands(materialize=_fail))
    assert [v for v, _ in _order(st)] == ["ingest", "validate"]
    assert not [p for p in _children() if "spawn_main" in p]  # the worker was joined


def _children() -> list[str]:
    me = str(os.getpid())
    out = []
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text().split()
            if stat[3] == me:
                out.append((d / "cmdline").read_text())
        except (OSError, IndexError):
            continue
    return out
