"""Feast definitions, derived from the data contract in params.yaml.

The params file is $MLOPS_PARAMS, else the project's params.yaml beside this folder.
"""

import os
from pathlib import Path

from feast import Project

from mlops.config import load_params, settings
from mlops.materialize import definitions

_params_path = (
    os.environ.get("MLOPS_PARAMS") or Path(__file__).resolve().parent.parent / "params.yaml"
)
_params = load_params(_params_path)
_defs = definitions(_params, settings(_params_path))

# Must match `project` in feature_store.yaml; `feast apply` stops if they differ.
project = Project(name=_params.materialize.project)

# One entity per contract key (Feast allows one join key per entity).
globals().update({f"entity_{e.name}": e for e in _defs.entities})
source = _defs.source
feature_view = _defs.view
feature_service = _defs.service
