"""The lesson's character models and the LSTM language models, as Keras functional-API builders."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


def merge_model(
    vocab_size: int, seq_len: int, embedding: int = 42, hidden: int = 256, unrolled: bool = False
) -> keras.Model:
    """fast.ai's drawing: each character embedded by its own input, one shared input-to-hidden layer (green arrow),
    one shared hidden-to-hidden layer (orange arrow), merged by sum, softmax over the vocabulary (blue arrow).

    The 3-character model has a tanh hidden-to-hidden layer; the unrolled 8-character one relu with an identity
    initialisation, as in the lesson.
    """
    chars = [keras.Input(shape=(), dtype="int32", name=f"c{i + 1}") for i in range(seq_len)]
    embedded = [layers.Embedding(vocab_size, embedding, name=f"c{i + 1}_embedding")(c) for i, c in enumerate(chars)]
    dense_in = layers.Dense(hidden, activation="relu", name="dense_in")
    dense_hidden = layers.Dense(
        hidden,
        activation="relu" if unrolled else "tanh",
        name="dense_hidden",
        kernel_initializer="identity" if unrolled else "glorot_uniform",
    )
    dense_out = layers.Dense(vocab_size, activation="softmax", name="dense_out")
    state = dense_in(embedded[0])
    for i, char in enumerate(embedded[1:], start=2):
        state = layers.Add(name=f"merge_c{i}")([dense_in(char), dense_hidden(state)])
    name = f"unrolled{seq_len}" if unrolled else "three_char"
    return keras.Model(chars, dense_out(state), name=name)


def simple_rnn_model(vocab_size: int, seq_len: int, embedding: int = 42, hidden: int = 256) -> keras.Model:
    """The same recurrence as one Keras layer: predicts the character after `seq_len` characters."""
    chars = keras.Input(shape=(seq_len,), dtype="int32", name="chars")
    x = layers.Embedding(vocab_size, embedding, name="embedding")(chars)
    x = layers.SimpleRNN(hidden, activation="relu", recurrent_initializer="identity", name="rnn")(x)
    return keras.Model(chars, layers.Dense(vocab_size, activation="softmax", name="next")(x), name="simple_rnn")


def lstm_model(
    vocab_size: int, embedding: int = 24, units: tuple[int, ...] = (256, 256), dropout: float = 0.1
) -> keras.Model:
    """Stacked LSTMs predicting the next token at every position (stateless sequence-to-sequence training).

    Any sequence length works at prediction time, so sampling can use more or less context than training did.
    """
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = layers.Embedding(vocab_size, embedding, name="embedding")(tokens)
    for i, n in enumerate(units, start=1):
        x = layers.LSTM(n, return_sequences=True, name=f"lstm{i}")(x)
        x = layers.Dropout(dropout, name=f"dropout{i}")(x)
    return keras.Model(tokens, layers.Dense(vocab_size, activation="softmax", name="next")(x), name="lstm")


def build(p, vocab_size: int) -> keras.Model:
    if p.kind in ("three_char", "unrolled"):
        return merge_model(vocab_size, p.seq_len, p.embedding, p.hidden, unrolled=p.kind == "unrolled")
    if p.kind == "simple_rnn":
        return simple_rnn_model(vocab_size, p.seq_len, p.embedding, p.hidden)
    return lstm_model(vocab_size, p.embedding, tuple(p.units), p.dropout)


def predicts_every_position(model: keras.Model) -> bool:
    return len(model.outputs[0].shape) == 3


def fixed_context(model: keras.Model) -> int | None:
    """How many tokens the model reads (None: any number)."""
    if len(model.inputs) > 1:
        return len(model.inputs)
    return model.inputs[0].shape[1]


def model_inputs(model: keras.Model, windows: np.ndarray):
    """Token windows (n, length) in the form the model takes: one array per position for the merge models."""
    if len(model.inputs) > 1:
        return [windows[:, i] for i in range(windows.shape[1])]
    return windows
