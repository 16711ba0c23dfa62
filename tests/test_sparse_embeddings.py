"""LazyAdam: Adam on the rows a batch looks up, nothing on the others; RowLookupEmbedding: Keras' Embedding."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from stages.common.sparse_embeddings import LazyAdam, RowLookupEmbedding


def embedding_model(rows: int, seed: int = 0, layer=keras.layers.Embedding) -> keras.Model:
    keras.utils.set_random_seed(seed)
    ids = keras.Input(shape=(), dtype="int32")
    out = keras.layers.Dense(1)(layer(rows, 3, name="table")(ids))
    return keras.Model(ids, out)


def fit(model, optimizer, ids, targets, epochs: int):
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(ids, targets, batch_size=len(ids), epochs=epochs, shuffle=False, verbose=0)
    return model


def one_hot_model(rows: int, seed: int = 0) -> keras.Model:
    """embedding_model with the table as a Dense kernel over one-hot ids: the same function, a dense gradient."""
    reference = embedding_model(rows, seed)
    ids = keras.Input(shape=(), dtype="int32")
    table = keras.layers.Dense(3, use_bias=False, name="table")
    out = keras.layers.Dense(1)(table(keras.ops.one_hot(ids, rows)))
    model = keras.Model(ids, out)
    model.set_weights(reference.get_weights())
    return model


@pytest.mark.parametrize("layer", [keras.layers.Embedding, RowLookupEmbedding])
def test_on_batches_that_touch_every_row_lazy_adam_is_adam(layer):
    # Every row, some twice. Keras' Adam is not the reference on the embedding itself: fed the sparse gradient it
    # squares each duplicate's part before adding them (its first step can exceed the learning rate); Adam on the
    # dense gradient of the same function is.
    ids = np.array([0, 1, 2, 3, 4, 4, 2, 0], "int32")
    targets = np.linspace(-1, 1, len(ids)).astype("float32")
    dense = fit(one_hot_model(5), keras.optimizers.Adam(0.05), ids, targets, epochs=6)
    lazy = fit(embedding_model(5, layer=layer), LazyAdam(0.05), ids, targets, epochs=6)
    for want, got in zip(dense.get_weights(), lazy.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(lazy.get_weights()[0], embedding_model(5).get_weights()[0])  # it did train


def test_rows_a_batch_skips_keep_their_weights_and_moments():
    model = embedding_model(6)
    optimizer = LazyAdam(0.05)
    fit(model, optimizer, np.array([0, 1, 2, 3, 4, 5], "int32"), np.ones(6, "float32"), epochs=2)
    table = model.get_layer("table").embeddings
    before = np.array(table)
    moments = {v.path: np.array(v) for v in optimizer.variables if "table" in v.path}
    assert moments and all(np.abs(m).sum() > 0 for m in moments.values())  # every row has momentum now
    model.fit(np.array([1, 3], "int32"), np.zeros(2, "float32"), batch_size=2, epochs=3, verbose=0)
    after = np.array(table)
    untouched, touched = [0, 2, 4, 5], [1, 3]
    np.testing.assert_array_equal(after[untouched], before[untouched])  # dense Adam would move them on momentum
    assert not np.allclose(after[touched], before[touched])
    for v in optimizer.variables:
        if v.path in moments:
            np.testing.assert_array_equal(np.array(v)[untouched], moments[v.path][untouched])
