"""Where things live and how the services are reached: the environment, read once.

``ENV`` lists every variable mlops reads with its default and meaning (the README's table
is checked against it); ``settings()`` is the one reader. Nothing happens on import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from pydantic import Field, ValidationError

from mlops.contract import Strict

__all__ = [
    "ENV",
    "ConfigError",
    "Settings",
    "format_error",
    "params_path",
    "secrets",
    "settings",
]


class ConfigError(ValueError):
    """A configuration file or setting is missing or invalid; the message names the key."""


def format_error(path: Path, err: ValidationError) -> str:
    """The pydantic errors, one line per key, under the file name."""
    lines = [f"{path}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


ENV_PARAMS = "MLOPS_PARAMS"
ENV_ALLOW_OUTSIDE = "MLOPS_ALLOW_PATHS_OUTSIDE_ROOT"

# Every environment variable mlops reads, with its default and what it sets: the one
# place they are read (``settings()``) and the README's table (a test keeps them equal).
ENV: dict[str, tuple[str, str]] = {
    ENV_PARAMS: ("./params.yaml", "the project's params.yaml; its folder is the project root"),
    "MLOPS_PROJECT_ROOT": ("the folder of params.yaml", "the project root"),
    "MLOPS_DATA_ROOT": ("data", "the data folder (partitions, features, predictions, state)"),
    ENV_ALLOW_OUTSIDE: ("0", "1 lets the data, Feast repo and source lie outside the root"),
    "MLFLOW_TRACKING_URI": ("sqlite:///<root>/mlflow.db", "MLflow tracking and registry"),
    "MLOPS_FEAST_REPO": ("feature_repo", "the Feast repository"),
    "MLOPS_FEAST_ONLINE": ("sqlite", "online store: sqlite, sqlite:///abs.db or redis://h:p/db"),
    "MLOPS_RETRY_ATTEMPTS": ("4", "tries of a call to MLflow or the online store"),
    "MLOPS_RETRY_DELAY_S": ("1", "first wait between tries, doubled after each"),
    "MLOPS_DVC_LOCK_WAIT_S": ("60", "how long to wait for DVC's repository lock"),
    "MLOPS_DVC_REMOTE": ("unset", "the shared DVC remote of the production profile"),
    "MLOPS_ACTOR": ("MLFLOW_TRACKING_USERNAME, else the login", "who acts, in the audit"),
    "MLOPS_APPROVAL_POKE_SECONDS": ("60", "seconds between checks of a pending approval"),
    "MLOPS_WORKER_NAME": ("the host name", "name a Celery worker reports (set by the launcher)"),
    "MLOPS_SERVE_API_KEY": ("unset", "the key `mlops serve` requires; needed off loopback"),
    "MLOPS_SERVE_HOST": ("unset", "set by `mlops serve` for its workers"),
    "MLOPS_SERVE_WORKERS": ("unset", "set by `mlops serve` for its workers"),
    "MLOPS_PUSHGATEWAY_URL": ("unset", "Prometheus Pushgateway for pipeline metrics; unset: none"),
    "MLOPS_FAULT": ("unset", "tests only: a fault point where the process kills itself"),
}


# A variable whose name ends so holds a secret (MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN,
# AWS_SECRET_ACCESS_KEY, AIRFLOW__CORE__FERNET_KEY, ...); one naming a file (..._FILE) does not.
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIALS?|(^|_)KEY)$")
# The password of a URL (``user:password@`` or ``?password=``) in any variable:
# MLFLOW_TRACKING_URI, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, AIRFLOW__CELERY__BROKER_URL,
# MLOPS_FEAST_ONLINE, a Feast connection string ``host:port,password=...``.
_IN_VALUE = (re.compile(r"://[^/@\s:]*:([^/@\s]+)@"), re.compile(r"(?i)password=([^&,\s]+)"))
# Shorter values would mask ordinary words in every message.
MIN_SECRET_CHARS = 4


def secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """Every secret the environment holds, longest first, for ``io.redact`` to hide.

    The value of each variable named like a secret, and the password in any URL or
    connection string (as written and URL-decoded), so that a secret quoted without its
    URL (an error message, a traceback) is hidden too.
    """
    env = os.environ if env is None else env
    found: set[str] = set()
    for name, value in env.items():
        if _SECRET_NAME.search(name.upper()):
            found.add(value)
        for pattern in _IN_VALUE:
            found.update(pattern.findall(value))
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if len(s.strip()) >= MIN_SECRET_CHARS), key=len, reverse=True)


class Settings(Strict):
    """Where things live and how the services are reached.

    Resolved from the project root and the environment (see ``ENV``) by ``settings()``,
    never on import.
    """

    root: Path
    params_path: Path
    data_root: Path
    tracking_uri: str
    feast_repo: Path
    gx_root: Path
    online_store: str
    retry_attempts: int = Field(ge=1)
    retry_delay_s: float = Field(ge=0)
    dvc_lock_wait_s: float = Field(ge=0)
    dvc_remote: str | None
    actor: str | None
    allow_outside: bool = False
    approval_poke_s: float = Field(gt=0)

    @property
    def raw_dir(self) -> Path:
        """Raw partitions as ingested (DVC-tracked)."""
        return self.data_root / "raw"

    @property
    def validated_dir(self) -> Path:
        """Partitions that passed validation."""
        return self.data_root / "validated"

    @property
    def quarantine_dir(self) -> Path:
        """Partitions that failed validation, each beside its report."""
        return self.data_root / "quarantine"

    @property
    def features_dir(self) -> Path:
        """Feast's offline feature files."""
        return self.data_root / "features"

    @property
    def predictions_dir(self) -> Path:
        """Batch predictions, one file per partition."""
        return self.data_root / "predictions"

    @property
    def labels_dir(self) -> Path:
        """Outcomes joined to scored partitions (``label``), one file per partition."""
        return self.data_root / "labels"

    @property
    def performance_dir(self) -> Path:
        """Realised-performance reports of labelled partitions (``label``)."""
        return self.data_root / "performance"

    @property
    def served_dir(self) -> Path:
        """The prediction log of ``mlops serve``: ``<partition>/<file>.parquet``."""
        return self.data_root / "served"

    @property
    def reports_dir(self) -> Path:
        """Drift reports and model cards."""
        return self.data_root / "reports"

    @property
    def state_dir(self) -> Path:
        """Stage state, manifests and locks."""
        return self.data_root / "state"

    @property
    def artifacts_dir(self) -> Path:
        """MLflow artifacts of a local tracking store."""
        return self.root / "mlartifacts"


def params_path(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    default: str | os.PathLike[str] = "params.yaml",
) -> Path:
    """The params.yaml to use: ``path``, else ``MLOPS_PARAMS``, else ``default``."""
    return Path(path or (os.environ if env is None else env).get(ENV_PARAMS) or default)


def _inside(root: Path, value: str, key: str, allow_outside: bool) -> Path:
    p = Path(value)
    p = (p if p.is_absolute() else root / p).resolve()
    if not allow_outside and not p.is_relative_to(root.resolve()):
        raise ConfigError(
            f"{key}={value!r} resolves to {p}, outside the project root {root}; "
            f"set {ENV_ALLOW_OUTSIDE}=1 to allow it"
        )
    return p


def _get(env: Mapping[str, str], name: str) -> str:
    """The variable's value, else its default from ``ENV`` (the one place it is written)."""
    return env.get(name, ENV[name][0])


def _number(env: Mapping[str, str], name: str) -> float:
    value = env.get(name) or ENV[name][0]
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number") from None


def settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Resolve locations and service settings from the environment (``ENV``).

    The project root is the folder of ``params.yaml`` unless ``MLOPS_PROJECT_ROOT`` says
    otherwise.
    """
    env = os.environ if env is None else env
    pp = params_path(path, env).resolve()
    root = Path(env.get("MLOPS_PROJECT_ROOT") or pp.parent).resolve()
    outside = env.get(ENV_ALLOW_OUTSIDE) == "1"
    try:
        return Settings(
            root=root,
            params_path=pp,
            data_root=_inside(root, _get(env, "MLOPS_DATA_ROOT"), "MLOPS_DATA_ROOT", outside),
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}",
            feast_repo=_inside(root, _get(env, "MLOPS_FEAST_REPO"), "MLOPS_FEAST_REPO", outside),
            gx_root=root / "great_expectations",
            online_store=_get(env, "MLOPS_FEAST_ONLINE").strip() or ENV["MLOPS_FEAST_ONLINE"][0],
            retry_attempts=max(1, int(_number(env, "MLOPS_RETRY_ATTEMPTS"))),
            retry_delay_s=_number(env, "MLOPS_RETRY_DELAY_S"),
            dvc_lock_wait_s=max(0.0, _number(env, "MLOPS_DVC_LOCK_WAIT_S")),
            dvc_remote=env.get("MLOPS_DVC_REMOTE") or None,
            actor=env.get("MLOPS_ACTOR") or env.get("MLFLOW_TRACKING_USERNAME") or None,
            allow_outside=outside,
            approval_poke_s=_number(env, "MLOPS_APPROVAL_POKE_SECONDS"),
        )
    except ValidationError as exc:
        raise ConfigError(format_error(Path("environment"), exc)) from None
