"""Tagging networks for training, all Keras 3 functional and built-in layers only.

Every builder takes log-mel windows named ``mel`` with shape
(batch, window_frames, n_mels) and returns sigmoid probabilities named
``tags`` with shape (batch, n_tags), so an exported model loads anywhere
(:func:`model.load_tagger`, the worker, TFLite) without custom objects.

The published networks were designed for other input sizes (FCN-4 and the
CRNN for 29 s at 12 kHz); the pooling sizes below are adapted to 3 s windows
of 96 bands (187 x 96) and are said in each docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import keras
from keras import layers

from model.architectures import build_musicnn

if TYPE_CHECKING:
    from training.config import ModelSettings

__all__ = [
    "ARCHITECTURES",
    "FRONTEND_LAYERS",
    "MIDEND_LAYERS",
    "build_crnn",
    "build_fcn4",
    "build_model",
    "build_short_chunk_resnet",
    "build_student",
]


def _width(channels: int, width: float) -> int:
    return max(4, round(channels * width))


def _conv_bn(
    x: keras.KerasTensor, filters: int, *, name: str, activation: str = "relu"
) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x)


def _image_input(input_frames: int, n_mels: int) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input((input_frames, n_mels), name="mel")
    x = layers.Reshape((input_frames, n_mels, 1), name="expand")(inputs)
    return inputs, layers.BatchNormalization(name="input_bn")(x)


def _tag_head(x: keras.KerasTensor, n_tags: int) -> keras.KerasTensor:
    logits = layers.Dense(n_tags, name="logits")(x)
    return layers.Activation("sigmoid", name="tags")(logits)


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

    Returns
    -------
    keras.Model
        ``mel`` (batch, input_frames, n_mels) -> ``tags`` (batch, n_tags) in [0, 1].
    """
    inputs, x = _image_input(input_frames, n_mels)
    for index, (channels, pool) in enumerate(
        ((128, (2, 4)), (384, (4, 4)), (768, (4, 3)), (2048, None)), start=1
    ):
        x = _conv_bn(x, _width(channels, width), name=f"block{index}")
        if pool is not None:
            x = layers.MaxPooling2D(pool, name=f"block{index}_pool")(x)
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, _tag_head(x, n_tags), name=name)


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

    Returns
    -------
    keras.Model
        ``mel`` (batch, input_frames, n_mels) -> ``tags`` (batch, n_tags) in [0, 1].
    """
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
    x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, _tag_head(x, n_tags), name=name)


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

    Returns
    -------
    keras.Model
        ``mel`` (batch, input_frames, n_mels) -> ``tags`` (batch, n_tags) in [0, 1].
    """
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
    x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, _tag_head(x, n_tags), name=name)


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

    Returns
    -------
    keras.Model
        ``mel`` (batch, input_frames, n_mels) -> ``tags`` (batch, n_tags) in [0, 1].
    """
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
    x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, _tag_head(x, n_tags), name=name)


def _build_musicnn(
    *,
    input_frames: int = 187,
    n_mels: int = 96,
    n_tags: int = 50,
    width: float = 1.0,
    dropout: float = 0.5,
    name: str = "musicnn",
) -> keras.Model:
    """musicnn (Pons & Serra, 2019) from :func:`model.architectures.build_musicnn`.

    ``width`` scales the front end (1.6 in ``MSD_musicnn``); ``dropout`` is the
    back end's fixed 0.5 (ignored).
    """
    del dropout
    return build_musicnn(
        input_frames=input_frames,
        n_mels=n_mels,
        n_tags=n_tags,
        frontend_scale=1.6 * width,
        name=name,
    )


#: Architecture name (``model.architecture`` in a training config) -> builder.
ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "fcn4": build_fcn4,
    "crnn": build_crnn,
    "musicnn": _build_musicnn,
    "short_chunk_resnet": build_short_chunk_resnet,
    "student": build_student,
}

#: Layers of musicnn (as named in :mod:`model.architectures`) frozen by ``freeze``.
FRONTEND_LAYERS = frozenset(
    ["batch_normalization"]
    + [f"conv2d{s}" for s in ("", "_1", "_2", "_3", "_4")]
    + [f"batch_normalization_{i}" for i in range(1, 6)]
)
MIDEND_LAYERS = frozenset(
    [f"conv2d_{i}" for i in (5, 6, 7)] + [f"batch_normalization_{i}" for i in (6, 7, 8)]
)


def _pretrained_musicnn(init: str, n_tags: int, *, replace_head: bool) -> keras.Model:
    """The pretrained ``init`` network; with a new ``dense_1`` + ``tags`` head if asked."""
    from model.tagger import load_tagger

    network = load_tagger(init, device="cpu").network
    if not replace_head:
        return network
    features = network.get_layer("dropout_1").output
    logits = layers.Dense(n_tags, name="dense_1")(features)
    outputs = layers.Activation("sigmoid", name="tags")(logits)
    return keras.Model(network.inputs, outputs, name=f"{init}_finetuned")


def build_model(settings: ModelSettings, *, tags: tuple[str, ...], n_mels: int = 96) -> keras.Model:
    """The network a training config asks for.

    Parameters
    ----------
    settings : ModelSettings
        ``architecture``, ``window_frames``, ``width``, ``dropout``, ``init``, ``freeze``.
    tags : tuple of str
        The output vocabulary.  With ``init = "MSD_musicnn"`` the pretrained
        head is kept when ``tags`` is exactly :data:`model.MSD_TAGS`, and
        replaced by a new ``dense_1`` of ``len(tags)`` units otherwise.
    n_mels : int > 0

    Returns
    -------
    keras.Model
        ``mel`` -> ``tags``; layers frozen as ``settings.freeze`` says.
    """
    from model.contract import MSD_TAGS

    if settings.init:
        network = _pretrained_musicnn(
            settings.init, len(tags), replace_head=tuple(tags) != MSD_TAGS
        )
        frozen: frozenset[str] = frozenset()
        if settings.freeze in ("frontend", "frontend+midend"):
            frozen = FRONTEND_LAYERS
        if settings.freeze == "frontend+midend":
            frozen = frozen | MIDEND_LAYERS
        for layer in network.layers:
            if layer.name in frozen:
                layer.trainable = False
        return network
    builder = ARCHITECTURES[settings.architecture]
    return builder(
        input_frames=settings.window_frames,
        n_mels=n_mels,
        n_tags=len(tags),
        width=settings.width,
        dropout=settings.dropout,
        name=settings.architecture,
    )
