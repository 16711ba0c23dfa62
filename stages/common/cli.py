"""The thin CLI around every stage: known failures print one clear message, not a traceback.

Every stage module imports this one before anything heavy (TensorFlow), so importing it sets the process's
environment defaults, and in a stage process (`python -m stages....`) filters libraries' harmless noise."""

from __future__ import annotations

import sys
from collections.abc import Callable

from stages.common import environment

environment.apply_defaults()
if getattr(sys.modules["__main__"].__spec__, "name", "").startswith("stages."):
    environment.filter_native_noise()
    environment.ignore_harmless_warnings()


class StageError(RuntimeError):
    """A failure the user can fix; its message says what, where and how. The params, download and archive
    errors derive from it, so this module imports nothing else from the project but the environment."""


def run_stage(main: Callable[..., object], *args) -> None:
    try:
        main(*args)
    except (StageError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
