"""TensorFlow distribution strategies chosen by a param (`distribution:` in a model's params).

Build and compile the model inside `strategy(name).scope()`; `model.fit` then runs
one replica per device and averages the gradients. The batch size stays the
global batch (split across replicas), so results are comparable across machines.
"""

from __future__ import annotations

from stages.common.params import Distribution

NAMES: tuple[str, ...] = Distribution.__args__


def strategy(name: Distribution = "default"):
    """A `tf.distribute.Strategy`.

    default: TensorFlow's default (one device, what plain Keras does);
    auto: MirroredStrategy when more than one GPU is visible, else the default;
    mirrored: MirroredStrategy over all visible GPUs (the CPU when there is none);
    one_device: everything on the first GPU, or the CPU.
    """
    import tensorflow as tf

    if name not in NAMES:
        raise ValueError(f"unknown distribution '{name}': use one of {', '.join(NAMES)}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()
