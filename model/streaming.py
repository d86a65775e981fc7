"""Streaming musicnn: compute only the new mel frames of each hop, not the whole window.

>>> streaming = StreamingMusicnn(tagger.network)
>>> cache = streaming.new_cache()
>>> probabilities = streaming.push_one(cache, mel_frames)   # (50,) or None

musicnn's front end (7-frame timbral and 32/64/128-frame temporal convolutions)
and mid end (three 7-frame convolutions) are convolutions along time, and its
back end pools their outputs over the window (max and mean) before two dense
layers.  Following Rybakov et al. (2020), "Streaming keyword spotting on mobile
devices" (Interspeech), each convolution is run 'valid' over its cached input
context plus the new frames, so a hop of ``n`` frames costs ``n`` frames of
front and mid end, whatever the window length; the pooling and dense layers
then run on the last ``window_frames`` cached mid-end feature frames.  The
weights are the loaded Keras network's own variables (no copies).

Latency and exactness
---------------------
The exact model pads every window with zeros at both ends ('same' padding).
The streaming model instead sees the real neighbouring audio, so the mid-end
feature of frame ``t`` needs input frames up to ``t + lookahead_frames`` (64
frames of the 128-frame temporal convolution plus 3 for each of the three
mid-end convolutions: 73 frames, 1.168 s at 16 kHz / hop 256).  A window's
probabilities are therefore ready 73 frames after its last frame arrived, and
differ slightly from recomputing the window alone (``Tagger.predict``, the
exact mode): the mid-end features of interior frames are identical to running
the network over the whole signal, only the edge frames of each window differ.
At the start of a stream the cache holds zeros, exactly like the 'same'
padding of the whole-signal computation.

Backends
--------
The step is one graph with the caches in and out, so it converts to ONNX:
:meth:`StreamingMusicnn.to_onnx` writes it (``tf2onnx``, TensorFlow needed
that once) and :meth:`StreamingMusicnn.from_onnx` runs it in an ONNX Runtime
session without TensorFlow (:func:`model.onnx.load_streaming_step` caches it
as ``streaming.onnx`` in the model folder).  Both run the same
:meth:`StreamingMusicnn.push`; :attr:`StreamingMusicnn.backend` says which.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LOOKAHEAD_KEY", "STEP_INPUTS", "StreamCache", "StreamingMusicnn"]

#: Names of the step's inputs (in order), in the TensorFlow signature and the ONNX graph.
STEP_INPUTS = ("mel", "frames_seen", "inputs", "front", "midend_1", "midend_2", "features")
#: Metadata key of a step's ONNX graph: its ``lookahead_frames``.
LOOKAHEAD_KEY = "tagstream.lookahead_frames"

_FRONT_BN = {
    "conv2d": "batch_normalization_1",
    "conv2d_1": "batch_normalization_2",
    "conv2d_2": "batch_normalization_3",
    "conv2d_3": "batch_normalization_4",
    "conv2d_4": "batch_normalization_5",
}
_MIDEND = (
    ("conv2d_5", "batch_normalization_6"),
    ("conv2d_6", "batch_normalization_7"),
    ("conv2d_7", "batch_normalization_8"),
)
_BACKEND = ("batch_normalization_9", "dense", "batch_normalization_10", "dense_1", "tags")


@dataclass
class StreamCache:
    """The cache of one stream; create it with :meth:`StreamingMusicnn.new_cache`.

    Attributes
    ----------
    frames_seen : int >= 0
        Mel frames pushed so far.
    inputs : np.ndarray [shape=(127, n_mels)]
        The last normalised input frames: the front-end convolutions' context.
    front, midend_1, midend_2 : np.ndarray [shape=(context, channels)]
        The last outputs of the front end and of the first two mid-end
        convolutions: the next mid-end convolution's context, plus the frames
        that wait for the later layers to form a feature frame.
    features : np.ndarray [shape=(window_frames, 753)]
        The last ``window_frames`` mid-end feature frames (zeros before the first).
    probabilities : np.ndarray [shape=(n_tags,)] or None
        Tag probabilities of the window in ``features``; None until it is whole.
    """

    frames_seen: int
    inputs: np.ndarray
    front: np.ndarray
    midend_1: np.ndarray
    midend_2: np.ndarray
    features: np.ndarray
    probabilities: np.ndarray | None = None


class StreamingMusicnn:
    """Incremental musicnn inference over many streams, sharing a network's weights.

    Parameters
    ----------
    network : keras.Model
        A musicnn built by :func:`model.architectures.build_musicnn` (e.g.
        ``load_tagger("MSD_musicnn").network``).
    window_frames : int > 0
        Frames pooled by the back end: the model's window (187 = 3 s).

    Attributes
    ----------
    lookahead_frames : int
        Frames that must follow a window's last frame before its probabilities
        are ready (73 for musicnn: 1.168 s).
    feature_channels : int
        Channels of a mid-end feature frame (753 for musicnn).
    backend : {"tensorflow", "onnxruntime"}
        What runs the step (:meth:`from_onnx` makes the second).
    """

    backend = "tensorflow"

    def __init__(self, network: Any, *, window_frames: int = 187) -> None:
        import tensorflow as tf

        if window_frames <= 0:
            raise ValueError(f"window_frames={window_frames} must be a positive integer")
        needed = {"batch_normalization", "timbral_pad", *_FRONT_BN, *_FRONT_BN.values(), *_BACKEND}
        needed |= {name for pair in _MIDEND for name in pair}
        missing = sorted(needed - {layer.name for layer in network.layers})
        if missing:
            raise ValueError(
                f"network {network.name!r} is not a musicnn (no layers {', '.join(missing)}); "
                "only musicnn can be streamed, use Tagger.predict for other models"
            )
        layer = network.get_layer
        mid_kernels = {int(layer(conv).kernel.shape[0]) for conv, _ in _MIDEND}
        if len(mid_kernels) != 1 or min(mid_kernels) % 2 == 0:
            raise ValueError(f"mid-end kernels {sorted(mid_kernels)} must be one odd length")
        self.network = network
        self.window_frames = window_frames
        self.n_mels = int(network.inputs[0].shape[-1])
        # Input frames before/after an output frame that each front-end conv reads: the
        # timbral convs are 'valid' after an explicit zero padding, the temporal ones 'same'.
        timbral_padding = tuple(layer("timbral_pad").padding[0])
        self._front_reach = {
            name: timbral_padding
            if layer(name).padding == "valid"
            else _same_reach(int(layer(name).kernel.shape[0]))
            for name in _FRONT_BN
        }
        self._before = max(before for before, _ in self._front_reach.values())
        self._after = max(after for _, after in self._front_reach.values())
        self._mid_reach = min(mid_kernels) // 2  # frames each side of a mid-end conv
        self.lookahead_frames = self._after + 3 * self._mid_reach
        front_channels = sum(int(layer(name).kernel.shape[-1]) for name in _FRONT_BN)
        mid_channels = int(layer(_MIDEND[0][0]).kernel.shape[-1])
        self.feature_channels = front_channels + 3 * mid_channels
        self._context = {
            "inputs": (self._before + self._after, self.n_mels),
            "front": (3 * self._mid_reach, front_channels),
            "midend_1": (2 * self._mid_reach, mid_channels),
            "midend_2": (2 * self._mid_reach, mid_channels),
        }
        spec = tf.TensorSpec
        shapes = [
            (None, None, self.n_mels),  # new mel frames
            (None,),  # frames seen before them
            *((None, *shape) for shape in self._context.values()),
            (None, window_frames, self.feature_channels),
        ]
        types = [tf.float32, tf.int32, *[tf.float32] * (len(shapes) - 2)]
        self._signature = [
            spec(shape, dtype, name=name)
            for shape, dtype, name in zip(shapes, types, STEP_INPUTS, strict=True)
        ]
        # One concrete function for every batch size and hop (the signature leaves them
        # open): calling it skips tf.function's argument binding, ~0.5 ms per push.
        self._step = tf.function(
            self._step_graph, input_signature=self._signature
        ).get_concrete_function()

    def to_onnx(self, *, opset: int, metadata: dict[str, str] | None = None) -> bytes:
        """The step as an ONNX graph: :data:`STEP_INPUTS` in, the new caches and outputs out.

        Imports ``tf2onnx`` and ``onnx``; :meth:`from_onnx` runs the result.
        ``metadata`` is stored beside :data:`LOOKAHEAD_KEY`.
        """
        import warnings

        import onnx
        import tensorflow as tf
        import tf2onnx

        function = tf.function(self._step_graph, input_signature=self._signature)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf2onnx's numpy-2 deprecations
            proto, _ = tf2onnx.convert.from_function(
                function, input_signature=self._signature, opset=opset
            )
        props = {LOOKAHEAD_KEY: str(self.lookahead_frames), **(metadata or {})}
        onnx.helper.set_model_props(proto, props)
        proto.doc_string = "tagstream streaming musicnn step: new mel frames and caches in and out"
        onnx.checker.check_model(proto)
        return bytes(proto.SerializeToString())

    @classmethod
    def from_onnx(cls, session: Any) -> StreamingMusicnn:
        """The streaming model of a step graph written by :meth:`to_onnx`, run by ``session``.

        Parameters
        ----------
        session : onnxruntime.InferenceSession
            Over the graph; nothing here imports TensorFlow.

        Raises
        ------
        ValueError
            The graph is not such a step.
        """
        inputs = {value.name: value.shape for value in session.get_inputs()}
        metadata = session.get_modelmeta().custom_metadata_map
        if tuple(inputs) != STEP_INPUTS or LOOKAHEAD_KEY not in metadata:
            raise ValueError(f"not a streaming musicnn step: inputs {list(inputs)}")
        self = cls.__new__(cls)
        self.backend = "onnxruntime"
        self.network = None
        self.n_mels = int(inputs["mel"][2])
        self.window_frames = int(inputs["features"][1])
        self.feature_channels = int(inputs["features"][2])
        self.lookahead_frames = int(metadata[LOOKAHEAD_KEY])
        self._context = {
            key: (int(inputs[key][1]), int(inputs[key][2])) for key in STEP_INPUTS[2:6]
        }
        outputs = [value.name for value in session.get_outputs()]

        def step(*arrays: np.ndarray) -> list[np.ndarray]:
            return list(session.run(outputs, dict(zip(STEP_INPUTS, arrays, strict=True))))

        self._step = step
        return self

    def new_cache(self) -> StreamCache:
        """The cache of a stream before its first frame (zero padding, like 'same')."""
        zeros = {key: np.zeros(shape, np.float32) for key, shape in self._context.items()}
        features = np.zeros((self.window_frames, self.feature_channels), np.float32)
        return StreamCache(frames_seen=0, features=features, **zeros)

    def push(
        self, caches: Sequence[StreamCache], frames_per_stream: Sequence[np.ndarray]
    ) -> list[np.ndarray | None]:
        """Add mel frames to many streams; return each one's latest window probabilities.

        Streams given the same number of frames are computed as one batch.

        Parameters
        ----------
        caches : sequence of StreamCache
            Updated in place.
        frames_per_stream : sequence of np.ndarray [shape=(n_i, n_mels)]
            Log-mel frames (:func:`model.features.log_mel`), ``n_i >= 0``.

        Returns
        -------
        list of (np.ndarray [shape=(n_tags,)] or None)
            Probabilities of the window of ``window_frames`` frames ending
            ``lookahead_frames`` before the stream's newest frame; ``None`` until
            ``window_frames + lookahead_frames`` frames have been pushed.
        """
        return [probabilities for _, probabilities in self._push(caches, frames_per_stream)]

    def push_one(self, cache: StreamCache, frames: np.ndarray) -> np.ndarray | None:
        """:meth:`push` for a single stream."""
        return self.push([cache], [frames])[0]

    def push_features(
        self, caches: Sequence[StreamCache], frames_per_stream: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Like :meth:`push`, but return the mid-end feature frames each push completed.

        Returns
        -------
        list of np.ndarray [shape=(k_i, feature_channels)]
            Feature frames ``t`` for which frame ``t + lookahead_frames`` has now
            arrived, in order; the first ``lookahead_frames`` pushed frames
            complete none.
        """
        return [features for features, _ in self._push(caches, frames_per_stream)]

    def window_ready(self, cache: StreamCache) -> bool:
        """Whether ``cache`` has a whole window of completed feature frames."""
        return cache.frames_seen - self.lookahead_frames >= self.window_frames

    def _push(
        self, caches: Sequence[StreamCache], frames_per_stream: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Push every stream; return its completed feature frames and window probabilities."""
        if len(caches) != len(frames_per_stream):
            raise ValueError(f"got {len(caches)} caches but {len(frames_per_stream)} frame arrays")
        frames_list = [np.asarray(frames, dtype=np.float32) for frames in frames_per_stream]
        groups: dict[int, list[int]] = defaultdict(list)
        for index, frames in enumerate(frames_list):
            if frames.ndim != 2 or frames.shape[1] != self.n_mels:
                raise ValueError(
                    f"frames of stream {index} must have shape (n, {self.n_mels}), "
                    f"got {frames.shape}"
                )
            groups[len(frames)].append(index)
        empty = np.zeros((0, self.feature_channels), np.float32)
        results: list[tuple[np.ndarray, np.ndarray | None]] = [(empty, None)] * len(caches)
        for n_new, members in groups.items():
            new_features = [empty] * len(members)
            if n_new > 0:
                new_features = self._push_group(
                    [caches[i] for i in members], np.stack([frames_list[i] for i in members])
                )
            for i, features in zip(members, new_features, strict=True):
                cache = caches[i]
                done = max(cache.frames_seen - self.lookahead_frames, 0)
                completed = done - max(done - n_new, 0)
                results[i] = (features[n_new - completed :], cache.probabilities)
        return results

    def _push_group(self, caches: list[StreamCache], frames: np.ndarray) -> list[np.ndarray]:
        """One batched step for streams that all add the same number of frames.

        Returns the feature frames of ``[L - lookahead, L + n - lookahead)`` per
        stream, where ``L`` is its ``frames_seen`` before the step.
        """
        outputs = self._step(
            frames,
            np.array([cache.frames_seen for cache in caches], dtype=np.int32),
            *(np.stack([getattr(cache, key) for cache in caches]) for key in self._context),
            np.stack([cache.features for cache in caches]),
        )
        inputs, front, midend_1, midend_2, features, new_features, probabilities = (
            np.asarray(output) for output in outputs
        )
        for i, cache in enumerate(caches):
            cache.frames_seen += frames.shape[1]
            cache.inputs = inputs[i]
            cache.front = front[i]
            cache.midend_1 = midend_1[i]
            cache.midend_2 = midend_2[i]
            cache.features = features[i]
            cache.probabilities = probabilities[i] if self.window_ready(cache) else None
        return list(new_features)

    def _step_graph(
        self,
        mel: Any,
        frames_seen: Any,
        inputs: Any,
        front: Any,
        midend_1: Any,
        midend_2: Any,
        features: Any,
    ) -> tuple[Any, ...]:
        """One hop, traced by ``tf.function``: new frames in, new contexts and features out.

        With ``L = frames_seen``, ``n`` new frames and ``r`` frames each side of a
        mid-end conv, the front end emits frames ``[L - after, L + n - after)``
        (``after`` = 64), each mid-end layer the ``n`` frames ``r`` earlier than
        the layer before it, and the features of ``[L - lookahead, L + n -
        lookahead)`` join the window.  Outputs for frames before 0 are zeroed,
        which is what 'same' padding feeds the next layer.
        """
        import tensorflow as tf

        layer = self.network.get_layer
        n_new = tf.shape(mel)[1]
        r = self._mid_reach

        def zero_before_start(x: Any, first_frame: Any) -> Any:
            frame = first_frame[:, None] + tf.range(n_new)[None, :]
            return x * tf.cast(frame >= 0, x.dtype)[:, :, None]

        # Front end over [L - before - after, L + n): 'valid' convs, n frames each.
        normalised = layer("batch_normalization")(mel[..., None], training=False)
        x = tf.concat([inputs[..., None], normalised], axis=1)
        total = tf.shape(x)[1]
        branches = []
        for name, (before, after) in self._front_reach.items():
            window = x[:, self._before - before : total - (self._after - after)]
            branches.append(_conv_max_over_frequency(layer(name), layer(_FRONT_BN[name]), window))
        first = frames_seen - self._after
        front_all = tf.concat([front, zero_before_start(tf.concat(branches, -1), first)], 1)

        # Mid end: each conv reads its cached context + the previous layer's new frames.
        (conv_1, bn_1), (conv_2, bn_2), (conv_3, bn_3) = _MIDEND
        first -= r
        out_1 = layer(bn_1)(_valid_conv(layer(conv_1), front_all[:, r:]), training=False)
        mid_1 = tf.concat([midend_1, zero_before_start(out_1, first)], axis=1)
        first -= r
        out_2 = layer(bn_2)(_valid_conv(layer(conv_2), mid_1), training=False)
        mid_2 = tf.concat([midend_2, zero_before_start(out_2 + mid_1[:, r : r + n_new], first)], 1)
        out_3 = (
            layer(bn_3)(_valid_conv(layer(conv_3), mid_2), training=False) + mid_2[:, r : r + n_new]
        )

        # Features of [L - lookahead, L + n - lookahead); back end over the window.
        new_features = tf.concat(
            [front_all[:, :n_new], mid_1[:, :n_new], mid_2[:, r : r + n_new], out_3], -1
        )
        window = tf.concat([features, new_features], axis=1)[:, -self.window_frames :]
        y = tf.concat([tf.reduce_max(window, axis=1), tf.reduce_mean(window, axis=1)], -1)
        for name in _BACKEND:
            y = layer(name)(y, training=False) if name.startswith("batch") else layer(name)(y)
        context = self._context
        return (
            x[:, total - context["inputs"][0] :, :, 0],
            front_all[:, -context["front"][0] :],
            mid_1[:, -context["midend_1"][0] :],
            mid_2[:, -context["midend_2"][0] :],
            window,
            new_features,
            y,
        )


def _same_reach(kernel: int) -> tuple[int, int]:
    """Frames before and after an output frame that a 'same' conv of ``kernel`` reads."""
    before = (kernel - 1) // 2
    return before, kernel - 1 - before


def _conv_max_over_frequency(conv: Any, norm: Any, x: Any) -> Any:
    """``max over frequency of norm(conv(x))`` ('valid'), pooling before bias, ReLU and BN.

    Bias + ReLU is non-decreasing and inference-mode BN is ``scale * y + shift``
    per channel, so the maximum over frequency of the whole is the same affine
    map of the maximum (``scale > 0``) or minimum (``scale < 0``) of the bare
    convolution: the elementwise work then runs on ``frequency``-times fewer
    values.
    """
    import tensorflow as tf

    z = tf.nn.convolution(x, conv.kernel.value, padding="VALID")
    scale = norm.gamma.value * tf.math.rsqrt(norm.moving_variance.value + norm.epsilon)
    shift = norm.beta.value - norm.moving_mean.value * scale
    pooled = tf.where(scale > 0, tf.reduce_max(z, axis=2), tf.reduce_min(z, axis=2))
    return conv.activation(pooled + conv.bias.value) * scale + shift


def _valid_conv(layer: Any, x: Any) -> Any:
    """``layer``'s convolution with 'valid' padding, its bias and activation."""
    import tensorflow as tf

    y = tf.nn.convolution(x, layer.kernel.value, padding="VALID") + layer.bias.value
    return layer.activation(y)
