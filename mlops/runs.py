"""runs: where MLflow runs start, the ones a killed stage left open, and what a rerun reuses.

Every run the project starts goes through :func:`start` (MLflow's fluent API) or
:func:`create` (the client), which tag it with the Airflow task instance it runs in
(:func:`airflow_tags`): DAG, DAG run, task, try and a link to the task in the Airflow UI.

A stage killed with SIGKILL (out of memory, a lost worker) cannot end its MLflow run: the
run stays RUNNING and a model it was uploading stays PENDING for ever, and whatever
counts runs counts it. Each stage that logs runs closes them the next time it starts,
inside its exclusive lock (``io.exclusive``), which guarantees that no live process of
that stage and key owns them any more (:func:`close_interrupted`).

The same input gives back the same run or version instead of another: ``monitor`` finds
its run by partition, model version and input md5 (:func:`find_run`), ``train`` its
version by the fingerprint of its data, params and code (:func:`find_version`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mlops import io, stages, tags

if TYPE_CHECKING:
    from mlflow import ActiveRun, MlflowClient

    from mlops.config import Params, Settings
    from mlops.registry import Registry

log = logging.getLogger(__name__)

# What Airflow's task runner exports into the task's process before it runs the task
# (``context_to_airflow_vars``): these four, and the logical date, owner and e-mail; not
# a mapped task's index (``airflow_map_index``).
AIRFLOW_ENV = {
    "AIRFLOW_CTX_DAG_ID": tags.AIRFLOW_DAG_ID,
    "AIRFLOW_CTX_DAG_RUN_ID": tags.AIRFLOW_DAG_RUN_ID,
    "AIRFLOW_CTX_TASK_ID": tags.AIRFLOW_TASK_ID,
    "AIRFLOW_CTX_TRY_NUMBER": tags.AIRFLOW_TRY_NUMBER,
}
BASE_URL_ENV = "AIRFLOW__API__BASE_URL"


# --------------------------------------------------------------------------- starting runs
def airflow_tags(
    env: Mapping[str, str], base_url: str | None, map_index: int | None = None
) -> dict[str, str]:
    """Pure: the run tags naming the Airflow task instance of a process environment ``env``.

    Empty outside Airflow. ``map_index`` (0 and up) is a mapped task's instance, which
    the environment does not name. The link is the task instance's page, as Airflow's
    own ``log_url`` builds it, when ``base_url`` is known and the DAG, run and task are.
    """
    found = {tag: env[var] for var, tag in AIRFLOW_ENV.items() if env.get(var)}
    if not found:
        return {}
    mapped = map_index is not None and map_index >= 0
    if mapped:
        found[tags.AIRFLOW_MAP_INDEX] = str(map_index)
    dag, run, task = (
        found.get(t) for t in (tags.AIRFLOW_DAG_ID, tags.AIRFLOW_DAG_RUN_ID, tags.AIRFLOW_TASK_ID)
    )
    if base_url and base_url.strip() and dag and run and task:
        attempt = found.get(tags.AIRFLOW_TRY_NUMBER)
        found[tags.AIRFLOW_URL] = (
            f"{base_url.strip().rstrip('/')}/dags/{quote(dag, safe='')}/runs/"
            f"{quote(run, safe='')}/tasks/{quote(task, safe='')}"
            + (f"/mapped/{map_index}" if mapped else "")
            + (f"?try_number={quote(attempt, safe='')}" if attempt else "")
        )
    return found


def airflow_map_index() -> int | None:
    """The running Airflow task instance's map index, when Airflow is loaded and it is one.

    Read from the task's context, never by importing Airflow: outside a task there is
    none, and the import alone would cost seconds.
    """
    sdk = sys.modules.get("airflow.sdk")
    if sdk is None:
        return None
    try:
        index = getattr(sdk.get_current_context().get("ti"), "map_index", None)
    except Exception:  # noqa: BLE001 - not in a task, or an SDK without it
        return None
    return index if isinstance(index, int) else None


def airflow_base_url(env: Mapping[str, str]) -> str | None:
    """Airflow's ``[api] base_url``, or None when it is not set.

    From Airflow's configuration when Airflow is loaded already (a task process), else
    from ``AIRFLOW__API__BASE_URL``. Airflow is never imported here: outside a task that
    would cost seconds for nothing.
    """
    loaded = sys.modules.get("airflow.sdk.configuration")
    if loaded is not None:
        try:
            value = loaded.conf.get("api", "base_url", fallback=None)
        except Exception as exc:  # noqa: BLE001 - a link is not worth failing the run
            log.info("Airflow's [api] base_url could not be read: %s", exc)
            value = None
        if value:
            return str(value)
    return env.get(BASE_URL_ENV) or None


def context_tags() -> dict[str, str]:
    """The Airflow tags of this process (empty outside an Airflow task)."""
    env = dict(os.environ)
    if not any(env.get(var) for var in AIRFLOW_ENV):
        return {}
    return airflow_tags(env, airflow_base_url(env), airflow_map_index())


@contextmanager
def start(
    exp_id: str, name: str, run_tags: Mapping[str, str], run_id: str | None = None
) -> Iterator[ActiveRun]:
    """``mlflow.start_run`` for a new run with ``run_tags``, or resuming ``run_id``.

    Tagged as it starts with the Airflow task instance (:func:`context_tags`); a run
    resumed by a rerun is tagged with the task instance that resumed it.
    """
    import mlflow

    where = context_tags()
    if run_id is None:
        with mlflow.start_run(
            experiment_id=exp_id, run_name=name, tags={**where, **run_tags}
        ) as active:
            yield active
        return
    with mlflow.start_run(run_id=run_id) as active:
        if where:
            mlflow.set_tags(where)
        yield active


def create(client: MlflowClient, exp_id: str, name: str, run_tags: Mapping[str, str]) -> Any:
    """``MlflowClient.create_run`` with ``run_tags`` and the Airflow task instance's tags."""
    return client.create_run(exp_id, run_name=name, tags={**context_tags(), **run_tags})


# --------------------------------------------------------------------------- interrupted runs


def _filter(stage: str, where: Mapping[str, str], status: str) -> str:
    return " and ".join(
        [
            f"attributes.status = '{status}'",
            tags.search(tags.STAGE, stage),
            *(tags.search(k, v) for k, v in where.items()),
        ]
    )


def close_interrupted(
    reg: Registry, exp_id: str, stage: str, where: Mapping[str, str] | None = None
) -> list[str]:
    """Close the runs of ``stage`` left RUNNING (with tags ``where``); their ids.

    Call it only inside the stage's exclusive lock: then no live process owns such a run.
    Each is tagged ``mlops.interrupted`` with why, its PENDING logged models are marked
    FAILED, and it ends KILLED, last, so a kill during the cleanup leaves it to the next.
    """
    from mlflow.entities import LoggedModelStatus

    c = reg.client
    found = reg.retry(
        lambda: c.search_runs([exp_id], _filter(stage, where or {}, "RUNNING"), max_results=1000),
        f"find interrupted {stage} runs",
    )
    at = datetime.now(UTC).isoformat(timespec="seconds")
    why = (
        f"found RUNNING when `{stage}` started again at {at}, with no live process of it: "
        "the process that ran it was killed or died before it could end the run"
    )
    closed = []
    for r in found:
        rid = r.info.run_id

        def close(rid: str = rid) -> None:
            c.set_tag(rid, tags.INTERRUPTED, "true")
            c.set_tag(rid, tags.INTERRUPTED_WHY, why)
            for m in c.search_logged_models([exp_id], filter_string=f"source_run_id = '{rid}'"):
                if m.status == LoggedModelStatus.PENDING:
                    c.finalize_logged_model(m.model_id, LoggedModelStatus.FAILED)
            c.set_terminated(rid, "KILLED")

        reg.retry(close, f"close interrupted {stage} run {rid}")
        closed.append(rid)
    if closed:
        log.warning(
            "%s: closed %d run(s) an interrupted %s left RUNNING, as KILLED: %s",
            stage,
            len(closed),
            stage,
            ", ".join(closed),
        )
    return closed


def find_run(reg: Registry, exp_id: str, stage: str, where: Mapping[str, str]) -> str | None:
    """The first finished run of ``stage`` whose tags hold ``where``, or None."""
    found = reg.retry(
        lambda: reg.client.search_runs(
            [exp_id], _filter(stage, where, "FINISHED"), order_by=["attributes.start_time ASC"]
        ),
        f"find the {stage} run of {dict(where)}",
    )
    return str(found[0].info.run_id) if found else None


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """Pure: a hash of ``inputs`` (JSON-able), the same for the same values in any order."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def find_version(reg: Registry, model: str, fp: str) -> Any:
    """The first version of ``model`` tagged with fingerprint ``fp``, or None."""
    found = reg.retry(
        lambda: reg.client.search_model_versions(
            f"name = '{model}' and {tags.search(tags.FINGERPRINT, fp)}"
        ),
        f"find the version of {model} with fingerprint {fp[:12]}",
    )
    return min(found, key=lambda mv: int(mv.version)) if found else None


def trained_before(
    reg: Registry, model: str, fp: str, summary: str
) -> tuple[Any, dict[str, Any]] | None:
    """The version of ``model`` with fingerprint ``fp`` and its run's ``summary`` JSON, or None.

    A version whose summary cannot be read is not reused: the caller trains again.
    """
    import mlflow

    from mlops.registry import RegistryError

    mv = find_version(reg, model, fp)
    if mv is None:
        return None
    try:
        saved = reg.retry(
            lambda: mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/{summary}"),
            f"read {summary} of {model} v{mv.version}",
        )
    except RegistryError as exc:
        log.warning("train: v%s has the same inputs but no %s (%s)", mv.version, summary, exc)
        return None
    return mv, dict(saved)


# What decides a fit besides the data: the params keys dvc.yaml's train stage lists; the
# libraries that fit and store the models.
FIT_PARAMS = stages.PARAMS["train"]
FIT_LIBRARIES = ["xgboost", "scikit-learn", "skops", "numpy", "pandas", "pyarrow"]


def code_identity() -> dict[str, str]:
    """The md5 of each mlops module ``train`` runs, and the versions of ``FIT_LIBRARIES``.

    The package's own files, not the project's git revision: a commit of data pointers
    changes no fit, and an uncommitted edit of the package does.
    """
    # How train is called and how its versions are described, not how it fits: a
    # rerun after an edit of those gives the same version back (and rewrites its text).
    skip = {"mlops/__main__.py", "mlops/cli.py", "mlops/describe.py", "mlops/describe_render.py"}
    root = stages.PACKAGE.parent
    files = {m: io.md5(root / m) for m in stages.stage_modules("train") if m not in skip}
    return {**files, **{p: importlib.metadata.version(p) for p in FIT_LIBRARIES}}


def _param(params: Params, key: str) -> Any:
    value: Any = params
    for part in key.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def training_inputs(
    params: Params, data: Mapping[str, Mapping[str, str | None]], code: Mapping[str, str]
) -> dict[str, Any] | None:
    """Pure: what a version is trained from (data, params, code), or None when unknown.

    ``data`` holds, per partition of the window, the md5 of its raw version and of the
    validated and feature files the fit reads. A partition never ingested or a file
    missing (None, "unknown") leaves nothing to recognise the data by.
    """
    hashes = [h for files in data.values() for h in files.values()]
    if not data or any(h in (None, "unknown") for h in hashes):
        return None
    config = {key: _param(params, key) for key in FIT_PARAMS}
    return {"data": {p: dict(f) for p, f in data.items()}, "params": config, "code": dict(code)}


def training_fingerprint(params: Params, st: Settings, raw_md5: Mapping[str, str]) -> str | None:
    """The fingerprint of training ``params`` on the current files with this code, or None."""
    from mlops import features, outcomes, partitions

    data: dict[str, dict[str, str | None]] = {}
    for pid in params.train.partitions:
        files = {
            "validated": partitions.file(st.validated_dir, pid),
            "features": partitions.file(features.source_dir(params, st), pid),
        }
        data[pid] = {"raw": raw_md5.get(pid)}
        data[pid].update({k: io.md5(f) if f.is_file() else None for k, f in files.items()})
        labels = outcomes.path(st, pid)
        if labels.is_file():  # outcomes joined later change the training set
            data[pid]["labels"] = io.md5(labels)
    inputs = training_inputs(params, data, code_identity())
    return None if inputs is None else fingerprint(inputs)
