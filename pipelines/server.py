"""The project's local Prefect server: `make run` starts it once and then reuses it, so a run does not pay an
ephemeral server's start and stop each time, and the Prefect UI shows every run (and schedules can use it).

    python -m pipelines.server url      # its API URL on stdout, started first if none is running
    python -m pipelines.server stop     # `make stop`

It listens on 127.0.0.1 only (port 4200, or a free one when 4200 is taken) and keeps its state in PREFECT_HOME,
the project's .prefect/ unless set (the Makefile sets the same; `python -m pipelines.serve` uses this server too):
`local-server.json` (pid, URL), `local-server.log`, and the same SQLite store an ephemeral run would use.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from stages.common.cli import StageError
from stages.common.io import write_json

DEFAULT_PORT = 4200
START_TIMEOUT_S = 180  # the first start migrates a new database: ~20 s on 2 cores, more under load


def prefect_home() -> Path:
    """PREFECT_HOME, else the project's .prefect/ (in the folder this runs in, the project root, as make has it)."""
    return Path(os.environ.get("PREFECT_HOME") or ".prefect").expanduser().resolve()


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2):
            return True
    except OSError:
        return False


def wait_healthy(api: str, server: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Until `api` answers /health; an error naming the log if the server exits or does not answer in time."""
    deadline = time.monotonic() + timeout
    where = f"; its log: {log}" if log else ""
    while not healthy(api):
        if server.poll() is not None:
            raise StageError(f"prefect server exited with {server.returncode} before answering at {api}{where}")
        if time.monotonic() > deadline:
            raise StageError(f"prefect server not healthy at {api} after {timeout:.0f} s{where}")
        time.sleep(0.5)


def free_port() -> int:
    """A loopback port nobody listens on (for a server to start on, or to stand for a dead one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(home: Path) -> dict | None:
    """The state of this project's server if it is up and answering, else None."""
    try:
        state = json.loads((home / "local-server.json").read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(state["pid"]) and healthy(state["url"]) else None


def start(home: Path, timeout: float = START_TIMEOUT_S) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port() if _port_taken(DEFAULT_PORT) else DEFAULT_PORT
    api = f"http://127.0.0.1:{port}/api"
    log = home / "local-server.log"
    print(f"starting the project's Prefect server at {api} (once; `make stop` ends it; log: {log})", file=sys.stderr)
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives `make run`, and a Ctrl-C of it
            env={**os.environ, "PREFECT_HOME": str(home)},
        )
    wait_healthy(api, server, timeout, log)
    state = {"pid": server.pid, "url": api, "ui": api.removesuffix("/api")}
    write_json(home / "local-server.json", state)
    return state


def ensure(home: Path) -> dict:
    """This project's running server, started first if there is none (one at a time: a file lock)."""
    from filelock import FileLock

    home.mkdir(parents=True, exist_ok=True)
    with FileLock(str(home / "local-server.lock"), timeout=START_TIMEOUT_S + 30):
        return running(home) or start(home)


def stop(home: Path) -> bool:
    """Stop the server if one runs; False if none did."""
    state_file = home / "local-server.json"
    try:
        pid = json.loads(state_file.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return False
    stopped = _alive(pid)
    if stopped:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["url", "stop"])
    args = parser.parse_args(argv)
    home = prefect_home()
    try:
        if args.command == "url":
            print(ensure(home)["url"])
        else:
            print("stopped the Prefect server" if stop(home) else "no Prefect server of this project was running")
    except StageError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
