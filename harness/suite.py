"""What a test run reports for benchmarks/test_suite.py to read."""

# the line tests/conftest.py ends a run with: the CPU seconds of the test run's Prefect server, which no process
# waits for (started detached by a worker, stopped by pytest's controller), so getrusage leaves them out
SHARED_SERVER_CPU = "the run's shared Prefect server used"
