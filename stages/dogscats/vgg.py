"""The VGG16 convolutional base with weights loaded from a file, checked layer by layer first."""

from __future__ import annotations

import sys
from pathlib import Path

from stages.common.cli import StageError
from stages.common.cpu import cpu_flags
from stages.common.precision import gpu_compute_capability, slow_policy_warning

FEATURE_LAYER = "block5_pool"
BGR_MEAN = (103.939, 116.779, 123.68)  # the ImageNet means the weights were trained with (caffe-style input)


def load_image(path, input_size: int, flip: bool = False):
    """File -> VGG16 input: decoded (any format), resized, mirrored if `flip`, RGB->BGR, ImageNet means subtracted."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(image, (input_size, input_size), antialias=True)
    if flip:
        image = tf.image.flip_left_right(image)
    return image[..., ::-1] - tf.constant(BGR_MEAN)


def file_layers(path: Path) -> list[tuple[str, list[tuple[int, ...]]]]:
    """(layer name, weight shapes) of every layer holding weights in a Keras HDF5 weights file, in file order."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f  # a whole saved model, or weights only
            layers = []
            for name in root.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else str(name)
                group = root[name]
                shapes = [tuple(group[w].shape) for w in group.attrs.get("weight_names", [])]
                if shapes:
                    layers.append((name, shapes))
            return layers
    except (OSError, KeyError) as err:
        raise StageError(
            f"{path}: not a Keras HDF5 weights file ({err}); download it again (dogscats.sources.weights)"
        ) from None


def check_weights(model, path: Path) -> None:
    """Raise StageError naming the first layer whose weights in `path` do not fit `model`."""
    expected = [(layer.name, [tuple(w.shape) for w in layer.weights]) for layer in model.layers if layer.weights]
    found = file_layers(path)
    for (name, shapes), (file_name, file_shapes) in zip(expected, found):
        if shapes != file_shapes:
            raise StageError(
                f"{path}: weights for layer '{name}' have shapes {file_shapes} (file layer '{file_name}') "
                f"but {model.name} needs {shapes}; this is not the VGG16 'notop' weights file "
                "(vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5)"
            )
    if len(found) != len(expected):
        names = [n for n, _ in expected]
        missing = names[len(found) :] or ["(none)"]
        raise StageError(
            f"{path}: holds weights for {len(found)} layers, {model.name} has {len(expected)} "
            f"(first layer without weights in the file: '{missing[0]}'); use the VGG16 'notop' file"
        )


def conv_base(input_size: int, weights: str | Path | None, precision: str = "float32"):
    """VGG16 without its dense layers, output `block5_pool`; `weights`: a weights file, or None for random.
    `precision`: a Keras dtype policy (resolve `auto` first: stages/common/precision.py); the mixed ones compute in
    16 bits with float32 weights. One this machine only emulates is built, with a warning."""
    import keras

    warning = slow_policy_warning(precision, cpu_flags(), gpu_compute_capability())
    if warning:
        print(
            f"WARNING: {warning}; set dogscats.features.precision and dogscats.finetune.precision to auto or float32",
            file=sys.stderr,
        )
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:  # the policy is global: set only while VGG16's layers are built
        model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(input_size, input_size, 3))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise StageError(f"{weights}: weights file not found; run dogscats_download first")
        check_weights(model, weights)
        model.load_weights(weights)
    return model


def conv_flops(model) -> float:
    """Floating-point operations (2 per multiply-add) of one image through the model's conv layers."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            total += 2 * h * w * c_out * kh * kw * c_in
    return float(total)
