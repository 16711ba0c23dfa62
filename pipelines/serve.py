"""Serve the pipeline as a scheduled Prefect deployment.

    prefect server start --host 127.0.0.1 --port 4200 &          # or a remote server
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m pipelines.serve --cron "0 3 * * *"                 # every night at 03:00

The serving process runs each scheduled flow run itself (in this folder), so keep it running.
A run against unchanged inputs trains nothing: DVC finds every stage up to date.
`global_limit=1` keeps scheduled runs from overlapping (they would share DVC's repository lock).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from pipelines.flow import pipeline
from stages.common.tracking_store import warm_up


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--cron", default="0 3 * * *", help="cron schedule (default: nightly at 03:00)")
    when.add_argument("--interval", type=float, help="seconds between runs instead of a cron schedule")
    parser.add_argument("--name", default="lesson5-scheduled")
    parser.add_argument("--targets", nargs="*", default=None, help="stages to reproduce (default: all)")
    parser.add_argument("--max-parallel", type=int, default=None)
    args = parser.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        print(
            "warning: PREFECT_API_URL is not set: an ephemeral Prefect server cannot run schedules. Start "
            "`prefect server start --host 127.0.0.1` and export PREFECT_API_URL=http://127.0.0.1:4200/api",
            file=sys.stderr,
        )
    # MLflow's import and store set-up, in the background while the deployment registers with the server
    threading.Thread(target=warm_up, args=(os.getcwd(),), name="mlflow-warm-up", daemon=True).start()
    schedule = {"interval": args.interval} if args.interval else {"cron": args.cron}
    pipeline.serve(
        name=args.name,
        parameters={"targets": args.targets, "max_parallel": args.max_parallel, "root": os.getcwd()},
        global_limit=1,
        **schedule,
    )


if __name__ == "__main__":
    main()
