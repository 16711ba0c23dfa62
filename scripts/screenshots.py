"""The screenshots in docs/images, taken by headless Chromium from this workspace's latest flow run.

    make screenshots        # python scripts/screenshots.py [--experiment lesson5-movielens] [--out docs/images]

- mlflow-experiment.png: the experiment's runs table (MLflow UI, model-training view), the latest flow run's parent
  run expanded into its stage runs, with their metrics as columns.
- prefect-run-graph.png: that flow run's page in the Prefect UI: its graph of stage tasks on a time line.
- dvc-plots.png: the top of `make plots`' page (`dvc plots show` with its offline template): each workload's models
  overlaid, the plots of dvc.yaml that overlay files, rendered alone. Alone, because a workspace that ran part of the
  pipeline has no `make plots` page at all: DVC 3.67 stops at the first directory output of a stage not run there.

The flow run is the newest MLflow parent run of the experiment (the one `make run` or `python -m pipelines.flow
movielens_analyze` made); its `prefect.flow_run_id` tag names the Prefect run shown. It starts an MLflow UI on a free
loopback port and uses the Prefect server PREFECT_API_URL names, else the project's (pipelines/server.py, started
for the shots and stopped after if none was running), and stops what it started. Chromium is driven over the DevTools
protocol, so each page is shot once the app has drawn what it should and the picture no longer changes.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipelines import server
from stages.common.cli import StageError
from stages.common.environment import apply_defaults

ROOT = Path(__file__).resolve().parent.parent

FLOW_RUN_TAG = "prefect.flow_run_id"
PARENT_TAG = "mlflow.parentRunId"
# Metric columns of the runs table, those the experiment's runs have (MovieLens' defaults: training and evaluation)
COLUMNS = ("val_mse", "val_rmse", "best_epoch", "train_ratings_per_s")
SIZE = (1400, 900)
TEMPLATE = ROOT / ".cache/vega/template.html"  # `make plots` writes it (scripts/offline_plots_template.py)


@dataclass
class FlowRun:
    """The MLflow side of a flow run: the experiment, its parent run there and the stage runs under it."""

    experiment_id: str
    parent_run_id: str
    flow_run_id: str
    stage_runs: list[str]  # run names, newest first


def latest_flow_run(client, experiment: str) -> FlowRun:
    """The newest parent run in `experiment` that a Prefect flow run made, with its stage runs."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise StageError(f"no MLflow experiment {experiment!r}: run the flow first (`make run`)")
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"], max_results=5000)
    children: dict[str, list[str]] = {}
    for run in runs:
        if parent := run.data.tags.get(PARENT_TAG):
            children.setdefault(parent, []).append(run.info.run_name)
    for run in runs:
        if run.info.run_id in children and FLOW_RUN_TAG in run.data.tags:
            return FlowRun(found.experiment_id, run.info.run_id, run.data.tags[FLOW_RUN_TAG], children[run.info.run_id])
    raise StageError(
        f"no flow run in MLflow experiment {experiment!r} ({len(runs)} runs, none a flow's parent run): run the flow "
        "first, e.g. `make run`, or `PREFECT_API_URL=$(.venv/bin/python -m pipelines.server url) "
        ".venv/bin/python -m pipelines.flow movielens_analyze`"
    )


def mlflow_url(base: str, experiment_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning"  # runs tables, not GenAI's


def prefect_url(ui: str, flow_run_id: str) -> str:
    return f"{ui}/runs/flow-run/{flow_run_id}"


def mlflow_view(run: FlowRun, columns: list[str]) -> dict[str, str]:
    """The MLflow UI's localStorage (3.17's keys) for the view shot: the parent run expanded, the metric columns
    shown, the run names readable, the assistant panel closed."""
    metrics = [f"metrics.`{name}`" for name in columns]
    page = {
        "selectedColumns": metrics,
        "runsExpanded": {run.parent_run_id: True},
        # the UI sizes only the columns it is given an order for
        "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *metrics],
        "columnWidths": {"attributes.`Run Name`": 250} | {column: 130 for column in metrics},
    }
    return {
        f'MLflowLocalStorage-1.1-ExperimentPage-["{run.experiment_id}"]-ReactComponentState': json.dumps(page),
        "mlflow.assistant.panelOpen_v1": "false",
        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    }


def overlay_plots(dvc_yaml: Path) -> list[str]:
    """The ids of dvc.yaml's top-level plots that overlay several files (each workload's models), in its order."""
    plots = yaml.safe_load(dvc_yaml.read_text()).get("plots", [])
    entries = [next(iter(entry.items())) for entry in plots if isinstance(entry, dict)]
    return [name for name, props in entries if isinstance((props or {}).get("y"), dict)]


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    raise StageError("no Chromium found: `apt-get install chromium` (Debian), or set CHROMIUM to a Chrome binary")


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page; its own throwaway profile)."""

    def __init__(self, chromium: str, size: tuple[int, int] = SIZE, timeout: float = 60):
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="lesson5-chromium-")
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
        self.process = subprocess.Popen(
            [chromium, *flags, f"--window-size={size[0]},{size[1]}", "--remote-debugging-port=0"]
            + [f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = self._devtools_port(timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
                page = next(t for t in json.load(answer) if t["type"] == "page")
            self.socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
        except BaseException:
            self._stop()
            raise
        self.ids = itertools.count(1)
        self.size = size
        self.send(
            "Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1, mobile=False
        )

    def _devtools_port(self, timeout: float) -> int:
        active = Path(self.profile, "DevToolsActivePort")  # Chromium writes its port there once it listens
        deadline = time.monotonic() + timeout
        while not (active.exists() and active.read_text().strip()):
            if self.process.poll() is not None:
                raise StageError(f"Chromium exited with {self.process.returncode} before its DevTools port opened")
            if time.monotonic() > deadline:
                raise StageError(f"Chromium's DevTools port did not open in {timeout:.0f} s")
            time.sleep(0.1)
        return int(active.read_text().split()[0])

    def send(self, method: str, **params) -> dict:
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=120))
            if message.get("id") == ident:  # events in between are not needed
                if "error" in message:
                    raise StageError(f"Chromium: {method} failed: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def set_local_storage(self, page: str, items: dict[str, str]) -> None:
        """Set `items` in the localStorage of `page`'s origin, through `page` (one without the app, which would
        write its own), before the app reads them."""
        self.open(page)
        self.wait_for(f"location.href === {json.dumps(page)} && document.readyState === 'complete'", page, timeout=30)
        self.evaluate(f"Object.entries({json.dumps(items)}).forEach(([k, v]) => localStorage.setItem(k, v))")

    def wait_for(self, condition: str, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"(() => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()"):
            if time.monotonic() > deadline:
                raise StageError(f"the page did not show {what} in {timeout:.0f} s: {self.evaluate('location.href')}")
            time.sleep(0.5)

    def screenshot(self, whole_page: bool = False) -> bytes:
        """The viewport as PNG bytes; with `whole_page`, the page's content (to its right and bottom edges) instead."""
        params = {"format": "png"}
        if whole_page:
            edges = "[...document.body.querySelectorAll('*')].map(e => e.getBoundingClientRect())"
            right, bottom = self.evaluate(
                f"(b => [Math.max(...b.map(r => r.right)), Math.max(...b.map(r => r.bottom))])({edges})"
            )
            params["clip"] = {"x": 0, "y": 0, "width": round(right) + 16, "height": round(bottom) + 16, "scale": 1}
            params["captureBeyondViewport"] = True
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])

    def settled_screenshot(self, whole_page: bool = False, timeout: float = 30) -> bytes:
        """A screenshot once two taken a second apart are the same (charts drawn, animations over)."""
        deadline = time.monotonic() + timeout
        last = self.screenshot(whole_page)
        while time.monotonic() < deadline:
            time.sleep(1)
            shot = self.screenshot(whole_page)
            if shot == last:
                return shot
            last = shot
        print(f"  (the page still changed after {timeout:.0f} s: the last picture is kept)", file=sys.stderr)
        return last

    def _stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def close(self) -> None:
        self.socket.close()
        self._stop()


def save_png(data: bytes, path: Path) -> int:
    """Write the PNG with its colours reduced to a 256-colour palette (a few times smaller, the same to the eye);
    returns its size in bytes."""
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(data)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path.stat().st_size


@contextmanager
def mlflow_ui(store: str):
    """An MLflow UI on a free loopback port over `store`; yields its base URL."""
    port = server.free_port()
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1"]
    ui = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        server.wait_healthy(url, ui, timeout=180)
        yield url
    finally:
        ui.terminate()
        try:
            ui.wait(30)
        except subprocess.TimeoutExpired:
            ui.kill()
            ui.wait()


@contextmanager
def prefect_api():
    """The API URL of PREFECT_API_URL's server, else the project's, started (and stopped after) if not running."""
    if api := os.environ.get("PREFECT_API_URL"):
        yield api.rstrip("/")
        return
    home = server.prefect_home()
    if state := server.running(home):
        yield state["url"]
        return
    state = server.start(home)
    try:
        yield state["url"]
    finally:
        server.stop(home)


def flow_run_name(api: str, flow_run_id: str) -> str:
    try:
        with urllib.request.urlopen(f"{api}/flow_runs/{flow_run_id}", timeout=30) as answer:
            return json.load(answer)["name"]
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise StageError(
                f"the Prefect server at {api} has no flow run {flow_run_id} (the MLflow run's {FLOW_RUN_TAG}): "
                "was the flow run against another server (PREFECT_API_URL) or an ephemeral one?"
            ) from err
        raise


def render_plots(out: Path) -> Path:
    """`make plots`' page (its template, dvc.yaml's overlays) into `out`; the path of its index.html."""
    if not TEMPLATE.exists():
        raise StageError(f"no {TEMPLATE.relative_to(ROOT)}: `make screenshots` (or `make plots`) writes it first")
    plots = overlay_plots(ROOT / "dvc.yaml")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = ["dvc", "plots", "show", "--html-template", str(TEMPLATE), "-o", str(out), *plots]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    index = out / "index.html"
    if done.returncode != 0 or not index.exists():
        raise StageError(f"`{' '.join(command)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return index


def take(experiment: str, out: Path, columns: list[str] | None = None) -> dict[str, int]:
    """The three screenshots into `out`; their sizes in bytes by file name."""
    import mlflow

    from stages.common.tracking import tracking_uri

    apply_defaults()
    chromium = find_chromium()
    store = tracking_uri(ROOT)
    client = mlflow.MlflowClient(store)
    run = latest_flow_run(client, experiment)
    metrics = {key for info in client.search_runs([run.experiment_id], max_results=5000) for key in info.data.metrics}
    shown = [name for name in (columns or COLUMNS) if name in metrics]
    print(f"flow run {run.flow_run_id}: MLflow experiment {experiment}, stage runs {', '.join(run.stage_runs)}")
    sizes = {}
    with ExitStack() as stack:
        browser = Browser(chromium)
        stack.callback(browser.close)

        clock = [time.perf_counter()]

        def keep(name: str, data: bytes) -> None:  # each shot's seconds count the servers it started
            sizes[name] = save_png(data, out / name)
            now = time.perf_counter()
            print(f"  {out / name}: {sizes[name] / 1024:.0f} KB, {now - clock[0]:.0f} s")
            clock[0] = now

        base = stack.enter_context(mlflow_ui(store))
        browser.set_local_storage(f"{base}/health", mlflow_view(run, shown))
        browser.open(mlflow_url(base, run.experiment_id))
        names = " && ".join(f"document.body.innerText.includes({json.dumps(n)})" for n in run.stage_runs[:10])
        browser.wait_for(f"document.body.innerText.includes('matching runs') && {names}", "the stage runs")
        keep("mlflow-experiment.png", browser.settled_screenshot())

        api = stack.enter_context(prefect_api())
        name = flow_run_name(api, run.flow_run_id)
        browser.open(prefect_url(api.removesuffix("/api"), run.flow_run_id))
        browser.wait_for(
            f"document.body.innerText.includes({json.dumps(name)}) && document.querySelector('canvas')", name
        )
        keep("prefect-run-graph.png", browser.settled_screenshot())

        index = render_plots(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lesson5-plots-"))))
        browser.open(index.as_uri())
        drawn = "document.querySelectorAll('.vega-embed svg, .vega-embed canvas').length"
        browser.wait_for(f"{drawn} >= {len(overlay_plots(ROOT / 'dvc.yaml'))}", "every overlay plot drawn")
        keep("dvc-plots.png", browser.settled_screenshot(whole_page=True))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="lesson5-movielens", help="the MLflow experiment shown")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images", help="where the PNGs go")
    parser.add_argument("--columns", help=f"metric columns, comma-separated (default: {','.join(COLUMNS)})")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))  # the project's server, as the Makefile sets it
    started = time.perf_counter()
    try:
        take(args.experiment, args.out, args.columns.split(",") if args.columns else None)
    except StageError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    print(f"screenshots taken in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
