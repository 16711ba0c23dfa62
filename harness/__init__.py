"""What tests/ and benchmarks/ both use: copies of the project to run it in, the thread pools of stage processes
that share the cores, the line a test run reports its Prefect server's CPU time on, and the Dogs vs Cats prepare
stage measured on as many photos as the release holds. Tests import nothing from benchmarks/ (tests/test_structure.py);
nothing here imports tests/ or benchmarks/."""
