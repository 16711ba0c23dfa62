"""Schema of the `movielens` section of params.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stages.common.params import Distribution, Schema, Source, load_params

DATASETS = ("ml-latest-small", "ml-100k", "ml-1m", "ml-25m")
# The model settings recommended from about a million ratings (docs/movielens.md#settings-per-dataset-size): each
# step's cost stays with the batch instead of growing with the embedding tables. Measured by benchmarks.movielens
# (--sparse: the same quality on ml-latest-small) and benchmarks.movielens_scale (throughput at 100k..25M).
LARGE_DATA_SETTINGS = {"sparse_updates": True, "l2": 0.0, "lookup_l2": 0.15}


class PrepareParams(Schema):
    seed: int = Field(ge=0)
    valid_fraction: float = Field(gt=0, lt=1)


class ModelParams(Schema):
    kind: Literal["dot", "bias", "nn"]
    factors: int = Field(ge=1, le=1024)
    l2: float = Field(ge=0, description="L2 on the whole embedding tables, every step (fast.ai's regulariser)")
    lookup_l2: float = Field(
        default=0.0, ge=0, description="L2 on the embedding rows each rating looks up (per rating, batch-averaged)"
    )
    sparse_updates: bool = Field(
        default=False,
        description="LazyAdam: each step updates only the looked-up rows, so its cost does not grow with the tables "
        "(needs l2: 0; see docs/movielens.md for the settings per dataset size)",
    )
    rating_range: tuple[float, float] | None = Field(
        description="[low, high]: output = low + (high-low)*sigmoid(score); null: a raw linear output"
    )
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1)
    lr_schedule: list[tuple[int, float]] = Field(min_length=1, description="[[first_epoch, learning_rate], ...]")
    early_stopping_patience: int | None = Field(ge=1, description="epochs without val MSE gain; null: train all epochs")
    seed: int = Field(ge=0)
    hidden: int = Field(default=70, ge=1)
    dropout_embeddings: float = Field(default=0.3, ge=0, lt=1)
    dropout_hidden: float = Field(default=0.75, ge=0, lt=1)
    distribution: Distribution = Field(
        default="default",
        description="TensorFlow strategy: default | auto (mirrored when >1 GPU) | mirrored | one_device",
    )

    @model_validator(mode="after")
    def _check(self):
        if self.rating_range is not None and self.rating_range[0] >= self.rating_range[1]:
            raise ValueError(f"rating_range must be [low, high] with low < high, got {list(self.rating_range)}")
        if self.lr_schedule[0][0] != 0:
            raise ValueError("lr_schedule must start at epoch 0")
        if any(lr <= 0 for _, lr in self.lr_schedule):
            raise ValueError("every learning rate in lr_schedule must be > 0")
        if self.sparse_updates and self.l2:
            raise ValueError(
                f"sparse_updates needs l2: 0 (got {self.l2}): a whole-table L2 penalty gives every row a gradient "
                "each step, so nothing stays sparse; regularise the looked-up rows with lookup_l2 instead"
            )
        return self


class AnalyzeParams(Schema):
    model: str
    top_movies: int = Field(ge=10)
    n_extremes: int = Field(ge=1)
    pca_components: int = Field(ge=2, le=10)
    n_plotted: int = Field(ge=1)


class MovieLensParams(Schema):
    dataset: Literal[DATASETS]  # type: ignore[valid-type]
    sources: dict[Literal[DATASETS], Source]  # type: ignore[valid-type]
    prepare: PrepareParams
    models: dict[str, ModelParams] = Field(min_length=1)
    analyze: AnalyzeParams

    @model_validator(mode="after")
    def _check(self):
        if self.dataset not in self.sources:
            raise ValueError(f"dataset '{self.dataset}' has no entry under movielens.sources")
        if self.analyze.model not in self.models:
            raise ValueError(f"analyze.model '{self.analyze.model}' is not one of the models: {', '.join(self.models)}")
        if self.models[self.analyze.model].kind == "nn":
            raise ValueError("analyze.model must be a dot or bias model (the nn model has no movie biases)")
        return self


def load() -> MovieLensParams:
    return load_params("movielens", MovieLensParams)
