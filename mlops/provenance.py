"""provenance: which version of a partition each stage's output was made from.

A partition's current version is the content hash (DVC's md5) that ``ingest`` recorded
for its raw file in ``state/ingest.json``. That manifest keeps every earlier version of
each partition too (``history``), so an old prediction still traces to the exact bytes
it came from, and DVC's cache still holds them.

Each stage carries the hash forward: the validated and feature files hold it in their
Parquet metadata (``mlops.raw_md5``), the prediction sidecar and the drift summary as
``input_md5``. Before a stage uses an input it checks that hash against the current one
(``require``), so an output made from an earlier version of the data is refused, naming
the stage to re-run, instead of being used as if it were current.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import io

if TYPE_CHECKING:
    import pyarrow as pa

    from mlops.config import Settings

MANIFEST = "ingest.json"
META_KEY = b"mlops.raw_md5"
ARCHIVE = "archive/predictions"
MANIFEST_FIX = (
    "Restore it from a backup, or remove it and re-run `mlops ingest` for every "
    "partition (the raw files are re-hashed; earlier versions are then forgotten)."
)


class Stale(ValueError):
    """An input was made from another version of its partition than the current one."""


def manifest_path(st: Settings) -> Path:
    """``<data_root>/state/ingest.json``."""
    return st.state_dir / MANIFEST


def redo_features(partition: str) -> str:
    """What to re-run when a feature file is stale: validate, then materialize."""
    return (
        f"`mlops validate --partitions {partition}` and then "
        f"`mlops materialize --partitions {partition}`"
    )


def manifest(st: Settings) -> dict[str, Any]:
    """The ingest manifest: partition -> current entry (empty when nothing was ingested)."""
    return dict(io.read_json(manifest_path(st), missing={}, fix=MANIFEST_FIX))


def current(st: Settings, partition: str, entries: Mapping[str, Any] | None = None) -> str | None:
    """The md5 of ``partition``'s current raw version, or None when it was never ingested."""
    entry = (manifest(st) if entries is None else entries).get(partition) or {}
    return entry.get("md5")


def versions(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Pure: every version of one manifest entry, oldest first, the current one last."""
    now = {k: v for k, v in entry.items() if k != "history"}
    return [*entry.get("history", []), now]


def updated(entries: Mapping[str, Any], partition: str, entry: Mapping[str, Any]) -> dict:
    """Pure: ``entries`` with ``entry`` as ``partition``'s current version.

    A changed hash moves the version it replaces into the entry's ``history`` (with the
    time it was replaced, ``until``); the same hash again keeps the time it was first
    ingested (``at``), so re-ingesting unchanged data writes the same manifest.
    """
    out = dict(entries)
    old = dict(entries.get(partition) or {})
    history = list(old.pop("history", []))
    if old.get("md5") and old["md5"] != entry.get("md5"):
        history.append({**old, "until": entry.get("at", "")})
    elif old.get("at"):
        entry = {**entry, "at": old["at"]}
    out[partition] = {**entry, **({"history": history} if history else {})}
    return out


def find(entries: Mapping[str, Any], md5: str) -> list[tuple[str, dict[str, Any]]]:
    """Pure: (partition, version) for every version, current or earlier, with ``md5``."""
    return [
        (pid, v) for pid, entry in entries.items() for v in versions(entry) if v.get("md5") == md5
    ]


def archive_dir(st: Settings) -> Path:
    """``<data_root>/archive/predictions``: every prediction file ever published.

    One file per partition, model version and input version:
    ``<partition>/<model>/v<version>/<input md5>.parquet`` beside its sidecar, so a
    rescore (another champion, re-ingested data) never loses what was answered before.
    """
    return st.data_root / ARCHIVE


def archive_file(st: Settings, partition: str, model: str, version: str, md5: str) -> Path:
    """Where the predictions of ``model`` v``version`` made from input ``md5`` are kept."""
    return archive_dir(st) / partition / model / f"v{version}" / f"{md5}.parquet"


def metadata(md5: str | None) -> dict[bytes, bytes]:
    """The Parquet schema metadata that says a file was made from raw version ``md5``."""
    return {META_KEY: md5.encode()} if md5 else {}


def stamp(table: pa.Table, md5: str | None) -> pa.Table:
    """``table`` with ``md5`` in its schema metadata (kept when written to Parquet)."""
    if not md5:
        return table
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata(md5)})


def made_from(source: Path | pa.Schema) -> str | None:
    """The raw md5 a Parquet file (or a table's schema) was made from; None if it has none."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(source) if isinstance(source, Path) else source
    value = (schema.metadata or {}).get(META_KEY)
    return value.decode() if value else None


def require(
    st: Settings,
    partition: str,
    found: str | None,
    stage: str,
    path: Path,
    redo: str,
    entries: Mapping[str, Any] | None = None,
) -> str | None:
    """Refuse ``path`` unless it was made from ``partition``'s current raw version.

    ``found`` is the md5 the file says it was made from; ``redo`` names what to re-run
    (for example ``mlops validate --partitions 2013-07 && mlops materialize ...``).
    Returns the current md5 (None for a partition that was never ingested, which is
    not checked: there is no version to compare with).
    """
    now = current(st, partition, entries)
    if now is None or found == now:
        return now
    made = f"version {found}" if found else "a version it does not record"
    raise Stale(
        f"{stage} {partition}: {path} was made from {made} of the raw partition, but the "
        f"current version is {now} (re-ingested since); re-run {redo}"
    )


def require_features(
    st: Settings,
    partition: str,
    path: Path,
    stage: str,
    entries: Mapping[str, Any] | None = None,
) -> str | None:
    """``require`` for a feature file (redo: validate, then materialize); its raw md5."""
    found = made_from(path)
    require(st, partition, found, stage, path, redo_features(partition), entries)
    return found
