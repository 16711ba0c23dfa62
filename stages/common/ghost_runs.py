"""Closing the runs of killed processes: a stage process killed with SIGKILL (or a power cut) leaves its MLflow run
RUNNING for good. Each stage run records its process in the tag `lesson5.process`; a stage that starts again closes,
as KILLED with the tag `lesson5.superseded_by`, the runs of that stage whose process is gone.
"""

from __future__ import annotations

import socket

PROCESS_TAG = "lesson5.process"  # the process that runs it: a RUNNING run whose process is gone is a ghost
SUPERSEDED_TAG = "lesson5.superseded_by"


def this_process() -> str:
    """host:pid:start time: names one process for good (a pid alone is reused)."""
    import psutil

    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.3f}"


def _is_alive(process: str) -> bool:
    import psutil

    host, pid, created = process.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine's process: not ours to judge
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" == created
    except psutil.NoSuchProcess:
        return False


def close_ghost_runs(client, new_run) -> list[str]:
    """Mark KILLED the runs of this stage that are still RUNNING although their process is gone (killed with
    SIGKILL, a power cut: nothing could end them), tagged with the run that superseded them. Returns their ids."""
    stage = new_run.data.tags["dvc.stage"]
    ghosts = [
        old.info.run_id
        for old in client.search_runs(
            [new_run.info.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`dvc.stage` = '{stage}'",
        )
        if old.info.run_id != new_run.info.run_id
        and PROCESS_TAG in old.data.tags
        and not _is_alive(old.data.tags[PROCESS_TAG])
    ]
    for run_id in ghosts:
        client.set_tag(run_id, SUPERSEDED_TAG, new_run.info.run_id)
        client.set_terminated(run_id, status="KILLED")
    return ghosts
