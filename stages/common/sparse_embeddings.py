"""Training steps whose cost stays with the batch, not with the embedding tables: LazyAdam and RowLookupEmbedding.

Keras 3's Adam turns an embedding's sparse gradient (tf.IndexedSlices) into a dense update of the whole table and of
both moment tables every step (keras-team/keras#19992), so a step costs O(table size) and training slows as the
user and movie counts grow. LazyAdam, like TensorFlow 1's LazyAdamOptimizer, reads and writes the moments and
weights of the looked-up rows only; dense gradients take Adam's own path. On a batch that touches every row it is
Adam (tests/test_sparse_embeddings.py). Rows a batch skips keep their momentum instead of coasting on it, and a
whole-table L2 penalty makes every gradient dense again: pair it with L2 on the looked-up rows (`lookup_l2`).

Once a variable has had a sparse update, TensorFlow copies all of it on every dense read (its copy-on-read mode,
which keeps the reads consistent with the scatters). Keras' Embedding reads the whole table before gathering its
rows, so each step would still copy every table; RowLookupEmbedding gathers the rows from the variable itself.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


class RowLookupEmbedding(keras.layers.Embedding):
    """keras.layers.Embedding that reads only the looked-up rows of its table (TensorFlow's ResourceGather)."""

    def call(self, inputs):
        return tf.nn.embedding_lookup(self.embeddings.value, ops.cast(inputs, "int32"))


class LazyAdam(keras.optimizers.Adam):
    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        rows, position = tf.unique(gradient.indices)  # a row looked up twice in a batch gets its summed gradient
        grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, variable.dtype), position, tf.shape(rows)[0])
        step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1 = ops.cast(self.beta_1, variable.dtype)
        beta_2 = ops.cast(self.beta_2, variable.dtype)
        alpha = ops.cast(learning_rate, variable.dtype) * ops.sqrt(1 - beta_2**step) / (1 - beta_1**step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        m_rows = beta_1 * tf.gather(m.value, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v.value, rows) + (1 - beta_2) * tf.square(grad)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))
