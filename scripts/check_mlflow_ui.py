"""Open an MLflow store's experiment page in a real headless browser (Chromium) and say what it lands on.

    python scripts/check_mlflow_ui.py [STORE_URI] [EXPERIMENT_NAME]   (default: sqlite:///mlflow.db, lesson5-movielens)

MLflow 3's UI opens an experiment without `mlflow.experimentKind` as a GenAI one (an "Overview" of traces, "Agent
versions"); the project's experiments carry the model-training kind. This starts `mlflow ui` on a free port, renders
the page with Chromium (`--dump-dom` after the app has run) and prints the tabs and markers it finds."""

from __future__ import annotations

import re
import subprocess
import sys

import mlflow

from pipelines.server import free_port, wait_healthy
from stages.common.environment import apply_defaults

GENAI = ("Usage | Quality | Tool calls", "Token Usage", "Detect Issues")
TRAINING = ("Run Name", "matching runs", "Columns", "Group by")
MODEL_TRAINING = "workflowType=machine_learning"  # the UI's own switch (its sidebar's "Model training")


def main(store: str = "sqlite:///mlflow.db", experiment: str = "lesson5-movielens") -> int:
    apply_defaults()
    found = mlflow.MlflowClient(store).get_experiment_by_name(experiment)
    if found is None:
        print(f"error: no experiment {experiment} in {store}", file=sys.stderr)
        return 1
    port = free_port()
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            f"{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, ui, timeout=120)
        print(f"experiment {experiment}, kind {found.tags.get('mlflow.experimentKind')!r}")
        for query in ("", f"?{MODEL_TRAINING}"):
            page = f"{url}/#/experiments/{found.experiment_id}{query}"
            title, text = rendered(page)
            print(f"\n{page}\n  lands on: {title!r}")
            print(f"  model-training markers: {[m for m in TRAINING if m in text]}")
            print(f"  GenAI markers: {[m for m in GENAI if m in text]}")
    finally:
        ui.terminate()
        ui.wait(30)
    return 0


def rendered(page: str) -> tuple[str, str]:
    """(the page's title, its visible text) once MLflow's app has rendered it in headless Chromium."""
    chromium = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=25000"]
    dom = subprocess.run([*chromium, "--dump-dom", page], capture_output=True, text=True, timeout=180).stdout
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    text = re.sub(r"<[^>]+>", " | ", re.sub(r"<(script|style).*?</\1>", "", dom, flags=re.S))
    return (title.group(1).strip() if title else ""), text


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
