"""Console and log file: the console shows one summary line per stage, the file the rest.

Libraries (DVC, MLflow, Feast, Great Expectations) report progress, hints and deprecation
warnings on every run; on the console they would bury the stage summaries. Everything at
INFO and above goes to ``<data_root>/state/logs/mlops.log`` instead; the console gets
this package's warnings and everyone's errors (everything with ``--verbose``). Both
hide credentials (``io.redact``) in every line, tracebacks included, whoever logged it.

In an Airflow task, whose logging Airflow set up, ``for_task`` keeps Airflow's records,
this package's, and everyone's warnings and errors in the task log; library notices go
to the same log file only, and progress bars are off (Airflow logs a task's stderr at
ERROR: a bar would mark a successful task with red lines).
"""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
import threading
import traceback
from pathlib import Path
from typing import TextIO

from mlops.io import redact

FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(process)d " + FORMAT
_OURS = "mlops"
_AIRFLOW = "airflow"
_PRINTED = "task.stdout"  # Airflow's name for what a task prints
# What the libraries offer to keep banners, bars and their own handlers out of our output.
_QUIET = {
    "MLFLOW_CONFIGURE_LOGGING": "false",  # else MLflow prints through its own handler
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # the stages print their own links
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "FEAST_USAGE": "False",
}
# A task log is a file: no progress bar of any library that draws them with tqdm (read
# when tqdm is imported: the stages import it, and every heavy library, lazily).
_QUIET_TASK = {**_QUIET, "TQDM_DISABLE": "1"}
# Chatty at INFO even in the file: connection pools and migrations.
_CHATTY = ("urllib3", "alembic", "numexpr")
# The loggers MLflow gives its own stderr handler when it configures logging on import.
_MLFLOW_OWN = ("mlflow", "alembic", "huey", "sqlalchemy.engine")


def _of(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


class _Console(logging.Filter):
    """Our warnings and everyone's errors; library notices stay in the file."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = _of(record.name, _OURS)
        return record.levelno >= (logging.WARNING if ours else logging.ERROR)


class _TaskLog(logging.Filter):
    """Airflow's records and ours, and everyone's warnings and errors; not library notices."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return any(_of(record.name, p) for p in (_OURS, _AIRFLOW, _PRINTED))


class _Printed(io.TextIOBase):
    """A task's standard output as log records of ``task.stdout``, one per line.

    Airflow's supervisor stamps each line a task prints when it reads it, and a task log
    is shown in time order: a stage's summary, printed, could show after the records
    that followed it. A record is stamped when it is made, and sent in order.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._partial = ""
        self._lock = threading.Lock()
        self._emitting = threading.local()
        self._log = logging.getLogger(_PRINTED)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    @property
    def buffer(self) -> io.BufferedIOBase:  # bytes written there are not lines of text
        return self._stream.buffer  # type: ignore[return-value]

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._stream.fileno()  # a child process writes to the stream itself

    def write(self, text: str) -> int:
        if getattr(self._emitting, "on", False):  # a handler that writes to stdout
            return self._stream.write(text)
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
        self._emit(lines)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._partial = self._partial, ""
        self._emit([rest] if rest else [])
        if not self._stream.closed:
            self._stream.flush()

    def _emit(self, lines: list[str]) -> None:
        self._emitting.on = True
        try:
            for line in lines:
                self._log.info("%s", line)
        finally:
            self._emitting.on = False


def _supervised() -> bool:
    """Whether Airflow's task supervisor reads this process's stdout: a socket, then."""
    try:
        return stat.S_ISSOCK(os.fstat(sys.stdout.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False


class _Redacting(logging.Formatter):
    """A formatter that masks credentials in the whole line: message, traceback, stack."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _Masked(logging.Filter):
    """Masks credentials in the record itself, for handlers whose formatter is not ours.

    In an Airflow task the records of this package and of MLflow go to Airflow's
    handlers; the message and the traceback are masked and joined into the message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + "".join(traceback.format_exception(record.exc_info[1])).rstrip()
        if record.stack_info:
            text += "\n" + record.stack_info
        record.msg, record.args = redact(text), ()
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def _handlers() -> list[logging.Handler]:
    """Every handler installed on any logger (a library may keep its own, unpropagated)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers]


def mask_handlers() -> None:
    """Mask credentials in every record any handler gets, whoever set it up (idempotent).

    For processes whose logging someone else set up (an Airflow task), and for libraries
    that installed a handler of their own before ``setup`` ran (MLflow does, on import,
    unless ``MLFLOW_CONFIGURE_LOGGING`` is false; later imports are told not to).
    ``setup`` gives the CLI's own handlers a masking formatter instead.
    """
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    for handler in _handlers():
        if isinstance(handler.formatter, _Redacting):
            continue
        if not any(isinstance(f, _Masked) for f in handler.filters):
            handler.addFilter(_Masked())


def for_task() -> None:
    """Set up logging in an Airflow task, whose handlers Airflow installed (idempotent).

    The libraries' progress bars and MLflow's own stderr handler are turned off with
    their settings, before they are imported: Airflow logs everything a task writes to
    stderr at ERROR. Airflow's handlers keep its records and ours, and everyone's warnings
    and errors; library notices below WARNING reach only the log file (``to_file``).
    Every handler masks credentials (``mask_handlers``). Under Airflow's supervisor,
    what the task prints becomes records, so that a summary keeps its place in the log.
    """
    for name, value in _QUIET_TASK.items():
        os.environ.setdefault(name, value)
    _quiet_loggers()
    if _supervised() and not isinstance(sys.stdout, _Printed):
        sys.stdout = _Printed(sys.stdout)
    mask_handlers()
    for handler in _handlers():
        if isinstance(handler.formatter, _Redacting):
            continue
        if not any(isinstance(f, _TaskLog) for f in handler.filters):
            handler.addFilter(_TaskLog())


def _quiet_loggers() -> None:
    """Records of MLflow (imported earlier, with its own handler) reach ours; less chatter."""
    for name in _MLFLOW_OWN:
        lg = logging.getLogger(name)
        if not lg.propagate:
            for own in list(lg.handlers):
                lg.removeHandler(own)
            lg.propagate = True
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


class _LazyFile(logging.FileHandler):
    """A log file opened, and its folder made, only when the first record arrives."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self) -> io.TextIOWrapper:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _replace(handler: logging.Handler, kind: str) -> None:
    """Install ``handler`` on the root logger in place of an earlier one of this kind."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_mlops", None) == kind]:
        root.removeHandler(old)
        old.close()
    handler._mlops = kind  # type: ignore[attr-defined]
    root.addHandler(handler)


def setup(verbose: bool = False) -> None:
    """Send log records to the console (filtered unless ``verbose``); idempotent."""
    console = logging.StreamHandler()
    console.setFormatter(_Redacting(FORMAT))
    if not verbose:
        console.addFilter(_Console())
    _replace(console, "console")
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)
    for name, value in _QUIET.items():
        os.environ.setdefault(name, value)
    _quiet_loggers()
    mask_handlers()  # handlers other libraries installed before this ran


def to_file(path: Path) -> Path:
    """Also append records at INFO and above to ``path`` (created on the first record)."""
    handler = _LazyFile(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(_Redacting(FILE_FORMAT))
    _replace(handler, "file")
    return path
