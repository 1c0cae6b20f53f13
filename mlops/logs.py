"""Console and log file: the console shows one summary line per stage, the file the rest.

Libraries (DVC, MLflow, Feast, Great Expectations) report progress, hints and deprecation
warnings on every run; on the console they would bury the stage summaries. Everything at
INFO and above goes to ``<data_root>/state/logs/mlops.log`` instead; the console gets
this package's warnings and everyone's errors (everything with ``--verbose``). Both
hide credentials (``io.redact``) in every line, tracebacks included, whoever logged it.
"""

from __future__ import annotations

import logging
import os
import traceback
from io import TextIOWrapper
from pathlib import Path

from mlops.io import redact

FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(process)d " + FORMAT
_OURS = "mlops"


class _Console(logging.Filter):
    """Our warnings and everyone's errors; library notices stay in the file."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == _OURS or record.name.startswith(_OURS + ".")
        return record.levelno >= (logging.WARNING if ours else logging.ERROR)


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


class _LazyFile(logging.FileHandler):
    """A log file opened, and its folder made, only when the first record arrives."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self) -> TextIOWrapper:
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
    for name, value in {
        "MLFLOW_CONFIGURE_LOGGING": "false",  # else MLflow prints through its own handler
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
        "FEAST_USAGE": "False",
    }.items():
        os.environ.setdefault(name, value)
    # MLflow imported before this ran installed its own handler: its records come here too
    mlflow = logging.getLogger("mlflow")
    for own in list(mlflow.handlers):
        mlflow.removeHandler(own)
    mlflow.propagate = True
    mask_handlers()  # handlers other libraries installed before this ran
    # chatty at INFO even in the file: connection pools and migrations
    for name in ("urllib3", "alembic", "numexpr"):
        logging.getLogger(name).setLevel(logging.WARNING)


def to_file(path: Path) -> Path:
    """Also append records at INFO and above to ``path`` (created on the first record)."""
    handler = _LazyFile(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(_Redacting(FILE_FORMAT))
    _replace(handler, "file")
    return path
