"""Console and log file: the console shows one summary line per stage, the file the rest.

Libraries (DVC, MLflow, Feast, Great Expectations) report progress, hints and deprecation
warnings on every run; on the console they would bury the stage summaries. Everything at
INFO and above goes to ``<data_root>/state/logs/mlops.log`` instead; the console gets
this package's warnings and everyone's errors (everything with ``--verbose``).
"""

from __future__ import annotations

import logging
import os
from io import TextIOWrapper
from pathlib import Path

FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(process)d " + FORMAT
_OURS = "mlops"


class _Console(logging.Filter):
    """Our warnings and everyone's errors; library notices stay in the file."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == _OURS or record.name.startswith(_OURS + ".")
        return record.levelno >= (logging.WARNING if ours else logging.ERROR)


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
    console.setFormatter(logging.Formatter(FORMAT))
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
    # chatty at INFO even in the file: connection pools and migrations
    for name in ("urllib3", "alembic", "numexpr"):
        logging.getLogger(name).setLevel(logging.WARNING)


def to_file(path: Path) -> Path:
    """Also append records at INFO and above to ``path`` (created on the first record)."""
    handler = _LazyFile(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    _replace(handler, "file")
    return path
