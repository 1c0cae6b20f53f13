"""``mlops init`` writing a project folder (``mlops.init``), without running the pipeline."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops import init
from mlops.config import ConfigError, load_params

REPO = Path(__file__).resolve().parents[2]


def data_file(folder: Path, n: int = 120) -> Path:
    """A small CSV: a daily timestamp, a yes/no target, a float, a category, an id column."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, n)
    df = pd.DataFrame(
        {
            "day": pd.date_range("2021-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "x": x,
            "kind": rng.choice(["yes", "no", "off", "9E"], n),
            "code": [f"c{i}" for i in range(n)],
            "churn": np.where(x + rng.normal(0, 1, n) > 0.8, "yes", "no"),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "customers.csv"
    df.to_csv(path, index=False)
    return path


def args(folder: Path, source: Path | str, *extra: str) -> argparse.Namespace:
    return init.parser().parse_args(
        [str(folder), "--source", str(source), "--target", "churn", "--timestamp", "day", *extra]
    )


def test_scalars_load_back_as_the_same_values() -> None:
    values = ["yes", "NA", "9E", "no", "null", "a b", "x:y", "plain", 3, 2.5, True, None, "2013"]
    text = "\n".join(f"k{i}: {init.flow(v)}" for i, v in enumerate(values))
    assert yaml.safe_load(text) == {f"k{i}": v for i, v in enumerate(values)}
    assert init.flow({"from": "2013-01", "to": "2013-06"}) == '{from: "2013-01", to: "2013-06"}'


def test_the_feature_repo_is_the_roots() -> None:
    # given the files init writes into feature_repo/, then they are the root's
    assert (REPO / "feature_repo" / "features.py").read_text() == init.FEATURES_PY
    root_store = (REPO / "feature_repo" / "feature_store.yaml").read_text()
    assert init.FEATURE_STORE_YAML.format(project="flights") == root_store


def test_init_writes_a_project_that_loads_with_its_source_copied_in(tmp_path: Path) -> None:
    # given a data file outside the project folder (no git around either)
    source = data_file(tmp_path / "elsewhere")
    folder = tmp_path / "churn-project"
    # when the project is made
    made = init.create(args(folder, source))
    # then params.yaml loads, and its source is a copy inside the folder
    params = load_params(made.params_path)
    assert params.project == "churn_project"
    assert params.source.path == "source/customers.csv"
    assert (folder / "source" / "customers.csv").read_bytes() == source.read_bytes()
    assert any("copied the source" in n for n in made.notes)
    # the yes/no target became a flag, the id-like column is left out, categories kept
    assert params.contract.target == "churn_is_yes"
    assert params.source.dropna == ["churn"]
    assert params.contract.entity_keys == ["row_id"]
    assert params.contract.feature("kind").categories == ["9E", "no", "off", "yes"]
    assert "code" not in params.contract.feature_names
    # partitions are ranges in the file and the windows fit the data
    text = made.params_path.read_text()
    assert "partitions: {from: " in text and "# " in text.splitlines()[0]
    assert params.ingest.partition == "week"
    assert params.ingest.push is False  # a new repository has no remote
    assert params.schedule.end == "2021-05-02"
    # DVC, git, dvc.yaml and feature_repo are there; dvc.yaml lists no code from outside
    assert (folder / ".dvc").is_dir() and (folder / ".git").is_dir()
    dvc = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"]
    assert dvc["ingest"]["cmd"] == "python -m mlops ingest" and "deps" not in dvc["ingest"]
    assert "monitor.max_rows" in dvc["monitor"]["params"]
    store = yaml.safe_load((folder / "feature_repo" / "feature_store.yaml").read_text())
    assert store["project"] == "churn_project"
    assert "/data/*" in (folder / ".gitignore").read_text()


def test_every_guess_is_a_commented_line(tmp_path: Path) -> None:
    made = init.create(args(tmp_path / "p", data_file(tmp_path / "src")))
    lines = made.params_path.read_text().splitlines()
    for key in ("entity_keys", "task", "min_rows", "partition", "holdout_partitions", "floor"):
        line = next(line for line in lines if line.strip().startswith(f"{key}:"))
        assert " # " in line, f"{key} has no reason beside it: {line!r}"
    # each feature line follows a comment naming it
    for i, line in enumerate(lines):
        if line.strip().startswith("- {name: ") and "dtype: " in line:
            name = line.split("name: ")[1].split(",")[0]
            assert lines[i - 1].strip().startswith(f"# {name}:")
        elif line.strip().startswith("- {name: "):  # a derived column
            assert " # " in line


def test_re_running_init_refuses_unless_forced(tmp_path: Path) -> None:
    source = data_file(tmp_path / "src")
    folder = tmp_path / "p"
    init.create(args(folder, source))
    # when init runs again on the same folder, then it names the folder and --force
    with pytest.raises(ConfigError, match=r"p: already holds a project.*--force"):
        init.create(args(folder, source))
    # and with --force it writes the project again
    made = init.create(args(folder, source, "--force", "--task", "classification"))
    assert load_params(made.params_path).contract.task == "classification"


def test_the_key_must_differ_from_the_timestamp(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be different columns"):
        init.create(args(tmp_path / "p", data_file(tmp_path / "src"), "--key", "day"))
    assert not (tmp_path / "p").exists()


def test_a_project_inside_a_git_repository_gets_a_dvc_subdir(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    source = data_file(tmp_path / "data")
    made = init.create(args(tmp_path / "projects" / "a", source))
    # then DVC is initialised in the folder as a sub-repository, and the source is used
    # where it is only when it is inside the folder: here it is copied
    assert (made.folder / ".dvc").is_dir()
    assert not (made.folder / ".git").exists()
    assert any("--subdir" in n for n in made.notes)
    # and a second project in a DVC repository uses that repository
    (tmp_path / ".dvc").mkdir()
    other = init.create(args(tmp_path / "projects" / "b", source))
    assert any(f"uses the DVC repository at {tmp_path}" in n for n in other.notes)


def test_the_cli_hands_init_its_arguments(tmp_path: Path) -> None:
    from mlops import cli

    ns = cli.parser().parse_args(["-v", "init", "DIR", "--source", "x.csv", "--key", "a", "b"])
    assert ns.command == "init" and ns.verbose
    assert ns.rest == ["DIR", "--source", "x.csv", "--key", "a", "b"]
    # and a missing source is a configuration error (exit 2) naming it
    code = init.main(
        [str(tmp_path / "p"), "--source", str(tmp_path / "none.csv"), "--target", "t"]
        + ["--timestamp", "ts"],
        ingest=lambda *_: None,
        validate=lambda *_: None,
    )
    assert code == 2
