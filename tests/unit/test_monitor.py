"""monitor: drift on real seasonal data, the breach decision, and the written report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from mlops import drift, features, io, monitor, outcomes, partitions, score
from mlops import materialize as m
from mlops.config import Monitor, Params, Settings, load_params, settings
from tests.helpers import copy_key_in_feature_file, scoring_frame

REPO = Path(__file__).resolve().parents[2]
ROWS = 3000


def evidently_version() -> str:
    import evidently

    return str(evidently.__version__)


def evidently_script() -> Path:
    from evidently.legacy.utils.dashboard import STATIC_PATH

    return Path(STATIC_PATH) / "index.js"


@pytest.fixture(scope="module")
def seasons() -> dict[str, pd.DataFrame]:
    """The real 2013-01 and 2013-07 partitions with their targets, built from the source.

    Not the demo's ``data/raw``: ``make demo`` ingests July without its target.
    """
    from mlops.ingest import split_partitions
    from mlops.source import load

    p = load_params(REPO / "params.yaml")
    df = load(p.source, REPO)
    months = ["2013-01", "2013-07"]
    return split_partitions(df, p.contract, p.source.timestamp_column, "month", months)


@pytest.fixture(scope="module")
def frames(seasons: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Random rows (a month's weather varies by day, so no head()), scored by a real model.

    ``reference`` (the model's training rows), ``january`` and ``holdout`` are disjoint
    samples of 2013-01; ``july`` is from 2013-07.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = load_params(REPO / "params.yaml")
    numeric = [f.name for f in p.contract.features if f.dtype in ("float", "int")]
    labelled = {pid: df[df[p.contract.target].notna()] for pid, df in seasons.items()}
    jan = labelled["2013-01"].sample(n=3 * ROWS, random_state=0)
    reference, january, holdout = jan.iloc[:ROWS], jan.iloc[ROWS : 2 * ROWS], jan.iloc[2 * ROWS :]
    july = labelled["2013-07"].sample(n=ROWS, random_state=0)
    model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression())
    model.fit(reference[numeric], reference[p.contract.target])

    def scored(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(prediction=model.predict_proba(df[numeric])[:, 1])

    return {
        "reference": scored(reference),
        "january": scored(january),
        "holdout": scored(holdout),
        "july": scored(july),
    }


def make_project(tmp_path: Path) -> tuple[Params, Settings]:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return load_params(tmp_path / "params.yaml"), settings(tmp_path / "params.yaml")


@pytest.fixture(scope="module")
def july_run(tmp_path_factory, frames) -> tuple[Settings, dict]:
    """``monitor.run`` on January (reference, holdout) against July, in a throwaway project."""
    params, st = make_project(tmp_path_factory.mktemp("proj"))
    held = monitor.Holdout(frames["holdout"], ["2013-01"])
    described = {"model_version": "7"}
    return st, monitor.run(
        params, st, "2013-07", frames["reference"], frames["july"], None, described, None, held
    )


# --------------------------------------------------------------------------- real data
def test_seasonal_drift_is_a_breach(july_run):
    # given January as reference and July as current (summer weather)
    _, result = july_run

    # then the weather columns drifted, ids/target are not counted as features, and it breaches
    cols = result["columns"]
    assert cols["temp"]["drifted"] and cols["dewp"]["drifted"]
    assert cols["temp"]["method"] == "wasserstein" and cols["temp"]["threshold"] == 0.1
    assert cols["temp"]["value"] > 1.0
    assert result["n_features"] == 14
    assert "flight_id" not in cols and "is_delayed" not in cols and "prediction" not in cols
    assert result["share"] >= 0.3
    assert result["breach"] is True
    assert any("features drifted" in r and "temp" in r for r in result["reasons"])
    # the model leans on temperature, so its output moved too
    assert result["prediction_drift"]["drifted"] is True
    assert any("prediction" in r for r in result["reasons"])
    assert result["target_drift"]["column"] == "is_delayed"
    assert result["rows"] == {
        "reference": ROWS,
        "current": ROWS,
        "sampled": False,
        "max_rows": 100_000,
        "holdout": ROWS,
    }
    assert result["holdout_partitions"] == ["2013-01"]


def test_reference_performance_is_the_holdouts_not_the_training_rows(july_run, frames):
    from sklearn.metrics import roc_auc_score

    # given a model scored on the rows it was fitted on (reference) and on a holdout
    _, result = july_run
    target = "is_delayed"

    def auc(name: str) -> float:
        return float(roc_auc_score(frames[name][target], frames[name]["prediction"]))

    # then the report's reference ROC AUC is the holdout's, which the training rows flatter
    roc = result["performance"]["roc_auc"]
    assert roc["reference"] == pytest.approx(auc("holdout"), abs=1e-6)
    assert roc["reference"] != pytest.approx(auc("reference"), abs=1e-4)
    assert roc["current"] == pytest.approx(auc("july"), abs=1e-6)


def test_without_a_holdout_performance_has_no_reference(frames):
    params = load_params(REPO / "params.yaml")
    # when July is compared with the training rows and no holdout is given
    summary, snapshot = drift.evaluate(
        frames["reference"], frames["july"], params.contract, params.monitor
    )
    # then the current performance is measured, and nothing stands in for the holdout's
    assert summary["performance"]["roc_auc"]["current"] > 0.5
    assert {v["reference"] for v in summary["performance"].values()} == {None}
    assert summary["rows"]["holdout"] is None
    # and the drift metrics and the performance metrics are in one snapshot
    names = {r.display_name for r in snapshot.metric_results.values()}
    assert {"RocAuc metric", "Drifted features", "Value drift for temp"} <= names


def test_a_holdout_without_predictions_is_named(frames):
    params = load_params(REPO / "params.yaml")
    holdout = frames["holdout"].drop(columns=["prediction"])
    with pytest.raises(ValueError, match=r"holdout lacks column\(s\) \['prediction'\]"):
        drift.evaluate(
            frames["reference"], frames["july"], params.contract, params.monitor, holdout=holdout
        )


def test_run_writes_html_and_json(july_run):
    # given the July run
    st, result = july_run

    # then both files sit in reports/<partition>/, the HTML is a real report and the JSON
    # holds the summary with the decision
    html, js = Path(result["html_path"]), Path(result["json_path"])
    assert html == st.reports_dir / "2013-07" / "drift.html"
    assert js == st.reports_dir / "2013-07" / "drift.json"
    text = html.read_text()
    assert len(text) > 100_000 and "<html" in text.lower() and "temp" in text
    # and the page opens with the verdict, before Evidently's report
    body = text[text.index("<body") :]
    assert body.index('id="drift-summary"') < body.index('<div id="root_')
    head = body[: body.index("</section>")]
    assert "Drift of flight_delay v7 on 2013-07: " in head and ">BREACH<" in head
    assert f"{result['drifted_features']} of 14 features drifted (" in head
    assert "&gt;= 30%: breach" in head
    assert "wasserstein, threshold 0.1" in head and "jensenshannon, threshold 0.1" in head
    assert "3,000 of 3,000 current rows compared (all)" in head
    assert "the 3,000 holdout rows of 2013-01 the version was evaluated on" in head
    # and it loads Evidently's script from the one copy beside the reports, not inline
    shared = st.reports_dir / f"evidently-{evidently_version()}.js"
    assert f'<script src="../{shared.name}"></script>' in text
    assert shared.read_bytes() == evidently_script().read_bytes()
    assert html.stat().st_size < 1_000_000 < shared.stat().st_size
    saved = json.loads(js.read_text())
    assert saved["breach"] is True and saved["reasons"] == result["reasons"]
    assert saved["columns"]["temp"] == result["columns"]["temp"]
    assert saved["partition"] == "2013-07"
    assert not list(js.parent.glob(".*.tmp"))


def test_same_month_is_no_breach(frames):
    # given two disjoint samples of the same month
    params = load_params(REPO / "params.yaml")

    # when compared
    summary, snapshot = drift.evaluate(
        frames["reference"], frames["january"], params.contract, params.monitor
    )
    breach, reasons = monitor.is_breach(summary, params.monitor)

    # then nothing that matters moved, and the summary is plain JSON
    assert not summary["columns"]["temp"]["drifted"]
    assert not summary["columns"]["dewp"]["drifted"]
    assert summary["share"] < params.monitor.drift_share
    assert summary["prediction_drift"]["drifted"] is False
    assert (breach, reasons) == (False, [])
    json.dumps(summary, allow_nan=False)
    html = snapshot.get_html_str(as_iframe=False)
    assert html.lstrip().lower().startswith("<!doctype html>")


# chi-square divides by zero for a destination the reference never saw (p-value 0: drift)
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_config_sets_method_and_sampling_is_seeded(frames):
    # given a KS/chi-square policy and a row cap below the frame size
    params = load_params(REPO / "params.yaml")
    cfg = Monitor(
        numerical_method="ks",
        numerical_threshold=0.05,
        categorical_method="chisquare",
        categorical_threshold=0.05,
        max_rows=1000,
    )

    # when the report is built twice
    a, _ = drift.evaluate(frames["reference"], frames["july"], params.contract, cfg, None)
    b, _ = drift.evaluate(frames["reference"], frames["july"], params.contract, cfg, None)

    # then every column uses the configured test (p-values: drift below the threshold),
    # both sides were sampled, and the same seed gives the same answer
    assert {c["method"] for n, c in a["columns"].items() if c["kind"] == "numerical"} == {"ks"}
    assert a["columns"]["carrier"]["method"] == "chisquare"
    temp = a["columns"]["temp"]
    assert temp["value"] < 0.05 and temp["drifted"]
    assert a["rows"]["sampled"] is True
    assert a["prediction_drift"] is None and a["performance"] is None
    assert a == b


def test_missing_feature_is_named(frames):
    params = load_params(REPO / "params.yaml")
    current = frames["july"].drop(columns=["dewp"])
    with pytest.raises(ValueError, match=r"current data lacks .*'dewp'"):
        drift.evaluate(frames["reference"], current, params.contract, params.monitor)
    with pytest.raises(ValueError, match="reference data has no rows"):
        drift.evaluate(frames["reference"].iloc[:0], current, params.contract, params.monitor)


# --------------------------------------------------------------------------- is_breach
def summary_with(drifted: int, total: int, prediction: bool | None) -> dict:
    columns = {f"f{i}": {"drifted": i < drifted} for i in range(total)}
    pred = None
    if prediction is not None:
        pred = {
            "column": "prediction",
            "method": "wasserstein",
            "threshold": 0.1,
            "value": 0.4 if prediction else 0.01,
            "drifted": prediction,
        }
    return {
        "columns": columns,
        "drifted_features": drifted,
        "n_features": total,
        "share": drifted / total,
        "prediction_drift": pred,
    }


@pytest.mark.parametrize(
    ("drifted", "total", "prediction", "on_prediction", "breach", "n_reasons"),
    [
        (4, 14, False, True, False, 0),  # 28.6% just below 30%
        (5, 14, False, True, True, 1),  # 35.7% just above
        (3, 10, None, True, True, 1),  # exactly at the threshold breaches
        (0, 14, True, True, True, 1),  # prediction drift alone
        (0, 14, True, False, False, 0),  # ... unless the policy ignores it
        (5, 14, True, True, True, 2),  # both rules fire, both are reported
        (0, 14, None, True, False, 0),  # no prediction column
    ],
)
def test_is_breach_table(drifted, total, prediction, on_prediction, breach, n_reasons):
    cfg = Monitor(drift_share=0.3, breach_on_prediction_drift=on_prediction)
    got, reasons = monitor.is_breach(summary_with(drifted, total, prediction), cfg)
    assert got is breach
    assert len(reasons) == n_reasons
    assert all(isinstance(r, str) and r for r in reasons)


def test_breach_reason_names_columns_and_share():
    cfg = Monitor(drift_share=0.3)
    _, reasons = monitor.is_breach(summary_with(5, 14, None), cfg)
    assert reasons == ["5/14 features drifted (36% >= drift_share 30%): f0, f1, f2, f3, f4"]


@pytest.mark.parametrize(
    ("drifted", "prediction", "on_prediction", "lines"),
    [
        (6, None, True, ["6 of 14 features drifted (43%) >= 30%: breach"]),
        (4, None, True, ["4 of 14 features drifted (29%) < 30%: no breach"]),
        (
            0,
            True,
            True,
            [
                "0 of 14 features drifted (0%) < 30%: no breach",
                "prediction drifted (wasserstein 0.4, threshold 0.1): breach",
            ],
        ),
        (
            5,
            True,
            False,
            [
                "5 of 14 features drifted (36%) >= 30%: breach",
                "prediction drifted (wasserstein 0.4, threshold 0.1): no breach "
                "(monitor.breach_on_prediction_drift is off)",
            ],
        ),
        (
            1,
            False,
            True,
            [
                "1 of 14 features drifted (7%) < 30%: no breach",
                "prediction did not drift (wasserstein 0.01, threshold 0.1): no breach",
            ],
        ),
    ],
)
def test_verdicts_say_each_rule_with_its_numbers(drifted, prediction, on_prediction, lines):
    cfg = Monitor(drift_share=0.3, breach_on_prediction_drift=on_prediction)
    summary = summary_with(drifted, 14, prediction)
    # then there is one line per rule, and a line says breach exactly when is_breach does
    got = monitor.verdicts(summary, cfg)
    assert got == lines
    breach, _ = monitor.is_breach(summary, cfg)
    assert any(line.endswith(": breach") for line in got) is breach


def test_the_previous_report_is_the_latest_earlier_one_that_exists(tmp_path):
    # given reports of June and April (none in May), a folder that is not a partition,
    # and a later August
    reports = tmp_path / "reports"
    for pid in ("2013-04", "2013-06", "2013-08", "cards"):
        (reports / pid).mkdir(parents=True)
        (reports / pid / "drift.html").write_text("<html></html>")
    (reports / "2013-07").mkdir()  # July's own folder, its page not written yet
    # then July's previous report is June's; April has none; a first report has no folder
    assert (
        monitor.previous_report(reports / "2013-07", "2013-07")
        == reports / "2013-06" / "drift.html"
    )
    assert monitor.previous_report(reports / "2013-04", "2013-04") is None
    assert monitor.previous_report(tmp_path / "new" / "2013-01", "2013-01") is None
    # and a folder that lost its page is skipped
    (reports / "2013-06" / "drift.html").unlink()
    assert (
        monitor.previous_report(reports / "2013-07", "2013-07")
        == reports / "2013-04" / "drift.html"
    )


# --------------------------------------------------------------------------- current sample
def test_monitor_reads_only_a_seeded_sample_equal_to_sampling_the_full_join(tmp_project):
    # given February materialised and scored in row groups of 100 rows
    params, st = tmp_project
    m.run(params, st, ["2013-02"])
    c = params.contract
    keys = c.entity_keys
    full = scoring_frame(params, st, ["2013-02"])
    preds = full[[*keys, c.timestamp]].sample(frac=1, random_state=1, ignore_index=True)
    preds["prediction"] = [i / len(preds) for i in range(len(preds))]
    preds["model_name"] = pd.Series(["flights"] * len(preds), dtype="string")
    preds["model_version"] = pd.Series(["3"] * len(preds), dtype="string")
    target = partitions.file(st.predictions_dir, "2013-02")
    score.write_predictions(target, (preds.iloc[i : i + 100] for i in range(0, len(preds), 100)))
    small = params.model_copy(
        update={"monitor": params.monitor.model_copy(update={"max_rows": 300})}
    )

    # when the monitor samples the scored partition
    current, total = monitor.current_sample(small, st, "2013-02", target)

    # then it counts every row but holds the same 300 rows, in file order, that sampling
    # the whole join of predictions, features and labels gives
    expected = (
        preds.drop(columns=[c.timestamp])
        .merge(full.drop(columns=[c.timestamp]), on=keys, how="inner", validate="1:1")
        .sample(n=300, random_state=drift.SAMPLE_SEED)
        .sort_index()
        .reset_index(drop=True)
    )
    assert total == len(preds)
    # and the feature file is filtered to the sampled keys while it is read
    wanted = pa.Table.from_pandas(current[keys], preserve_index=False)
    feature_file = features.feature_file(params, st, "2013-02")
    assert io.matching_rows(feature_file, wanted, keys, 100).num_rows == 300
    current[keys] = current[keys].astype(object)
    expected[keys] = expected[keys].astype(object)
    known = expected[c.target].notna().all()
    expected[c.target] = expected[c.target].to_numpy(dtype="float64", na_value=float("nan"))
    pd.testing.assert_frame_equal(current, expected[current.columns], check_dtype=False)
    assert sorted(current.columns) == sorted(expected.columns)
    for col in [*c.feature_names, "prediction"]:
        assert current[col].dtype == expected[col].dtype, col
    # the target as training reads it: 0/1, float where an outcome is not known
    assert current[c.target].dtype == ("int8" if known else "float64")


def scored(params: Params, st: Settings, pid: str, frame: pd.DataFrame) -> Path:
    """Write predictions for the rows of ``frame`` as ``score`` would."""
    c = params.contract
    preds = frame[[*c.entity_keys, c.timestamp]].reset_index(drop=True)
    preds["prediction"] = 0.5
    preds["model_name"] = pd.Series(["flights"] * len(preds), dtype="string")
    preds["model_version"] = pd.Series(["3"] * len(preds), dtype="string")
    target = partitions.file(st.predictions_dir, pid)
    score.write_predictions(target, [preds])
    return target


def test_rows_sharing_a_key_are_named_instead_of_a_bare_merge_error(tmp_project, months):
    # given February validated and materialised with one flight id on two rows
    params, st = tmp_project
    feb = months["2013-02"].copy()
    flight = feb.loc[0, "flight_id"]
    io.write_parquet(partitions.file(st.validated_dir, "2013-02"), feb)
    m.run(params, st, ["2013-02"])
    copy_key_in_feature_file(params, st, "2013-02", flight, feb.loc[4, "flight_id"], ("flight_id",))
    feb.loc[4, "flight_id"] = flight
    every_row = params.model_copy(
        update={"monitor": params.monitor.model_copy(update={"max_rows": 10_000})}
    )

    # when its predictions hold that flight twice, then the predictions file is named
    target = scored(params, st, "2013-02", feb)
    with pytest.raises(io.DuplicateKeys) as err:
        monitor.current_sample(every_row, st, "2013-02", target)
    assert str(err.value).startswith(f"monitor 2013-02: predictions {target}: 2 rows share")
    assert repr(flight) in str(err.value) and "run score 2013-02 again" in str(err.value)

    # when the predictions have the flight once, then the feature file holding it twice is
    with pytest.raises(io.DuplicateKeys, match=r"^monitor 2013-02: feature file .*2013-02"):
        monitor.current_sample(every_row, st, "2013-02", scored(params, st, "2013-02", feb.drop(4)))


# --------------------------------------------------------------------------- without labels
def test_a_partition_scored_without_labels_gets_drift_and_later_its_target(
    tmp_project, months, frames
):
    # given February validated and materialised without its target, and scored
    params, st = tmp_project
    c = params.contract
    feb = months["2013-02"]
    io.write_parquet(partitions.file(st.validated_dir, "2013-02"), feb.drop(columns=[c.target]))
    m.run(params, st, ["2013-02"])
    feb = feb[feb[c.target].notna()]  # the rows whose outcome will be known
    preds = scored(params, st, "2013-02", feb)

    # when it is monitored before any outcome arrived
    current, total = monitor.current_sample(params, st, "2013-02", preds)
    out = monitor.run(params, st, "2013-02", frames["reference"], current, total)

    # then features and predictions are compared, and no target or performance is claimed
    assert c.target not in current.columns and total == len(feb)
    assert out["n_features"] == len(c.features) and out["prediction_drift"] is not None
    assert out["target_drift"] is None and out["performance"] is None
    assert io.read_json(st.reports_dir / "2013-02" / "drift.json")["target_drift"] is None

    # when the outcomes of half the rows arrive in its label store
    def arrive(rows: pd.DataFrame) -> pd.DataFrame:
        store = pd.DataFrame({"flight_id": rows["flight_id"], c.target: rows[c.target]})
        store[c.target] = store[c.target].astype("int8")
        io.write_parquet(outcomes.path(st, "2013-02"), store)
        return store

    store = arrive(feb.iloc[::2])
    current, total = monitor.current_sample(params, st, "2013-02", preds)
    out = monitor.run(params, st, "2013-02", frames["reference"], current, total)

    # then the current side carries them (the rest unknown) and the target's drift is
    # reported; performance waits until every outcome is known
    by_key = current.set_index("flight_id")[c.target]
    want = store.set_index("flight_id")[c.target]
    assert by_key.notna().sum() == len(store)
    assert (by_key[want.index] == want).all()
    assert out["target_drift"]["column"] == c.target
    assert out["target_drift"]["value"] is not None
    assert out["performance"] is None

    # when every outcome has arrived, then the realised performance is reported too
    arrive(feb)
    current, total = monitor.current_sample(params, st, "2013-02", preds)
    out = monitor.run(params, st, "2013-02", frames["reference"], current, total)
    assert current[c.target].dtype == "int8"
    assert out["performance"]["roc_auc"]["current"] == pytest.approx(0.5)
