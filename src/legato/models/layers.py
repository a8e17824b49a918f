"""Custom Keras layers (registered, so saved models load without extra code)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="legato")
class ArcsinhScaling(keras.layers.Layer):
    """``asinh(x / scale)``: linear in the sky noise, logarithmic in bright cores.

    Parameters
    ----------
    scale : float
        Pixel value (electrons/s) where the response turns from linear to
        logarithmic; about the sky noise of a stamp.
    """

    def __init__(self, scale: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        return ops.arcsinh(inputs / self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
