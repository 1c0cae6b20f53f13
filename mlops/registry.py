"""The MLflow tracking store and model registry: clients, aliases, loading by version.

Aliases only (``champion``, ``challenger``), never the deprecated stages. Loading goes
through the native flavour (XGBoost's own format, scikit-learn via skops), so loading
a model runs no arbitrary code.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mlops import io
from mlops.config import Settings

CHAMPION = "champion"
CHALLENGER = "challenger"
T = TypeVar("T")


class RegistryError(RuntimeError):
    """A model, version or alias is not what the caller expects; the message says which."""


def client(st: Settings):  # type: ignore[no-untyped-def]
    """An MlflowClient on the configured tracking URI (set explicitly, never on import)."""
    import mlflow
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow's own HTTP retries (7 by default, minutes per request) would multiply with
    # ours; keep them short and let ``retry`` do the back-off.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    # set_tracking_uri exports MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI, which settings()
    # reads as configuration; keep the environment as the user set it.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(st.tracking_uri)
    mlflow.set_registry_uri(st.tracking_uri)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    return MlflowClient(tracking_uri=st.tracking_uri, registry_uri=st.tracking_uri)


def retry(
    fn: Callable[[], T], what: str, attempts: int | None = None, first_delay: float | None = None
) -> T:
    """Call ``fn`` with exponential back-off on connection-type errors, then fail clearly.

    ``attempts`` and ``first_delay`` default to ``MLOPS_RETRY_ATTEMPTS`` (4) and
    ``MLOPS_RETRY_DELAY_S`` (1 s, doubled after each try). MLflow's HTTP client also
    retries each request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
    ``MLFLOW_HTTP_REQUEST_TIMEOUT``). The final error names the operation and the number
    of tries, with any credentials in URLs masked.
    """

    from mlflow.exceptions import MlflowException

    if attempts is None:
        attempts = max(1, int(os.environ.get("MLOPS_RETRY_ATTEMPTS", "4")))
    delay = first_delay if first_delay is not None else float(
        os.environ.get("MLOPS_RETRY_DELAY_S", "1"))

    def fail(detail: str, tries: int | None) -> RegistryError:
        detail = io.redact(detail)
        after = f" after {tries} tries with back-off" if tries and tries > 1 else ""
        return RegistryError(f"MLflow {what} failed{after}: {detail}")

    for i in range(attempts):
        try:
            return fn()
        except MlflowException as exc:
            transient = exc.error_code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR") or (
                "connection" in str(exc).lower() or "max retries" in str(exc).lower()
                or "timeout" in str(exc).lower()
            )
            if not transient or i == attempts - 1:
                raise fail(exc.message, i + 1 if transient else None) from exc
        except (ConnectionError, OSError) as exc:
            if i == attempts - 1:
                raise fail(str(exc), i + 1) from exc
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def experiment_id(st: Settings, name: str) -> str:
    """Create the experiment on first use, with artifacts under the project."""
    c = client(st)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    uri = st.tracking_uri
    if uri.startswith(("sqlite:", "postgresql", "mysql")) or "://" not in uri:
        st.artifacts_dir.mkdir(parents=True, exist_ok=True)
        location = st.artifacts_dir.as_uri()
    try:
        return str(c.create_experiment(name, artifact_location=location))
    except Exception:  # noqa: BLE001 - a concurrent creator won the race
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def version_by_alias(st: Settings, model: str, alias: str):  # type: ignore[no-untyped-def]
    """The model version holding ``alias``, or None when the alias (or model) is unset."""
    from mlflow.exceptions import MlflowException

    c = client(st)
    try:
        return c.get_model_version_by_alias(model, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or (
            "not found" in str(exc).lower()
        ):
            return None
        raise


def get_version(st: Settings, model: str, version: str | int):  # type: ignore[no-untyped-def]
    from mlflow.exceptions import MlflowException

    c = client(st)
    try:
        return c.get_model_version(model, str(version))
    except MlflowException as exc:
        try:
            c.get_registered_model(model)
        except MlflowException:
            raise RegistryError(f"model {model!r} is not registered") from None
        raise RegistryError(f"model {model!r} has no version {version}") from exc


@dataclass(frozen=True)
class Loaded:
    """A model ready to predict, with what it needs to prepare its input."""

    model: Any
    name: str
    version: str
    run_id: str
    flavor: str
    categories: dict[str, list[str]]
    features: list[str]


def load(st: Settings, model: str, version: str | int) -> Loaded:
    """Load one exact version through its native flavour."""
    import mlflow

    mv = get_version(st, model, version)
    client(st)
    uri = f"models:/{model}/{mv.version}"
    info = mlflow.models.get_model_info(uri)
    flavor = "xgboost" if "xgboost" in info.flavors else "sklearn"
    _refuse_unsafe(info.flavors, flavor, model, str(mv.version))
    if flavor == "xgboost":
        m = mlflow.xgboost.load_model(uri)
    else:
        m = mlflow.sklearn.load_model(uri)
    local = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="features.json")
    meta = json.loads(Path(local).read_text())
    return Loaded(m, model, str(mv.version), mv.run_id, flavor, meta["categories"],
                  meta["features"])


def _refuse_unsafe(flavors: dict[str, Any], flavor: str, model: str, version: str) -> None:
    """Refuse a model whose loading could run code: only XGBoost UBJ/JSON or skops."""
    from mlops.models import SKOPS_TRUSTED

    conf = flavors.get(flavor, {})
    if flavor == "xgboost":
        if not str(conf.get("data", "")).endswith((".ubj", ".json")):
            raise RegistryError(f"{model} v{version}: XGBoost model stored as "
                                f"{conf.get('data')!r}; only UBJ/JSON load without running code")
        return
    if "sklearn" not in flavors or conf.get("serialization_format") != "skops":
        raise RegistryError(f"{model} v{version}: not a skops model "
                            f"({conf.get('serialization_format')!r}); refusing to unpickle")
    extra = set(conf.get("skops_trusted_types") or []) - set(SKOPS_TRUSTED)
    if extra:
        raise RegistryError(f"{model} v{version}: trusts unknown types {sorted(extra)}")


def git_revision(root: Path) -> str:
    """The code revision, marked ``-dirty`` when the work tree has changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
