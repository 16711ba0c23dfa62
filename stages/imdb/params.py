"""Schema of the `imdb` section of params.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stages.common.params import Schema, Source, load_params

Style = Literal["plain", "keras"]  # how imdb_tokenize spells words (stages.imdb.tokenize.STYLES)


class TokenizeParams(Schema):
    style: Style = Field(
        default="plain", description="keras: apostrophes inside words kept and <br /> as 'br', as in Keras' IMDB set"
    )
    vocab_size: int = Field(ge=3, description="ids: 0 padding, 1..vocab_size-2 words by frequency, vocab_size-1 rare")
    maxlen: int = Field(gt=0, description="tokens kept per review")
    padding: Literal["pre", "post"]
    truncating: Literal["pre", "post"]
    valid_fraction: float = Field(gt=0, lt=1)
    seed: int = Field(ge=0)


class Phase(Schema):
    epochs: int = Field(ge=1, le=100)
    learning_rate: float = Field(gt=0)
    train_embedding: bool = True


class ModelParams(Schema):
    kind: Literal["dense", "cnn", "lstm"]
    embedding: Literal["learned", "glove"]
    embedding_dim: int = Field(ge=1, le=1024)
    word_dropout: float = Field(default=0.0, ge=0, lt=1, description="Keras 1 Embedding(dropout=): drops whole words")
    embedding_dropout: float = Field(default=0.0, ge=0, lt=1)
    embedding_l2: float = Field(default=0.0, ge=0)
    filters: int = Field(default=64, ge=1)
    kernel_sizes: list[int] = Field(default=[5], min_length=1)
    conv_dropout: float = Field(default=0.0, ge=0, lt=1)
    hidden: int = Field(default=100, ge=1)
    hidden_dropout: float = Field(default=0.7, ge=0, lt=1)
    lstm_units: int = Field(default=100, ge=1)
    maxlen: int | None = Field(default=None, gt=0, description="keep only the last maxlen tokens; null: all")
    batch_size: int = Field(ge=1)
    phases: list[Phase] = Field(min_length=1, description="each phase recompiles: trainable flags and rate apply")
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    refit: bool = Field(
        default=False,
        description="after the validation split chose the epoch, train again from "
        "the same seed on every training review (validation ones too) up to that epoch",
    )
    seed: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self):
        if any(k < 1 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must all be >= 1, got {self.kernel_sizes}")
        return self


class EmbeddingsParams(Schema):
    model: str = Field(description="'auto': the model with the best validation accuracy among learned/fine-tuned ones")
    n_words: int = Field(ge=10)
    n_labelled: int = Field(ge=1)
    perplexity: float = Field(gt=0)
    probes: list[str] = Field(min_length=1)
    n_neighbours: int = Field(ge=1)
    seed: int = Field(ge=0)


class ImdbParams(Schema):
    source: Source
    tokenize: TokenizeParams
    models: dict[str, ModelParams] = Field(min_length=1)
    fastai_test_accuracy: dict[str, float] = Field(description="fast.ai's 2017 figures, for the comparison table")
    embeddings: EmbeddingsParams

    @model_validator(mode="after")
    def _check(self):
        if self.embeddings.model != "auto" and self.embeddings.model not in self.models:
            raise ValueError(
                f"embeddings.model '{self.embeddings.model}' is neither 'auto' nor one of the models: "
                f"{', '.join(self.models)}"
            )
        return self


def load() -> ImdbParams:
    return load_params("imdb", ImdbParams)
