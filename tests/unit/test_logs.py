"""logs: the console keeps to the stage summaries; details land in the log file."""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from mlops import logs


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    logging.captureWarnings(False)


def test_library_notices_go_to_the_file_and_ours_to_the_console(
    tmp_path: Path, capsys, restore_root
) -> None:
    # given the console and a log file set up as the CLI does (a fresh capture of
    # warnings: an earlier test's capture would hold pytest's recorder)
    logging.captureWarnings(False)
    logs.setup(verbose=False)
    path = logs.to_file(tmp_path / "state" / "logs" / "mlops.log")
    assert not path.exists()  # nothing written yet: no folder made
    # when a library and this package log, and a library warns
    logging.getLogger("dvc.repo.scm_context").info("To track the changes with git, run: ...")
    logging.getLogger("feast.repo").warning("this API is deprecated")
    logging.getLogger("mlops.validate").warning("2013-01: column 'origin': 1% unseen")
    logging.getLogger("great_expectations").error("checkpoint failed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
    # then the console shows our warning and the error only
    err = capsys.readouterr().err
    assert "1% unseen" in err and "checkpoint failed" in err
    assert "git" not in err and "deprecated" not in err and "old API" not in err
    # and the file holds everything at INFO and above
    text = path.read_text()
    for line in ("To track the changes with git", "deprecated", "1% unseen", "old API"):
        assert line in text


def test_setup_twice_installs_one_console_and_one_file(tmp_path: Path, restore_root) -> None:
    for _ in range(2):
        logs.setup()
        logs.to_file(tmp_path / "a.log")
    ours = [getattr(h, "_mlops", None) for h in logging.getLogger().handlers]
    assert sorted(k for k in ours if k) == ["console", "file"]


def test_verbose_shows_library_notices(capsys, restore_root) -> None:
    logs.setup(verbose=True)
    logging.getLogger("feast.repo").info("applying definitions")
    assert "applying definitions" in capsys.readouterr().err


SECRET = "s3cr3t-pw"  # a placeholder the repository scanner accepts


def _failure_with_chained_cause() -> RuntimeError:
    try:
        try:
            raise ConnectionError(f"API request to http://mlops:{SECRET}@tracking:5000 failed")
        except ConnectionError as cause:
            raise RuntimeError("MLflow search failed") from cause
    except RuntimeError as exc:
        return exc


def test_console_and_file_mask_credentials_in_messages_and_tracebacks(
    tmp_path: Path, capsys, monkeypatch, restore_root
) -> None:
    # given the CLI's handlers, and a password in the tracking URI and on its own
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://mlops:{SECRET}@tracking:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", f"{SECRET}-2")
    logs.setup(verbose=True)
    path = logs.to_file(tmp_path / "mlops.log")
    # when MLflow and this package log it: in arguments, bare, and in a chained traceback
    logging.getLogger("mlflow.store").warning("talking to %s", f"http://u:{SECRET}@h:1/")
    logging.getLogger("mlops.train").error("login %s-2 refused", SECRET)
    logging.getLogger("mlops.cli").error("failed", exc_info=_failure_with_chained_cause())
    # then both keep every line, the whole traceback too, but no secret
    err, text = capsys.readouterr().err, path.read_text()
    for out in (err, text):
        assert "talking to http://***@h:1/" in out and "login *** refused" in out
        assert "ConnectionError: API request to http://***@tracking:5000 failed" in out
        assert "direct cause" in out and SECRET not in out


def test_handlers_set_up_by_someone_else_are_masked_too(monkeypatch, restore_root) -> None:
    # given a handler that is not ours (an Airflow task's), with its own formatter
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://mlops:{SECRET}@tracking:5000")
    seen: list[logging.LogRecord] = []

    class Foreign(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    foreign = Foreign()
    # (alone: pytest's own capture handlers keep their records as they are)
    monkeypatch.setattr(logging.getLogger(), "handlers", [foreign])
    # when the handlers are masked (twice: idempotent) and a record with a traceback arrives
    logs.mask_handlers()
    logs.mask_handlers()
    logging.getLogger("somelib").error(
        "at %s", f"http://u:{SECRET}@h/", exc_info=_failure_with_chained_cause()
    )
    # then the handler got one masked record, the traceback folded into the message
    assert len(foreign.filters) == 1
    (record,) = seen
    message = logging.Formatter().format(record)
    assert "at http://***@h/" in message and "http://***@tracking:5000" in message
    assert SECRET not in message and record.exc_info is None


class Airflows(logging.Handler):
    """Stands in for the handler Airflow installs in a task process: keeps what it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records]


MLFLOW_OWN = ("mlflow", "alembic", "huey", "sqlalchemy.engine")
# The loggers the tests log through, reset to pass records on to the root's handler
# (in-process Airflow, in other tests, configures some of them)
SOURCES = ("airflow", "task", "mlops", "great_expectations", "feast", "somelib")


@pytest.fixture
def task_process(monkeypatch, restore_root):
    """A process set up as Airflow sets up a task: its one handler on the root, at INFO.

    The environment, the loggers MLflow configures and every handler's filters are
    restored afterwards (``for_task`` changes them for the whole process).
    """
    env = dict(os.environ)
    for name in (*logs._QUIET_TASK, "MLFLOW_LOGGING_LEVEL"):
        os.environ.pop(name, None)
    sources = [
        n
        for n in [*SOURCES, *logging.Logger.manager.loggerDict]
        if any(n == s or n.startswith(s + ".") for s in SOURCES)
    ]
    states = {
        n: (lg.handlers[:], lg.propagate, lg.level, lg.disabled)
        for n in (*MLFLOW_OWN, *sources)
        for lg in [logging.getLogger(n)]
    }
    for n in sources:
        lg = logging.getLogger(n)
        lg.handlers[:], lg.propagate, lg.disabled = [], True, False
        lg.setLevel(logging.NOTSET)
    filters = {h: h.filters[:] for h in logs._handlers()}
    airflow = Airflows()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [airflow])
    root.setLevel(logging.INFO)
    yield airflow
    for h in root.handlers:
        if getattr(h, "_mlops", None):
            h.close()
    for h, kept in filters.items():
        h.filters[:] = kept
    for n, (handlers, propagate, level, disabled) in states.items():
        lg = logging.getLogger(n)
        lg.handlers[:], lg.propagate, lg.disabled = handlers, propagate, disabled
        lg.setLevel(level)
    os.environ.clear()
    os.environ.update(env)


def test_a_task_log_keeps_airflow_ours_and_warnings_and_the_file_the_notices(
    tmp_path: Path, task_process: Airflows
) -> None:
    # given a task process whose handler Airflow installed, set up twice (idempotent),
    # and the project's log file
    logs.for_task()
    logs.for_task()
    path = logs.to_file(tmp_path / "state" / "logs" / "mlops.log")
    # when Great Expectations and Feast report notices, Airflow and this package report
    # progress, and libraries warn and fail
    logging.getLogger("great_expectations._docs_decorators").info("Skipping registering")
    logging.getLogger("feast.infra.registry.registry").info("Registry cache expired")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade 1 -> 2")
    logging.getLogger("airflow.task.operators").info("Done. Returned value was: 1")
    logging.getLogger("mlops.validate").info("validate: 3 partition(s) in 0.7s")
    logging.getLogger("mlflow.utils.environment").warning("Failed to resolve pip")
    logging.getLogger("somelib").error("it broke", exc_info=_failure_with_chained_cause())
    # then Airflow's handler got Airflow's and ours, the warning, and the error with its
    # traceback, in that order; no notice, and one filter of each kind
    lines = task_process.lines()
    assert lines[:3] == [
        "INFO airflow.task.operators: Done. Returned value was: 1",
        "INFO mlops.validate: validate: 3 partition(s) in 0.7s",
        "WARNING mlflow.utils.environment: Failed to resolve pip",
    ]
    assert len(lines) == 4 and lines[3].startswith("ERROR somelib: it broke")
    assert "ConnectionError: API request" in lines[3]  # the chained cause's traceback
    assert sorted(type(f).__name__ for f in task_process.filters) == ["_Masked", "_TaskLog"]
    # and the project's log file got the notices too (the migration is too chatty for it)
    text = path.read_text()
    assert "Skipping registering" in text and "Registry cache expired" in text
    assert "validate: 3 partition(s)" in text and "Running upgrade" not in text


def test_in_a_task_mlflow_draws_no_bar_and_logs_through_airflow(
    tmp_path: Path, capfd, task_process: Airflows
) -> None:
    import mlflow.artifacts
    from mlflow.utils.logging_utils import _configure_mlflow_loggers

    # given MLflow imported before the task set up its logging: its own stderr handler
    _configure_mlflow_loggers("mlflow")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.json").write_text("{}")
    # (which draws a progress bar on stderr when it downloads artifacts)
    mlflow.artifacts.download_artifacts(str(tmp_path / "run"), dst_path=str(tmp_path / "a"))
    assert "Downloading artifacts" in capfd.readouterr().err
    # when the task sets up its logging, then MLflow downloads and logs
    logs.for_task()
    mlflow.artifacts.download_artifacts(str(tmp_path / "run"), dst_path=str(tmp_path / "b"))
    logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables")
    logging.getLogger("mlflow.utils.environment").warning("Failed to resolve pip")
    # then nothing reached stderr, and MLflow's warning reached Airflow's handler only
    assert capfd.readouterr().err == ""
    assert task_process.lines() == ["WARNING mlflow.utils.environment: Failed to resolve pip"]
    # and MLflow will not print run links on stdout (the stages print their own)
    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get() is True


def test_in_a_task_no_library_draws_a_tqdm_bar() -> None:
    # given a fresh process (tqdm reads its settings when it is imported), with and
    # without the task's logging set up before a library draws a bar
    draw = "from tqdm import tqdm; list(tqdm(range(3), desc='Calculating Metrics'))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    runs = {
        setup: subprocess.run(
            [sys.executable, "-c", f"{setup}; {draw}"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stderr
        for setup in ("pass", "from mlops import logs; logs.for_task()")
    }
    # then only the process set up as a task drew nothing
    assert "Calculating Metrics" in runs["pass"]
    assert runs["from mlops import logs; logs.for_task()"] == ""


def test_under_airflows_supervisor_what_a_task_prints_keeps_its_place(
    monkeypatch, task_process: Airflows
) -> None:
    # given a task whose stdout Airflow's supervisor reads (a socket; it stamps each line
    # when it reads it)
    ours, supervisor = socket.socketpair()
    supervisor.settimeout(30)
    stdout = io.TextIOWrapper(ours.makefile("wb"), line_buffering=True)
    monkeypatch.setattr(sys, "stdout", stdout)
    logs.for_task()
    logs.for_task()
    # when the stage prints its lines around a record, the last without a newline
    print("validate: 2013-W02 passed 50 expectations")
    logging.getLogger("mlops.validate").info("validate: 1 partition(s) in 0.1s")
    print("score: 2013-W03 6,053 rows", end="")
    sys.stdout.flush()
    # then each printed line is a record, in the order it was printed
    assert task_process.lines() == [
        "INFO task.stdout: validate: 2013-W02 passed 50 expectations",
        "INFO mlops.validate: validate: 1 partition(s) in 0.1s",
        "INFO task.stdout: score: 2013-W03 6,053 rows",
    ]
    # and a child process given the task's stdout still writes to the supervisor itself
    subprocess.run([sys.executable, "-c", "print('from a child')"], stdout=sys.stdout, check=True)
    assert supervisor.recv(100) == b"from a child\n"
    stdout.close()
    supervisor.close()
