"""The label store: outcomes joined to a scored partition's predictions (``label``).

``<data_root>/labels/<partition>.parquet`` holds one row per labelled prediction: the
contract's entity keys, the target (as the contract types it) and ``known_at``, when the
outcome became known (null when the labels source does not say). Its sidecar
``<partition>.json`` records how many predictions are labelled and each batch that
arrived. Training reads the target from here for rows ingested without one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlops import partitions
from mlops.config import Settings
from mlops.contract import Contract

if TYPE_CHECKING:
    import pandas as pd

KNOWN_AT = "known_at"


def path(st: Settings, partition: str) -> Path:
    """The label store file of ``partition`` (refuses a malformed id)."""
    return partitions.file(st.labels_dir, partition)


def sidecar(st: Settings, partition: str) -> Path:
    """The JSON summary beside the label store file of ``partition``."""
    return path(st, partition).with_suffix(".json")


def read(st: Settings, contract: Contract, partition: str) -> pd.DataFrame | None:
    """The outcomes joined to ``partition`` so far: keys and target; None when none arrived."""
    import pandas as pd

    p = path(st, partition)
    if not p.is_file():
        return None
    return pd.read_parquet(p, columns=[*contract.entity_keys, contract.target])
