"""Re-ingested data and versions: every output traces to the exact raw version it was made
from, stale outputs are refused, and no prediction version is lost to a rescore."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlops import lineage, partitions, provenance, tags
from tests.reliability.conftest import (
    MATERIALIZE_WEEK,
    SCORED,
    Project,
    csv_params,
    digest,
    digests,
)

pytestmark = pytest.mark.integration
AREA = "Re-ingested data and versions"
REINGEST_WEEK = "2013-W33"
MANIFEST_WEEK = "2013-W34"


def _csv_source(proj: Project, week: str) -> tuple[Path, str]:
    """The week's rows of the real source as a CSV source, and a params file reading it."""
    from mlops.ingest import split_partitions
    from mlops.source import load

    params = proj.params
    rows = split_partitions(
        load(params.source, proj.root),
        params.contract,
        params.source.timestamp_column,
        params.ingest.partition,
        [week],
    )[week]
    source = proj.root / "sources" / f"versions_{week}.csv"
    source.parent.mkdir(exist_ok=True)
    rows.to_csv(source, index=False)
    return source, csv_params(proj, source)


def _ingest_validate_materialize_score(proj: Project, week: str, params: str) -> None:
    assert proj.cli("ingest", "--partitions", week, params=params) == 0
    for verb in ("validate", "materialize", "score"):
        assert proj.cli(verb, "--partitions", week) == 0, verb


def test_reingested_partition_makes_downstream_files_stale(proj: Project, capsys) -> None:
    """Case: A month's source is corrected (one value changed) and `ingest` re-run for it.
    Behaviour: the manifest keeps both versions; `materialize` and `score` refuse the files made
    from the old version, naming the stages to re-run, and leave the predictions as they were;
    after validate and materialize, the predictions record the new `input_md5`; `mlops lineage
    <old md5>` finds the predictions made from the old bytes (archived), `<new md5>` only the new
    """
    st = proj.st
    week = REINGEST_WEEK
    source, params = _csv_source(proj, week)
    _ingest_validate_materialize_score(proj, week, params)
    old = provenance.current(st, week)
    target = partitions.file(st.predictions_dir, week)
    scored_old = json.loads(target.with_suffix(".json").read_text())
    assert old and scored_old["input_md5"] == old and scored_old["md5"] == digest(target)
    predictions_before = digest(target)

    # when one value of the source is corrected and the week re-ingested
    df = pd.read_csv(source)
    df.loc[0, "temp"] = df.loc[0, "temp"] + 7.5
    df.to_csv(source, index=False)
    assert proj.cli("ingest", "--partitions", week, params=params) == 0
    new = provenance.current(st, week)

    # then the manifest holds both versions, the old one first
    assert new and new != old
    history = provenance.versions(provenance.manifest(st)[week])
    assert [v["md5"] for v in history] == [old, new] and history[0]["until"]

    # and score refuses the features made from the old version, naming what to re-run
    capsys.readouterr()
    assert proj.cli("score", "--partitions", week) == 1
    err = capsys.readouterr().err
    feature_file = partitions.file(st.features_dir / proj.params.materialize.project, week)
    assert f"{feature_file} was made from version {old}" in err and new in err
    assert f"mlops validate --partitions {week}" in err
    assert f"mlops materialize --partitions {week}" in err
    assert digest(target) == predictions_before
    # and so does materialize for the validated file of the old version
    assert proj.cli("materialize", "--partitions", week) == 1
    err = capsys.readouterr().err
    assert f"validated/{week}.parquet was made from version {old}" in err
    assert f"re-run `mlops validate --partitions {week}`" in err

    # when validate and materialize are re-run, then score works on the new version
    for verb in ("validate", "materialize", "score"):
        assert proj.cli(verb, "--partitions", week) == 0, verb
    scored_new = json.loads(target.with_suffix(".json").read_text())
    assert scored_new["input_md5"] == new and scored_new["md5"] == digest(target)
    assert json.loads((st.state_dir / "validation" / f"{week}.json").read_text())["md5"] == new

    # and lineage of the old hash finds the old predictions (archived), not the new ones
    from_old = lineage.trace(st, old)
    assert from_old["partitions"] == [week] and from_old["scored_partition_predictions"] == []
    archived_old = [p for p in from_old["archived_predictions"] if p["partition"] == week]
    assert [p["input_md5"] for p in archived_old] == [old]
    assert digest(Path(archived_old[0]["path"])) == predictions_before
    # and lineage of the new hash finds the current predictions, made from it only
    from_new = lineage.trace(st, new)
    assert [p["path"] for p in from_new["scored_partition_predictions"]] == [str(target)]
    assert {p["input_md5"] for p in from_new["archived_predictions"]} == {new}
    # and the partition lists every prediction version with its model and input version
    capsys.readouterr()
    assert proj.cli("lineage", week) == 0
    out = capsys.readouterr().out
    assert f"input md5 {old}" in out and f"input md5 {new}" in out
    assert f"earlier version {old}" in out


def test_rescore_by_another_champion_keeps_the_earlier_predictions(proj: Project) -> None:
    """Case: The champion changes and a partition is rescored, overwriting its predictions file.
    Behaviour: every predictions file is kept per model version and input version under
    `archive/predictions/<partition>/<model>/v<version>/`, byte for byte, beside its sidecar;
    `predictions/<partition>.parquet` holds the new champion's
    """
    from mlops.registry import CHAMPION, connect

    st, name = proj.st, proj.params.model_name
    target = partitions.file(st.predictions_dir, SCORED)
    before, sidecar = digest(target), json.loads(target.with_suffix(".json").read_text())
    c = connect(st).client
    champion = c.get_model_version_by_alias(name, CHAMPION)
    other = c.create_model_version(name, champion.source, run_id=champion.run_id)
    try:
        # given another version made champion
        c.set_registered_model_alias(name, CHAMPION, other.version)

        # when the scored week is scored again
        assert proj.cli("score", "--partitions", SCORED) == 0

        # then the new champion's predictions are in place
        now = json.loads(target.with_suffix(".json").read_text())
        assert now["model_version"] == str(other.version) and digest(target) != before
        assert set(pd.read_parquet(target)["model_version"]) == {str(other.version)}
        # and the earlier champion's file is still there, the same bytes, with its sidecar
        kept = Path(sidecar["archived"])
        assert kept.parent.name == f"v{champion.version}" and digest(kept) == before
        assert json.loads(kept.with_suffix(".json").read_text()) == sidecar
        assert digest(Path(now["archived"])) == digest(target)
    finally:
        c.set_registered_model_alias(name, CHAMPION, champion.version)
        c.delete_model_version(name, other.version)
        shutil.rmtree(Path(sidecar["archived"]).parents[1] / f"v{other.version}", True)
        assert proj.cli("score", "--partitions", SCORED) == 0
    assert digest(target) == before


def test_damaged_manifest_stops_ingest_before_any_write(proj: Project, capsys) -> None:
    """Case: `state/ingest.json` truncated (a hand edit or a full disk) before `ingest`.
    Behaviour: `ingest` exits 1 naming the file and what to do, before any raw partition, DVC
    pointer or manifest is written
    """
    st = proj.st
    manifest = provenance.manifest_path(st)
    text = manifest.read_text()
    raw_before = digests(st.raw_dir)
    try:
        manifest.write_text(text[: len(text) // 2])
        capsys.readouterr()

        # when a new week is ingested
        code = proj.cli("ingest", "--partitions", MANIFEST_WEEK)

        # then it refuses naming the manifest and how to repair it, having written nothing
        err = capsys.readouterr().err
        assert code == 1
        assert digests(st.raw_dir) == raw_before
        assert manifest.read_text() == text[: len(text) // 2]
        assert f"error: ingest: {manifest}: damaged state file, not valid JSON" in err
        assert "re-run `mlops ingest`" in err
    finally:
        manifest.write_text(text)


def test_damaged_feast_registry_is_named(proj: Project) -> None:
    """Case: The Feast registry (`feast/registry.db`) truncated.
    Behaviour: `materialize` exits 1 naming the registry file and what to do (delete it and
    re-run `materialize`, which applies the definitions again), not an anonymous protobuf error
    """
    registry = proj.st.data_root / "feast" / "registry.db"
    data = registry.read_bytes()
    try:
        registry.write_bytes(data[: len(data) // 2])

        # when materialize opens the store, in a process of its own (no cached store)
        res = proj.stage("materialize", "--partitions", MATERIALIZE_WEEK)

        # then it names the file and the way out
        assert res.returncode == 1, res.stderr[-2000:]
        assert f"error: materialize: {registry}: damaged Feast registry" in res.stderr
        assert "delete it and re-run `mlops materialize`" in res.stderr
    finally:
        registry.write_bytes(data)


def test_unfinished_training_runs_do_not_count_in_lineage(proj: Project) -> None:
    """Case: A training run left RUNNING by a kill (or closed as KILLED) used a partition.
    Behaviour: `mlops lineage <partition>` lists it apart, as not finished and not counted, never
    as a training run of that data
    """
    from mlops.registry import connect

    st = proj.st
    week = proj.params.train.partitions[0]
    c = connect(st).client
    exp = c.get_experiment_by_name(proj.params.model_name)
    counted = len(lineage.trace(st, week)["runs"])
    run = c.create_run(
        exp.experiment_id,
        run_name="zombie",
        tags={
            tags.STAGE: "train",
            tags.CANDIDATE: "zombie",
            tags.DATA_PARTITIONS: week,
            tags.DATA_MD5: json.dumps({week: provenance.current(st, week)}),
        },
    )
    rid = run.info.run_id
    try:
        # when the lineage of the week is traced while the run is RUNNING, then KILLED
        for status in ("RUNNING", "KILLED"):
            if status != "RUNNING":
                c.set_terminated(rid, status)
            lin = lineage.trace(st, week)

            # then it is not one of the training runs, but listed as unfinished
            assert rid not in [r["run_id"] for r in lin["runs"]]
            assert len(lin["runs"]) == counted
            assert [r["status"] for r in lin["unfinished_runs"] if r["run_id"] == rid] == [status]
            assert f"{rid} zombie ({status}: interrupted?)" in lineage.format_text(lin)
    finally:
        c.delete_run(rid)
