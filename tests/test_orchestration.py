"""The Prefect flow under faults: a failing branch, a manual `dvc repro` meanwhile, a kill mid-run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from tests.factories.movielens import movielens_zip

pytestmark = pytest.mark.slow

# an independent branch beside MovieLens: slow enough to catch the flow mid-run
SIDE_BRANCH = {
    "side_wait": {"cmd": "python -c \"import time, pathlib; time.sleep(25); "
                         "pathlib.Path('data/side').mkdir(parents=True, exist_ok=True); "
                         "pathlib.Path('data/side/done.txt').write_text('done')\"",
                  "outs": ["data/side/done.txt"]},
}


def with_side_branch(project, http_server):
    url, sha = http_server.add("ml-latest-small.zip", movielens_zip())
    project.set_params({"movielens.sources.ml-latest-small": {"url": url, "sha256": sha}})
    dvc_yaml = yaml.safe_load((project.root / "dvc.yaml").read_text())
    dvc_yaml["stages"].update(SIDE_BRANCH)
    (project.root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))


def flow_cmd(*targets: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.flow", *targets]


def stale(project, *targets: str) -> dict:
    return json.loads(project.dvc("status", "--with-deps", "--json", *targets).stdout or "{}")


@pytest.fixture
def prefect_env(project, tmp_path_factory):
    project.env["PREFECT_HOME"] = str(tmp_path_factory.getbasetemp() / "prefect-home")
    return project


def test_a_failing_branch_stops_only_itself_and_the_summary_says_why(prefect_env, http_server):
    project = prefect_env
    with_side_branch(project, http_server)
    project.set_params({"movielens.prepare.valid_fraction": 1.5})  # schema error in the MovieLens branch
    result = project.run(*flow_cmd("movielens_baselines", "side_wait"), check=False)
    log = result.stdout + result.stderr
    assert result.returncode == 1
    assert "failed    movielens_download" in log and "valid_fraction = 1.5" in log
    assert "blocked   movielens_prepare" in log and "blocked   movielens_baselines" in log
    assert "ran       side_wait" in log
    assert (project.root / "data/side/done.txt").read_text() == "done"
    assert stale(project, "side_wait") == {}


def test_manual_dvc_repro_during_a_flow_gets_a_clear_message_and_changes_nothing(prefect_env, http_server):
    project = prefect_env
    with_side_branch(project, http_server)
    flow = subprocess.Popen(flow_cmd("side_wait"), cwd=project.root, env=project.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (_running(project, "time.sleep(25)") and _lock_held(project)):
            if flow.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the flow never held DVC's lock:\n{flow.communicate()[0][-3000:]}")
            time.sleep(0.5)
        manual = project.dvc("repro", "side_wait", check=False)
        assert manual.returncode != 0
        assert "Unable to acquire lock" in manual.stdout + manual.stderr
        out, _ = flow.communicate(timeout=600)
    finally:
        if flow.poll() is None:
            flow.kill()
    assert flow.returncode == 0, out[-3000:]
    assert "1 ran" in out
    assert stale(project, "side_wait") == {}


def test_flow_killed_mid_run_finishes_when_started_again(prefect_env, http_server):
    project = prefect_env
    with_side_branch(project, http_server)
    flow = subprocess.Popen(flow_cmd("side_wait", "movielens_prepare"), cwd=project.root, env=project.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not _running(project, "time.sleep(25)"):
        assert time.monotonic() < deadline and flow.poll() is None, "side_wait never started"
        time.sleep(0.5)
    os.killpg(flow.pid, signal.SIGKILL)  # the flow and the stage it runs, as a crash or `kill -9` of the job
    flow.wait()
    assert not (project.root / "data/side/done.txt").exists()
    again = project.run(*flow_cmd("side_wait", "movielens_prepare"))
    assert "pipeline finished" in again.stdout + again.stderr
    assert stale(project, "side_wait", "movielens_prepare") == {}
    assert (project.root / "data/side/done.txt").read_text() == "done"


def _lock_held(project) -> bool:
    """True while some process holds DVC's repo lock (zc.lockfile takes an flock on it)."""
    import fcntl
    with open(project.root / ".dvc/tmp/lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _running(project, needle: str) -> bool:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return needle in out


def timed_stage(name: str) -> dict:
    """A stage whose command records when it started and ended (wall clock) in data/timed/<name>.json."""
    script = (f"import json, pathlib, time; start = time.time(); time.sleep(4); "
              f"pathlib.Path('data/timed').mkdir(parents=True, exist_ok=True); "
              f"pathlib.Path('data/timed/{name}.json').write_text(json.dumps([start, time.time()]))")
    return {"cmd": f'python -c "{script}"', "outs": [f"data/timed/{name}.json"]}


def test_independent_stages_run_concurrently_up_to_max_parallel(prefect_env):
    project = prefect_env
    names = ["wide_a", "wide_b", "narrow_a", "narrow_b"]
    dvc_yaml = yaml.safe_load((project.root / "dvc.yaml").read_text())
    dvc_yaml["stages"].update({name: timed_stage(name) for name in names})
    (project.root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))

    def intervals(*stages: str) -> list[list[float]]:
        return [json.loads((project.root / f"data/timed/{s}.json").read_text()) for s in stages]

    project.run(*flow_cmd("wide_a", "wide_b"), "--max-parallel", "2")
    (a_start, a_end), (b_start, b_end) = intervals("wide_a", "wide_b")
    assert a_start < b_end and b_start < a_end  # the two commands overlapped

    project.run(*flow_cmd("narrow_a", "narrow_b"), "--max-parallel", "1")
    (a_start, a_end), (b_start, b_end) = intervals("narrow_a", "narrow_b")
    assert a_end <= b_start or b_end <= a_start  # one after the other
    assert stale(project, *names) == {}


def test_stage_output_streams_lines_and_throttled_progress_bar_redraws(tmp_path):
    """tqdm redraws with a carriage return and no newline; the flow shows the first redraw, then at most one per
    `progress_every` seconds, and every real line (echoing every redraw would flood the log)."""
    from pipelines.dvc_runner import DvcRunner, StageInfo

    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    script = textwrap.dedent(r"""
        import sys, time
        print("start", flush=True)
        for i in range(200):
            sys.stderr.write(f"\rbar {i}")
            sys.stderr.flush()
            time.sleep(0.001)
        sys.stderr.write("\n")
        print("done\r\nlast", end="")
    """)
    (tmp_path / "stage.py").write_text(script)
    seen: list[str] = []
    code, tail = DvcRunner(tmp_path).run_command(StageInfo("s", f"{sys.executable} stage.py", ()), dict(os.environ),
                                                 seen.append, progress_every=3600)
    assert code == 0
    assert seen == ["start", "bar 0", "bar 199", "done", "last"]
    assert tail.splitlines() == seen
