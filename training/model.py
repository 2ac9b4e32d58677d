"""The small CNN shared by the speech and music models (Keras, built lazily).

Input [N, T, 64, 3] log-mel/delta/delta-delta.  The first op standardises
each channel with constants computed on training features (baked into the
graph).  Then four Conv3x3-BN-ReLU blocks (16-24-32-48 channels; the first with
stride 2, each followed by 2x2 max pooling except the last), global average +
max pooling, Dense 64 ReLU, dropout, and three heads: ``quadrant`` (softmax
over Q1..Q4), ``va`` (tanh: valence, arousal) and ``activity`` (sigmoid).
"""

from __future__ import annotations

import numpy as np

CHANNELS = (16, 24, 32, 48)
DENSE = 64


def build(n_frames: int, mean: np.ndarray, std: np.ndarray, n_mels: int = 64, seed: int = 1,
          dropout: float = 0.3):
    """Keras model with outputs ``quadrant``, ``va``, ``activity`` (TensorFlow imported here)."""
    import tensorflow as tf
    from tensorflow.keras import layers

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((n_frames, n_mels, 3), name="features")
    scale = tf.constant((1.0 / np.asarray(std)).astype(np.float32).reshape(1, 1, 1, 3))
    shift = tf.constant((-np.asarray(mean) / np.asarray(std)).astype(np.float32).reshape(1, 1, 1, 3))
    x = layers.Lambda(lambda t: t * scale + shift, name="standardise")(inp)
    for i, ch in enumerate(CHANNELS):
        x = layers.Conv2D(ch, 3, strides=2 if i == 0 else 1, padding="same", use_bias=False,
                          name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i < len(CHANNELS) - 1:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Concatenate(name="pool_avg_max")([layers.GlobalAveragePooling2D()(x),
                                                  layers.GlobalMaxPooling2D()(x)])
    x = layers.Dense(DENSE, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout)(x)
    q = layers.Dense(4, activation="softmax", name="quadrant")(x)
    va = layers.Dense(2, activation="tanh", name="va")(x)
    act = layers.Dense(1, activation="sigmoid", name="activity")(x)
    return tf.keras.Model(inp, {"quadrant": q, "va": va, "activity": act}, name="emotrack_cnn")


def describe(model) -> str:
    """Short architecture text with the parameter count."""
    return ("standardise (constants) -> 4 x [Conv3x3 (no bias) + BatchNorm + ReLU] with "
            f"{'-'.join(map(str, CHANNELS))} channels (first conv stride 2; 2x2 max-pool after "
            f"the first three) -> global avg + max pool -> Dense {DENSE} ReLU -> dropout 0.3 -> "
            f"heads quadrant (Dense 4 softmax), va (Dense 2 tanh), activity (Dense 1 sigmoid); "
            f"{model.count_params()} parameters")
