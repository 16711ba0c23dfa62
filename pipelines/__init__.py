"""Prefect flows over the DVC pipeline."""

from stages.common import environment

environment.apply_defaults()  # before Prefect is imported: it reads its settings once
