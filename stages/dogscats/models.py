"""The dense head on cached VGG16 block-5 features (fast.ai's "FC model" without the ImageNet dense weights)."""

from __future__ import annotations

import keras
from keras import layers, regularizers

BN_AFTER = ["fc1", "fc2"]


def dense_head(
    feature_shape: tuple[int, ...], hidden: int, dropout: float, l2: float, batchnorm: bool = False, name: str = "dense"
) -> keras.Model:
    """features -> flatten -> 2 x (dense relu [-> BN] [-> dropout]) -> P(dog).

    With batchnorm=True this is exactly the architecture insert_batchnorm(head, BN_AFTER, ...) produces.
    """
    features = keras.Input(feature_shape, name="features")
    x = layers.Flatten(name="flatten")(features)
    for layer in BN_AFTER:
        x = layers.Dense(hidden, activation="relu", kernel_regularizer=regularizers.l2(l2) if l2 else None, name=layer)(
            x
        )
        if batchnorm:
            x = layers.BatchNormalization(name=f"{layer}_bn")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{layer}_dropout")(x)
    dog = layers.Dense(1, activation="sigmoid", name="dog")(x)
    return keras.Model(features, dog, name=name)
