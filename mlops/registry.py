"""The MLflow tracking store and model registry: clients, aliases, loading by version.

Aliases only (``champion``, ``challenger``), never the deprecated stages. Loading goes
through the native flavour (XGBoost's own format, scikit-learn via skops), so loading
a model runs no arbitrary code.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mlops import io, models, tags, thresholds
from mlops.config import Settings
from mlops.contract import Contract

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

CHAMPION = "champion"
CHALLENGER = "challenger"
LOCK_TIMEOUT_S = 120.0
log = logging.getLogger(__name__)
T = TypeVar("T")


class RegistryError(RuntimeError):
    """A model, version or alias is not what the caller expects; the message says which."""


@contextmanager
def lock(st: Settings, model: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise the writes of one model's aliases, decisions and descriptions.

    A file lock under ``<data_root>/state``, shared by every process that writes them
    (CLI, DAG tasks). Re-entrant within a thread; other threads and processes wait up
    to ``timeout_s``, then get a RegistryError naming the holder.
    """
    path = st.state_dir / f"registry-{model}.lock"

    def busy(holder: str) -> RegistryError:
        return RegistryError(
            f"{path}: another write of {model!r}'s aliases, decisions or descriptions "
            f"(process {holder}) has held this lock for over {timeout_s:.0f}s; retry when it "
            f"finishes"
        )

    with io.file_lock(path, wait=timeout_s, busy=busy):
        yield


def sqlite_path(uri: str) -> Path | None:
    """Pure: the database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


@contextmanager
def _opening(db: Path | None) -> Iterator[None]:
    """Hold ``<db>.lock`` while the store opens; a folder this user cannot write: no lock."""
    lock = None if db is None else db.with_name(db.name + ".lock")
    if lock is not None:
        try:
            lock.touch()
        except OSError:
            lock = None  # a reader, or no folder: it cannot create the tables either
    with io.file_lock(lock) if lock else nullcontext():
        yield


class Registry:
    """One MLflow client for a stage, on the configured tracking URI.

    Open it once per stage (``open``) and pass it on. Opening points MLflow's fluent API
    (``mlflow.start_run``, ``register_model``, artifact downloads) at the same URI, once.
    """

    def __init__(self, st: Settings) -> None:
        """Open the client on ``st.tracking_uri``."""
        import mlflow
        from mlflow import MlflowClient

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # MLflow's own HTTP retries (7 by default, minutes per request) would multiply
        # with ours; keep them short and let ``retry`` do the back-off.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
        # set_tracking_uri exports MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI, which
        # settings() reads as configuration; keep the environment as the user set it.
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(st.tracking_uri)
        mlflow.set_registry_uri(st.tracking_uri)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self.st = st
        # Opening a new SQLite store creates its tables and runs MLflow's migrations, which
        # two processes opening it at once would run over each other (`mlops run`'s worker,
        # parallel DAG tasks on a fresh project): one opens it at a time.
        where = sqlite_path(st.tracking_uri)
        with _opening(where):
            self.client = MlflowClient(tracking_uri=st.tracking_uri, registry_uri=st.tracking_uri)
            if where:
                self.client._get_registry_client()  # the registry's store, on the same file

    def retry(self, fn: Callable[[], T], what: str) -> T:
        """Call ``fn`` with back-off on connection-type errors, then fail clearly.

        Tries ``Settings.retry_attempts`` times, waiting ``retry_delay_s``, doubled after
        each try. MLflow's HTTP client also retries each request
        (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``). The final
        error names the operation and the number of tries, with credentials masked.
        """
        from mlflow.exceptions import MlflowException

        attempts = self.st.retry_attempts
        try:
            return io.retry(fn, _transient, attempts=attempts, delay=self.st.retry_delay_s)
        except (MlflowException, ConnectionError, OSError) as exc:
            detail = exc.message if isinstance(exc, MlflowException) else str(exc)
            tries = attempts if _transient(exc) and attempts > 1 else None
            after = f" after {tries} tries with back-off" if tries else ""
            raise RegistryError(f"MLflow {what} failed{after}: {io.redact(detail)}") from exc

    def register(self, model_uri: str, name: str, tags: dict[str, str]) -> Any:
        """Register ``model_uri`` as a new version of ``name`` with its tags, with back-off.

        MLflow prints its own "Successfully registered" notices on stderr; they go to the
        log instead, so the stage's summary line stands alone.
        """
        import contextlib
        import io as _io

        import mlflow

        def call() -> Any:
            notices = _io.StringIO()
            with contextlib.redirect_stderr(notices):
                mv = mlflow.register_model(model_uri, name, await_registration_for=0, tags=tags)
            log.info("%s", notices.getvalue().strip())
            return mv

        return self.retry(call, "register model")

    def experiment_id(self, name: str) -> str:
        """Create the experiment on first use, with artifacts under the project."""
        c = self.client
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        location = None
        uri = self.st.tracking_uri
        if uri.startswith(("sqlite:", "postgresql", "mysql")) or "://" not in uri:
            self.st.artifacts_dir.mkdir(parents=True, exist_ok=True)
            location = self.st.artifacts_dir.as_uri()
        try:
            return str(c.create_experiment(name, artifact_location=location))
        except Exception:  # a concurrent creator won the race
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)

    def version_by_alias(self, model: str, alias: str) -> Any:
        """The model version holding ``alias``, or None when the alias (or model) is unset."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(model, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or (
                "not found" in str(exc).lower()
            ):
                return None
            raise

    def alias_version(self, model: str, alias: str) -> str | None:
        """The version number holding ``alias``, or None."""
        mv = self.version_by_alias(model, alias)
        return None if mv is None else str(mv.version)

    def get_version(self, model: str, version: str | int) -> Any:
        """One model version; RegistryError naming the model or version when missing."""
        from mlflow.exceptions import MlflowException

        c = self.client
        try:
            return c.get_model_version(model, str(version))
        except MlflowException as exc:
            try:
                c.get_registered_model(model)
            except MlflowException:
                raise RegistryError(f"model {model!r} is not registered") from None
            raise RegistryError(f"model {model!r} has no version {version}") from exc

    def require_model(self, model: str) -> None:
        """Raise a RegistryError naming the registered models when ``model`` is not one."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(model)
        except MlflowException:
            names = sorted(m.name for m in self.client.search_registered_models(max_results=100))
            known = f"registered models: {', '.join(names)}" if names else "no model is registered"
            raise RegistryError(f"model {model!r} is not registered ({known})") from None

    def resolve_version(self, model: str, version: str | int) -> Any:
        """The model version, or a RegistryError that says exactly what is wrong.

        Accepts ``3`` or ``v3``. Tells apart an unknown model, an unknown version and a
        version number that exists only under another registered model.
        """
        from mlflow.exceptions import MlflowException

        c = self.client
        v = str(version).strip()
        v = v[1:] if v[:1] in ("v", "V") else v
        if not v.isdigit():
            raise RegistryError(f"model version {version!r} is not a version number (e.g. 3 or v3)")
        self.require_model(model)
        try:
            return c.get_model_version(model, v)
        except MlflowException:
            pass
        mine = sorted(int(mv.version) for mv in c.search_model_versions(f"name = '{model}'"))
        others = sorted(
            {mv.name for mv in c.search_model_versions(f"version_number = {v}") if mv.name != model}
        )
        have = f"its versions are {_ranges(mine)}" if mine else "it has no versions"
        hint = (
            f"; version {v} belongs to {', '.join(map(repr, others))}, not {model!r}"
            if others
            else ""
        )
        raise RegistryError(f"model {model!r} has no version {v} ({have}){hint}")

    def load(self, model: str, version: str | int) -> Loaded:
        """Load one exact version through its native flavour, with its decision threshold.

        A classifier's threshold is its version's ``mlops.threshold`` tag; a version
        trained before thresholds were chosen has none and uses 0.5
        (``thresholds.DEFAULT_THRESHOLD``), as scoring did then. Regression has none.
        """
        import mlflow

        mv = self.get_version(model, version)
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
        cut = (
            version_threshold(mv.tags, model, str(mv.version))
            if meta["task"] == "classification"
            else None
        )
        return Loaded(
            m, model, str(mv.version), mv.run_id, flavor, meta["categories"], meta["features"], cut
        )

    def reference(self, model: str, version: str | int) -> pd.DataFrame:
        """The drift reference a version was trained with: its run's ``reference.parquet``."""
        import mlflow
        import pandas as pd

        mv = self.get_version(model, version)
        path = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path="reference.parquet"
        )
        return pd.read_parquet(path)


def version_threshold(version_tags: dict[str, str], model: str, version: str) -> float:
    """A classifier version's decision threshold, from its ``mlops.threshold`` tag.

    A version trained before thresholds were chosen has no tag: 0.5, what scoring used.
    """
    raw = version_tags.get(tags.THRESHOLD)
    if raw is None:
        return thresholds.DEFAULT_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise RegistryError(
            f"{model} v{version}: tag {tags.THRESHOLD}={raw!r} is not a decision threshold "
            f"in [0, 1]; set it to one in MLflow, or delete it to use 0.5"
        )
    return value


def connect(st: Settings | Registry) -> Registry:
    """The stage's registry handle: ``st`` itself when it already is one."""
    return st if isinstance(st, Registry) else Registry(st)


def _transient(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        text = str(exc).lower()
        return exc.error_code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR") or any(
            w in text for w in ("connection", "max retries", "timeout")
        )
    return isinstance(exc, ConnectionError | OSError)


def _ranges(nums: Sequence[int]) -> str:
    out: list[str] = []
    for n in nums:
        if out and "-" not in out[-1] and int(out[-1]) == n - 1:
            out[-1] = f"{out[-1]}-{n}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == n - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


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
    threshold: float | None = None
    """Classification: a row is positive when its probability is at least this."""

    def predict(self, df: pd.DataFrame, contract: Contract) -> np.ndarray:
        """Probability of the positive class (classification) or value for ``df``'s rows."""
        x = models.align_categories(models.matrix(df, contract), self.categories)
        kind = "xgboost" if self.flavor == "xgboost" else "sklearn"
        return models.predict(self.model, models.fit_input(x, kind), contract.task)


def _refuse_unsafe(flavors: dict[str, Any], flavor: str, model: str, version: str) -> None:
    """Refuse a model whose loading could run code: only XGBoost UBJ/JSON or skops."""
    conf = flavors.get(flavor, {})
    if flavor == "xgboost":
        if not str(conf.get("data", "")).endswith((".ubj", ".json")):
            raise RegistryError(
                f"{model} v{version}: XGBoost model stored as "
                f"{conf.get('data')!r}; only UBJ/JSON load without running code"
            )
        return
    if "sklearn" not in flavors or conf.get("serialization_format") != "skops":
        raise RegistryError(
            f"{model} v{version}: not a skops model "
            f"({conf.get('serialization_format')!r}); refusing to unpickle"
        )
    extra = set(conf.get("skops_trusted_types") or []) - set(models.SKOPS_TRUSTED)
    if extra:
        raise RegistryError(f"{model} v{version}: trusts unknown types {sorted(extra)}")


def git_revision(root: Path) -> str:
    """The code revision, marked ``-dirty`` when the work tree has changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
