"""Schema of the `text` section of params.yaml (fast.ai's character and word models on Nietzsche)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from stages.common.params import Schema, Source, load_params


class PrepareParams(Schema):
    decode_errors: Literal["repair", "replace", "strict"] = Field(
        description="undecodable UTF-8: repair Latin-1-lowercased lead bytes (else replace), replace, or stop"
    )
    replacement: str = Field(min_length=1, max_length=1, description="the character an undecodable byte becomes")
    lowercase: bool
    valid_fraction: float = Field(gt=0, lt=1, description="the held-out tail of the text, for validation")
    max_words: int = Field(ge=2, description="word vocabulary: <unk> plus the most frequent training words")
    min_word_count: int = Field(ge=1, description="rarer training words become <unk>")


class TrainParams(Schema):
    seq_len: int = Field(ge=1, le=10_000, description="characters (or words) of context per training sequence")
    stride: int | None = Field(default=None, ge=1, description="step between training sequences; null: seq_len")
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1)
    lr_schedule: list[tuple[int, float]] = Field(min_length=1, description="[[first_epoch, learning_rate], ...]")
    max_minutes: float | None = Field(
        default=None,
        gt=0,
        description="opt-in safety net: stop once this many minutes of training have passed and mark the run cut "
        "short (the model then depends on the machine's speed); null: all epochs",
    )
    seed: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.lr_schedule[0][0] != 0:
            raise ValueError("lr_schedule must start at epoch 0")
        if any(lr <= 0 for _, lr in self.lr_schedule):
            raise ValueError("every learning rate in lr_schedule must be > 0")
        return self


class MergeParams(TrainParams):
    """The lesson's hand-unrolled graph: per-position embeddings, shared input and hidden dense layers, sum merges."""

    kind: Literal["three_char", "unrolled"]
    embedding: int = Field(ge=1)
    hidden: int = Field(ge=1)

    @model_validator(mode="after")
    def _three(self):
        if self.kind == "three_char" and self.seq_len != 3:
            raise ValueError(
                f"the three_char model reads exactly 3 characters (seq_len: 3), got "
                f"seq_len={self.seq_len}; use kind: unrolled for other lengths"
            )
        return self


class SimpleRNNParams(TrainParams):
    kind: Literal["simple_rnn"]
    embedding: int = Field(ge=1)
    hidden: int = Field(ge=1)


class LSTMParams(TrainParams):
    """Stacked LSTM language model predicting every next token of a sequence."""

    kind: Literal["char_lstm", "word_lstm"]
    embedding: int = Field(ge=1)
    units: list[int] = Field(min_length=1, description="one LSTM layer per entry")
    dropout: float = Field(ge=0, lt=1)


ModelParams = Annotated[MergeParams | SimpleRNNParams | LSTMParams, Field(discriminator="kind")]


def is_word_model(p: TrainParams) -> bool:
    """Word-level (the word LSTM) rather than character-level."""
    return p.kind == "word_lstm"


def per_unit_names(unit: str) -> dict[str, str]:
    """MLflow names of the losses, in nats per `unit` ("char" or "word"): a character model's loss and a word
    model's are different quantities, so they never share a column."""
    return {name: f"{name}_per_{unit}" for name in ("loss", "val_loss", "perplexity")}


class EvaluateParams(Schema):
    probes: list[tuple[str, str]] = Field(description="[prefix, expected next character]")
    word_probes: list[tuple[str, str]] = Field(description="[prefix, expected next word] for word models")
    seed_text: str = Field(min_length=1, description="generation starts from this text")
    temperatures: list[float] = Field(min_length=1)
    sample_length: int = Field(
        ge=1, le=100_000, description="characters (words for word models) generated per temperature"
    )
    seed: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self):
        if any(t <= 0 for t in self.temperatures):
            raise ValueError("temperatures must be > 0")
        if any(len(expected) != 1 for _, expected in self.probes):
            raise ValueError("each probe's expected next character must be one character")
        return self


class TextParams(Schema):
    source: Source
    prepare: PrepareParams
    models: dict[str, ModelParams] = Field(min_length=1)
    evaluate: EvaluateParams


def load() -> TextParams:
    return load_params("text", TextParams)
