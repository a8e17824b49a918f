"""DeepLeGATo Arch1 and Arch2 as named Keras functional models.

Both follow Tuccillo et al. (2018): the raw stamp is scaled (asinh) and
Gaussian noise is added to it; then one (Arch1) or two (Arch2) *initial
blocks* of two ReLU convolutions, max pooling and dropout; then *further
units* like the initial ones without dropout; then three fully connected
layers, the last one giving the estimate. Every layer has a stable name
(``block1_conv1``, ``unit2_pool``, ``dense1``, ``estimate``...), so layers can
be frozen and fine-tuned by name.
"""

from __future__ import annotations

from legato.conventions import DEFAULT_STAMP_SIZE

# Widths chosen for a 2-core CPU: ~200-250 training and 400-800 predicted stamps/s at 64x64
# (32/64/128/128 filters train 4x slower for no gain at this data size).
FURTHER_UNIT_FILTERS = (32, 64, 64)
HEAD_LAYERS = ("dense1", "dense2", "estimate")


def build_network(
    initial_blocks: int,
    n_outputs: int = 4,
    stamp_size: int = DEFAULT_STAMP_SIZE,
    initial_filters: int = 16,
    further_filters: tuple = FURTHER_UNIT_FILTERS,
    dense_units: tuple = (128, 64),
    dropout: float = 0.1,
    input_noise: float = 0.01,
    input_scale: float = 0.01,
    name: str = "deeplegato",
):
    """Build a DeepLeGATo network.

    Parameters
    ----------
    initial_blocks : int
        Number of initial blocks (conv, conv, max-pool, dropout): 1 for Arch1, 2 for Arch2.
    n_outputs : int
        Number of regressed (standardised) targets.
    stamp_size : int
        Input side in pixels; the input is ``(stamp_size, stamp_size)`` in electrons/s.
    initial_filters : int
        Filters of the initial blocks' convolutions.
    further_filters : tuple of int
        Filters of each further unit (conv, conv, max-pool, no dropout).
    dense_units : tuple of int
        Widths of the two hidden fully connected layers (the third is the output).
    dropout : float
        Dropout rate of the initial blocks.
    input_noise : float
        Standard deviation of the Gaussian noise added to the scaled input during training.
    input_scale : float
        Softening (electrons/s) of the asinh input scaling.
    name : str
        Model name.

    Returns
    -------
    keras.Model
    """
    import keras
    from keras import layers

    from legato.models.layers import ArcsinhScaling

    if initial_blocks < 1:
        raise ValueError(f"initial_blocks must be >= 1, got {initial_blocks}")
    stages = initial_blocks + len(further_filters)
    if stamp_size % (2**stages):
        raise ValueError(f"stamp_size {stamp_size} must be divisible by 2**{stages} for {stages} pooling stages")

    inputs = keras.Input(shape=(stamp_size, stamp_size), name="stamp")
    x = layers.Reshape((stamp_size, stamp_size, 1), name="add_channel")(inputs)
    x = ArcsinhScaling(input_scale, name="asinh_scaling")(x)
    x = layers.GaussianNoise(input_noise, name="input_noise")(x)
    for b in range(1, initial_blocks + 1):
        x = layers.Conv2D(initial_filters, 3, padding="same", activation="relu", name=f"block{b}_conv1")(x)
        x = layers.Conv2D(initial_filters, 3, padding="same", activation="relu", name=f"block{b}_conv2")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        x = layers.Dropout(dropout, name=f"block{b}_dropout")(x)
    for u, filters in enumerate(further_filters, start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"unit{u}_conv1")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"unit{u}_conv2")(x)
        x = layers.MaxPooling2D(2, name=f"unit{u}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for d, units in enumerate(dense_units, start=1):
        x = layers.Dense(units, activation="relu", name=f"dense{d}")(x)
    outputs = layers.Dense(n_outputs, name="estimate")(x)
    return keras.Model(inputs, outputs, name=name)


def build_arch1(**kwargs):
    """DeepLeGATo Arch1: one initial block (see :func:`build_network`)."""
    return build_network(initial_blocks=1, name="arch1", **kwargs)


def build_arch2(**kwargs):
    """DeepLeGATo Arch2: two initial blocks (see :func:`build_network`)."""
    return build_network(initial_blocks=2, name="arch2", **kwargs)


ARCHITECTURES = {"arch1": build_arch1, "arch2": build_arch2}
