"""DVC versioning of data partitions: track, push, and read back content hashes."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import yaml

from mlops import io as _io

log = logging.getLogger(__name__)
ENV_LOCK_WAIT = "MLOPS_DVC_LOCK_WAIT_S"
ENV_REMOTE = "MLOPS_DVC_REMOTE"
SHARED_REMOTE = "shared"


class VersioningError(RuntimeError):
    """DVC could not track or push a file; the message says which and why."""


def _repo(root: Path):
    """The DVC repository holding ``root`` (the project may sit in a sub-folder of it)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(Repo.find_root(str(root)))
    except NotDvcRepoError as exc:
        raise VersioningError(
            f"{root}: not in a DVC repository; run `git init && dvc init` in the project, "
            f"or `python -m mlops.production dvc-init` for a shared data folder ({ENV_REMOTE})"
        ) from exc


def init_shared(data_root: Path, remote: str) -> Path:
    """Make ``data_root`` a DVC repository of its own pushing to ``remote``; return it.

    The repository has no git.
    For the production profile: the data lives on storage every worker mounts, and no
    worker has a git checkout of the project, so the data folder versions itself and
    pushes to a remote every worker reaches (a shared folder, or ``s3://...`` with the
    ``dvc[s3]`` extra). Idempotent: an existing repository keeps its cache and gets the
    remote set or updated.
    """
    from dvc.repo import Repo

    if not remote:
        raise VersioningError(f"{ENV_REMOTE} must name the DVC remote every worker reaches")
    data_root.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        repo = (
            Repo(str(data_root))
            if (data_root / ".dvc").is_dir()
            else Repo.init(str(data_root), no_scm=True)
        )
    try:
        with repo.config.edit() as conf:
            conf["remote"][SHARED_REMOTE] = {"url": remote}
            conf["core"]["remote"] = SHARED_REMOTE
    finally:
        repo.close()
    return data_root


def track(root: Path, paths: list[Path], push: bool, wait_s: float = 60.0) -> dict[str, str]:
    """``dvc add`` the files (and push them to the default remote); return path -> md5.

    DVC's repository lock is retried for up to ``wait_s`` seconds
    (``Settings.dvc_lock_wait_s``), then a clear error is raised: never a forced lock and
    never a corrupted cache.
    """
    from dvc.lock import LockError

    def add() -> None:
        repo = _repo(root)
        # DVC's "git add ..." hint names every file; the stage prints its own summary.
        repo.scm_context.quiet = True
        rel = [str(p.resolve()) for p in paths]
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                # relink=False: the file just written already holds the bytes DVC cached,
                # so linking it back from the cache (half of DVC's cost per file) is skipped.
                repo.add(rel, relink=False)
                if push:
                    pushed = repo.push(targets=[f"{r}.dvc" for r in rel])
                    log.info("dvc push: %s file(s) sent", pushed)
        finally:
            repo.close()

    try:
        _io.retry(
            add, lambda exc: isinstance(exc, LockError), wait_s=wait_s, delay=0.5, max_delay=5.0
        )
    except LockError as exc:
        raise VersioningError(
            f"{root}/.dvc/tmp/lock: DVC repository lock held by another process for over "
            f"{wait_s:.0f}s ({ENV_LOCK_WAIT}); the lock was not forced and the DVC cache is "
            "consistent; re-run when the other process finishes"
        ) from exc
    except VersioningError:
        raise
    except Exception as exc:
        raise VersioningError(f"dvc could not track {[str(p) for p in paths]}: {exc}") from exc
    return {str(p): content_hash(p) for p in paths}


def content_hash(path: Path) -> str:
    """The md5 DVC recorded for a tracked file (from its ``.dvc`` pointer)."""
    pointer = path.with_name(path.name + ".dvc")
    if not pointer.is_file():
        raise VersioningError(f"{pointer}: file is not tracked by DVC")
    meta = yaml.safe_load(pointer.read_text())
    return str(meta["outs"][0]["md5"])
