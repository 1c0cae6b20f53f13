"""What the stages leave on disk about a partition, read back for lineage.

The raw partition's DVC hash (its pointer, else ``state/ingest.json``), the validation
result on record for it, and each prediction file's sidecar and columns, current or
archived.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops import io, partitions, provenance
from mlops.config import Settings
from mlops.registry import RegistryError


class LineageError(RegistryError):
    """The starting point of a lineage query cannot be found; the message says why."""


def relative(path: Path, st: Settings) -> str:
    """``path`` relative to the project root when inside it."""
    return str(path.relative_to(st.root)) if path.is_relative_to(st.root) else str(path)


def dvc_cache_file(st: Settings, md5: str) -> Path:
    """Where DVC keeps a file of this content hash: the cache of the raw data's repository.

    That repository may sit above the project (a project in ``examples/<name>/``), or be
    the data folder itself (a shared data root), and its cache may be moved by
    ``dvc cache dir``; DVC itself says where. Outside any DVC repository the path is
    the project's own ``.dvc/cache``, which then does not exist.
    """
    start = next((d for d in (st.raw_dir, st.data_root, st.root) if d.is_dir()), st.root)
    cache = _cache_dir(start.resolve()) or st.root / ".dvc" / "cache" / "files" / "md5"
    return cache / md5[:2] / md5[2:]


_CACHES: dict[Path, Path] = {}


def _cache_dir(start: Path) -> Path | None:
    """The content-addressed file cache of the DVC repository holding ``start``.

    Found once per folder (opening a repository costs about a second); a miss is not
    remembered, so a repository made later is found.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    if start not in _CACHES:
        try:
            repo = Repo(Repo.find_root(str(start)))
        except NotDvcRepoError:
            return None
        try:
            _CACHES[start] = Path(repo.cache.local.path)
        finally:
            repo.close()
    return _CACHES[start]


def current_md5(st: Settings, partition: str) -> str | None:
    """The content hash the raw partition has now: its DVC pointer, else the manifest."""
    from mlops.versioning import VersioningError, content_hash

    try:
        return content_hash(partitions.file(st.raw_dir, partition))
    except (VersioningError, KeyError, TypeError):
        manifest = provenance.manifest(st)
        return manifest.get(partition, {}).get("md5")


def validation_record(st: Settings, partition: str, md5: str | None) -> dict[str, Any]:
    """The validation result on record for a partition, and whether it covers ``md5``.

    The summary records the raw md5 it validated and the md5 of the validated copy it
    wrote; a copy changed since is not covered. (Older summaries have neither: their
    validated copy was a byte copy of the raw file, so its own md5 is the raw one.)
    """
    path = st.state_dir / "validation" / f"{partition}.json"
    out: dict[str, Any] = {"partition": partition, "record": relative(path, st)}
    if not path.is_file():
        quarantined = st.quarantine_dir / partition / "validation.json"
        if quarantined.is_file():
            q = io.read_json(quarantined)
            out.update(
                found=True,
                success=False,
                record=relative(quarantined, st),
                validated_at=q.get("validated_at"),
                message=q.get("message"),
            )
        else:
            out.update(found=False, success=None)
        return out
    s = io.read_json(path)
    validated = partitions.file(st.validated_dir, partition)
    now = io.md5(validated) if validated.is_file() else None
    checked = s.get("md5") or now
    changed = now is not None and s.get("validated_md5") not in (None, now)
    out.update(
        found=True,
        success=bool(s.get("success")),
        validated_at=s.get("validated_at"),
        suite=s.get("suite"),
        checkpoint=s.get("checkpoint"),
        statistics=s.get("statistics"),
        data_docs_page=s.get("data_docs_page"),
        validated_md5=checked,
        validated_copy_changed=changed,
        covers_trained_data=(
            None if (checked is None or md5 is None) else checked == md5 and not changed
        ),
    )
    return out


def prediction_record(path: Path) -> dict[str, Any]:
    """What a prediction file says about itself: its sidecar, else its own columns."""
    import pyarrow.parquet as pq

    if path.suffix == ".json":
        path = path.with_suffix(".parquet")
    if not path.is_file():
        raise LineageError(f"{path}: no such prediction file")
    side = path.with_suffix(".json")
    meta = io.read_json(side) if side.is_file() else {}
    try:
        cols = pq.read_table(path, columns=["model_name", "model_version"]).to_pandas()
    except (KeyError, ValueError) as exc:
        raise LineageError(
            f"{path}: not a prediction file of mlops (no model_name and "
            f"model_version columns: {exc})"
        ) from None
    pairs = sorted(
        {(str(a), str(b)) for a, b in zip(cols["model_name"], cols["model_version"], strict=True)}
    )
    problems = []
    if len(pairs) != 1:
        problems.append(f"rows come from {len(pairs)} model versions: {pairs}")
    if meta and pairs and (meta.get("model_name"), str(meta.get("model_version"))) != pairs[0]:
        problems.append(
            f"sidecar {side.name} names {meta.get('model_name')} "
            f"v{meta.get('model_version')} but the rows say {pairs[0][0]} "
            f"v{pairs[0][1]}"
        )
    if meta.get("md5") and meta["md5"] != io.md5(path):
        problems.append(
            f"sidecar {side.name} describes other bytes (md5 {meta['md5']}): the file was "
            "replaced without it (a score killed between the two?); re-run score"
        )
    name, version = pairs[0] if pairs else (meta.get("model_name"), meta.get("model_version"))
    return {
        "path": str(path),
        "partition": meta.get("partition", path.stem),
        "rows": len(cols),
        "model_name": name,
        "model_version": str(version),
        "run_id": meta.get("run_id"),
        "input_md5": meta.get("input_md5"),
        "md5": meta.get("md5"),
        "archived": meta.get("archived"),
        "sidecar": side.is_file(),
        "problems": problems,
    }


def prediction_files(st: Settings, archived: bool = False) -> list[dict[str, Any]]:
    """Every prediction file under the predictions folder, described.

    With ``archived``, every version kept in the archive instead (``provenance.archive_dir``:
    one per partition, model version and input version), oldest first.
    """
    folder = provenance.archive_dir(st) if archived else st.predictions_dir
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*/*/v*/*.parquet" if archived else "*.parquet"))
    if archived:
        files.sort(key=lambda p: p.stat().st_mtime)
    out = []
    for p in files:
        try:
            out.append(prediction_record(p))
        except LineageError:
            continue
    return out
