"""Deterministic fault points, so tests can kill a stage at an exact step.

A stage calls ``point("score.chunk_written")`` at a step worth testing. When the
environment variable ``MLOPS_FAULT`` names that point, the process sends itself SIGKILL
there, as an out-of-memory killer or a lost worker would: no cleanup, no ``finally``.
A point may carry a detail, such as the file being written, and ``MLOPS_FAULT`` may then
name it too: ``io.before_rename:2013-W28.parquet`` kills only before that rename.

Points: ``io.before_rename`` (a temporary file is complete, not yet renamed into place),
``ingest.before_track`` (raw partitions written, not yet tracked by DVC),
``materialize.before_online`` (offline feature files written, online store not loaded),
``train.after_register`` (model version registered, ``state/train.json`` not written),
``train.model_pending`` (a candidate's run started and its model created PENDING, not
yet uploaded; carries the candidate name),
``score.chunk_written`` (a chunk of predictions written to the temporary file),
``monitor.run_started`` (a monitor run started, nothing logged yet; carries the partition),
``label.before_store`` (the new label store complete in its temporary file, not yet
renamed; carries the store file name),
``audit.after_intent`` (an alias move recorded as pending, the alias not yet moved) and
``audit.after_alias`` (the alias moved, its record still pending); both carry the alias,
so ``audit.after_alias:champion`` kills only at a champion move;
``audit.after_champion`` (a champion move recorded, the challenger that won not dropped).

Unset (always, outside tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "MLOPS_FAULT"


def point(name: str, detail: str | None = None) -> None:
    """Kill this process with SIGKILL if ``MLOPS_FAULT`` names this point."""
    wanted = os.environ.get(ENV)
    if wanted and (wanted == name or (detail is not None and wanted == f"{name}:{detail}")):
        os.kill(os.getpid(), signal.SIGKILL)
