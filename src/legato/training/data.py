"""``tf.data`` pipelines for training."""

from __future__ import annotations

import numpy as np


def make_dataset(
    stamps: np.ndarray, targets: np.ndarray, batch_size: int, shuffle: bool, augment: bool, seed: int, extra: np.ndarray | None = None
):
    """A batched ``tf.data.Dataset`` of (stamp, target), with optional flips and 90-degree rotations.

    The targets (mag, re, n, ellipticity) are invariant under flips and
    rotations of the stamp, so these augmentations are exact. ``extra``
    ``(N, K)`` is a second network input per stamp (a PSF-conditioned
    network's PSF features): the elements become ``((stamp, extra), target)``,
    and only the stamp is flipped and rotated.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((stamps if extra is None else (stamps, extra), targets))
    if shuffle:
        dataset = dataset.shuffle(min(len(stamps), 20_000), seed=seed, reshuffle_each_iteration=True)
    if augment:

        def flip_rotate_stamp(x):
            x = x[..., None]
            x = tf.image.random_flip_left_right(x)
            x = tf.image.random_flip_up_down(x)
            k = tf.random.uniform((), 0, 4, dtype=tf.int32)
            return tf.image.rot90(x, k)[..., 0]

        def flip_rotate(x, y):
            if extra is None:
                return flip_rotate_stamp(x), y
            return (flip_rotate_stamp(x[0]), x[1]), y

        dataset = dataset.map(flip_rotate, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
