"""Thread pools for stage processes that share the cores: benchmarks/threads.py measures them (two stages side by
side), tests/conftest.py sizes each pytest-xdist worker's to its share."""

from __future__ import annotations

# TensorFlow's and the BLAS libraries' thread pools default to one thread per core in every process; "shared" gives
# each of the stages run together its share of the cores instead
THREAD_VARIABLES = (
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def thread_pool_env(cores: int, parallel: int) -> dict[str, str]:
    """The thread-pool variables for one of `parallel` stage commands sharing `cores`."""
    return {name: str(max(1, cores // parallel)) for name in THREAD_VARIABLES}
