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
