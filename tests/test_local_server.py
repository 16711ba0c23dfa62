"""The project's local Prefect server (`make run` starts it once and reuses it; `make stop` ends it). Its start by
`python -m pipelines.serve`, its reuse and `make stop`, on real servers: tests/test_schedule.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pipelines.server import free_port, running


def test_a_state_file_left_by_a_dead_server_is_not_taken_for_a_running_one(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    url = f"http://127.0.0.1:{free_port()}/api"
    (tmp_path / "local-server.json").write_text(json.dumps({"pid": int(dead.stdout), "url": url}))
    assert running(tmp_path) is None
    (tmp_path / "local-server.json").write_text(json.dumps({"pid": os.getpid(), "url": url}))  # alive, not serving
    assert running(tmp_path) is None
