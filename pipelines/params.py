"""The schema of params.yaml's `pipeline` section: how the flow runs the stages (pipelines/flow.py), validated
with the workloads' sections when a profile is applied (pipelines/profile.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from stages.common.params import Schema


class PipelineParams(Schema):
    max_parallel: int = Field(ge=1, le=64, description="stages running at once")
    download_retries: int = Field(ge=0, le=10, description="retries (with backoff) of *_download stages")
    timeout_minutes: dict[str, float] = Field(
        description="a stage command still running after this many minutes is stopped and fails: `default`, or "
        "by stage name without its @item (training stages resume from their last epoch on the next run)"
    )

    @field_validator("timeout_minutes")
    @classmethod
    def _has_default(cls, value: dict[str, float]) -> dict[str, float]:
        if "default" not in value or any(minutes <= 0 for minutes in value.values()):
            raise ValueError("needs a `default` entry, and every timeout must be above 0 minutes")
        return value

    def timeout_s(self, stage: str) -> float:
        minutes = self.timeout_minutes
        return 60 * minutes.get(stage.split("@")[0], minutes["default"])
