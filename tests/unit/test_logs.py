"""logs: the console keeps to the stage summaries; details land in the log file."""

from __future__ import annotations

import logging
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
