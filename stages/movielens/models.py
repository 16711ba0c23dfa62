"""The three MovieLens models of fast.ai Lesson 4, as Keras functional-API builders."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from keras import layers, regularizers


def inputs(ratings: pd.DataFrame) -> dict[str, np.ndarray]:
    """The models' named inputs from rating rows."""
    return {"user": ratings["user"].to_numpy("int32"), "movie": ratings["movie"].to_numpy("int32")}


def _embedding(n: int, dim: int, l2: float, lookup_l2: float, name: str, layer=layers.Embedding) -> layers.Embedding:
    """l2 penalises the whole table every step; lookup_l2 only the rows a batch looks up (sparse gradients)."""
    return layer(
        n,
        dim,
        embeddings_regularizer=regularizers.l2(l2) if l2 else None,
        activity_regularizer=regularizers.l2(lookup_l2) if lookup_l2 else None,
        name=name,
    )


def _squash(x, rating_range: tuple[float, float] | None):
    """low + (high - low) * sigmoid(score): predictions stay inside the rating range. Built-in layers only, so a saved
    model loads anywhere (`mlflow models serve` included) without importing this module."""
    if rating_range is None:
        return x
    low, high = rating_range
    x = layers.Activation("sigmoid", name="rating_sigmoid")(x)
    return layers.Rescaling(scale=high - low, offset=low, name="rating_range")(x)


def dot_model(
    n_users: int,
    n_movies: int,
    factors: int = 50,
    l2: float = 1e-4,
    rating_range: tuple[float, float] | None = None,
    lookup_l2: float = 0.0,
    embedding_layer=layers.Embedding,
) -> keras.Model:
    """Rating = user embedding . movie embedding."""
    user = keras.Input(shape=(), dtype="int32", name="user")
    movie = keras.Input(shape=(), dtype="int32", name="movie")
    u = _embedding(n_users, factors, l2, lookup_l2, "user_embedding", embedding_layer)(user)
    m = _embedding(n_movies, factors, l2, lookup_l2, "movie_embedding", embedding_layer)(movie)
    score = layers.Dot(axes=1, name="dot")([u, m])
    rating = layers.Reshape((), name="rating")(_squash(score, rating_range))
    return keras.Model([user, movie], rating, name="dot")


def bias_model(
    n_users: int,
    n_movies: int,
    factors: int = 50,
    l2: float = 1e-4,
    rating_range: tuple[float, float] | None = None,
    lookup_l2: float = 0.0,
    embedding_layer=layers.Embedding,
) -> keras.Model:
    """Rating = user . movie + user bias + movie bias (fast.ai's headline model)."""
    user = keras.Input(shape=(), dtype="int32", name="user")
    movie = keras.Input(shape=(), dtype="int32", name="movie")
    u = _embedding(n_users, factors, l2, lookup_l2, "user_embedding", embedding_layer)(user)
    m = _embedding(n_movies, factors, l2, lookup_l2, "movie_embedding", embedding_layer)(movie)
    ub = embedding_layer(n_users, 1, name="user_bias")(user)
    mb = embedding_layer(n_movies, 1, name="movie_bias")(movie)
    score = layers.Add(name="score")([layers.Dot(axes=1, name="dot")([u, m]), ub, mb])
    rating = layers.Reshape((), name="rating")(_squash(score, rating_range))
    return keras.Model([user, movie], rating, name="bias")


def nn_model(
    n_users: int,
    n_movies: int,
    factors: int = 50,
    l2: float = 1e-4,
    hidden: int = 70,
    dropout_embeddings: float = 0.3,
    dropout_hidden: float = 0.75,
    rating_range: tuple[float, float] | None = None,
    lookup_l2: float = 0.0,
    embedding_layer=layers.Embedding,
) -> keras.Model:
    """Concatenated embeddings -> dropout -> dense -> dropout -> rating."""
    user = keras.Input(shape=(), dtype="int32", name="user")
    movie = keras.Input(shape=(), dtype="int32", name="movie")
    u = _embedding(n_users, factors, l2, lookup_l2, "user_embedding", embedding_layer)(user)
    m = _embedding(n_movies, factors, l2, lookup_l2, "movie_embedding", embedding_layer)(movie)
    x = layers.Concatenate(name="concat")([u, m])
    x = layers.Dropout(dropout_embeddings)(x)
    x = layers.Dense(hidden, activation="relu", name="hidden")(x)
    x = layers.Dropout(dropout_hidden)(x)
    score = layers.Dense(1, name="score")(x)
    rating = layers.Reshape((), name="rating")(_squash(score, rating_range))
    return keras.Model([user, movie], rating, name="nn")


BUILDERS = {"dot": dot_model, "bias": bias_model, "nn": nn_model}
