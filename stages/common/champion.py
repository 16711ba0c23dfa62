"""A champion per workload in MLflow's model registry: the registered model `lesson5-<workload>` whose alias
`champion` points at the best model by its validation figure.

Evaluate stages offer the model they evaluated (found by the sha256 of its DVC output, which its train stage
tagged the logged model with: stages/common/logged_models.py); it is registered and the alias moved only when it
beats the current champion on validation. Its validation and test figures become tags of that version. Load it with
`mlflow.pyfunc.load_model("models:/lesson5-<workload>@champion")`, serve it with `mlflow models serve`.
Like all tracking, an offer never costs a stage its outputs: failures are warnings (StageRun).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

ALIAS = "champion"
LOCK_TIMEOUT_S = 120


def registered_name(workload: str) -> str:
    return f"lesson5-{workload}"


def offer(
    client,
    workload: str,
    model,
    validation: tuple[str, float],
    higher_is_better: bool,
    figures: Mapping[str, float] | None = None,
) -> str | None:
    """Register `model` (a LoggedModel: stages/common/logged_models.py's `logged_model`) as the champion if it beats
    the current one on `validation` ((metric name, value)); returns the new version, or None when the champion stays.
    `figures`: more figures for the version's tags, by tag name (`test.accuracy`, ...)."""
    from filelock import FileLock
    from mlflow.exceptions import MlflowException

    metric, value = validation
    name = registered_name(workload)
    # evaluate stages of one workload run in parallel: one of them at a time compares and moves the alias
    Path(".cache").mkdir(exist_ok=True)
    with FileLock(f".cache/champion-{workload}.lock", timeout=LOCK_TIMEOUT_S):
        try:
            client.create_registered_model(
                name, description=f"The best {workload} model by its validation figure (alias: {ALIAS})"
            )
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            current = client.get_model_version_by_alias(name, ALIAS)
        except MlflowException:
            current = None
        held = float(current.tags.get(f"validation.{metric}", "nan")) if current else math.nan
        if not math.isnan(held) and not (value > held if higher_is_better else value < held):
            return None  # the champion stays (a champion judged by another metric is replaced)
        version = client.create_model_version(
            name,
            source=model.model_uri,
            run_id=model.source_run_id,
            model_id=model.model_id,
            tags={
                "model": model.name,
                f"validation.{metric}": str(value),
                **{k: str(v) for k, v in (figures or {}).items()},
            },
        )
        client.set_registered_model_alias(name, ALIAS, version.version)
        print(f"{name}: {model.name} is the {ALIAS} (version {version.version}, {metric} {value:.4f})")
        return version.version
