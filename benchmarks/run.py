"""`make bench`: every workload's benchmark on the real data, one after another.

LESSON5_MIRROR=../shared/data python -m benchmarks.run [WORKLOAD ...]
"""

from __future__ import annotations

import importlib
import sys
import time

WORKLOADS = ["movielens", "imdb", "dogscats", "text", "orchestration", "default_run"]


def main(argv: list[str] | None = None) -> None:
    names = (argv if argv is not None else sys.argv[1:]) or WORKLOADS
    for name in names:
        if name not in WORKLOADS:
            sys.exit(f"unknown benchmark '{name}' (choose from {', '.join(WORKLOADS)})")
    for name in names:
        print(f"\n===== {name} =====", flush=True)
        started = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main([])
        print(f"===== {name}: {time.perf_counter() - started:.0f}s =====", flush=True)


if __name__ == "__main__":
    main()
