"""The thin CLI around every stage: known failures print one clear message, not a traceback."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

# Quiet, offline-friendly defaults for every stage process (users may override them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


class StageError(RuntimeError):
    """A failure the user can fix; its message says what, where and how. The params, download and archive
    errors derive from it, so this module imports nothing else from the project (stages depend on it alone)."""


def run_stage(main: Callable[..., object], *args) -> None:
    try:
        main(*args)
    except (StageError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
