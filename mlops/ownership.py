"""One data root, one owner: a data folder serves one model and one Feast project.

Raw, validated, feature, prediction and report files and the stage state are keyed by
partition only, so two models writing to one data folder overwrite each other's
predictions and ``state/train.json``, and the next ``evaluate`` or ``promote`` of one acts
on the other's version. The first stage run on a data root records its owner in
``state/owner.json``; a run whose params name another model or Feast project is refused
before it reads or writes anything. Several params files may share a root as long as
they name the same model and project.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops import io
from mlops.config import ConfigError, Params, Settings

OWNER = "owner.json"
KEYS = ("model_name", "project")
_ABSENT: Any = object()


def owner_path(st: Settings) -> Path:
    """Where the data root records its owner."""
    return st.state_dir / OWNER


def _mine(params: Params, st: Settings) -> dict[str, str]:
    return {
        "model_name": params.model_name,
        "project": params.materialize.project,
        "params": str(st.params_path),
    }


def _refuse(st: Settings, owner: dict[str, Any], mine: dict[str, str], where: str) -> None:
    raise ConfigError(
        f"data root {st.data_root} belongs to model {owner.get('model_name')!r} (Feast project "
        f"{owner.get('project')!r}, params {owner.get('params') or 'unknown'}; {where}), but "
        f"{mine['params']} is for model {mine['model_name']!r} (Feast project "
        f"{mine['project']!r}): two models on one data folder overwrite each other's "
        "predictions and state. Set MLOPS_DATA_ROOT to another folder for this model (or, if "
        f"the folder no longer serves {owner.get('model_name')!r}, remove {owner_path(st)})"
    )


def _legacy(st: Settings) -> dict[str, Any] | None:
    """The owner of a data root used before owners were recorded: the model it trained."""
    train = io.read_json(st.state_dir / "train.json", missing={})
    if not isinstance(train, dict) or not train.get("model_name"):
        return None
    return {"model_name": train["model_name"], "project": None, "params": None}


def _check(st: Settings, owner: Any, mine: dict[str, str], where: str) -> None:
    if not isinstance(owner, dict) or not all(isinstance(owner.get(k), str) for k in KEYS):
        raise io.DamagedState(
            f"{owner_path(st)}: damaged owner record (needs 'model_name' and 'project'). "
            f"Remove it to let the next stage record {mine['model_name']!r} as the owner"
        )
    if any(owner[k] != mine[k] for k in KEYS):
        _refuse(st, owner, mine, where)


def claim(params: Params, st: Settings) -> dict[str, Any]:
    """Record these params' model and project as the data root's owner, or refuse.

    Returns the owner record. Raises ``ConfigError`` (naming the data root, its owner,
    the owning params file and the fix) when another model or Feast project owns it.
    """
    path = owner_path(st)
    mine = _mine(params, st)
    fix = f"Remove it to let the next stage record {mine['model_name']!r} as the owner"
    owner = io.read_json(path, missing=_ABSENT, fix=fix)
    if owner is not _ABSENT:
        _check(st, owner, mine, f"recorded in {path}")
        return dict(owner)
    with io.file_lock(st.state_dir / "locks" / "owner.lock"):
        owner = io.read_json(path, missing=_ABSENT, fix=fix)  # another first run may have won
        if owner is not _ABSENT:
            _check(st, owner, mine, f"recorded in {path}")
            return dict(owner)
        legacy = _legacy(st)
        if legacy and legacy["model_name"] != mine["model_name"]:
            _refuse(st, legacy, mine, f"it trained there, see {st.state_dir / 'train.json'}")
        record = {**mine, "since": datetime.now(UTC).isoformat(timespec="seconds")}
        io.write_json(path, record)
        return record
