"""Contract of the DVC runner behind the flow, on a toy dvc.yaml of shell stages: the graph as DVC reads it,
up-to-date checks, dvc.lock entries `dvc status` agrees with, the run-cache, DVC's repo lock, and streamed output.
Fast: no Prefect, no TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipelines.dvc_runner import DvcRunner, StageInfo, python_env
from tests.factories.repository import init_repository
from tests.factories.toy import CHAIN, toy_project, write_file_stage


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # DVC names stages relative to the current folder: the flow runs from the repo root


def dvc(root, *args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, check=check)


def reproduce(runner: DvcRunner, name: str) -> str:
    """What the flow's task does for one stage, in order."""
    outcome = runner.prepare(name)
    if outcome == "run":
        code, tail, *_ = runner.run_command(runner.stages([name])[name], python_env(), lambda line: None)
        assert code == 0, tail
        runner.record(name)
    return outcome


def test_the_graph_is_dvc_yamls_in_dependency_order_and_targets_take_their_upstream(tmp_path):
    runner = DvcRunner(toy_project(tmp_path, CHAIN))
    stages = runner.stages()
    assert list(stages).index("first") < list(stages).index("second") < list(stages).index("third")
    assert stages["third"].upstream == ("second",) and stages["apart"].upstream == ()
    assert list(runner.stages(["second"])) == ["first", "second"]
    with pytest.raises(ValueError, match="no stage 'nope' in dvc.yaml"):
        runner.stages(["nope"])


def test_a_stage_runs_once_is_recorded_as_dvc_would_and_is_then_up_to_date(tmp_path):
    root = toy_project(tmp_path, CHAIN)
    runner = DvcRunner(root)
    assert [reproduce(runner, name) for name in runner.stages()] == ["run"] * 4
    assert json.loads(dvc(root, "status", "--json").stdout) == {}  # what DVC itself reads from dvc.lock
    assert "Running stage" not in dvc(root, "repro").stdout
    runner = DvcRunner(root)
    assert [reproduce(runner, name) for name in runner.stages()] == ["skipped"] * 4

    # a changed input reruns the stages that read it; their outputs come out the same, so nothing below reruns
    (root / "input.txt").write_text("another input\n")
    runner = DvcRunner(root)
    assert {name: reproduce(runner, name) for name in runner.stages()} == {
        "first": "run",
        "second": "skipped",
        "third": "skipped",
        "apart": "run",
    }


def test_a_stage_whose_outputs_are_gone_is_restored_from_the_run_cache(tmp_path):
    root = toy_project(tmp_path, CHAIN)
    runner = DvcRunner(root)
    for name in runner.stages(["first"]):
        reproduce(runner, name)
    (root / "data/first.txt").unlink()
    assert reproduce(DvcRunner(root), "first") == "restored"
    assert (root / "data/first.txt").read_text() == "done"
    assert json.loads(dvc(root, "status", "--json", "first").stdout) == {}


def test_a_failing_command_returns_its_code_and_the_tail_of_its_output(tmp_path):
    root = toy_project(tmp_path, {"bad": write_file_stage("data/bad.txt", fail="disk on fire")})
    runner = DvcRunner(root)
    assert runner.prepare("bad") == "run"
    code, tail, *_ = runner.run_command(runner.stages()["bad"], python_env(), lambda line: None)
    assert code == 3 and tail.splitlines()[-1] == "disk on fire"
    assert not (root / "dvc.lock").exists()


def test_a_command_past_its_timeout_is_stopped_with_what_it_started_and_fails(tmp_path):
    import psutil

    script = (
        "import pathlib, subprocess, time; child = subprocess.Popen(['sleep', '600']); "
        "pathlib.Path('child.pid').write_text(str(child.pid)); time.sleep(600)"
    )
    root = toy_project(tmp_path, {"stuck": {"cmd": f'python -c "{script}"', "outs": ["data/stuck.txt"]}})
    runner = DvcRunner(root)
    assert runner.prepare("stuck") == "run"
    code, tail, *_ = runner.run_command(runner.stages()["stuck"], python_env(), lambda line: None, timeout_s=6)
    assert code != 0 and tail.splitlines()[-1].startswith("stopped: still running after its timeout of 0.1 min"), tail
    child = int((root / "child.pid").read_text())  # written at once; 6 s leave room on a loaded machine
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_while_the_runner_holds_dvcs_lock_a_manual_dvc_repro_stops_and_changes_nothing(tmp_path):
    root = toy_project(tmp_path, CHAIN)
    runner = DvcRunner(root)
    with runner.hold_lock():
        manual = dvc(root, "repro", "first", check=False)
        assert manual.returncode != 0 and "Unable to acquire lock" in manual.stdout + manual.stderr
        assert reproduce(runner, "first") == "run"  # the runner's own DVC calls reuse the lock it holds
    assert not (root / "data/second.txt").exists()
    assert set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) == {"first"}


def test_stage_output_streams_lines_and_throttled_progress_bar_redraws(tmp_path):
    """tqdm redraws with a carriage return and no newline; the flow shows the first redraw, then at most one per
    `progress_every` seconds, and every real line (echoing every redraw would flood the log)."""
    init_repository(tmp_path, git=False)
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
    code, tail, *_ = DvcRunner(tmp_path).run_command(
        StageInfo("s", f"{sys.executable} stage.py", ()), dict(os.environ), seen.append, progress_every=3600
    )
    assert code == 0
    assert seen == ["start", "bar 0", "bar 199", "done", "last"]
    assert tail.splitlines() == seen


def test_a_commands_cpu_time_counts_every_process_it_started(tmp_path):
    init_repository(tmp_path, git=False)
    (tmp_path / "burn.py").write_text(
        "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3: pass\n"
    )
    (tmp_path / "hold.py").write_text("block = bytearray(300 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\n")
    child = f"{sys.executable} -c 'import subprocess, sys; subprocess.run([sys.executable, \"burn.py\"])'"
    code, _, cpu_seconds, peak_mb = DvcRunner(tmp_path).run_command(
        StageInfo("s", f"{sys.executable} burn.py && {child} && {sys.executable} hold.py", ()),
        dict(os.environ),
        lambda line: None,
    )
    assert code == 0 and cpu_seconds >= 0.6  # each burns 0.3 s of CPU: the command's own and its child's count
    assert peak_mb >= 300  # hold.py touched 300 MiB: the largest of the processes it started


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it in the process runs."""


@pytest.mark.parametrize("before", ["no dvc.lock yet", "a dvc.lock"])
def test_dvc_lock_is_replaced_whole_so_a_kill_mid_write_or_a_reader_never_sees_half(tmp_path, monkeypatch, before):
    """DVC rewrites dvc.lock in place; the runner has it write a copy that then replaces dvc.lock, so a stage reading
    dvc.lock meanwhile (its inputs' hashes) and a run killed mid-write both find the last whole file."""
    from dvc.dvcfile import Lockfile

    root = toy_project(tmp_path, CHAIN)
    if before == "a dvc.lock":
        runner = DvcRunner(root)
        with runner.hold_lock():
            reproduce(runner, "apart")
    whole = (root / "dvc.lock").read_bytes() if before == "a dvc.lock" else None
    seen_while_writing = []

    def killed_mid_write(self, stages, **kwargs):
        Path(self.path).write_text("schema: '2.0'\nstages:\n  first:\n    deps:\n    - pa")  # the kill's cut
        seen_while_writing.append((root / "dvc.lock").read_bytes() if (root / "dvc.lock").exists() else None)
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(Lockfile, "dump_stages", killed_mid_write)
        runner = DvcRunner(root)
        with pytest.raises(Killed), runner.hold_lock():
            reproduce(runner, "first")
    assert seen_while_writing == [whole]  # what a reader saw during the write
    assert (root / "dvc.lock").read_bytes() == whole if whole else not (root / "dvc.lock").exists()

    runner = DvcRunner(root)
    with runner.hold_lock():
        assert reproduce(runner, "first") == "restored"  # its command had finished: DVC's run-cache holds it
    assert json.loads(dvc(root, "status", "--json", "first").stdout) == {}


# a kill in the middle of DVC's own rewrite of the file, or between its truncation and the write
@pytest.mark.parametrize("left", ['{"write": {"data/fir', ""], ids=["truncated", "empty"])
def test_a_rwlock_file_left_truncated_by_a_killed_process_is_reset_once_the_runner_holds_the_lock(
    tmp_path, capfd, left
):  # capfd: DVC's log handler keeps the stream it first saw, which capsys would close after the first case
    root = toy_project(tmp_path, CHAIN)
    (root / ".dvc/tmp").mkdir(exist_ok=True)
    (root / ".dvc/tmp/rwlock").write_text(left)
    assert "JSON structure is corrupted" in dvc(root, "repro", "first", check=False).stderr  # plain DVC is stuck
    runner = DvcRunner(root)
    with runner.hold_lock():
        assert reproduce(runner, "first") == "run"
    assert "left unreadable by an interrupted DVC process" in capfd.readouterr().err
    assert json.loads(dvc(root, "status", "--json", "first").stdout) == {}


def test_stage_timeouts_need_a_default_and_name_real_stages(tmp_path):
    from pipelines.flow import check_timeouts
    from pipelines.params import PipelineParams
    from stages.common.params import ParamsError, validate_section

    root = toy_project(tmp_path, CHAIN)
    section = {"max_parallel": 2, "download_retries": 0, "timeout_minutes": {"default": 60, "second": 1}}
    params = validate_section("pipeline", section, PipelineParams)
    check_timeouts(params, root / "dvc.yaml")
    assert params.timeout_s("second") == 60 and params.timeout_s("third") == 3600
    assert params.timeout_s("second@item") == 60  # a foreach/matrix stage by its name without @item
    for bad in ({"second": 1}, {"default": 0}):
        with pytest.raises(ParamsError, match="timeout_minutes"):
            validate_section("pipeline", {**section, "timeout_minutes": bad}, PipelineParams)
    typo = validate_section("pipeline", {**section, "timeout_minutes": {"default": 60, "secnd": 1}}, PipelineParams)
    with pytest.raises(ParamsError, match="pipeline.timeout_minutes names no stage of .*: secnd"):
        check_timeouts(typo, root / "dvc.yaml")


def test_with_the_projects_linked_cache_a_rerun_replaces_outputs_and_leaves_their_cached_copies(tmp_path):
    """.dvc/config links outputs to the cache (one copy on disk): the project's atomic writers replace a linked
    output, a persisted one included, and never write through the link into the cached copy."""
    import shutil

    from tests.conftest import REPO

    script = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path; "
        "from stages.common.io import atomic_dir, write_text; text = Path('input.txt').read_text(); "
        "write_text('data/copy.txt', text); "
        "exec('with atomic_dir(\\'data/kept\\') as out: (out / \\'copy.txt\\').write_text(text.upper())')"
    )
    stage = {
        "cmd": f'python -c "{script}"',
        "deps": ["input.txt"],
        "outs": ["data/copy.txt", {"data/kept": {"persist": True}}],
    }
    root = toy_project(tmp_path, {"copy": stage})
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    assert reproduce(DvcRunner(root), "copy") == "run"
    cache = [p for p in (root / ".dvc/cache/files/md5").rglob("*") if p.is_file() and not p.name.endswith(".dir")]
    outputs = [root / "data/copy.txt", root / "data/kept/copy.txt"]
    assert {p.stat().st_ino for p in outputs} == {p.stat().st_ino for p in cache} and len(cache) == 2  # one copy each
    # the run summary's disk figures count a linked file once
    from pipelines.flow import disk_usage

    usage, manifests = disk_usage(str(root)), [p for p in (root / ".dvc/cache").rglob("*.dir")]
    linked = sum(p.stat().st_size for p in outputs) / 1e6
    unlinked = sum(p.stat().st_size for p in (root / "data").rglob(".gitignore")) / 1e6  # DVC's, not outputs
    assert usage["outputs"] == pytest.approx(linked + unlinked)
    assert usage["cache"] == pytest.approx(linked + sum(p.stat().st_size for p in manifests) / 1e6)
    assert usage["total"] == pytest.approx(usage["cache"] + unlinked) and usage["tracking"] == 0
    before = {p: p.read_bytes() for p in (root / ".dvc/cache/files/md5").rglob("*") if p.is_file()}

    (root / "input.txt").write_text("another input\n")
    assert reproduce(DvcRunner(root), "copy") == "run"
    assert [p.read_text() for p in outputs] == ["another input\n", "ANOTHER INPUT\n"]
    assert all(p.read_bytes() == blob for p, blob in before.items())  # the earlier versions, whole in the cache
    assert json.loads(dvc(root, "status", "--json").stdout) == {}


def test_up_to_date_checks_parse_a_params_file_once_per_version_of_it(tmp_path):
    root = toy_project(tmp_path, {"tuned": {**write_file_stage("data/tuned.txt"), "params": ["tuned.size"]}})
    with open(root / "params.yaml", "a") as f:
        f.write("tuned:\n  size: 1\n")
    runner = DvcRunner(root)
    assert reproduce(runner, "tuned") == "run"
    with runner.hold_lock():
        assert runner.unchanged("tuned") and runner.unchanged("tuned")
        assert len(runner._parsed_params) == 1  # the second check read the parsed file
        (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("size: 1", "size: 22"))
        assert not runner.unchanged("tuned")  # a new version of the file is parsed again
        assert len(runner._parsed_params) == 2
    from dvc.dependency import param
    from dvc.utils.serialize import load_path

    assert param.load_path is load_path  # DVC's own parser is back after the run
