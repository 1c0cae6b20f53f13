"""A stage killed with SIGKILL at a chosen point leaves the previous good state, and a rerun
writes what an uninterrupted run writes.

The kill is deterministic: the child process runs with ``MLOPS_FAULT=<point>`` and sends
itself SIGKILL there (see ``mlops.faults``).
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops import features, io, materialize, partitions
from tests.reliability.conftest import (
    KILL_INGEST_WEEK,
    MATERIALIZE_WEEK,
    SCORED,
    Project,
    digest,
)

pytestmark = pytest.mark.integration
AREA = "Killed tasks"
KILLED = -signal.SIGKILL


def _temps(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp"))


def _online_rows(st) -> dict[bytes, int]:  # type: ignore[no-untyped-def]
    """Online-store rows per entity key (the SQLite store keeps one per feature)."""
    with sqlite3.connect(st.data_root / "feast" / "online.db") as db:
        return dict(
            db.execute(
                "SELECT entity_key, COUNT(*) FROM flights_flights GROUP BY entity_key"
            ).fetchall()
        )


def test_ingest_killed_before_rename(proj: Project) -> None:
    """Case: `ingest` killed (SIGKILL) after writing a partition's temporary file, before the
    rename.
    Behaviour: no partial partition, pointer or manifest entry; the rerun removes the leftover
    temporary file and writes the same bytes and DVC hash as an uninterrupted run
    """
    st = proj.st
    raw = partitions.file(st.raw_dir, KILL_INGEST_WEEK)
    manifest = (st.state_dir / "ingest.json").read_text()
    assert not raw.exists()

    # when ingest is killed just before renaming the new partition into place
    res = proj.stage(
        "ingest", "--partitions", KILL_INGEST_WEEK, fault=f"io.before_rename:{raw.name}"
    )

    # then nothing half-done is visible: no partition, no pointer, same manifest
    assert res.returncode == KILLED, res.stderr[-2000:]
    assert not raw.exists() and not raw.with_name(raw.name + ".dvc").exists()
    assert (st.state_dir / "ingest.json").read_text() == manifest
    assert _temps(st.raw_dir, raw.name)  # the killed writer's leftover

    # when it is rerun, and run once more uninterrupted
    assert proj.cli("ingest", "--partitions", KILL_INGEST_WEEK) == 0
    first = digest(raw)
    assert proj.cli("ingest", "--partitions", KILL_INGEST_WEEK) == 0

    # then the job is done, the same way both times, and the leftover is gone
    from mlops.versioning import content_hash

    assert digest(raw) == first == content_hash(raw)
    assert io.read_json(st.state_dir / "ingest.json")[KILL_INGEST_WEEK]["md5"] == first
    assert not _temps(st.raw_dir, raw.name)
    df = pd.read_parquet(raw)
    assert len(df) > 0 and not df.duplicated(proj.params.contract.entity_keys).any()


def test_materialize_killed_before_online_load(proj: Project) -> None:
    """Case: `materialize` killed (SIGKILL) after writing the offline feature file, before
    loading the online store.
    Behaviour: the feature file is complete and the online store untouched; the rerun loads
    each entity once, and a further run changes nothing (same file, same online rows)
    """
    params, st = proj.params, proj.st
    feature_file = partitions.file(features.source_dir(params, st), MATERIALIZE_WEEK)
    online = st.data_root / "feast" / "online.db"
    online_before = digest(online)
    validated = pd.read_parquet(partitions.file(st.validated_dir, MATERIALIZE_WEEK))
    keys = validated[params.contract.entity_keys]

    # when materialize is killed between the offline write and the online load
    res = proj.stage(
        "materialize", "--partitions", MATERIALIZE_WEEK, fault="materialize.before_online"
    )

    # then the offline file is whole (what feature_rows makes of the validated rows) and the
    # online store is byte for byte as before
    assert res.returncode == KILLED, res.stderr[-2000:]
    expected = materialize.feature_rows(validated, params.contract, {"flight_id": "string"})
    pd.testing.assert_frame_equal(pd.read_parquet(feature_file), expected, check_dtype=False)
    assert digest(online) == online_before

    # when it is rerun
    assert proj.cli("materialize", "--partitions", MATERIALIZE_WEEK) == 0
    offline = digest(feature_file)
    rows_after_rerun = _online_rows(st)
    sample = keys.head(50).to_dict("records")
    served = features.online_features(params, st, sample)

    # then every entity is online once, with one row per feature
    n_features = len(params.contract.features)
    assert set(rows_after_rerun.values()) == {n_features}
    assert served[params.contract.feature_names[0]].notna().all()

    # and an uninterrupted run writes exactly the same
    assert proj.cli("materialize", "--partitions", MATERIALIZE_WEEK) == 0
    assert digest(feature_file) == offline
    assert _online_rows(st) == rows_after_rerun
    pd.testing.assert_frame_equal(features.online_features(params, st, sample), served)


def _fast_params(proj: Project, trees: int = 20) -> str:
    """The project's params with one small candidate, to keep trainings quick.

    Each test passes its own ``trees``: another fingerprint, so no test is given back a
    version another test trained.
    """
    raw = yaml.safe_load(proj.params_path.read_text())
    raw["train"]["candidates"] = [
        {"name": "xgb", "kind": "xgboost", "params": {"n_estimators": trees, "max_depth": 3}}
    ]
    name = f"params_fast_{trees}.yaml"
    (proj.root / name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return name


def test_train_killed_after_registering(proj: Project) -> None:
    """Case: `train` killed (SIGKILL) right after registering the model version.
    Behaviour: the version is complete (lineage and fingerprint tags are written with it) and
    holds no alias; the champion is unchanged; the rerun registers nothing new: it gives back
    that version (same data, params and code) with its holdout metrics, and `state/train.json`
    names it
    """
    from mlops.registry import connect

    fast = _fast_params(proj, trees=20)
    st = proj.st
    champion = proj.champion()
    known = proj.versions()
    state_before = (st.state_dir / "train.json").read_text()

    # when a training is killed right after registering
    res = proj.stage("train", fault="train.after_register", params=fast)

    # then its version is whole, has no alias, and nothing points at it
    assert res.returncode == KILLED, res.stderr[-2000:]
    versions = proj.versions()
    (orphan,) = set(versions) - set(known)
    assert versions[orphan] == []
    reg = connect(st)
    tags = reg.get_version(proj.params.model_name, orphan).tags
    assert tags["mlops.candidate"] == "xgb" and tags["mlops.data.partitions"]
    assert len(tags["mlops.fingerprint"]) == 64
    assert (st.state_dir / "train.json").read_text() == state_before
    assert proj.champion() == champion

    # when it is rerun
    assert proj.cli("train", params=fast) == 0

    # then it gives that version back instead of registering another, with its metrics
    result = io.read_json(st.state_dir / "train.json")
    assert result["version"] == orphan and proj.versions() == versions
    logged = reg.client.get_run(result["run_id"]).data.metrics
    assert result["holdout"]["xgb"] == {
        k[len("holdout_") :]: v for k, v in logged.items() if k.startswith("holdout_")
    }
    assert result["rows"]["train"] > 0 and result["rows"]["holdout"] > 0
    assert proj.champion() == champion


def test_promote_killed_after_the_alias_moved(proj: Project) -> None:
    """Case: the `promote` stage killed (SIGKILL) just after its gate moved `@champion` to the
    new version, before its audit event was complete and `state/promote.json` written.
    Behaviour: the rerun settles the interrupted move (one champion move, recorded as
    completed) and reports what an uninterrupted run reports: gate passed, `champion vA -> vB`,
    the same reasons; no second move and no second event
    """
    from mlops import audit, governance

    raw = yaml.safe_load((proj.root / _fast_params(proj, trees=23)).read_text())
    raw["promote"] = {**raw["promote"], "approval": "auto", "min_improvement": -1.0}
    (proj.root / "params_promote_kill.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    fast, st, name = "params_promote_kill.yaml", proj.st, proj.params.model_name
    champion = proj.champion()
    assert proj.cli("train", params=fast) == 0 and proj.cli("evaluate", params=fast) == 0
    new = str(io.read_json(st.state_dir / "train.json")["version"])
    moves_before = len([e for e in audit.history(st, name) if e["alias"] == "champion"])
    try:
        # when promote is killed right after the champion alias moved
        res = proj.stage("promote", fault="audit.after_alias:champion", params=fast)
        assert res.returncode == KILLED, res.stderr[-2000:]
        assert proj.champion() == new

        # when it is rerun
        assert proj.cli("promote", params=fast) == 0

        # then it reports the promotion that happened, once, as an uninterrupted run would
        result = io.read_json(st.state_dir / "promote.json")
        assert result["promote"] is True and result["version"] == new
        assert result["outcome"] == f"champion v{champion} -> v{new}"
        assert (
            result["reasons"][0].startswith("roc_auc")
            and "gain over champion" in result["reasons"][1]
        )
        events = audit.history(st, name)
        moves = [e for e in events if e["alias"] == "champion"]
        assert len(moves) == moves_before + 1
        assert (moves[0]["from_version"], moves[0]["to_version"]) == (champion, new)
        assert moves[0]["state"] == "done" and "interrupted" in moves[0].get("note", "")
        assert audit.check_history(events, new) == []
    finally:
        governance.rollback(st, name, to=champion, by="test", reason="restore the champion")
    assert proj.champion() == champion


def test_score_killed_mid_write(proj: Project) -> None:
    """Case: `score` killed (SIGKILL) while writing predictions.
    Behaviour: the previous predictions file and its metadata are intact; the rerun removes the
    leftover and writes the same bytes as an uninterrupted run, one row per entity
    """
    st = proj.st
    target = partitions.file(st.predictions_dir, SCORED)
    before, meta_before = digest(target), digest(target.with_suffix(".json"))

    # when score is killed after writing a chunk into its temporary file
    res = proj.stage("score", "--partitions", SCORED, fault="score.chunk_written")

    # then the previous predictions are untouched
    assert res.returncode == KILLED, res.stderr[-2000:]
    assert digest(target) == before and digest(target.with_suffix(".json")) == meta_before
    assert _temps(st.predictions_dir, target.name)

    # when it is rerun
    assert proj.cli("score", "--partitions", SCORED) == 0

    # then the result is what the uninterrupted run wrote, without duplicates or leftovers
    assert digest(target) == before
    preds = pd.read_parquet(target)
    validated = pd.read_parquet(partitions.file(st.validated_dir, SCORED))
    assert len(preds) == len(validated)
    assert not preds.duplicated(proj.params.contract.entity_keys).any()
    assert not _temps(st.predictions_dir, target.name)
