"""The one door every Airflow task goes through: params, settings, ownership, failing fast.

``_call`` loads ``params.yaml`` and the settings and runs one stage; errors that retrying
cannot fix (bad data, bad configuration, a missing model) become
``AirflowFailException``, so the task fails at once instead of retrying, and every error
leaves with its credentials masked. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import logging
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from mlops import io, logs, observe, ownership
from mlops.config import ConfigError, Params, Settings, load_params, params_path, settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class TaskError(RuntimeError):
    """An error a retry may fix, re-raised with its credentials masked (the type is named)."""


@contextmanager
def _fail_fast() -> Iterator[None]:
    """Turn errors that a retry cannot fix into AirflowFailException; mask credentials.

    Airflow logs the full traceback of what a task raises, every chained cause included,
    so the original error never leaves: its traceback is logged with credentials masked
    (``io.redact``) and a new exception with the masked message is raised ``from None``.
    Airflow's own exceptions (skip, reschedule, fail) pass through as they are.
    """
    from mlops.registry import RegistryError
    from mlops.source import SourceError
    from mlops.validate import ValidationFailed

    permanent = (
        ConfigError,
        SourceError,
        RegistryError,
        ValidationFailed,
        FileNotFoundError,
        KeyError,
        ValueError,
    )
    try:
        yield
    except Exception as exc:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        if isinstance(exc, AirflowException):
            raise
        log.error("%s", io.redact("".join(traceback.format_exception(exc)).rstrip()))
        message = io.redact(str(exc))
        if isinstance(exc, permanent):
            raise AirflowFailException(message) from None
        raise TaskError(f"{type(exc).__name__}: {message}") from None


def _call(
    fn: Callable[[Params, Settings], T],
    stage: str | None = None,
    partitions: Iterable[str] | None = None,
) -> T:
    """The one door of every task: load params and settings, run ``fn``, fail fast.

    With ``stage``, the run is measured and its metrics pushed (``mlops.observe``).
    """
    logs.for_task()
    with _fail_fast(), warnings.catch_warnings():
        # Loading a scikit-learn model, skops looks up each of its functions in every
        # loaded module; in a task process Airflow's modules answer every lookup with a
        # deprecation FutureWarning: over a thousand lines in each task log.
        warnings.filterwarnings("ignore", category=FutureWarning, module="skops")
        path = params_path()
        params, st = load_params(path), settings(path)
        logs.to_file(st.state_dir / "logs" / "mlops.log")
        ownership.claim(params, st)
        if stage is None:
            return fn(params, st)
        with observe.stage(params, st, stage, partitions):
            return fn(params, st)


def _skip(reason: str) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(reason)
