"""Schema of the `dogscats` section of params.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stages.common.params import Schema, Source, load_params

# auto (stages/common/precision.py picks for the machine) or a Keras dtype policy
Precision = Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
PRECISION_HELP = (
    "a Keras dtype policy (the mixed ones compute in 16 bits with float32 weights), or auto: mixed_bfloat16 on a "
    "CPU with AMX/AVX512_BF16 or a GPU of compute capability 8.0 on, mixed_float16 on a 7.x GPU, float32 elsewhere"
)


class Sources(Schema):
    images: Source
    weights: Source


class PrepareParams(Schema):
    seed: int = Field(ge=0)
    valid_fraction: float = Field(gt=0, lt=1)
    max_per_class: int | None = Field(
        ge=2,
        description="usable photos kept per class, a seeded sample chosen before any photo is decoded (fewer where "
        "the class has fewer); null: every photo",
    )
    max_pixels: int = Field(ge=1, description="images with more pixels than this are refused (decompression bombs)")


class FeaturesParams(Schema):
    input_size: int = Field(ge=32, le=1024, description="images are resized to input_size x input_size")
    batch_size: int = Field(ge=1, le=1024)
    flips: bool = Field(description="also cache the features of every image mirrored left-right (twice the time)")
    checkpoint_images: int = Field(ge=1, description="progress kept every this many images: a killed run resumes there")
    precision: Precision = Field(default="auto", description=PRECISION_HELP)


class HeadParams(Schema):
    hidden: int = Field(ge=1, le=8192, description="units in each of the two dense layers (fast.ai: 4096)")
    dropout: float = Field(ge=0, lt=1)
    l2: float = Field(ge=0)


class FitParams(Schema):
    epochs: int = Field(ge=1, le=1000)
    learning_rate: float = Field(gt=0)


class TrainParams(Schema):
    seed: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    head: HeadParams
    dense: FitParams = Field(description="(1) the dense head without BN")
    bn_inserted: FitParams = Field(description="(2) BN inserted into the trained head (1), then fine-tuned")
    bn_scratch: FitParams = Field(description="(3) the same head with BN, trained from scratch")
    flips: bool = Field(description="train on the mirrored training images' features too (needs features.flips)")
    calibration_images: int = Field(ge=16, description="training images whose activations initialise the BN layers")
    bn_statistics: Literal["calibrated", "batch"] = Field(
        description="(2) while fine-tuning, normalise with the calibrated statistics (gamma/beta still train) "
        "or, as plain BatchNormalization, with each batch's"
    )


class FinetuneParams(Schema):
    enabled: bool = Field(
        description="VGG16's block 5 + a trained head on images: minutes in bfloat16 on a CPU with AMX, hours in "
        "float32 on a 2-core CPU"
    )
    head: str = Field(description="which trained head (dogscats_train) sits on the conv base")
    seed: int = Field(ge=0)
    epochs: int = Field(ge=1, le=1000)
    learning_rate: float = Field(gt=0)
    batch_size: int = Field(ge=1, le=1024)
    flip: bool = Field(description="random horizontal flips of the training images")
    shift: float = Field(ge=0, le=0.5, description="random translation, as a fraction of the image size (0: none)")
    precision: Precision = Field(default="auto", description=PRECISION_HELP)


class EvaluateParams(Schema):
    log_loss_clip: float = Field(
        gt=0, lt=0.5, description="probabilities are clipped to [clip, 1 - clip] (Kaggle: 1e-15)"
    )
    gallery_size: int = Field(ge=1, le=100)
    gallery_model: str


class DogsCatsParams(Schema):
    sources: Sources
    prepare: PrepareParams
    features: FeaturesParams
    train: TrainParams
    finetune: FinetuneParams
    evaluate: EvaluateParams

    @model_validator(mode="after")
    def _check(self):
        if self.train.flips and not self.features.flips:
            raise ValueError("train.flips needs the mirrored images' features: set features.flips to true too")
        if self.finetune.head not in MODELS:
            raise ValueError(f"finetune.head must be one of {', '.join(MODELS)}, got '{self.finetune.head}'")
        if self.evaluate.gallery_model not in MODELS:
            raise ValueError(
                f"evaluate.gallery_model must be one of {', '.join(MODELS)}, got '{self.evaluate.gallery_model}'"
            )
        return self


MODELS = ("dense", "bn_inserted", "bn_scratch")


def load() -> DogsCatsParams:
    return load_params("dogscats", DogsCatsParams)
