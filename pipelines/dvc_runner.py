"""Reproduce single DVC stages from several threads in one process, as `dvc repro` would.

DVC allows one process per repository (its repo lock), and `dvc repro` runs stages
one at a time. Here the flow process takes DVC's repo lock once, for the whole run,
and does every DVC step for a stage the way `Stage.reproduce` does it -- decide
whether it changed, try the run-cache, remove stale outputs, save deps; then
(after the command) save, commit and write dvc.lock -- serialised by a thread
lock. Only the stage commands run in parallel, each in its own subprocess. A
`dvc repro` started by hand meanwhile fails fast with DVC's "Unable to acquire
lock" and touches nothing.

Upgrading DVC: docs/upgrading-dvc.md, the checklist (bump the pin, `uv lock
--upgrade-package dvc`, `check_dvc_internals()`, the tests that decide) and why
the runner drives each internal in INTERNALS.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import networkx as nx

from stages.common.workload import workload_of


@dataclass(frozen=True)
class StageInfo:
    name: str
    cmd: str
    upstream: tuple[str, ...]
    workload: str = field(default="")


class Finished(NamedTuple):
    code: int
    tail: str  # the output's last lines
    cpu_seconds: float | None  # of the command and every process it started
    peak_mb: float | None  # the largest resident memory of any one of those processes


class DvcInternalsError(RuntimeError):
    """The installed DVC lacks an internal this runner drives; the message names each one."""


# The DVC internals used below, as DVC 3.67 has them: (where, what, the parameters it must take)
INTERNALS = (
    ("dvc.repo", "Repo._reset", ()),
    ("dvc.repo", "lock_repo", ("repo",)),
    ("dvc.stage", "Stage.changed", ()),
    ("dvc.stage", "Stage.remove_outs", ("ignore_remove", "force")),
    ("dvc.stage", "Stage.save", ("run_cache",)),
    ("dvc.stage", "Stage.commit", ()),
    ("dvc.dvcfile", "Lockfile.dump_stages", ("stages",)),
    ("dvc.stage.cache", "StageCache.restore", ("stage",)),
    ("dvc.stage.cache", "RunCacheNotFoundError", ()),
    ("dvc.repo.stage", "StageLoad.collect", ("target",)),
    ("dvc.dependency.param", "load_path", ("fs_path", "fs")),
)


def check_dvc_internals() -> None:
    """Fail at once, naming what is missing, when the installed DVC is not one whose internals this runner knows
    (pyproject.toml pins the minor version; uv.lock the exact one)."""
    import importlib
    import inspect

    import dvc

    missing = []
    for module, dotted, parameters in INTERNALS:
        try:
            target = importlib.import_module(module)
            for part in dotted.split("."):
                target = getattr(target, part)
            if parameters and not set(parameters) <= set(inspect.signature(target).parameters):
                missing.append(f"{module}.{dotted}({', '.join(parameters)})")
        except (ImportError, AttributeError):
            missing.append(f"{module}.{dotted}")
    if missing:
        raise DvcInternalsError(
            f"pipelines/dvc_runner.py drives DVC 3.67's stage internals, and the installed DVC {dvc.__version__} "
            f"lacks: {'; '.join(missing)}. Install the locked environment (`make install`, which installs uv.lock's "
            "DVC), or run the stages with plain `dvc repro` until the runner is ported to this DVC."
        )


class DvcRunner:
    def __init__(self, root: str | os.PathLike = "."):
        from dvc.repo import Repo

        check_dvc_internals()
        self.root = Path(root).resolve()
        self.repo = Repo(str(self.root))
        self._mutex = threading.Lock()
        self._loaded: dict | None = None
        self._parsed_params: dict[tuple, object] = {}
        self._lock_written = False

    # -- the graph, read from dvc.yaml through DVC itself (foreach stages included)
    def stages(self, targets: list[str] | None = None) -> dict[str, StageInfo]:
        """Pipeline stages (optionally only `targets` and their upstream), in dependency order."""
        with self._dvc():
            graph = self.repo.index.graph
            pipeline = [s for s in graph.nodes if getattr(s, "cmd", None)]
            if targets:
                wanted = set()
                for target in targets:
                    matches = [s for s in pipeline if s.addressing == target or s.addressing.startswith(f"{target}@")]
                    if not matches:
                        names = ", ".join(sorted(s.addressing for s in pipeline))
                        raise ValueError(f"no stage '{target}' in dvc.yaml (stages: {names})")
                    for stage in matches:
                        wanted |= {stage, *nx.descendants(graph, stage)}
                pipeline = [s for s in pipeline if s in wanted]
            sub = graph.subgraph(pipeline)
            # DVC's graph points from a stage to the stages it depends on
            order = list(reversed(list(nx.topological_sort(sub))))
            return {
                s.addressing: StageInfo(
                    s.addressing,
                    s.cmd,
                    tuple(sorted(u.addressing for u in sub.successors(s))),
                    workload_of(s.addressing),
                )
                for s in order
            }

    @contextlib.contextmanager
    def _dvc(self) -> Iterator[None]:
        from dvc.repo import lock_repo

        with self._mutex, lock_repo(self.repo):
            yield

    @contextlib.contextmanager
    def hold_lock(self) -> Iterator[None]:
        """Hold DVC's repo lock for the whole run (nested DVC calls reuse it). Meanwhile DVC's stage checks parse
        each version of a params file once: DVC parses params.yaml again for every stage (~15 ms with ruamel, a
        third of a no-change check)."""
        from dvc.dependency import param
        from dvc.repo import lock_repo

        parse = param.load_path
        with lock_repo(self.repo):
            param.load_path = self._parse_params_once
            try:
                self._repair_rwlock()
                yield
            finally:
                param.load_path = parse

    def _repair_rwlock(self) -> None:
        """DVC rewrites .dvc/tmp/rwlock in place, so a process killed mid-write (kill -9, a crash) can leave it
        truncated or empty, and every later DVC command then fails with "JSON structure is corrupted". Called with
        the repo lock held, i.e. with no other DVC process running in this repository, so no entry in it can be
        live."""
        path = self.root / ".dvc" / "tmp" / "rwlock"
        try:
            json.loads(path.read_text(encoding="utf-8"))  # empty too: killed between DVC's truncation and its write
        except FileNotFoundError:
            return
        except (ValueError, UnicodeDecodeError):
            print(
                f"WARNING: {path} was left unreadable by an interrupted DVC process; no DVC process holds it now, "
                "so it is reset",
                file=sys.stderr,
            )
            atomic_write = path.with_name(path.name + ".tmp")
            atomic_write.write_text("{}", encoding="utf-8")
            os.replace(atomic_write, path)

    def _stage(self, name: str):
        """The stage as DVC loads it. Until this run first writes dvc.lock, one index load serves every stage
        (reloading per stage cost ~0.4 s each, most of a no-change run); afterwards each is reloaded."""
        if self._lock_written:
            self.repo._reset()
            return self.repo.stage.collect(name)[0]
        if self._loaded is None:
            self._loaded = {stage.addressing: stage for stage in self.repo.index.stages}
        return self._loaded[name]

    def _dump(self, stage) -> None:
        """The stage recorded as DVC records it (`Lockfile.dump_stages`), but written to a copy of dvc.lock that then
        replaces it: DVC rewrites the file in place, and the stages running meanwhile read it (their inputs' hashes
        for MLflow), so they could read half a file; a kill mid-write would leave one."""
        from dvc.dvcfile import Lockfile

        lockfile, writing = self.root / "dvc.lock", self.root / ".dvc" / "tmp" / "dvc.lock.writing"
        if lockfile.is_file():
            shutil.copyfile(lockfile, writing)
        else:
            writing.unlink(missing_ok=True)
        Lockfile(self.repo, str(writing)).dump_stages([stage])
        os.replace(writing, lockfile)
        self._lock_written = True

    def unchanged(self, name: str) -> bool:
        """Whether the stage is up to date now, as `dvc status` decides it (no side effects)."""
        with self._dvc():
            return not self._stage(name).changed()

    def _parse_params_once(self, fs_path: str, fs, **kwargs):
        """DVC's params parser, memoised by the file's path, mtime and size (an edit during the run is read)."""
        from dvc.utils.serialize import load_path

        info = fs.info(fs_path)
        key = (fs_path, info.get("mtime"), info.get("size"), tuple(sorted(kwargs.items())))
        if key not in self._parsed_params:
            self._parsed_params[key] = load_path(fs_path, fs, **kwargs)
        return self._parsed_params[key]

    def prepare(self, name: str) -> str:
        """'skipped' (up to date), 'restored' (from DVC's run-cache) or 'run' (the caller must run its cmd)."""
        from dvc.stage.cache import RunCacheNotFoundError

        with self._dvc():
            stage = self._stage(name)
            if not stage.changed():
                return "skipped"
            try:
                self.repo.stage_cache.restore(stage)
            except RunCacheNotFoundError:
                stage.remove_outs(ignore_remove=False, force=False)
                return "run"
            stage.save()
            stage.commit()
            self._dump(stage)
            return "restored"

    def record(self, name: str) -> None:
        """After the command succeeded: hash and cache the outputs, write the stage's dvc.lock entry."""
        with self._dvc():
            stage = self._stage(name)
            no_cache_outs = any(not out.use_cache for out in stage.outs if not (out.is_metric or out.is_plot))
            stage.save(run_cache=not no_cache_outs)
            stage.commit()
            self._dump(stage)

    def run_command(
        self,
        info: StageInfo,
        env: dict[str, str],
        echo: Callable[[str], None],
        progress_every: float = 15.0,
        timeout_s: float | None = None,
    ) -> Finished:
        """Run the stage's cmd as DVC would (shell, repo root); stream its lines to `echo`; return its exit code, the
        tail of its output, and the CPU seconds and peak memory of the command and every process it started (None
        when a timeout's stop reaped it).

        Progress bars redraw a line with a carriage return and no newline: those redraws are echoed at most
        every `progress_every` seconds, so a long stage shows its progress without flooding the log. A command
        still running after `timeout_s` is stopped (with every process it started: SIGTERM, then SIGKILL); it fails."""
        env = {**env, "DVC_ROOT": str(self.root), "DVC_STAGE": info.name}  # as DVC sets them for stage commands
        proc = subprocess.Popen(
            info.cmd, shell=True, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        tail: list[str] = []
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            _stop_tree(proc.pid)

        timer = threading.Timer(timeout_s, stop) if timeout_s else None
        if timer:
            timer.daemon = True
            timer.start()

        def emit(raw: bytes) -> None:
            line = raw.decode(errors="replace").rstrip()
            if line.strip():
                echo(line)
                tail[:] = (tail + [line])[-30:]

        pending, last_progress = b"", -math.inf
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            *pieces, pending = re.split(rb"(\r\n|\n|\r)", pending + chunk)
            for text, end in zip(pieces[::2], pieces[1::2]):
                if end == b"\r" and text.strip():  # a progress bar redraw
                    if time.monotonic() - last_progress < progress_every:
                        continue
                    last_progress = time.monotonic()
                emit(text)
        emit(pending)
        try:  # wait4: the exit status with the CPU time of the shell and of every process it waited for
            _, status, usage = os.wait4(proc.pid, 0)
            code = proc.returncode = os.waitstatus_to_exitcode(status)
            cpu_s, peak_mb = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux: KiB
        except ChildProcessError:  # already reaped by the timeout's stop (below)
            code, cpu_s, peak_mb = proc.returncode or 0, None, None
        if timer:
            timer.cancel()
            timer.join()  # when it fired: until everything the command started is stopped too
        if timed_out.is_set():
            # the stop's psutil wait may reap the shell before wait4 does, leaving no exit status
            code = code or 124
            note = f"stopped: still running after its timeout of {timeout_s / 60:g} min (pipeline.timeout_minutes)"
            emit(note.encode())
        return Finished(code, "\n".join(tail), cpu_s, peak_mb)


def _stop_tree(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM to the command's shell and everything it started, SIGKILL to what is left after `grace_s`
    (the stage's own process group is the terminal's: Ctrl+C still reaches it)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def python_env() -> dict[str, str]:
    """The environment for stage commands: this interpreter's bin first on PATH (stage cmds call `python`)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
