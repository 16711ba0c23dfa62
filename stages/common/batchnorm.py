"""Insert BatchNormalization into an already trained Keras model without changing what it computes.

A BN layer in inference mode computes gamma * (x - moving_mean) / sqrt(moving_var + eps) + beta.
Setting moving_mean/moving_var to the statistics of the activations it will see (measured on
calibration data) and gamma = sqrt(moving_var + eps), beta = moving_mean makes that the identity:
the model's outputs are unchanged, and in training mode the batch statistics are close to the
calibration ones, so fine-tuning starts from the trained function and lets the optimiser move
gamma and beta. (fast.ai's 2017 notebook set gamma to the variance, not its square root, and lost
accuracy on insertion.)
"""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="lesson5")
class CalibratedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that normalises with its moving (calibrated) statistics in training as well;
    gamma and beta still train, the statistics stay as calibrated."""

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def activation_statistics(
    model, layer_names: list[str], calibration, batch_size: int = 256
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (mean, variance) of each named layer's output over the calibration inputs."""
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in layer_names])
    outputs = probe.predict(calibration, batch_size=batch_size, verbose=0)
    if len(layer_names) == 1:
        outputs = [outputs]
    stats = {}
    for name, out in zip(layer_names, outputs):
        flat = np.asarray(out, dtype=np.float64).reshape(-1, out.shape[-1])  # channels last
        stats[name] = (flat.mean(axis=0), flat.var(axis=0))
    return stats


def insert_batchnorm(
    model,
    after: list[str],
    calibration,
    epsilon: float = 1e-3,
    momentum: float = 0.99,
    batch_size: int = 256,
    frozen_statistics: bool = False,
):
    """A copy of `model` with a BatchNormalization layer after each layer named in `after`.

    The copy has the original's weights and each new layer (named `<layer>_bn`) is initialised from
    the layer's activations on `calibration` so that the copy computes the same function. The
    original model is left untouched. `frozen_statistics`: the new layers keep normalising with the
    calibrated statistics while training (CalibratedBatchNormalization).
    """
    bn_class = CalibratedBatchNormalization if frozen_statistics else keras.layers.BatchNormalization
    names = {layer.name for layer in model.layers}
    missing = [name for name in after if name not in names]
    if missing:
        raise ValueError(
            f"insert_batchnorm: no layer named {', '.join(missing)} in model '{model.name}' "
            f"(its layers: {', '.join(layer.name for layer in model.layers)})"
        )
    stats = activation_statistics(model, list(after), calibration, batch_size)
    targets = set(after)

    def call_with_bn(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name in targets:
            out = bn_class(epsilon=epsilon, momentum=momentum, name=f"{layer.name}_bn")(out)
        return out

    copy = keras.models.clone_model(model, call_function=call_with_bn)
    for layer in model.layers:
        if layer.weights:  # input layers get new names in the copy; they hold no weights
            copy.get_layer(layer.name).set_weights(layer.get_weights())
    for name, (mean, var) in stats.items():
        copy.get_layer(f"{name}_bn").set_weights(identity_bn_weights(mean, var, epsilon))
    return copy


def identity_bn_weights(mean: np.ndarray, var: np.ndarray, epsilon: float) -> list[np.ndarray]:
    """[gamma, beta, moving_mean, moving_variance] that make a BatchNormalization layer the identity."""
    mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    gamma = np.sqrt(var + epsilon)
    return [a.astype(np.float32) for a in (gamma, mean, mean, var)]
