"""scripts/screenshots.py (`make screenshots`): which flow run it shows, found in a real MLflow store, the pages and
view it asks for, and its driver of headless Chromium, against a real browser (skipped, saying why, where none is
installed). Taking the three real shots needs a workspace that has run the flow: `make screenshots` does that."""

from __future__ import annotations

import importlib.util
import json
import sys
from io import BytesIO
from pathlib import Path

import pytest

from stages.common.cli import StageError

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("screenshots", REPO / "scripts" / "screenshots.py")
screenshots = sys.modules["screenshots"] = importlib.util.module_from_spec(_spec)  # scripts/ is no package
_spec.loader.exec_module(screenshots)


def test_the_newest_parent_run_of_a_flow_run_is_shown_with_its_stage_runs(mlflow_store):
    import mlflow

    client = mlflow.MlflowClient(mlflow_store)
    with pytest.raises(StageError, match="no MLflow experiment 'lesson5-movielens'"):
        screenshots.latest_flow_run(client, "lesson5-movielens")
    experiment = client.create_experiment("lesson5-movielens")
    clock = iter(range(1_000, 100_000, 1_000))

    def run(name: str, flow: str | None = None, parent: str | None = None) -> str:
        tags = {screenshots.FLOW_RUN_TAG: flow} if flow else {}
        tags |= {screenshots.PARENT_TAG: parent} if parent else {}
        return client.create_run(experiment, start_time=next(clock), tags=tags, run_name=name).info.run_id

    run("movielens_train@dot")  # a stage run outside the flow (`dvc repro`): no parent, no flow run
    with pytest.raises(StageError, match="no flow run in MLflow experiment 'lesson5-movielens' \\(1 runs"):
        screenshots.latest_flow_run(client, "lesson5-movielens")

    older = run("pipeline", flow="flow-a")
    run("movielens_train@dot", flow="flow-a", parent=older)
    newer = run("pipeline", flow="flow-b")
    run("movielens_train@bias", flow="flow-b", parent=newer)
    run("movielens_evaluate@bias", flow="flow-b", parent=newer)
    run("movielens_prepare")  # newer still, but no flow's
    run("pipeline", flow="flow-c")  # a flow run whose parent run has no stage run (every stage up to date)

    found = screenshots.latest_flow_run(client, "lesson5-movielens")
    assert (found.experiment_id, found.parent_run_id, found.flow_run_id) == (experiment, newer, "flow-b")
    assert found.stage_runs == ["movielens_evaluate@bias", "movielens_train@bias"]  # newest first


def test_the_pages_and_the_mlflow_view_asked_for():
    run = screenshots.FlowRun("7", "abc123", "0f1e-flow", ["movielens_train@bias"])
    assert screenshots.mlflow_url("http://127.0.0.1:5123", "7") == (
        "http://127.0.0.1:5123/#/experiments/7?workflowType=machine_learning"
    )
    assert (
        screenshots.prefect_url("http://127.0.0.1:4200", "0f1e-flow") == "http://127.0.0.1:4200/runs/flow-run/0f1e-flow"
    )
    view = screenshots.mlflow_view(run, ["val_mse", "best_epoch"])
    page = json.loads(view['MLflowLocalStorage-1.1-ExperimentPage-["7"]-ReactComponentState'])
    assert page["runsExpanded"] == {"abc123": True}
    assert page["selectedColumns"] == ["metrics.`val_mse`", "metrics.`best_epoch`"]
    assert set(page["columnWidths"]) <= set(page["columnOrder"])  # the UI sizes only ordered columns
    assert view["mlflow.assistant.panelOpen_v1"] == "false"
    # the plots shot is the top of `make plots`' page: the overlays of every workload's models, in dvc.yaml's order
    assert screenshots.overlay_plots(REPO / "dvc.yaml") == [
        "movielens_val_mse",
        "imdb_val_accuracy",
        "text_val_loss_per_char",
        "dogscats_val_accuracy",
    ]


@pytest.fixture
def browser():
    try:
        chromium = screenshots.find_chromium()
    except StageError as err:
        pytest.skip(f"{err} (the screenshots' browser driver is tested only where Chromium is installed)")
    browser = screenshots.Browser(chromium, size=(800, 600))
    yield browser
    browser.close()


def test_chromium_is_driven_to_set_a_view_wait_for_the_app_and_shoot_it_when_settled(browser, http_server, tmp_path):
    from PIL import Image

    http_server.add("health", b"OK")
    # an "app" that reads its view from localStorage, then draws late, as MLflow's does
    app = b"""<!DOCTYPE html><html><body style="margin:0"><script>
    setTimeout(() => { const box = document.createElement('div');
      box.style = 'width:300px;height:200px;background:rgb(200,30,30)';
      box.textContent = localStorage.getItem('view'); document.body.appendChild(box); }, 1500);
    </script></body></html>"""
    http_server.add("app.html", app)
    browser.set_local_storage(http_server.url("health"), {"view": "expanded"})
    browser.open(http_server.url("app.html"))
    browser.wait_for("document.body.innerText.includes('expanded')", "the app's view", timeout=30)
    size = screenshots.save_png(browser.settled_screenshot(whole_page=True), tmp_path / "shot.png")
    image = Image.open(tmp_path / "shot.png")
    assert image.size == (316, 216) and image.mode == "P"  # the content and a margin; a palette
    assert image.convert("RGB").getpixel((150, 150)) == pytest.approx((200, 30, 30), abs=8)
    assert image.convert("RGB").getpixel((310, 100)) == (255, 255, 255)
    assert size == (tmp_path / "shot.png").stat().st_size
    assert Image.open(BytesIO(browser.screenshot())).size == (800, 600)  # the viewport
    with pytest.raises(StageError, match="did not show the missing thing in 1 s"):
        browser.wait_for("document.querySelector('#missing')", "the missing thing", timeout=1)


def test_without_chromium_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CHROMIUM", raising=False)
    with pytest.raises(StageError, match="apt-get install chromium"):
        screenshots.find_chromium()
