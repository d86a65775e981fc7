"""Keras 3 functional re-implementations of the pretrained MSD taggers.

Both take log-mel windows of shape (frames, 96) (see :mod:`model.features`) and
return 50 sigmoid probabilities.  Layer names follow the variable scopes of the
TensorFlow-1 checkpoints shipped in the ``musicnn`` 0.1.0 wheel, so
:mod:`model.convert` can copy weights by name.
"""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["ARCHITECTURES", "build_musicnn", "build_vgg"]


def _timbral_block(
    x: keras.KerasTensor, *, filters: int, kernel: tuple[int, int], n_mels: int, index: int
) -> keras.KerasTensor:
    """Conv over (7 frames x part of the mel axis), ReLU, BN, max over frequency."""
    conv = layers.Conv2D(
        filters, kernel, padding="valid", activation="relu", name=f"conv2d{_suffix(index)}"
    )(x)
    bn = layers.BatchNormalization(epsilon=1e-3, name=f"batch_normalization{_suffix(index + 1)}")(
        conv
    )
    freq = n_mels - kernel[1] + 1
    pool = layers.MaxPooling2D((1, freq), name=f"timbral_pool_{index}")(bn)
    return layers.Reshape((-1, filters), name=f"timbral_squeeze_{index}")(pool)


def _temporal_block(
    x: keras.KerasTensor, *, filters: int, length: int, n_mels: int, index: int
) -> keras.KerasTensor:
    """Conv over (length frames x 1 band), ReLU, BN, max over frequency."""
    conv = layers.Conv2D(
        filters, (length, 1), padding="same", activation="relu", name=f"conv2d{_suffix(index)}"
    )(x)
    bn = layers.BatchNormalization(epsilon=1e-3, name=f"batch_normalization{_suffix(index + 1)}")(
        conv
    )
    pool = layers.MaxPooling2D((1, n_mels), name=f"temporal_pool_{index}")(bn)
    return layers.Reshape((-1, filters), name=f"temporal_squeeze_{index}")(pool)


def _suffix(index: int) -> str:
    return "" if index == 0 else f"_{index}"


def build_musicnn(
    *,
    input_frames: int | None = 187,
    n_mels: int = 96,
    n_tags: int = 50,
    frontend_scale: float = 1.6,
    midend_filters: int = 64,
    backend_units: int = 200,
    name: str = "musicnn",
) -> keras.Model:
    """musicnn: musically motivated CNN front end, dense mid end, pooled back end.

    Pons, J. & Serra, X. (2019). "musicnn: Pre-trained convolutional neural
    networks for music audio tagging." ISMIR late-breaking/demo.
    Pons, J. et al. (2018). "End-to-end learning for music audio tagging at
    scale." ISMIR.

    Parameters
    ----------
    input_frames : int > 0 or None
        Window length in mel frames; ``None`` accepts any length (the back end
        pools over time).
    n_mels : int > 0
    n_tags : int > 0
    frontend_scale, midend_filters, backend_units
        Width settings; the defaults are those of ``MSD_musicnn``.

    Returns
    -------
    keras.Model
        ``mel`` (batch, frames, n_mels) -> ``tags`` (batch, n_tags) in [0, 1].
    """
    inputs = keras.Input((input_frames, n_mels), name="mel")
    x = layers.Reshape((-1, n_mels, 1), name="expand")(inputs)
    x = layers.BatchNormalization(epsilon=1e-3, name="batch_normalization")(x)

    timbral_filters = int(frontend_scale * 128)
    temporal_filters = int(frontend_scale * 32)
    padded = layers.ZeroPadding2D(((3, 3), (0, 0)), name="timbral_pad")(x)
    frontend = [
        _timbral_block(
            padded, filters=timbral_filters, kernel=(7, int(0.4 * n_mels)), n_mels=n_mels, index=0
        ),
        _timbral_block(
            padded, filters=timbral_filters, kernel=(7, int(0.7 * n_mels)), n_mels=n_mels, index=1
        ),
    ]
    for index, length in enumerate((128, 64, 32), start=2):
        frontend.append(
            _temporal_block(x, filters=temporal_filters, length=length, n_mels=n_mels, index=index)
        )
    front = layers.Concatenate(axis=-1, name="frontend")(frontend)

    # Mid end: three 7-frame convolutions over all channels, the last two residual.
    conv1 = layers.Conv1D(midend_filters, 7, padding="same", activation="relu", name="conv2d_5")(
        front
    )
    bn1 = layers.BatchNormalization(epsilon=1e-3, name="batch_normalization_6")(conv1)
    conv2 = layers.Conv1D(midend_filters, 7, padding="same", activation="relu", name="conv2d_6")(
        bn1
    )
    bn2 = layers.BatchNormalization(epsilon=1e-3, name="batch_normalization_7")(conv2)
    res2 = layers.Add(name="midend_res_2")([bn2, bn1])
    conv3 = layers.Conv1D(midend_filters, 7, padding="same", activation="relu", name="conv2d_7")(
        res2
    )
    bn3 = layers.BatchNormalization(epsilon=1e-3, name="batch_normalization_8")(conv3)
    res3 = layers.Add(name="midend_res_3")([bn3, res2])
    features = layers.Concatenate(axis=-1, name="midend")([front, bn1, res2, res3])

    # Back end: max and mean over time, BN, dense, BN, dense.
    pooled = layers.Concatenate(axis=-1, name="temporal_pool")(
        [
            layers.GlobalMaxPooling1D(name="max_pool")(features),
            layers.GlobalAveragePooling1D(name="mean_pool")(features),
        ]
    )
    x = layers.BatchNormalization(epsilon=1e-3, name="batch_normalization_9")(pooled)
    x = layers.Dropout(0.5, name="dropout")(x)
    x = layers.Dense(backend_units, activation="relu", name="dense")(x)
    x = layers.BatchNormalization(epsilon=1e-3, name="batch_normalization_10")(x)
    x = layers.Dropout(0.5, name="dropout_1")(x)
    logits = layers.Dense(n_tags, name="dense_1")(x)
    outputs = layers.Activation("sigmoid", name="tags")(logits)
    return keras.Model(inputs, outputs, name=name)


def build_vgg(
    *,
    input_frames: int = 187,
    n_mels: int = 96,
    n_tags: int = 50,
    filters: int = 128,
    name: str = "vgg",
) -> keras.Model:
    """A VGG-like 5-layer CNN over the log-mel "image", as shipped as ``MSD_vgg``.

    Choi, K., Fazekas, G. & Sandler, M. (2016). "Automatic tagging using deep
    convolutional neural networks." ISMIR (the VGG-style baseline); pooling as
    in the trained ``MSD_vgg`` graph of Pons et al. (2018): (4,1), (1,4), (2,2),
    (2,2), (4,4).

    Returns
    -------
    keras.Model
        ``mel`` (batch, input_frames, n_mels) -> ``tags`` (batch, n_tags).
    """
    inputs = keras.Input((input_frames, n_mels), name="mel")
    x = layers.Reshape((input_frames, n_mels, 1), name="expand")(inputs)
    x = layers.BatchNormalization(epsilon=1e-3, name="batch_normalization")(x)
    pools = ((4, 1), (1, 4), (2, 2), (2, 2), (4, 4))
    for index, pool in enumerate(pools, start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{index}CNN")(x)
        x = layers.BatchNormalization(epsilon=1e-3, name=f"batch_normalization_{index}")(x)
        x = layers.MaxPooling2D(pool, name=f"pool{index}")(x)
        if index < len(pools):
            x = layers.Dropout(0.25, name=f"dropout_{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    logits = layers.Dense(n_tags, name="dense")(x)
    outputs = layers.Activation("sigmoid", name="tags")(logits)
    return keras.Model(inputs, outputs, name=name)


ARCHITECTURES = {"musicnn": build_musicnn, "vgg": build_vgg}
