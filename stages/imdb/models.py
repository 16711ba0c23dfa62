"""fast.ai Lesson 5's IMDB models, one Keras functional-API builder per kind (`dense`, `cnn`, `lstm`)."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops, regularizers

from stages.imdb.params import ModelParams


@keras.saving.register_keras_serializable(package="lesson5")
class WordDropoutEmbedding(layers.Embedding):
    """Keras 1's `Embedding(dropout=p)`, which Keras 3 dropped: while training, each batch zeroes whole
    rows of the embedding matrix (a dropped word is dropped everywhere in the batch) and scales the rest."""

    def __init__(self, input_dim: int, output_dim: int, word_dropout: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self.word_dropout = float(word_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not (training and self.word_dropout):
            return super().call(inputs)
        keep = keras.random.uniform((self.input_dim, 1), seed=self.seed_generator) >= self.word_dropout
        matrix = self.embeddings * ops.cast(keep, self.embeddings.dtype) / (1.0 - self.word_dropout)
        return ops.take(matrix, ops.cast(inputs, "int32"), axis=0)

    def get_config(self):
        return {**super().get_config(), "word_dropout": self.word_dropout, "seed": self.seed}


def embedded(tokens, p: ModelParams, vocab_size: int, glove: np.ndarray | None):
    """The word embedding every model starts with: learned, or initialised from `glove`; word and vector dropout."""
    initializer = keras.initializers.Constant(glove) if glove is not None else "uniform"
    x = WordDropoutEmbedding(
        vocab_size,
        p.embedding_dim,
        word_dropout=p.word_dropout,
        seed=p.seed,
        embeddings_initializer=initializer,
        mask_zero=p.kind == "lstm",
        embeddings_regularizer=regularizers.l2(p.embedding_l2) if p.embedding_l2 else None,
        name="embedding",
    )(tokens)
    return layers.Dropout(p.embedding_dropout, name="embedding_dropout")(x) if p.embedding_dropout else x


def classifier(x, p: ModelParams):
    """The single hidden layer and the sentiment output."""
    x = layers.Dense(p.hidden, activation="relu", name="hidden")(x)
    x = layers.Dropout(p.hidden_dropout, name="hidden_dropout")(x)
    return layers.Dense(1, activation="sigmoid", name="sentiment")(x)


def dense_model(p: ModelParams, vocab_size: int, maxlen: int, glove: np.ndarray | None = None) -> keras.Model:
    """The single-hidden-layer net: embedding -> flatten -> dense."""
    tokens = keras.Input(shape=(maxlen,), dtype="int32", name="tokens")
    x = embedded(tokens, p, vocab_size, glove)
    x = layers.Flatten()(x)
    return keras.Model(tokens, classifier(x, p), name=p.kind)


def cnn_model(p: ModelParams, vocab_size: int, maxlen: int, glove: np.ndarray | None = None) -> keras.Model:
    """The 1-D CNN (one kernel size) and the multi-size CNN (3, 4, 5): a Conv1D + max-pool branch per size."""
    tokens = keras.Input(shape=(maxlen,), dtype="int32", name="tokens")
    x = embedded(tokens, p, vocab_size, glove)
    branches = [
        layers.Flatten()(
            layers.MaxPooling1D(name=f"pool{k}")(
                layers.Conv1D(p.filters, k, padding="same", activation="relu", name=f"conv{k}")(x)
            )
        )
        for k in p.kernel_sizes
    ]
    x = branches[0] if len(branches) == 1 else layers.Concatenate(name="concat")(branches)
    if p.conv_dropout:
        x = layers.Dropout(p.conv_dropout, name="conv_dropout")(x)
    return keras.Model(tokens, classifier(x, p), name=p.kind)


def lstm_model(p: ModelParams, vocab_size: int, maxlen: int, glove: np.ndarray | None = None) -> keras.Model:
    """The LSTM over the masked embedding (padding skipped)."""
    tokens = keras.Input(shape=(maxlen,), dtype="int32", name="tokens")
    x = embedded(tokens, p, vocab_size, glove)
    x = layers.LSTM(p.lstm_units, name="lstm")(x)
    sentiment = layers.Dense(1, activation="sigmoid", name="sentiment")(x)
    return keras.Model(tokens, sentiment, name=p.kind)


BUILDERS = {"dense": dense_model, "cnn": cnn_model, "lstm": lstm_model}


def build(p: ModelParams, vocab_size: int, maxlen: int, glove: np.ndarray | None = None) -> keras.Model:
    """The model for `p`; `glove` (vocab_size x embedding_dim) initialises the embedding when p.embedding == 'glove'."""
    return BUILDERS[p.kind](p, vocab_size, maxlen, glove)
