"""What a person sees in the Airflow UI, in headless Chromium with the network blocked.

A throwaway Airflow runs this repo's DAGs on a small weekly project whose promotions need
a person. The story, each step through the UI a user would click:

1. the scheduled scoring run of 2013-W04 breaches and starts training; its candidate
   waits on the **Required Actions** page, with the gate's numbers and links;
2. approving it there (with a note) makes it champion, and ``mlops history`` names the
   Airflow user and the note;
3. a manual re-score from the **trigger form** (logical date: now, after the replay's
   end) scores the partition named in its ``partitions`` field;
4. a second breach inside the cooldown gives a skipped training run whose **run note**
   says why; a manual training run whose candidate fails the gate says so in its note;
5. a successful ``train`` task's log holds no ERROR line.

With ``MLOPS_DOCS_SCREENSHOTS=1`` the screenshots are also saved into ``docs/`` for the
README's walk-through.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import FLIGHTS, FLIGHTS_WEEKLY, REPO, make_project, merge
from tests.integration.airflow_stack import champion_snapshot, stack_env, up, wait_for

pytestmark = pytest.mark.integration
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")

BREACH, CALM = "2013-W04", "2013-W03"
# One scheduled scoring run (2013-W04: a cold snap, so a drift breach); training on
# breaches and manual runs only.
SURFACES = merge(
    FLIGHTS_WEEKLY,
    {"schedule": {"training": None, "start": "2013-01-21", "end": "2013-01-21"}},
)
LOCAL = ("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")
DOCS = {
    "required_action": "airflow-required-action.png",
    "trigger_form": "airflow-rescore-form.png",
    "notes": "airflow-run-notes.png",
}


@pytest.fixture(scope="module")
def champion_project(tmp_path_factory) -> Callable[[], tuple[Path, str]]:
    return champion_snapshot(
        tmp_path_factory.mktemp("surfaces"), lambda root: make_project(root, FLIGHTS, SURFACES)
    )


def edit(path: Path, **groups: dict[str, Any]) -> None:
    """Change keys of params.yaml groups; the tasks read the file at each run."""
    raw = yaml.safe_load(path.read_text())
    for group, keys in groups.items():
        raw[group].update(keys)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


class Browser:
    """One logged-in page; every request off this host is aborted and recorded."""

    def __init__(self, pw: Any, url: str, password: str, shots: Path) -> None:
        self.url, self.shots, self.blocked = url, shots, []
        self.browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 900})
        self.page.route("**/*", self._route)
        self.page.goto(f"{url}/auth/login")
        self.page.fill("input[name=username]", "admin")
        self.page.fill("input[name=password]", password)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url(lambda u: "/auth/login" not in u, timeout=60_000)

    def _route(self, route: Any) -> None:
        if route.request.url.startswith(LOCAL):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def open(self, path: str, text: str) -> Any:
        """Open ``path`` and wait until ``text`` is visible."""
        self.page.goto(self.url + path)
        self.page.get_by_text(text).first.wait_for(timeout=60_000)
        time.sleep(1)  # let the page settle before a screenshot
        return self.page

    def shot(self, name: str) -> Path:
        path = self.shots / DOCS[name]
        self.page.screenshot(path=str(path))
        return path


def settled(api: Any, dag: str, run: str) -> dict[str, Any] | None:
    r = api.run(dag, run)
    return r if r["state"] in ("success", "failed") else None


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "shots"
    folder.mkdir()
    yield folder
    if os.environ.get("MLOPS_DOCS_SCREENSHOTS") == "1":
        for png in folder.glob("*.png"):
            shutil.copy(png, REPO / "docs" / png.name)


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium package")
def test_the_airflow_ui_tells_the_story(champion_project, tmp_path: Path, shots: Path) -> None:
    # given a champion (v1), promotions that need a person, and a new seed (so a retrain
    # on the same weeks gives a new version)
    params_path, champion = champion_project()
    edit(params_path, promote={"approval": "manual", "min_improvement": -1.0})
    raw = yaml.safe_load(params_path.read_text())
    edit(params_path, train={"seed": raw["train"]["seed"] + 1})
    env = stack_env(params_path, tmp_path / "airflow", extra={"MLOPS_APPROVAL_POKE_SECONDS": "2"})
    stack, api = up(env)
    password = json.loads(
        (tmp_path / "airflow/simple_auth_manager_passwords.json.generated").read_text()
    )["admin"]
    try:
        with playwright.sync_playwright() as pw:
            ui = Browser(pw, stack.url, password, shots)
            _walk(api, stack, ui, params_path, champion, env)
            assert ui.blocked == [], ui.blocked  # the UI asked for nothing off this host
            ui.browser.close()
    finally:
        stack.stop(grace=5)


def _walk(api: Any, stack: Any, ui: Browser, params_path: Path, champion: str, env: dict) -> None:
    name = yaml.safe_load(params_path.read_text())["model_name"]
    # when both DAGs are unpaused: the replay scores 2013-W04, which breaches
    api.patch("/dags/training", {"is_paused": False})
    api.patch("/dags/scoring", {"is_paused": False})
    retrain = wait_for(
        "the retraining run", lambda: next(iter(api.runs("training")), None), 600, stack
    )
    run_id = retrain["dag_run_id"]
    wait_for(
        "the approval request",
        lambda: api.tis("training", run_id)["approval"]["state"] == "deferred",
        600,
        stack,
    )

    # then the Required Actions page lists it, and its task page shows the gate and links
    page = ui.open("/required_actions", f"Make {name} v2 the champion?")
    assert page.get_by_text("Approval Required").first.is_visible()
    page = ui.open(
        f"/dags/training/runs/{run_id}/tasks/approval/required_actions",
        "passed the promotion gate",
    )
    assert page.get_by_text("Holdout roc_auc: candidate").first.is_visible()
    assert page.get_by_role("link", name="MLflow version").first.is_visible()
    ui.shot("required_action")

    # when the approver approves it there, with a note
    page.locator("input").last.fill("holdout on par; slices checked")
    page.get_by_role("button", name="Approve").click()
    done = wait_for("the approved run", lambda: settled(api, "training", run_id), 300, stack)

    # then v2 is champion, and `mlops history` names the Airflow user and the note
    assert done["state"] == "success", api.failure("training", run_id)
    history = subprocess.run(
        [str(Path(sys.executable).with_name("mlops")), "history", name],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "approve    v2  by admin  (holdout on par; slices checked)" in history, history
    assert f"champion: v{champion} -> v2  by admin" in history, history
    note = api.run("training", run_id)["note"]
    assert f"approval of v2 approved: champion v{champion} -> v2" in note, note

    # when a person re-scores 2013-W03 from the trigger form (logical date: now)
    ui.open("/dags/scoring", "scoring")
    page.get_by_role("button", name="Trigger").first.click()
    time.sleep(1.5)
    form = page.locator("[role=dialog][data-state=open]")
    form.locator("textarea").first.fill(CALM)
    ui.shot("trigger_form")
    form.get_by_role("button", name="Trigger").click()
    manual = wait_for(
        "the manual scoring run",
        lambda: next((r for r in api.runs("scoring") if r["run_type"] == "manual"), None),
        120,
        stack,
    )
    rescored = wait_for(
        "the re-score", lambda: settled(api, "scoring", manual["dag_run_id"]), 600, stack
    )

    # then it scored the named partition with the new champion, the grid naming the task
    assert rescored["state"] == "success", api.failure("scoring", manual["dag_run_id"])
    assert rescored["conf"] == {"partitions": [CALM]}
    scores = [t for t in api.all_tis("scoring", manual["dag_run_id"]) if t["task_id"] == "score"]
    assert [(t["state"], t["rendered_map_index"]) for t in scores] == [("success", CALM)]
    predictions = params_path.parent / "data" / "predictions" / f"{CALM}.parquet"
    import pandas as pd

    assert set(pd.read_parquet(predictions)["model_version"].astype(str)) == {"2"}

    # when another breach arrives inside the cooldown
    asset = next(a for a in api.get("/assets")["assets"] if a["name"] == "drift_breach")
    api.post(
        "/assets/events",
        {
            "asset_id": asset["id"],
            "extra": {"partition": BREACH, "kind": "drift", "reasons": ["x"]},
        },
    )
    skipped = wait_for(
        "the skipped run",
        lambda: next(
            (
                r
                for r in api.runs("training")
                if r["dag_run_id"] != run_id and r["state"] == "success"
            ),
            None,
        ),
        300,
        stack,
    )
    # then the run is green with skipped tasks, and its note says why
    assert skipped["note"].startswith("skipped: cooldown: the last breach retrain was at"), skipped
    assert {t["state"] for t in api.all_tis("training", skipped["dag_run_id"])} == {"skipped"}

    # when a manual training run of one candidate meets a gate it cannot pass
    edit(params_path, promote={"approval": "auto", "min_improvement": 1.0})
    only = yaml.safe_load(params_path.read_text())["train"]["candidates"][0]["name"]
    api.trigger("training", "manual_gate", {"candidates": [only]})
    gated = wait_for("the gated run", lambda: settled(api, "training", "manual_gate"), 600, stack)

    # then it says in its note that the gate failed and the champion stays
    assert gated["state"] == "success", api.failure("training", "manual_gate")
    newest, *earlier = gated["note"].splitlines()
    assert newest.startswith("gate failed for v3:") and newest.endswith("champion v2 kept")
    assert earlier == ["training: manual run: configured window"]
    # the run's page shows the note's first line: the newest decision
    page = ui.open("/dags/training/runs/manual_gate", "gate failed for v3")
    ui.shot("notes")

    # and the successful train task's log holds no ERROR line
    log = api.get(f"/dags/training/dagRuns/{run_id}/taskInstances/train/logs/1", full_content=True)
    lines = [e for e in log["content"] if isinstance(e, dict)]
    assert lines and not [e for e in lines if str(e.get("level", "")).lower() == "error"]
