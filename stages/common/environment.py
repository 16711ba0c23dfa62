"""The process environment every entry point starts from (stages, the flow, tests, benchmarks): one place for
the quiet, offline-friendly defaults of TensorFlow, MLflow, Prefect and DVC, TensorFlow's use of GPU memory, and for
keeping the harmless lines native libraries print at import out of the terminal. Users may override any default by
setting it."""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import warnings
from pathlib import Path

DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ info and warnings
    # GPU memory taken as needed, not nearly all of it at the start: the flow runs pipeline.max_parallel stage
    # processes at once, and the second would find none left. TensorFlow reads it when it first sets up a GPU (the
    # first op, after the stage's imports), for every GPU; "false" brings back its whole-GPU default.
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    "DO_NOT_TRACK": "true",  # client telemetry (Prefect, MLflow); the string "true", "1" is not enough
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # MLflow's own defaults (7 retries, backoff x2, 120 s timeout) stall a stage for minutes on a dead server
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # the first start migrates a new database
}

# Printed by TensorFlow's native code whatever TF_CPP_MIN_LOG_LEVEL says; none is a problem: the import banner, and
# graph optimisers or oneDNN kernels that decline a graph and leave it to the default path (same results).
HARMLESS = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I0000 \S+ +\d+ port\.cc:\d+\] oneDNN custom operations are on"
    r"|E0000 \S+ +\d+ meta_optimizer\.cc:\d+\] .*remapper failed"
    r"|E0000 \S+ +\d+ tfg_optimizer_hook\.cc:\d+\] tfg_optimizer\{.*\} failed"
    r"|E0000 \S+ +\d+ util\.cc:\d+\] oneDNN supports DT_\w+ only on platforms with"
)
HARMLESS_START = re.compile(rb"WARNING: All log messages|[IE]0000 ")  # held until its line ends, to be judged whole

# Advice MLflow prints on every run that asks nothing of this project: a local file source matches two
# registrations of the same class; ids are integers that are never missing.
HARMLESS_WARNINGS = (
    "The specified dataset source can be interpreted in multiple ways",
    "Hint: Inferred schema contains integer column",
)


def repository_root(folder: str | os.PathLike | None = None) -> Path:
    """The repository a stage works for: `folder` (default: the current one, the repo root in stages), or, inside a
    copy that `dvc exp run --temp` or `dvc queue` made under <repo>/.dvc/tmp/exps/ (deleted afterwards), <repo>."""
    parts = Path(folder or Path.cwd()).resolve().parts
    copy = next((i for i in range(len(parts) - 3) if parts[i : i + 3] == (".dvc", "tmp", "exps")), None)
    return Path(*parts[:copy]) if copy is not None else Path(*parts)


def apply_defaults() -> None:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


def ignore_harmless_warnings() -> None:
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=UserWarning)


def filter_native_noise() -> None:
    """Route this process's stderr (file descriptor 2, which native code writes to directly) through a thread that
    drops the HARMLESS lines and passes everything else on as it comes (progress bars redraw without a newline).
    For entry points only: never inside a test run, whose runner captures descriptor 2 itself."""
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_forward, args=(read_end, original), name="stderr-filter", daemon=True)
    thread.start()

    def drain() -> None:  # at exit: let the last lines (a traceback, an error) through before the process ends
        sys.stderr.flush()
        restored = os.dup(original)
        os.dup2(restored, 2)  # closes the pipe's last write end: the thread reads to the end and stops
        os.close(restored)
        thread.join(timeout=5)

    atexit.register(drain)


def _forward(read_end: int, out: int) -> None:
    pending = b""
    while chunk := os.read(read_end, 65536):
        *pieces, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
        if pending and not HARMLESS_START.match(pending):  # a progress bar being drawn: show it now
            pieces.append(pending)
            pending = b""
        _write(out, b"".join(piece for piece in pieces if not HARMLESS.match(piece.decode(errors="replace"))))
    _write(out, pending)
    os.close(read_end)
    os.close(out)


def _write(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:  # nowhere to write to any more: keep draining, so that writers never block
        pass


if (
    __name__ == "__main__"
):  # `python -m stages.common.environment CMD ...`: run a tool (mlflow ui, dvc) with the defaults
    apply_defaults()
    os.execvp(sys.argv[1], sys.argv[1:])
