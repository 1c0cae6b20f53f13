"""runs: the MLflow runs a killed stage left open, and the runs and versions a rerun reuses.

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
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops import io, stages, tags

if TYPE_CHECKING:
    from mlops.config import Params, Settings
    from mlops.registry import Registry

log = logging.getLogger(__name__)


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
    skip = {"mlops/__main__.py", "mlops/cli.py"}  # how train is called, not how it fits
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
