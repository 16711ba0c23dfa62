"""Prefect flows over the DVC pipeline."""
import os

# Offline-friendly defaults, set before Prefect is imported (users may override them).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # slow 2-core machines
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
