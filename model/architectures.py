"""THE architecture registry: every network a model folder's contract can name.

Every builder takes log-mel windows named ``mel`` with shape
(batch, input_frames, n_mels) and returns sigmoid probabilities named ``tags``
with shape (batch, n_tags), built from Keras 3 built-in layers only, so a saved
model loads anywhere (:func:`model.load_tagger`, the worker, TFLite) without
custom objects.  Every builder has the same keyword-only signature
(``input_frames``, ``n_mels``, ``n_tags``, ``width``, ``dropout``, ``name``),
so training builds any of them from its settings.

:data:`ARCHITECTURES` maps the name a contract carries
(``contract.architecture``) and a training config asks for
(``model.architecture``) to its builder.  Two networks are the pretrained MSD
taggers of the ``musicnn`` 0.1.0 wheel (``musicnn``, ``vgg``; layer names follow
the variable scopes of its TensorFlow-1 checkpoints, so :mod:`model.convert`
copies weights by name); the others are trained with ``python -m training``
(``fcn4``, ``crnn``, ``short_chunk_resnet``, ``student``).  The published
networks were designed for other input sizes (FCN-4 and the CRNN for 29 s at
12 kHz); their pooling sizes are adapted to 3 s windows of 96 bands (187 x 96)
and are said in each docstring.

Keras is imported inside the builders, so importing the registry is cheap: a
training config's architecture is checked before TensorFlow loads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

__all__ = [
    "ARCHITECTURES",
    "build_crnn",
    "build_fcn4",
    "build_musicnn",
    "build_short_chunk_resnet",
    "build_student",
    "build_vgg",
]


def _layers() -> Any:
    from keras import layers

    return layers


# --------------------------------------------------------------------------- musicnn, vgg


def _timbral_block(
    x: keras.KerasTensor, *, filters: int, kernel: tuple[int, int], n_mels: int, index: int
) -> keras.KerasTensor:
    """Conv over (7 frames x part of the mel axis), ReLU, BN, max over frequency."""
    layers = _layers()
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
    layers = _layers()
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
    width: float = 1.0,
    dropout: float = 0.5,
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
    width : float > 0
        Scales the front end: ``1.6 * width`` is its filter scale (1.6 in
        ``MSD_musicnn``); the mid end (64 filters) and back end (200 units)
        keep their widths.
    dropout : float
        Accepted for the registry's common signature and ignored: the back
        end's two dropout layers keep the 0.5 of the trained network.

    Returns
    -------
    keras.Model
        ``mel`` (batch, frames, n_mels) -> ``tags`` (batch, n_tags) in [0, 1].
    """
    import keras

    layers = _layers()
    del dropout
    frontend_scale, midend_filters, backend_units = 1.6 * width, 64, 200
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
    width: float = 1.0,
    dropout: float = 0.5,
    name: str = "vgg",
) -> keras.Model:
    """A VGG-like 5-layer CNN over the log-mel "image", as shipped as ``MSD_vgg``.

    Choi, K., Fazekas, G. & Sandler, M. (2016). "Automatic tagging using deep
    convolutional neural networks." ISMIR (the VGG-style baseline); pooling as
    in the trained ``MSD_vgg`` graph of Pons et al. (2018): (4,1), (1,4), (2,2),
    (2,2), (4,4).

    Parameters
    ----------
    width : float > 0
        ``128 * width`` filters per layer (128 in ``MSD_vgg``).
    dropout : float
        Accepted for the registry's common signature and ignored: the rates
        (0.25 between blocks, 0.5 before the tag layer) are the trained network's.

    Returns
    -------
    keras.Model
        ``mel`` (batch, input_frames, n_mels) -> ``tags`` (batch, n_tags).
    """
    import keras

    layers = _layers()
    del dropout
    filters = _width(128, width)
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


# --------------------------------------------------------------------------- trained here


def _width(channels: int, width: float) -> int:
    return max(4, round(channels * width))


def _conv_bn(
    x: keras.KerasTensor, filters: int, *, name: str, activation: str = "relu"
) -> keras.KerasTensor:
    layers = _layers()
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x)


def _image_input(input_frames: int, n_mels: int) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    import keras

    layers = _layers()
    inputs = keras.Input((input_frames, n_mels), name="mel")
    x = layers.Reshape((input_frames, n_mels, 1), name="expand")(inputs)
    return inputs, layers.BatchNormalization(name="input_bn")(x)


def _tagger(inputs: keras.KerasTensor, x: keras.KerasTensor, n_tags: int, name: str) -> keras.Model:
    """The tag layer (``logits`` then sigmoid ``tags``) on ``x``, as a model from ``inputs``."""
    import keras

    layers = _layers()
    logits = layers.Dense(n_tags, name="logits")(x)
    return keras.Model(inputs, layers.Activation("sigmoid", name="tags")(logits), name=name)


def build_fcn4(
    *,
    input_frames: int = 187,
    n_mels: int = 96,
    n_tags: int = 50,
    width: float = 1.0,
    dropout: float = 0.3,
    name: str = "fcn4",
) -> keras.Model:
    """FCN-4: four 3x3 convolution blocks and max pooling, then the tag layer.

    Choi, K., Fazekas, G. & Sandler, M. (2016). "Automatic tagging using deep
    convolutional neural networks." ISMIR.

    Channels 128, 384, 768, 2048 (times ``width``) as in the paper; the
    (time, frequency) pools (2, 4), (4, 4), (4, 3) and a global max pool take
    187 x 96 down to 1 x 1 the way the paper's (4, 2)...(4, 8) pools did for
    1366 x 96.
    """
    layers = _layers()
    inputs, x = _image_input(input_frames, n_mels)
    for index, (channels, pool) in enumerate(
        ((128, (2, 4)), (384, (4, 4)), (768, (4, 3)), (2048, None)), start=1
    ):
        x = _conv_bn(x, _width(channels, width), name=f"block{index}")
        if pool is not None:
            x = layers.MaxPooling2D(pool, name=f"block{index}_pool")(x)
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    return _tagger(inputs, layers.Dropout(dropout, name="dropout")(x), n_tags, name)


def build_crnn(
    *,
    input_frames: int = 187,
    n_mels: int = 96,
    n_tags: int = 50,
    width: float = 1.0,
    dropout: float = 0.3,
    name: str = "crnn",
) -> keras.Model:
    """CRNN: four 3x3 convolution blocks (ELU) summarised over time by two GRU layers.

    Choi, K., Fazekas, G., Sandler, M. & Cho, K. (2017). "Convolutional
    recurrent neural networks for music classification." ICASSP.

    Channels 64, 128, 128, 128 and two 32-unit GRUs (times ``width``);
    (time, frequency) pools (2, 2), (3, 3), (2, 4), (1, 4) reduce 96 bands to 1
    and leave 15 time steps for the GRUs.
    """
    layers = _layers()
    inputs, x = _image_input(input_frames, n_mels)
    pools = ((2, 2), (3, 3), (2, 4), (1, 4))
    for index, (channels, pool) in enumerate(zip((64, 128, 128, 128), pools, strict=True), 1):
        x = _conv_bn(x, _width(channels, width), name=f"block{index}", activation="elu")
        x = layers.MaxPooling2D(pool, name=f"block{index}_pool")(x)
        x = layers.Dropout(0.1, name=f"block{index}_dropout")(x)
    # (batch, time, freq, channels) -> (batch, time, freq * channels)
    x = layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]), name="to_sequence")(x)
    x = layers.GRU(_width(32, width), return_sequences=True, name="gru1")(x)
    x = layers.GRU(_width(32, width), name="gru2")(x)
    return _tagger(inputs, layers.Dropout(dropout, name="dropout")(x), n_tags, name)


def build_short_chunk_resnet(
    *,
    input_frames: int = 187,
    n_mels: int = 96,
    n_tags: int = 50,
    width: float = 1.0,
    dropout: float = 0.5,
    name: str = "short_chunk_resnet",
) -> keras.Model:
    """Short-chunk ResNet: seven residual 3x3 blocks with 2x2 pooling, dense back end.

    Won, M., Ferraro, A., Bogdanov, D. & Serra, X. (2020). "Evaluation of
    CNN-based automatic music tagging models." SMC.

    128 channels (times ``width``) in every block, each block conv-BN-ReLU-conv-BN
    plus a projected shortcut, ReLU, then max pooling by 2 along every axis
    still longer than 1 (96 bands reach 1 after six blocks); global max pool,
    dense 256-BN-ReLU-dropout, tag layer.
    """
    layers = _layers()
    inputs, x = _image_input(input_frames, n_mels)
    channels = _width(128, width)
    for index in range(1, 8):
        prefix = f"res{index}"
        shortcut = layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{prefix}_proj_bn")(shortcut)
        y = _conv_bn(x, channels, name=f"{prefix}_a")
        y = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{prefix}_b_conv")(y)
        y = layers.BatchNormalization(name=f"{prefix}_b_bn")(y)
        x = layers.Activation("relu", name=f"{prefix}_relu")(
            layers.Add(name=f"{prefix}_add")([y, shortcut])
        )
        pool = tuple(2 if size is not None and size > 1 else 1 for size in x.shape[1:3])
        if pool != (1, 1):
            x = layers.MaxPooling2D(pool, name=f"{prefix}_pool")(x)
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    x = layers.Dense(_width(256, width), use_bias=False, name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    x = layers.Activation("relu", name="dense_relu")(x)
    return _tagger(inputs, layers.Dropout(dropout, name="dropout")(x), n_tags, name)


def build_student(
    *,
    input_frames: int = 187,
    n_mels: int = 96,
    n_tags: int = 50,
    width: float = 1.0,
    dropout: float = 0.3,
    name: str = "student",
) -> keras.Model:
    """A small CNN for distillation: four 3x3 blocks with early pooling, max+mean pooling.

    Not a published model: the FCN recipe of Choi et al. (2016) at 16-128
    channels, with the frequency axis pooled by 4 first (most of the cost of a
    tagger is at full resolution), then max and mean pooling over what is
    left, as in musicnn's back end (Pons et al., 2018).  About 30 M
    multiply-adds per window against about 1 G for ``MSD_musicnn``.
    """
    layers = _layers()
    inputs, x = _image_input(input_frames, n_mels)
    for index, (channels, pool) in enumerate(
        ((16, (2, 4)), (32, (2, 2)), (64, (2, 2)), (128, (2, 2))), start=1
    ):
        x = _conv_bn(x, _width(channels, width), name=f"block{index}")
        x = layers.MaxPooling2D(pool, name=f"block{index}_pool")(x)
    pooled = layers.Concatenate(name="pooled")(
        [
            layers.GlobalMaxPooling2D(name="max_pool")(x),
            layers.GlobalAveragePooling2D(name="mean_pool")(x),
        ]
    )
    x = layers.Dense(_width(128, width), activation="relu", name="dense")(pooled)
    return _tagger(inputs, layers.Dropout(dropout, name="dropout")(x), n_tags, name)


#: Architecture name (``contract.architecture``, a training config's
#: ``model.architecture``) -> builder.  The one registry; add a network here.
ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "musicnn": build_musicnn,
    "vgg": build_vgg,
    "fcn4": build_fcn4,
    "crnn": build_crnn,
    "short_chunk_resnet": build_short_chunk_resnet,
    "student": build_student,
}
