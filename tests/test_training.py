"""The shared Keras helpers: the per-epoch learning-rate schedule from params really sets the optimizer's rate."""

from __future__ import annotations

import numpy as np
import pytest

from stages.common.training import LearningRateSchedule


def test_the_schedule_sets_each_epochs_rate_and_logs_it():
    import keras

    schedule = LearningRateSchedule([(2, 0.001), (0, 0.01)])  # any order: sorted by first epoch
    assert [schedule.rate(epoch) for epoch in range(4)] == [0.01, 0.01, 0.001, 0.001]
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(schedule.rate(0)), loss="mse")
    history = model.fit(x, x[:, :1], epochs=4, batch_size=16, callbacks=[schedule.callback()], verbose=0).history
    assert history["learning_rate"] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.001)
