"""TensorFlow distribution strategies behind the `distribution` param (stages/common/distribution.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from stages.common.distribution import strategy
from stages.common.params import ParamsError, validate_section
from stages.movielens.params import ModelParams
from tests.conftest import REPO


def linear_data(n: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.3


def tiny_model():
    import keras

    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


@pytest.mark.parametrize("name", ["default", "auto", "mirrored", "one_device"])
def test_each_strategy_builds_and_fits_a_model(name):
    import tensorflow as tf

    chosen = strategy(name)
    with chosen.scope():
        model = tiny_model()
    mirrored = isinstance(model.weights[0].value, tf.distribute.DistributedValues)
    # no GPU here: "auto" falls back to the default strategy; "mirrored" really mirrors (over the CPU)
    assert mirrored == (name == "mirrored")
    assert chosen.num_replicas_in_sync == 1
    x, y = linear_data()
    losses = model.fit(x, y, batch_size=32, epochs=4, verbose=0).history["loss"]
    assert losses[-1] < 0.2 * losses[0]
    assert model.predict(x[:4], verbose=0).shape == (4, 1)


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ValueError, match="unknown distribution 'horovod': use one of default, auto, mirrored"):
        strategy("horovod")


TWO_REPLICAS = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from stages.common.distribution import strategy
    from tests.test_distribution import linear_data, tiny_model

    x, y = linear_data()
    result = {}
    for label, chosen in [("one", strategy("default")),
                          ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
        with chosen.scope():
            model = tiny_model()
        history = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0).history
        result[label] = {"replicas": chosen.num_replicas_in_sync, "loss": history["loss"],
                         "weights": [w.numpy().ravel().tolist() for w in model.weights]}
    print(json.dumps(result))
""")


@pytest.mark.slow  # a subprocess with two virtual CPU devices
def test_two_replicas_train_exactly_like_one():
    """Two mirrored replicas (two logical CPUs) split each batch and average gradients: same weights as one device."""
    import json

    out = subprocess.run(
        [sys.executable, "-c", TWO_REPLICAS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["one"]["replicas"], result["two"]["replicas"]) == (1, 2)
    assert result["two"]["loss"][-1] < 0.2 * result["two"]["loss"][0]
    np.testing.assert_allclose(result["two"]["loss"], result["one"]["loss"], rtol=1e-5)
    for one, two in zip(result["one"]["weights"], result["two"]["weights"]):
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)


def movielens_params(**changes) -> ModelParams:
    base = {
        "kind": "bias",
        "factors": 4,
        "l2": 0.0001,
        "rating_range": [0.0, 5.5],
        "epochs": 2,
        "batch_size": 64,
        "lr_schedule": [[0, 0.01]],
        "early_stopping_patience": None,
        "seed": 1,
    }
    return ModelParams(**(base | changes))


def test_movielens_train_runs_under_the_mirrored_strategy():
    import tensorflow as tf

    from stages.movielens.train import train

    rng = np.random.default_rng(0)
    ratings = pd.DataFrame(
        {
            "user": rng.integers(0, 20, 600),
            "movie": rng.integers(0, 30, 600),
            "rating": rng.uniform(0.5, 5.0, 600).astype("float32"),
            "valid": rng.random(600) < 0.2,
        }
    )
    model, history, throughput = train(ratings, 20, 30, movielens_params(distribution="mirrored"))
    assert all(isinstance(w.value, tf.distribute.DistributedValues) for w in model.weights)
    assert len(history["val_mse"]) == 2 and np.isfinite(history["val_mse"]).all() and throughput > 0


def test_movielens_distribution_param_is_validated():
    assert movielens_params().distribution == "default"
    with pytest.raises(ParamsError, match="distribution = 'multi_gpu': Input should be 'default', 'auto'"):
        validate_section(
            "movielens.models.bias", movielens_params().model_dump() | {"distribution": "multi_gpu"}, ModelParams
        )
