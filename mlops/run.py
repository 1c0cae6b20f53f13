"""run: the whole pipeline in order, with each stage's tools loaded while the one before works.

Importing Great Expectations, Feast, MLflow, the model libraries and Evidently takes about
ten seconds of one core. ``mlops run`` splits the stages into segments, a new one where a
stage needs a tool the segment has not loaded (``plan``), and runs the segments in turn in
two processes: this one, and a worker started at the beginning. While one process runs a
segment, the other loads the tools of the next. The stages still run one at a time, in
order, each reading what the one before wrote, as under ``dvc repro``.

The worker's output comes back through this process, in order. A stage's error is raised
here as the stage raised it; a worker that dies names the stage it was running.
"""

from __future__ import annotations

import argparse
import contextlib
import io as _io
import logging
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops import io, logs, observe

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from mlops.config import Params, Settings

log = logging.getLogger(__name__)

Command = Callable[["Params", "Settings", argparse.Namespace], object]

# The tools each stage loads, in the order it needs them.
TOOLS: dict[str, tuple[str, ...]] = {
    "ingest": (),
    "validate": ("gx",),
    "materialize": ("feast",),
    "train": ("feast", "mlflow", "models"),
    "evaluate": ("feast", "mlflow", "models"),
    "promote": ("mlflow",),
    "score": ("mlflow", "models"),
    "monitor": ("evidently", "mlflow"),
    "label": ("evidently", "mlflow"),
}
LOCAL, WORKER = 0, 1


@dataclass(frozen=True)
class Segment:
    """Consecutive stages run by one process, and the tools it loads before them."""

    process: int  # LOCAL or WORKER
    stages: tuple[str, ...]
    tools: tuple[str, ...]


def plan(stages: Sequence[str], tools: dict[str, tuple[str, ...]] = TOOLS) -> list[Segment]:
    """Pure: the stages cut where one needs a tool its segment has not loaded.

    Segments alternate between this process and the worker; each loads only the tools
    that process has not loaded for an earlier segment.
    """
    cuts: list[list[str]] = []
    needed: list[set[str]] = []
    for s in stages:
        want = set(tools.get(s, ()))
        if cuts and want <= needed[-1]:
            cuts[-1].append(s)
        else:
            cuts.append([s])
            needed.append(want)
    loaded: list[set[str]] = [set(), set()]
    out = []
    for i, seg in enumerate(cuts):
        proc = i % 2
        order = dict.fromkeys(t for s in seg for t in tools.get(s, ()))
        new = tuple(t for t in order if t not in loaded[proc])
        loaded[proc] |= set(new)
        out.append(Segment(proc, tuple(seg), new))
    return out


def load_tools(tools: Sequence[str], st: Settings) -> None:
    """Import ``tools`` (and open MLflow's store); a failure is left to the stage to report."""
    import importlib

    for tool in tools:
        try:
            if tool == "feast":
                from mlops import features

                features.load_feast()
            elif tool == "mlflow":
                from mlops import registry

                registry.connect(st)
            else:  # a tool of MODULES, or else a module's name
                for name in MODULES.get(tool, (tool,)):
                    importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the stage imports it again and says why
            log.debug("loading %s ahead of its stage failed: %s", tool, io.redact(str(exc)))


MODULES = {
    "gx": ("great_expectations", "mlops.gx_context"),
    "models": (
        "sklearn.ensemble",
        "sklearn.pipeline",
        "sklearn.compose",
        "xgboost",
        "mlflow.sklearn",
        "mlflow.xgboost",
        "skops.io",
        "mlops.plots",
    ),
    "evidently": ("evidently", "evidently.presets", "evidently.metrics"),
}


def pipeline(
    params: Params,
    st: Settings,
    commands: dict[str, Command],
    stages: Sequence[str],
    verbose: bool = False,
    tools: dict[str, tuple[str, ...]] = TOOLS,
) -> dict[str, float]:
    """Run ``stages`` in order (see the module); returns each stage's seconds."""
    ns = argparse.Namespace(partitions=None, version=None, as_of=None)
    segments = plan(stages, tools)
    timings: dict[str, float] = {}
    worker = _Worker(params, st, commands, verbose) if len(segments) > 1 else None
    try:
        for i, seg in enumerate(segments):
            nxt = segments[i + 1] if i + 1 < len(segments) else None
            if seg.process == WORKER:
                assert worker is not None
                for verb in seg.stages:
                    worker.send(("stage", verb))
                if nxt is not None:
                    load_tools(nxt.tools, st)
                for verb in seg.stages:
                    timings[verb] = worker.result(verb)
            else:
                if nxt is not None and worker is not None and nxt.tools:
                    worker.send(("tools", nxt.tools))
                if i == 0:
                    load_tools(seg.tools, st)
                for verb in seg.stages:
                    timings[verb] = _stage(params, st, commands[verb], verb, ns)
    finally:
        if worker is not None:
            worker.close()
    return timings


def _stage(params: Params, st: Settings, command: Command, verb: str, ns: Any) -> float:
    t = time.perf_counter()
    with observe.stage(params, st, verb):
        command(params, st, ns)
    return round(time.perf_counter() - t, 2)


class WorkerDied(RuntimeError):
    """The worker process ended while running a stage."""


class _RemoteTraceback(Exception):
    """The worker's traceback, chained under the error it raised."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class _Worker:
    """The second process: started now, fed stages and tools in order over a pipe."""

    def __init__(
        self, params: Params, st: Settings, commands: dict[str, Command], verbose: bool
    ) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork: this process may hold threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=serve,
            args=(child, params, st, commands, verbose),
            name="mlops-run-worker",
        )
        self.proc.start()
        child.close()

    def send(self, msg: tuple[str, Any]) -> None:
        self.conn.send(msg)

    def result(self, verb: str) -> float:
        """Wait for ``verb`` to finish, passing on the worker's output; raise its error."""
        while True:
            try:
                kind, *rest = self.conn.recv()
            except EOFError:
                self.proc.join(5)
                raise WorkerDied(
                    f"the worker process running {verb} ended (exit code {self.proc.exitcode})"
                ) from None
            if kind == "out":
                stream = sys.stdout if rest[0] == 1 else sys.stderr
                stream.write(rest[1])
                stream.flush()
            elif kind == "done" and rest[0] == verb:
                return float(rest[1])
            elif kind == "error" and rest[0] == verb:
                name, message, text = rest[1:]
                raise self._error(name, message) from _RemoteTraceback(text)

    def _error(self, name: str, message: str) -> BaseException:
        """The error the worker sends after its summary, or a RuntimeError naming it."""
        try:
            _, exc = self.conn.recv()
        except Exception:  # noqa: BLE001 - not rebuilt here, or the worker ended: the summary
            exc = None
        if isinstance(exc, BaseException) and str(exc) == message:
            return exc
        return RuntimeError(f"{name}: {message}")

    def close(self) -> None:
        """Stop the worker once it has finished what it was doing (tools load in seconds)."""
        with contextlib.suppress(OSError):  # a worker that failed has gone already
            self.conn.send(None)
        self.proc.join(60)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


class _Forward(_io.TextIOBase):
    """A text stream that sends what is written to the parent, line by line."""

    encoding = "utf-8"

    def __init__(self, conn: Connection, fd: int, lock: threading.Lock) -> None:
        super().__init__()
        self.conn, self.fd, self.lock, self.buf = conn, fd, lock, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buf += text
        if "\n" in self.buf:
            head, _, self.buf = self.buf.rpartition("\n")
            self._send(head + "\n")
        return len(text)

    def flush(self) -> None:
        if self.buf:
            text, self.buf = self.buf, ""
            self._send(text)

    def _send(self, text: str) -> None:
        with self.lock:
            self.conn.send(("out", self.fd, text))

    def isatty(self) -> bool:
        return False


def serve(
    conn: Connection, params: Params, st: Settings, commands: dict[str, Command], verbose: bool
) -> None:
    """The worker's loop: load tools and run stages as the parent sends them."""
    lock = threading.Lock()
    sys.stdout = _Forward(conn, 1, lock)
    sys.stderr = _Forward(conn, 2, lock)
    logs.setup(verbose)
    logs.to_file(st.state_dir / "logs" / "mlops.log")
    ns = argparse.Namespace(partitions=None, version=None, as_of=None)
    while (msg := conn.recv()) is not None:
        kind, arg = msg
        if kind == "tools":
            load_tools(arg, st)
            continue
        failed: BaseException | None = None
        try:
            seconds = _stage(params, st, commands[arg], arg, ns)
        except BaseException as exc:  # noqa: BLE001 - the parent raises it
            failed = exc
        sys.stdout.flush()
        sys.stderr.flush()
        with lock:
            if failed is None:
                conn.send(("done", arg, seconds))
                continue
            # the summary first, as plain text; then the error itself, if it can travel
            conn.send(("error", arg, type(failed).__name__, str(failed), _traceback(failed)))
            try:
                conn.send(("exc", failed))
            except Exception:  # noqa: BLE001 - nothing was sent; the parent uses the summary
                conn.send(("exc", None))
        return


def _traceback(exc: BaseException) -> str:
    from traceback import format_exception

    return io.redact("".join(format_exception(exc)).rstrip())
