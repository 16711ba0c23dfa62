"""insert_batchnorm: the model computes the same function after insertion; naive BN initialisations do not."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from stages.common.batchnorm import activation_statistics, insert_batchnorm

TOLERANCE = 1e-4


def dense_model(seed: int = 0, final_activation: str | None = None) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((20,))
    x = keras.layers.Dense(64, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dropout(0.5, name="drop1")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(3, activation=final_activation, name="out")(x)
    return keras.Model(inputs, outputs)


def conv_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="out")(x)
    return keras.Model(inputs, outputs)


def shifted_inputs(shape, seed, n=300):
    # far from zero mean / unit variance, so a BN that normalises visibly changes the function
    rng = np.random.default_rng(seed)
    return (3.0 + 4.0 * rng.normal(size=(n, *shape))).astype("float32")


@pytest.mark.parametrize(
    "build,after,shape",
    [
        (dense_model, ["fc1", "fc2"], (20,)),
        (conv_model, ["conv1", "conv2"], (12, 12, 3)),
        (dense_model, ["out"], (20,)),
    ],
)
def test_insertion_keeps_the_function(build, after, shape):
    model = build()
    calibration, probe = shifted_inputs(shape, 1), shifted_inputs(shape, 2)
    before = model.predict(probe, verbose=0)
    with_bn = insert_batchnorm(model, after, calibration)

    assert [f"{name}_bn" for name in after] == [layer.name for layer in with_bn.layers if layer.name.endswith("_bn")]
    after_insertion = with_bn.predict(probe, verbose=0)
    assert np.abs(after_insertion - before).max() < TOLERANCE
    # and on plain random inputs unlike the calibration data
    noise = np.random.default_rng(3).normal(size=(50, *shape)).astype("float32")
    assert np.abs(with_bn.predict(noise, verbose=0) - model.predict(noise, verbose=0)).max() < TOLERANCE


def naive_variants(model, after, calibration):
    """The same insertion, then the BN weights replaced by three naive initialisations."""
    stats = activation_statistics(model, after, calibration)
    inits = {
        "keras default": lambda mean, var: [
            np.ones_like(mean),
            np.zeros_like(mean),
            np.zeros_like(mean),
            np.ones_like(var),
        ],
        "stats only": lambda mean, var: [np.ones_like(mean), np.zeros_like(mean), mean, var],
        "gamma=variance": lambda mean, var: [var, mean, mean, var],  # gamma = variance instead of sqrt(variance + eps)
    }
    for name, init in inits.items():
        variant = insert_batchnorm(model, after, calibration)
        for layer in after:
            variant.get_layer(f"{layer}_bn").set_weights(init(*stats[layer]))
        yield name, variant


def test_naive_initialisations_change_the_function():
    model = dense_model()
    calibration, probe = shifted_inputs((20,), 1), shifted_inputs((20,), 2)
    before = model.predict(probe, verbose=0)
    for name, variant in naive_variants(model, ["fc1", "fc2"], calibration):
        gap = np.abs(variant.predict(probe, verbose=0) - before).max()
        assert gap > 100 * TOLERANCE, f"{name} init kept the function (max difference {gap})"


def test_original_is_untouched_and_the_copy_trains():
    model = dense_model(final_activation="sigmoid")
    x = shifted_inputs((20,), 1)
    y = (x[:, :3] > 3).astype("float32")
    weights_before = [w.copy() for w in model.get_weights()]
    with_bn = insert_batchnorm(model, ["fc1", "fc2"], x)
    with_bn.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    first = with_bn.evaluate(x, y, verbose=0)
    with_bn.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert with_bn.evaluate(x, y, verbose=0) < first
    for old, new in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_unknown_layer_name_is_a_clear_error():
    with pytest.raises(ValueError, match="no layer named fc9"):
        insert_batchnorm(dense_model(), ["fc9"], shifted_inputs((20,), 1))


def test_calibrated_statistics_stay_while_gamma_and_beta_train(tmp_path):
    """frozen_statistics: training normalises with the calibrated statistics (no batch-statistics noise,
    no drift to dropout-time activations), so the function starts unchanged and only the weights move."""
    from stages.common.batchnorm import CalibratedBatchNormalization
    from stages.common.io import load_keras, save_keras

    model = dense_model(final_activation="sigmoid")
    x = shifted_inputs((20,), 1)
    y = (x[:, :3] > 3).astype("float32")
    with_bn = insert_batchnorm(model, ["fc1", "fc2"], x, frozen_statistics=True)
    layer = with_bn.get_layer("fc1_bn")
    assert isinstance(layer, CalibratedBatchNormalization)
    np.testing.assert_allclose(with_bn.predict(x, verbose=0), model.predict(x, verbose=0), atol=TOLERANCE)
    gamma, beta, mean, var = (w.copy() for w in layer.get_weights())
    # training mode computes what inference mode does (plain BN would use the batch's statistics)
    bn_only = keras.Model(with_bn.input, layer.output)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn_only(x[:50], training=True)),
        keras.ops.convert_to_numpy(bn_only(x[:50], training=False)),
        atol=1e-5,
    )

    with_bn.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    first = with_bn.evaluate(x, y, verbose=0)
    with_bn.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert with_bn.evaluate(x, y, verbose=0) < first
    new_gamma, new_beta, new_mean, new_var = layer.get_weights()
    assert not np.allclose(new_gamma, gamma) and not np.allclose(new_beta, beta)
    np.testing.assert_array_equal(new_mean, mean)
    np.testing.assert_array_equal(new_var, var)

    save_keras(tmp_path / "m.keras", with_bn)  # a registered layer: loads with safe_mode
    loaded = load_keras(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), with_bn.predict(x, verbose=0), atol=1e-6)
