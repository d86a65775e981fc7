"""The network a training config asks for, built from the one registry.

Networks live in :data:`model.architectures.ARCHITECTURES` (the registry every
model folder's contract names); training adds how to start from pretrained
weights and which layers to freeze when fine-tuning musicnn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from model.architectures import ARCHITECTURES

if TYPE_CHECKING:
    import keras

    from training.config import ModelSettings

__all__ = ["FRONTEND_LAYERS", "MIDEND_LAYERS", "build_model"]

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
    import keras
    from keras import layers

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
    return ARCHITECTURES[settings.architecture](
        input_frames=settings.window_frames,
        n_mels=n_mels,
        n_tags=len(tags),
        width=settings.width,
        dropout=settings.dropout,
        name=settings.architecture,
    )
