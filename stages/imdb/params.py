"""Schema of the `imdb` section of params.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stages.common.params import Schema, Source, load_params
from stages.imdb.paths import NBSVM

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


class GloveMatrixParams(Schema):
    """fast.ai's recipe: words missing from GloVe get normal(0, oov_scale) rows, then the matrix is divided."""

    oov_scale: float = Field(ge=0)
    divide_by: float = Field(gt=0)
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


class NbsvmParams(Schema):
    """NB-SVM (stages/imdb/nbsvm.py): word n-grams, naive-Bayes ratios, a logistic regression."""

    ngram_max: int = Field(ge=1, le=3, description="n-grams of 1 up to this many words")
    max_features: int | None = Field(ge=1, description="keep the most frequent n-grams; null: all")
    min_df: int = Field(default=1, ge=1, description="an n-gram must occur in at least this many training reviews")
    alpha: float = Field(default=1.0, gt=0, description="count smoothing of the naive-Bayes ratios")
    C: list[float] = Field(min_length=1, description="inverse L2 strengths tried; the validation split chooses")
    refit: bool = Field(default=False, description="then fit again on training and validation reviews, chosen C")
    seed: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self):
        if any(c <= 0 for c in self.C):
            raise ValueError(f"every C must be > 0, got {self.C}")
        return self


class NgramsParams(Schema):
    n: int = Field(ge=1, le=500, description="n-grams shown on each side")


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
    glove_matrix: GloveMatrixParams
    models: dict[str, ModelParams] = Field(min_length=1, description="the Keras models (imdb_train@<name>)")
    nbsvm: NbsvmParams = Field(description="the NB-SVM model (imdb_nbsvm_train)")
    fastai_test_accuracy: dict[str, float] = Field(description="fast.ai's 2017 figures, for the comparison table")
    embeddings: EmbeddingsParams
    ngrams: NgramsParams

    @model_validator(mode="after")
    def _check(self):
        if NBSVM in self.models:  # its files would be the NB-SVM model's (data/imdb/models/nbsvm.keras, ...)
            raise ValueError(f"models: '{NBSVM}' is the NB-SVM model's name (imdb.nbsvm); name this model otherwise")
        if self.embeddings.model != "auto" and self.embeddings.model not in self.models:
            raise ValueError(
                f"embeddings.model '{self.embeddings.model}' is neither 'auto' nor one of the models with an "
                f"embedding: {', '.join(self.models)}"
            )
        return self


def load() -> ImdbParams:
    return load_params("imdb", ImdbParams)
